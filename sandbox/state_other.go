//go:build !linux

package sandbox

import "context"

// StateHost keeps named Python states; outside Linux there are none
// (OpenStates fails with ErrStatesUnsupported).
type StateHost struct{ job Job }

// OpenStates is not supported outside Linux.
func (r *Runner) OpenStates(job Job) (*StateHost, error) { return nil, ErrStatesUnsupported }

func (h *StateHost) Job() Job                                  { return h.job }
func (h *StateHost) Tier() Tier                                { return TierNone }
func (h *StateHost) New(context.Context, string, string) error { return ErrStatesUnsupported }
func (h *StateHost) Drop(string) error                         { return ErrStatesUnsupported }
func (h *StateHost) Has(string) bool                           { return false }
func (h *StateHost) Memory(string) int64                       { return 0 }
func (h *StateHost) Close()                                    {}
func (h *StateHost) Run(context.Context, string, Job) (StateResult, error) {
	return StateResult{}, ErrStatesUnsupported
}
