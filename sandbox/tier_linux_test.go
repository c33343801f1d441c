package sandbox

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/workspace"
)

func TestTiers(t *testing.T) {
	py := testpython.Path(t)
	s := Probe()
	if s.Init != nil {
		t.Fatalf("this test binary cannot act as the sandbox init: %v", s.Init)
	}
	tests := []struct {
		name    string
		cfg     Config
		want    Tier
		wantErr error
	}{
		{"off", Config{Isolation: IsolationOff}, TierNone, nil},
		{"auto", Config{}, s.Best, nil},
		{"forced fallback", Config{Tier: TierLandlock}, TierLandlock, nil},
		{"strict refuses the fallback", Config{Isolation: IsolationStrict, Tier: TierLandlock}, "", ErrIsolation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.want == TierLandlock && !s.Can(TierLandlock) {
				testenv.Skip(t, testenv.Landlock, "no Landlock here: %v", s.LandlockErr)
			}
			r, err := New(tt.cfg)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("New: err %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			var out strings.Builder
			res, err := r.Run(context.Background(), Job{Python: py, Code: "print('hi')", Dir: mkWorkspace(t), Stdout: &out})
			if err != nil {
				t.Fatal(err)
			}
			if res.Tier != tt.want || r.Tier() != tt.want || out.String() != "hi\n" || res.ExitCode != 0 {
				t.Errorf("tier %s (runner %s), exit %d, output %q; want tier %s, hi", res.Tier, r.Tier(), res.ExitCode, out.String(), tt.want)
			}
		})
	}
}

// TestPyenvUnderRoot runs an interpreter under root's private home: the
// sandbox user cannot traverse /root, so this only works through the trees
// the server clones with open_tree.
func TestPyenvUnderRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, testenv.Root, "the open_tree path is for a root server only")
	}
	var private, prefix string
	all, _ := testpython.All()
	for _, in := range all {
		if strings.HasPrefix(in.Path, "/root/.pyenv/") {
			private, prefix = in.Path, in.BasePrefix
			break
		}
	}
	if private == "" {
		testenv.Skip(t, testenv.Pyenv, "discovery found no interpreter under /root")
	}
	r, err := New(Config{Tier: TierNamespaces})
	if err != nil {
		skipTier(t, TierNamespaces, err)
	}
	var out strings.Builder
	res, err := r.Run(context.Background(), Job{
		Python: private,
		Code:   "import sys, os\nprint(sys.prefix)\nprint(sorted(os.listdir('/root')))",
		Dir:    mkWorkspace(t),
		Stdout: &out, Stderr: &out,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.HasPrefix(out.String(), prefix+"\n") {
		t.Fatalf("exit %d, output:\n%s", res.ExitCode, out.String())
	}
	if !strings.Contains(out.String(), "['.pyenv']") {
		t.Errorf("the sandbox sees more of /root than the interpreter:\n%s", out.String())
	}
}

// TestNetworkOption: with Config.Network the code reaches a host listener.
func TestNetworkOption(t *testing.T) {
	py := testpython.Path(t)
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("hello"))
			c.Close()
		}
	}()
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		t.Run(string(tier), func(t *testing.T) {
			r, err := New(Config{Tier: tier, Network: true})
			if err != nil {
				skipTier(t, tier, err)
			}
			var out strings.Builder
			res, err := r.Run(context.Background(), Job{
				Python: py,
				Code:   "import socket\nprint(socket.create_connection(('127.0.0.1', " + port + "), timeout=5).recv(5).decode())",
				Dir:    mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 30 * time.Second,
			})
			if err != nil || res.ExitCode != 0 || out.String() != "hello\n" {
				t.Errorf("exit %d err %v output %q", res.ExitCode, err, out.String())
			}
		})
	}
}

