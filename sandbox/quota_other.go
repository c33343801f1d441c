//go:build !linux

package sandbox

import "os"

type diskCount struct{}

func diskCounters(*os.File) (diskCount, bool)       { return diskCount{}, false }
func (diskCount) grownSince(diskCount, int64) int64 { return 0 }
func openDeleted(int, *os.File) int64               { return 0 }
