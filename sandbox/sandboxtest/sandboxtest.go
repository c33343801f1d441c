//go:build unix

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
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Token returns a string unique to this test and moment, for argv.
func Token(t testing.TB) string {
	return fmt.Sprintf("prims-test-%s-%d", strings.NewReplacer("/", "-", " ", "_").Replace(t.Name()), time.Now().UnixNano())
}

// Procs returns the host pids of live processes whose command line holds
// token. Zombies count as dead. Without /proc it returns nil.
func Procs(token string) []int { return procsWith("cmdline", token) }

// EnvProcs returns the host pids of live processes whose environment holds
// token, for processes (like a waiting interpreter) whose argv is fixed.
// Reading another process's environ needs the same user or root.
func EnvProcs(token string) []int { return procsWith("environ", token) }

// procsWith lists the live processes whose /proc/PID/file holds token.
func procsWith(file, token string) []int {
	var pids []int
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", d.Name(), file))
		if err != nil || !strings.Contains(string(b), token) {
			continue
		}
		if stat, err := os.ReadFile(filepath.Join("/proc", d.Name(), "stat")); err == nil {
			s := string(stat)
			if f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:]); len(f) > 0 && f[0] == "Z" {
				continue
			}
		}
		pids = append(pids, pid)
	}
	return pids
}

// WaitGone waits up to 10 s for every process holding token to end, then
// kills the survivors and reports them as a test failure.
func WaitGone(t testing.TB, token string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(Procs(token)) > 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if alive := Procs(token); len(alive) > 0 {
		for _, p := range alive {
			syscall.Kill(p, syscall.SIGKILL)
		}
		t.Errorf("processes outlived the run: %v", alive)
	}
}