// TestLimits: each per-file and per-process limit ends or breaks the run
// with Result.Limit naming it and the output before it kept.
func TestLimits(t *testing.T) {
	py := testpython.Path(t)
	tests := []struct {
		name, code, want string
	}{
		{"file size", "print('before', flush=True)\nopen('output/big', 'wb').write(b'x' * (32 << 20))", LimitMaxFileSize},
		{"open files", "print('before', flush=True)\nfs = [open('/dev/null') for _ in range(10000)]", LimitMaxOpenFiles},
		{"wall time", "print('before', flush=True)\nimport time\ntime.sleep(60)", LimitWallTime},
	}
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		r, err := New(Config{Tier: tier, Limits: testLimits})
		if err != nil {
			continue
		}
		for _, tt := range tests {
			t.Run(string(tier)+"/"+tt.name, func(t *testing.T) {
				var out lockedBuffer
				res, err := r.Run(context.Background(), Job{Python: py, Code: tt.code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out, Timeout: 2 * time.Second})
				if err != nil {
					t.Fatal(err)
				}
				if res.Limit != tt.want || !strings.HasPrefix(out.String(), "before\n") {
					t.Errorf("Limit %q, want %q; output:\n%s", res.Limit, tt.want, out.String())
				}
			})
		}
	}
}

// TestProgramStartsClean: the program's first statement already runs under
// the run's limits, with nothing of the sandbox's plumbing in its
// environment and no descriptor beyond stdio, not even one the server
// inherited without close-on-exec, cold and warm, in every tier; and a
// memory limit smaller than the init's own Go runtime still runs programs
// (the limits are on the program, not on the init).
func TestProgramStartsClean(t *testing.T) {
	py := testpython.Path(t)
	// A descriptor as an agent might leak it into the server: open, and
	// not close-on-exec.
	secret := filepath.Join(t.TempDir(), "secret")
	os.WriteFile(secret, []byte("hunter2"), 0o600)
	f, err := os.Open(secret)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	leaked, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(leaked)

	code := `import os, resource
print(resource.getrlimit(resource.RLIMIT_DATA)[0], resource.getrlimit(resource.RLIMIT_FSIZE)[0], resource.getrlimit(resource.RLIMIT_NOFILE)[0])
print(sorted(k for k in os.environ if k.startswith("PRIMS")))
def is_open(fd):
    try: os.fstat(fd); return True
    except OSError: return False
print([fd for fd in range(3, 1024) if is_open(fd)])
`
	limits := testLimits
	limits.Memory = 24 << 20 // below a Go runtime's own data (about 40 MiB; 300 MiB with -race)
	limits.MaxOpenFiles = 77
	for _, tier := range []Tier{TierNamespaces, TierLandlock, TierNone} {
		for _, warm := range []int{0, 1} {
			r, err := New(Config{Tier: tier, Limits: limits, Warm: warm})
			if err != nil {
				continue
			}
			t.Run(string(tier)+"/warm="+strconv.Itoa(warm), func(t *testing.T) {
				defer r.Close()
				ws := mkWorkspace(t)
				defer r.ForgetDir(ws)
				want := "25165824 16777216 77\n[]\n[]\n"
				if tier == TierNone { // no limits to check
					_, want, _ = strings.Cut(want, "\n")
				}
				for i := range 2 { // with a pool, the second run is the warm one
					var out, errOut lockedBuffer
					res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: ws, Stdout: &out, Stderr: &errOut})
					if err != nil {
						t.Fatal(err)
					}
					got := out.String()
					if tier == TierNone {
						_, got, _ = strings.Cut(got, "\n")
					}
					if res.ExitCode != 0 || got != want {
						t.Errorf("run %d (warm %v): exit %d, output %q, want %q; stderr:\n%s", i, res.Warm, res.ExitCode, got, want, errOut.String())
					}
				}
			})
		}
	}
}

