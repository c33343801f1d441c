//go:build unix

package testenv

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

// Nobody is the uid and gid an ordinary user's server is played by.
const Nobody = 65534

// RerunAsNobody runs the tests of this test binary that run (a -test.run
// pattern) again as uid 65534, as a server started by an ordinary user
// would run them, and fails t when they fail or none of them ran. plant,
// when not nil, fills the run's fresh HOME before it starts. It returns
// the run's verbose output.
func RerunAsNobody(t testing.TB, run string, plant func(home string)) string {
	t.Helper()
	out, err := Rerun(t, Nobody, nil, run, plant)
	t.Logf("%s as uid %d:\n%s", run, Nobody, Summary(out))
	switch {
	case err != nil:
		t.Fatalf("%s as uid %d: %v", run, Nobody, err)
	case !strings.Contains(out, "--- PASS"):
		t.Fatalf("%s as uid %d: no test ran", run, Nobody)
	}
	return out
}

// Rerun runs the tests of this test binary that run matches in a child
// process as uid, with env added to a minimal environment, and returns its
// verbose output and how it ended. plant, when not nil, fills the child's
// fresh HOME (owned by uid afterwards). The child requires what this run
// requires (PRIMS_REQUIRE) except the features named missing, which the
// caller takes away from it; a child of another uid also drops being root
// and what only root has, and gets a copy of the binary it can run.
func Rerun(t testing.TB, uid int, env []string, run string, plant func(home string), missing ...string) (string, error) {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "prims-rerun-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o700); err != nil {
		t.Fatal(err)
	}
	if plant != nil {
		plant(home)
	}
	bin := exe
	cmd := exec.Command(bin)
	if uid != os.Geteuid() {
		// The test binary sits in root's private build directory: copy
		// it where uid can run it.
		b, err := os.ReadFile(exe)
		if err != nil {
			t.Fatal(err)
		}
		bin = filepath.Join(dir, filepath.Base(exe))
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := filepath.WalkDir(home, func(p string, _ os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(p, uid, uid)
		}); err != nil {
			t.Fatal(err)
		}
		missing = append(missing, Root, Cgroup, Pyenv)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var out bytes.Buffer
	cmd.Path = bin
	cmd.Args = []string{bin, "-test.run=" + run, "-test.v", "-test.count=1"}
	cmd.Dir = dir
	cmd.Env = append([]string{"HOME=" + home, "PATH=/usr/bin:/bin", "TMPDIR=" + os.TempDir(), "GORACE=atexit_sleep_ms=0", Var + "=" + requireWithout(missing)}, env...)
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	return out.String(), err
}

// requireWithout is PRIMS_REQUIRE without the features in drop.
func requireWithout(drop []string) string {
	var keep []string
	for _, f := range strings.FieldsFunc(os.Getenv(Var), func(r rune) bool { return r == ',' || r == ' ' }) {
		if f == "all" {
			keep = slices.Clone(Features)
			break
		}
		keep = append(keep, f)
	}
	keep = slices.DeleteFunc(keep, func(f string) bool { return slices.Contains(drop, f) })
	return strings.Join(keep, ",")
}

// Summary keeps what a go test -v output says beyond its passes: the
// failing tests with their messages, skips, and the summary.
func Summary(s string) string {
	var keep []string
	for line := range strings.Lines(s) {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "--- PASS") || strings.HasPrefix(t, "=== RUN") || strings.HasPrefix(t, "=== PAUSE") || strings.HasPrefix(t, "=== CONT") {
			continue
		}
		keep = append(keep, line)
	}
	return strings.Join(keep, "")
}
