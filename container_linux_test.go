package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
)

// TestMaskedProcFallsBack runs prims where the host's /proc has a path
// mounted over, as podman's and Docker's default settings leave it inside a
// container. User namespaces work there, but the kernel refuses every fresh
// /proc, so each run in the namespaces tier failed while doctor reported
// that tier. The probe must see it: doctor names the cause and the option
// that lifts it, auto picks the landlock tier, and code runs.
func TestMaskedProcFallsBack(t *testing.T) {
	testenv.Need(t, os.Geteuid() == 0, testenv.Root, "masking /proc in a mount namespace of its own needs root")
	testenv.Need(t, sandbox.Probe().Can(sandbox.TierNamespaces), testenv.Userns, "the namespaces tier is not available here: %v", sandbox.Probe().UserNS)
	unshare, err := exec.LookPath("unshare")
	if err != nil {
		t.Fatalf("util-linux's unshare is missing: %v", err)
	}
	py := testpython.Path(t) // shared: the landlock tier runs it as uid 65534
	// mask runs prims in a mount namespace whose /proc/acpi is covered, as
	// a container runtime's masked paths are.
	mask := func(args ...string) (string, error) {
		cmd := primsCmd(t, args...)
		exe := cmd.Path
		cmd.Path = unshare
		cmd.Args = append([]string{"unshare", "-m", "sh", "-c", `mount -t tmpfs -o size=4k masked /proc/acpi && exec "$@"`, "sh", exe}, args...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// Control: the same mask really stops a fresh /proc, which is what
	// the namespaces tier needs.
	out, err := exec.Command(unshare, "-m", "sh", "-c",
		`mount -t tmpfs -o size=4k masked /proc/acpi && exec unshare -U -r -m -p -f --mount-proc true`).CombinedOutput()
	if err == nil {
		t.Fatalf("control: a fresh /proc mounted under a masked /proc; the test cannot see the hole:\n%s", out)
	}
	doctor, err := mask("doctor", "--python", py)
	if !strings.Contains(doctor, "Tier for --isolation=auto: landlock") || !strings.Contains(doctor, "unmask=/proc/*") {
		t.Fatalf("doctor under a masked /proc (err %v) should pick landlock and name the option that unmasks it:\n%s", err, doctor)
	}
	run, err := mask("run", "--python", py, "-c", "print(6*7)")
	if err != nil || !strings.Contains(run, "42") {
		t.Fatalf("run under a masked /proc: %v\n%s", err, run)
	}
}