// TestLaterMountsAreShared: a root server hands the program's directory to
// the sandbox user once per workspace; inputs mounted after the first run
// (in the workspace's own mounts directory, outside the program's) are
// readable by the next one without the runner opening anything up.
func TestLaterMountsAreShared(t *testing.T) {
	if os.Geteuid() != 0 {
		testenv.Skip(t, testenv.Root, "the workspace is handed to another user only by a root server")
	}
	py := testpython.Path(t)
	for _, tier := range []Tier{TierNamespaces, TierLandlock} {
		r, err := New(Config{Tier: tier})
		if err != nil {
			continue
		}
		t.Run(string(tier), func(t *testing.T) {
			ws, err := workspace.New("")
			if err != nil {
				t.Fatal(err)
			}
			defer ws.Close()
			defer r.ForgetDir(ws.Dir())
			job := Job{Python: py, Code: "print('first')", Dir: ws.Dir(), ReadOnly: ws.ReadOnly()}
			if res, err := r.Run(context.Background(), job); err != nil || res.ExitCode != 0 {
				t.Fatalf("first run: %v %+v", err, res)
			}
			mounts := ws.ReadOnly()[0]
			sub := filepath.Join(mounts, "later", "deep")
			os.MkdirAll(sub, 0o755)
			os.WriteFile(filepath.Join(sub, "in.txt"), []byte("mounted later"), 0o644)
			var out, errOut lockedBuffer
			job.Code = "print(open('mounts/later/deep/in.txt').read())"
			job.Stdout, job.Stderr = &out, &errOut
			if res, err := r.Run(context.Background(), job); err != nil || res.ExitCode != 0 || out.String() != "mounted later\n" {
				t.Errorf("second run: %v, exit %d, output %q; stderr:\n%s", err, res.ExitCode, out.String(), errOut.String())
			}
		})
	}
}

// skipTier skips a test of a sandbox tier this host cannot give, or fails it
// where PRIMS_REQUIRE names the tier's feature.
func skipTier(t testing.TB, tier Tier, err error) {
	t.Helper()
	feature := testenv.Userns
	if tier == TierLandlock {
		feature = testenv.Landlock
	}
	testenv.Skip(t, feature, "tier %s: %v", tier, err)
}

// TestProcsOfTheUserOutsideTheRun: in the landlock tier RLIMIT_NPROC
// counts every task of the run's uid on the host, so a user who already
// has more processes than --max-procs must still be able to start some in
// a run. The init counts them before Landlock hides /proc (it counted 0
// after, and the program could not fork at all).
func TestProcsOfTheUserOutsideTheRun(t *testing.T) {
	py := testpython.Path(t)
	const maxProcs = 32
	r, err := New(Config{Tier: TierLandlock, Limits: Limits{MaxProcs: maxProcs}})
	if err != nil {
		skipTier(t, TierLandlock, err)
	}
	defer r.Close()
	// The run's uid: 65534 for a root server, our own otherwise.
	uid := os.Getuid()
	if uid == 0 {
		uid = sandboxID
	}
	var sleepers []*exec.Cmd
	defer func() {
		for _, c := range sleepers {
			c.Process.Kill()
			c.Wait()
		}
	}()
	for range 2 * maxProcs {
		c := exec.Command("sleep", "600")
		if os.Getuid() == 0 {
			c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
		}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		sleepers = append(sleepers, c)
	}
	// Control: the uid holds more tasks than the run may have, so a
	// count of 0 would leave the program no room to fork.
	if n := tasksOf(t, uid); n <= maxProcs {
		t.Fatalf("control: uid %d has %d tasks, want more than %d", uid, n, maxProcs)
	}
	var out lockedBuffer
	code := "import subprocess\nfor _ in range(4):\n    subprocess.run(['true'], check=True)\nprint('forked')"
	res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: mkWorkspace(t), Stdout: &out, Stderr: &out})
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 0 || !strings.Contains(out.String(), "forked") {
		t.Errorf("a run of a uid with %d other tasks could not fork: exit %d, limit %q:\n%s", 2*maxProcs, res.ExitCode, res.Limit, out.String())
	}
}

// tasksOf counts the tasks of uid on the host, as RLIMIT_NPROC does.
func tasksOf(t *testing.T, uid int) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		var st syscall.Stat_t
		if syscall.Stat("/proc/"+e.Name(), &st) == nil && e.Name()[0] >= '0' && e.Name()[0] <= '9' && int(st.Uid) == uid {
			tasks, _ := os.ReadDir("/proc/" + e.Name() + "/task")
			n += len(tasks)
		}
	}
	return n
}
