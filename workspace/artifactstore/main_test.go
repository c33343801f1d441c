package artifactstore_test

import (
	"os"
	"testing"

	"github.com/prims-mcp/prims/workspace/artifactstore/s3test"
)

func TestMain(m *testing.M) {
	s3test.MaybeServeChild()
	// The AWS SDK reads credentials from the standard environment, as the
	// server does in production.
	s3test.SetEnv()
	os.Setenv("GORACE", "atexit_sleep_ms=0")
	os.Exit(m.Run())
}
