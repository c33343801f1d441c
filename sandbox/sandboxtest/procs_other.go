//go:build !unix

package sandboxtest

import "testing"

// Procs finds nothing where there is no /proc to read.
func Procs(token string) []int { return nil }

// EnvProcs finds nothing where there is no /proc to read.
func EnvProcs(token string) []int { return nil }

// WaitGone has nothing to wait for where Procs finds nothing.
func WaitGone(t testing.TB, token string) {}
