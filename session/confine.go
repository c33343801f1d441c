package session

import (
	"context"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/egress"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// ConfineInstalls runs pip, and every build it starts, in a sandbox of r's
// tier (pythonenv.Options.Confine): a source distribution's build is the
// package's own code, as untrusted as the program that asked for it. With
// isolation off it returns nil: pip then runs on the host, as before.
func ConfineInstalls(r *sandbox.Runner) pythonenv.ConfineFunc {
	if r.Tier() == sandbox.TierNone {
		return nil
	}
	return func(ctx context.Context, c pythonenv.Confined) (int, error) {
		res, err := r.RunCommand(ctx, sandbox.Command{
			Args:     c.Args,
			Env:      c.Env,
			Dir:      c.Dir,
			Writable: c.Writable,
			ReadOnly: c.ReadOnly,
			Egress:   egress.Policy{Allow: c.Hosts, AllowPrivate: c.PrivateHosts},
			Output:   c.Output,
			Timeout:  c.Timeout,
		})
		if err != nil {
			return 0, err
		}
		if res.ExitCode == 0 && (res.TimedOut || res.Cancelled) {
			return -1, nil
		}
		return res.ExitCode, nil
	}
}
