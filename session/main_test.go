package session

import (
	"os"
	"testing"

	"github.com/prims-mcp/prims/sandbox"
)

// TestMain lets the test binary serve as the sandbox's init, which the
// runner starts by re-executing /proc/self/exe.
func TestMain(m *testing.M) {
	sandbox.MaybeInit()
	os.Exit(m.Run())
}
