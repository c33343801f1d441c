package sandbox

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"

	ll "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// sandboxID is the host uid and gid a root server maps the sandbox to
// (nobody/nogroup): never host root (ARCHITECTURE.md pitfall 4).
const sandboxID = 65534

// probe finds what this host supports; with a cache directory, it starts
// the init only when the directory holds no success for this host and
// binary (see probeKey).
func probe(cacheDir string) Support {
	s := Support{OS: runtime.GOOS, Root: os.Geteuid() == 0}
	if v, err := ll.LandlockGetABIVersion(); err != nil || v < 1 {
		s.LandlockErr = fmt.Errorf("not available (%v): boot with lsm=...,landlock or use kernel 5.13+", err)
	} else {
		s.Landlock = v
	}
	if _, err := unix.PrctlRetInt(unix.PR_GET_SECCOMP, 0, 0, 0, 0); err != nil {
		s.Seccomp = fmt.Errorf("seccomp filters not available: %w", err)
	} else if auditArch == 0 {
		s.Seccomp = fmt.Errorf("no seccomp filter for %s", runtime.GOARCH)
	}
	key := ""
	if cacheDir != "" {
		key = probeKey()
	}
	if !cachedProbeOK(cacheDir, key) {
		// Both probes start the init; side by side they cost one start,
		// not two, before a server can answer.
		userNS := make(chan error, 1)
		go func() { userNS <- runProbe(nsAttr(false)) }()
		s.Init = runProbe(nil)
		s.UserNS = <-userNS
		if s.Init != nil {
			s.UserNS = errors.New("not tried: the sandbox init is missing")
		}
		if s.Init == nil && s.UserNS == nil {
			saveProbeOK(cacheDir, key)
		}
	}
	s.Procs = "RLIMIT_NPROC, counted in the run's own user namespace"
	switch {
	case s.Can(TierNamespaces):
		s.Best = TierNamespaces
	case s.Can(TierLandlock):
		s.Best = TierLandlock
		s.Procs = "RLIMIT_NPROC: --max-procs more than the tasks the uid already has on the host, counted at sandbox start"
	default:
		s.Best = TierNone
		s.Procs = "not limited"
	}
	s.Memory = memorySupport(s.Best)
	return s
}

// probeStarts counts the probe inits started, for the cache's tests.
var probeStarts atomic.Int64

// runProbe starts the init in probe mode with attr's namespaces (nil: none)
// and reports why it failed.
func runProbe(attr *syscall.SysProcAttr) error {
	probeStarts.Add(1)
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return err
	}
	defer repR.Close()
	mode := initModeLL
	if attr != nil {
		mode = initModeNS
	}
	b, _ := json.Marshal(initConfig{Mode: initProbe + "-" + mode})
	cfgW.Write(b)
	cfgW.Close()
	cmd := initCommand()
	cmd.ExtraFiles = []*os.File{nil, cfgR, repW}
	if attr != nil {
		cmd.SysProcAttr = attr
	}
	err = cmd.Start()
	cfgR.Close()
	repW.Close()
	if err != nil {
		return explainUserNS(err)
	}
	var rep struct {
		Err string `json:"err"`
		OK  bool   `json:"ok"`
	}
	out, _ := readAllLimit(repR, 64<<10)
	werr := cmd.Wait()
	switch {
	case len(out) == 0:
		return fmt.Errorf("this binary did not act as the sandbox init (main or TestMain must call sandbox.MaybeInit first): %v", werr)
	case json.Unmarshal(out, &rep) != nil:
		return errors.New("the sandbox init sent a malformed probe report")
	case rep.Err != "":
		return explainUserNS(errors.New(rep.Err))
	}
	return nil
}

