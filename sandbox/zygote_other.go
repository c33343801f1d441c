//go:build !linux

package sandbox

import "context"

// Zygotes need Linux namespaces (zygote_linux.go): elsewhere every run
// starts its interpreter anew.
type zygotes struct{}

func (r *Runner) runZygote(context.Context, Job, string) (Result, bool, error) {
	return Result{}, false, nil
}

func (r *Runner) prewarmZygote(Job, string) bool { return false }
func (r *Runner) forgetZygotes(string)           {}
func (r *Runner) closeZygotes()                  {}
func (r *Runner) zygoteStats() (int, int64)      { return 0, 0 }
