// Package sandboxtest helps tests find the processes a sandboxed run
// started. Code in the sandbox lives in its own PID namespace, so the pids
// it reports mean nothing on the host; a unique token in the argv of the
// processes it starts is what the host can look for.
//
//	token := sandboxtest.Token(t)
//	// run code that starts [sys.executable, "-c", "...", token]
//	if live := sandboxtest.Procs(token); len(live) > 0 { t.Errorf(...) }
package sandboxtest

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Token returns a string unique to this test and moment, for argv.
func Token(t testing.TB) string {
	return fmt.Sprintf("prims-test-%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), time.Now().UnixNano())
}
