//go:build unix

package sandboxtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

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
