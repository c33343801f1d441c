package pythonenv

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

// TestAcquireDiskFull builds an environment on a cache disk too small for
// its package: the error says the disk is full, not that the requirements
// are wrong, and nothing half-built is published.
func TestAcquireDiskFull(t *testing.T) {
	t.Parallel()
	interp := testInterp(t)
	if os.Geteuid() != 0 {
		testenv.Skip(t, testenv.Root, "mounting a small tmpfs as the cache disk needs root")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=2m,mode=0755"); err != nil {
		t.Fatalf("mount a 2 MiB tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, syscall.MNT_DETACH) })
	idx := pythonenvtest.NewIndex(t, pythonenvtest.Package{Name: "huge", Version: "1.0",
		Files: map[string]string{"huge/data.txt": strings.Repeat("0123456789abcdef", 1<<18)}}) // 4 MiB installed, a few kB as a wheel
	c := newTestCache(t, idx.URL, func(o *Options) { o.Dir = dir })
	_, err := c.Acquire(context.Background(), interp, []string{"huge"}, nil)
	var ie *InstallError
	if !errors.As(err, &ie) || ie.Kind != "disk_full" || !strings.Contains(err.Error(), "disk") || !strings.Contains(err.Error(), "full") {
		t.Fatalf("Acquire on a full disk = %v, want an InstallError of kind disk_full that says the disk is full", err)
	}
	t.Logf("%v\npip: %q", err, ie.PipLines)
	assertNoLeftovers(t, c)
}
