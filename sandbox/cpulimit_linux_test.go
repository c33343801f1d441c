package sandbox

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testpython"
)

// TestCPULimit: the CPU-time limit ends a spinning program with SIGXCPU,
// which nothing else sends, and one that ignores SIGXCPU with SIGKILL a
// second later; both are reported as the CPU-time limit and neither as the
// wall-clock one. A program killed with SIGKILL early is no CPU kill.
func TestCPULimit(t *testing.T) {
	py := testpython.Path(t)
	tests := []struct {
		name, code string
		signal     string
		want       string
	}{
		{"spin", "while True: pass", "CPU time limit exceeded", LimitCPUTime},
		{"ignores SIGXCPU", "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass", "killed", LimitCPUTime},
		{"killed early", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "killed", ""},
	}
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			t.Parallel()
			if !Probe().Can(tier) {
				skipTier(t, tier, errors.New(Probe().Missing()))
			}
			r, err := New(Config{Tier: tier, Limits: testLimits})
			if err != nil {
				t.Fatal(err)
			}
			for _, tt := range tests {
				var out lockedBuffer
				res, err := r.Run(context.Background(), Job{Python: py, Code: tt.code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 30 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if res.Limit != tt.want || res.Signal != tt.signal || res.TimedOut {
					t.Errorf("%s: Limit %q signal %q timed out %v, want %q by %q\n%s", tt.name, res.Limit, res.Signal, res.TimedOut, tt.want, tt.signal, out.String())
				}
			}
		})
	}
}
