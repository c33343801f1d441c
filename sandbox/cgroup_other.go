//go:build !linux

package sandbox

import "os/exec"

// memGuard does nothing outside Linux: there is no cgroup, and no /proc to
// count a run's processes in.
type memGuard struct{ mode MemoryEnforcement }

// cgroupSpares has nothing to keep outside Linux.
type cgroupSpares struct{}

var runCgroups cgroupSpares

func (*cgroupSpares) open()  {}
func (*cgroupSpares) close() {}

func detectMemory() (MemoryEnforcement, error) { return MemoryNone, errNotLinux }

func memorySupport(Tier) string { return string(MemoryNone) }

func (r *Runner) newMemGuard() *memGuard { return &memGuard{mode: MemoryNone} }

func (g *memGuard) attach(*exec.Cmd)                    {}
func (g *memGuard) place(int) error                     { return nil }
func (g *memGuard) arm()                                {}
func (g *memGuard) exceeded() bool                      { return false }
func (g *memGuard) watch(chan<- struct{}) (stop func()) { return func() {} }
func (g *memGuard) killAll()                            {}
func (g *memGuard) remove()                             {}
