//go:build !linux

package sandbox

import (
	"errors"
	"os"
	"runtime"
)

// errNotLinux is why the sandbox tiers are missing on this OS.
var errNotLinux = errors.New("the sandbox needs Linux; this OS gets timeouts and process-group kill only")

// MaybeInit does nothing outside Linux: there is no sandbox init to become.
func MaybeInit() {}

func probe(string) Support {
	return Support{
		OS: runtime.GOOS, Best: TierNone, Root: os.Geteuid() == 0,
		UserNS: errNotLinux, LandlockErr: errNotLinux, Seccomp: errNotLinux,
		Memory: "not limited", Procs: "not limited",
	}
}

func (r *Runner) prepareSandbox(Job, *os.File, *os.File, *os.File, *memGuard) (*launch, error) {
	return nil, errNotLinux
}
