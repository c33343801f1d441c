//go:build !linux

package mcp

import "os"

// watchReaderGone is Linux-only: elsewhere a client that stops reading is
// noticed at the next write.
func watchReaderGone(f *os.File, stop <-chan struct{}, gone func()) {}