func readAllLimit(f *os.File, n int64) ([]byte, error) {
	var b strings.Builder
	buf := make([]byte, 4096)
	for int64(b.Len()) < n {
		k, err := f.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	return []byte(b.String()), nil
}

// explainUserNS adds the usual cause to a user-namespace failure.
func explainUserNS(err error) error {
	if b, rerr := os.ReadFile("/proc/sys/user/max_user_namespaces"); rerr == nil && strings.TrimSpace(string(b)) == "0" {
		return fmt.Errorf("%w: user.max_user_namespaces is 0 (fix: sysctl -w user.max_user_namespaces=15000)", err)
	}
	if b, rerr := os.ReadFile("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"); rerr == nil && strings.TrimSpace(string(b)) == "1" {
		return fmt.Errorf("%w: AppArmor restricts unprivileged user namespaces (Ubuntu 23.10+; fix: an AppArmor profile for prims with `userns,`, or sysctl -w kernel.apparmor_restrict_unprivileged_userns=0)", err)
	}
	if b, rerr := os.ReadFile("/proc/sys/kernel/unprivileged_userns_clone"); rerr == nil && strings.TrimSpace(string(b)) == "0" {
		return fmt.Errorf("%w: kernel.unprivileged_userns_clone is 0 (fix: sysctl -w kernel.unprivileged_userns_clone=1)", err)
	}
	return err
}

func initCommand() *exec.Cmd {
	return &exec.Cmd{
		Path: "/proc/self/exe",
		// "-test.run=^$" is a safety net: a test binary whose TestMain
		// forgot MaybeInit runs no tests instead of re-running itself.
		Args: []string{initArg0, "-test.run=^$"},
		Env:  append([]string{initEnv + "=1"}, raceInitEnv...),
		Dir:  "/",
	}
}

// nsAttr is the clone setup of a namespaces-tier init: new namespaces, the
// sandbox's single uid mapped to an unprivileged host uid, killed with its
// parent, in its own process group.
func nsAttr(network bool) *syscall.SysProcAttr {
	flags := uintptr(unix.CLONE_NEWUSER | unix.CLONE_NEWNS | unix.CLONE_NEWPID | unix.CLONE_NEWIPC | unix.CLONE_NEWUTS)
	if !network {
		flags |= unix.CLONE_NEWNET
	}
	uid, gid := os.Getuid(), os.Getgid()
	if os.Geteuid() == 0 {
		uid, gid = sandboxID, sandboxID
	}
	attr := &syscall.SysProcAttr{
		Cloneflags:                 flags,
		UidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: uid, Size: 1}},
		GidMappings:                []syscall.SysProcIDMap{{ContainerID: 0, HostID: gid, Size: 1}},
		GidMappingsEnableSetgroups: false,
		Setpgid:                    true,
		Pdeathsig:                  syscall.SIGKILL,
	}
	if os.Geteuid() == 0 {
		// A new user namespace leaves our host uid as it is: root, which
		// is not mapped inside and so would exec without capabilities.
		// Become the namespace's root (host 65534) before the exec.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	return attr
}

func (r *Runner) prepareSandbox(job Job, code, stdout, stderr *os.File, mem *memGuard) (*launch, error) {
	root := os.Geteuid() == 0
	dir, err := filepath.Abs(job.Dir)
	if err != nil {
		return nil, err
	}
	cfg := initConfig{
		Mode:    string(r.tier),
		Python:  job.Python,
		Args:    []string{job.Python, "-s", "-c", job.program()},
		Env:     childEnv(job),
		Dir:     dir,
		Home:    cmp.Or(job.Home, dir),
		Network: r.cfg.Network,
		Limits:  initLimits(r.limits),
		FDAttrs: job.cmd == nil,
		Zygote:  job.zygote,
	}
	if job.cmd != nil {
		cfg.Args, cfg.Network = job.cmd.Args, cfg.Network || job.cmd.Network
	}
	if os.Getenv(traceEnv) == "1" {
		cfg.TraceT0 = monotonic()
	}
	if root {
		if _, seen := r.shared.LoadOrStore(dir, true); !seen {
			if err := shareWorkspace(dir); err != nil {
				r.shared.Delete(dir)
				return nil, fmt.Errorf("hand the workspace to the sandbox user: %w", err)
			}
		}
		if r.tier == TierLandlock {
			cfg.DropTo = sandboxID
		}
	}
	cfg.Binds = sandboxBinds(job, dir)

	l := &launch{}
	var trees []*os.File
	if root && r.tier == TierNamespaces {
		// The sandbox's uid cannot traverse root's private directories
		// (the workspace, /root/.pyenv): clone each tree here, where we
		// can reach it, and let the init attach it (ARCHITECTURE.md pitfall 4).
		for i := range cfg.Binds {
			b := &cfg.Binds[i]
			f, err := openTree(b.Src, !b.Write)
			if err != nil {
				for _, t := range trees {
					t.Close()
				}
				return nil, err
			}
			b.Tree = true
			trees = append(trees, f)
		}
	}
	egressFile, err := r.attachEgress(job, &cfg, fdTrees+len(trees))
	if err != nil {
		for _, t := range trees {
			t.Close()
		}
		return nil, err
	}
	// The run's cgroup v1, for the init to join (joinCgroup): the next
	// descriptor after the trees and the egress socket.
	cgroupFile := mem.tasks
	if cgroupFile != nil {
		cfg.CgroupFD = fdTrees + len(trees)
		if egressFile != nil {
			cfg.CgroupFD++
		}
	}
	cfgR, cfgW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	repR, repW, err := os.Pipe()
	if err != nil {
		cfgR.Close()
		cfgW.Close()
		return nil, err
	}
	cfgJSON, _ := json.Marshal(cfg)
	l.config = func() {
		go func() {
			cfgW.Write(cfgJSON)
			cfgW.Close()
		}()
	}

	cmd := initCommand()
	cmd.Stdout = stdout
	cmd.Stderr = stderr
	cmd.ExtraFiles = append([]*os.File{code, cfgR, repW}, trees...)
	if egressFile != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, egressFile)
		trees = append(trees, egressFile) // released with them
	}
	if cgroupFile != nil {
		cmd.ExtraFiles = append(cmd.ExtraFiles, cgroupFile)
		trees = append(trees, cgroupFile)
		mem.tasks = nil // the launch releases it
	}
	if r.tier == TierNamespaces {
		cmd.SysProcAttr = nsAttr(cfg.Network)
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	}
	l.cmd = cmd
	l.status = repR
	l.release = append([]*os.File{cfgR, repW}, trees...)
	return l, nil
}

