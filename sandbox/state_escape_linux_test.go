package sandbox

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
)

// TestEscapeStateful runs every attack of TestEscape as a call on a state,
// in each sandbox tier: a state is the same sandbox as a fresh run, and a
// call's fork must be held as a fresh run is. The attack runs in a fork of
// a state that has run a call before; then the state must still work, and
// nothing the attack started may be left (the call's processes die with
// it even when it ends well). TestEscape's controls show each probe
// seeing its hole.
func TestEscapeStateful(t *testing.T) {
	testpython.Path(t)
	hostTierCheck(t)
	env := newEscapeEnv(t)
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			r, err := New(Config{Tier: tier, Limits: testLimits})
			if err != nil {
				skipTier(t, tier, err)
			}
			t.Cleanup(r.Close)
			for _, a := range attacks {
				t.Run(a.name, func(t *testing.T) {
					skipKnownLimit(t, tier, a)
					ws := mkWorkspace(t)
					env.ws = ws
					h, err := r.OpenStates(Job{Python: testpython.Path(t), Dir: ws, ReadOnly: readOnlyOf(ws), Env: env.env})
					if err != nil {
						t.Fatal(err)
					}
					defer h.Close()
					ctx := context.Background()
					if err := h.New(ctx, "s", ""); err != nil {
						t.Fatal(err)
					}
					if res, err := h.Run(ctx, "s", Job{Code: "before = 1"}); err != nil || !res.Committed {
						t.Fatalf("first call: %v, committed %v", err, res.Committed)
					}
					var out lockedBuffer
					res, err := h.Run(ctx, "s", Job{Code: probePrelude + a.code, Stdout: &out, Stderr: &out, Timeout: 30 * time.Second})
					if err != nil {
						t.Fatalf("attack call: %v", err)
					}
					if res.Tier != tier {
						t.Errorf("ran in tier %s, want %s", res.Tier, tier)
					}
					assertBlocked(t, env, a, res.Result, out.String())
					var check lockedBuffer
					if res, err := h.Run(ctx, "s", Job{Code: "print(before)", Stdout: &check}); err != nil || check.String() != "1\n" {
						t.Errorf("state after the attack: %v, exit %d, output %q", err, res.ExitCode, check.String())
					}
				})
			}
		})
	}
	if after := fingerprint(t, env.otherWS, env.planted, env.outDir); !sameFingerprint(env.before, after) {
		t.Errorf("files outside the workspace changed")
	}
}

// TestStateHoldersArePrivate: in a PID namespace a call sees its state's
// interpreter (its parent) and every other state's in /proc. Their memory
// and environment must stay closed to it, or a call that is rolled back
// could still have read another state's data. The control opens a host
// whose processes stay dumpable and shows the probe getting through.
func TestStateHoldersArePrivate(t *testing.T) {
	t.Parallel()
	if !Probe().Can(TierNamespaces) {
		skipTier(t, TierNamespaces, errors.New(Probe().Missing()))
	}
	r, err := New(Config{Tier: TierNamespaces, Limits: testLimits})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	const probe = `
import os
for pid in (os.getppid(), int(open("other.pid").read())):
    for what in ("environ", "maps", "mem"):
        try:
            with open("/proc/%d/%s" % (pid, what), "rb") as f:
                f.read(1) if what != "mem" else None
            print("ESCAPED", what, flush=True)
        except OSError as e:
            print("blocked", what, e.errno, flush=True)
`
	for _, private := range []bool{true, false} {
		t.Run(fmt.Sprint("private=", private), func(t *testing.T) {
			ws := mkWorkspace(t)
			h, err := r.openStates(Job{Python: testpython.Path(t), Dir: ws, ReadOnly: readOnlyOf(ws)}, private)
			if err != nil {
				t.Fatal(err)
			}
			defer h.Close()
			ctx := context.Background()
			for _, name := range []string{"victim", "attacker"} {
				if err := h.New(ctx, name, ""); err != nil {
					t.Fatal(err)
				}
			}
			stateRun(t, h, "victim", "import os\nsecret = 's3cr3t'\nopen('other.pid', 'w').write(str(os.getpid()))", 0)
			_, out, errs := stateRun(t, h, "attacker", probe, 0)
			escaped := strings.Count(out, "ESCAPED")
			if private && escaped != 0 {
				t.Errorf("a call reached a state's interpreter:\n%s%s", out, errs)
			}
			if !private && escaped != 6 {
				t.Errorf("control: the probe did not get through to dumpable holders:\n%s%s", out, errs)
			}
		})
	}
}