// sandboxBinds lists the host paths a run sees: the workspace read-write,
// then the interpreter's prefixes and the job's read-only paths, parents
// before children so that mounts/ lands on top of the workspace.
func sandboxBinds(job Job, dir string) []bind {
	binds := []bind{{Path: dir, Src: dir, Write: true}}
	seen := map[string]bool{dir: true}
	if job.cmd != nil {
		for _, p := range job.cmd.Writable {
			if src, err := filepath.EvalSymlinks(p); err == nil && !seen[p] {
				seen[p] = true
				binds = append(binds, bind{Path: p, Src: src, Write: true})
			}
		}
	}
	ro := slices.Clone(job.ReadOnly)
	// The interpreter's own prefix (a venv, or a pyenv version under
	// /root) is needed to run it at all.
	ro = append(ro, filepath.Dir(filepath.Dir(job.Python)))
	if real, err := filepath.EvalSymlinks(job.Python); err == nil {
		ro = append(ro, filepath.Dir(filepath.Dir(real)))
	}
	for _, p := range narrowHomes(ro) {
		p = filepath.Clean(p)
		if seen[p] || !filepath.IsAbs(p) || underSystemDir(p) {
			continue
		}
		seen[p] = true
		src, err := filepath.EvalSymlinks(p)
		if err != nil {
			continue // nothing there to see
		}
		binds = append(binds, bind{Path: p, Src: src})
	}
	slices.SortStableFunc(binds[1:], func(a, b bind) int { return strings.Count(a.Path, "/") - strings.Count(b.Path, "/") })
	return binds
}

// prefixDirs are what an interpreter needs of its prefix: its programs,
// its standard library and site-packages, shared libraries and headers,
// its certificates (conda), and a venv's marker.
var prefixDirs = []string{"bin", "lib", "lib64", "include", "ssl", "pyvenv.cfg"}

// narrowHomes replaces each path that is a home directory, or holds one,
// with the prefix directories under it: a Python installed with
// --prefix=$HOME (or linked from ~/bin) needs ~/bin and ~/lib, not ~/.ssh.
func narrowHomes(paths []string) []string {
	var homes []string
	if h, err := os.UserHomeDir(); err == nil && filepath.IsAbs(h) {
		homes = append(homes, filepath.Clean(h))
	}
	if u, err := user.Current(); err == nil && filepath.IsAbs(u.HomeDir) {
		homes = append(homes, filepath.Clean(u.HomeDir))
	}
	var out []string
	for _, p := range paths {
		p = filepath.Clean(p)
		holdsHome := false
		for _, h := range homes {
			if h == p || strings.HasPrefix(h, p+"/") {
				holdsHome = true
			}
		}
		if !holdsHome || p == "/" {
			out = append(out, p)
			continue
		}
		for _, d := range prefixDirs {
			out = append(out, filepath.Join(p, d))
		}
	}
	return out
}

func underSystemDir(p string) bool {
	for _, d := range systemDirs {
		if p == d || strings.HasPrefix(p, d+"/") {
			return true
		}
	}
	return p == "/"
}

// openTree clones the mount tree at path into a detached mount, made
// read-only (or just nosuid/nodev) recursively, as a descriptor the init can
// attach inside its namespace.
func openTree(path string, readOnly bool) (*os.File, error) {
	fd, err := unix.OpenTree(unix.AT_FDCWD, path, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_RECURSIVE)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: path, Err: err}
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(fd, "", unix.AT_EMPTY_PATH|unix.AT_RECURSIVE, &attr); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "mount_setattr", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}
