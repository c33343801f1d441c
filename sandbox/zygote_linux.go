package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/sys/unix"
)

// A zygote is a namespaces-tier sandbox for one workspace, interpreter and
// environment whose program (zygote.py) forks a fresh interpreter for each
// run instead of starting one: the interpreter's start, the init's and most
// of the sandbox's kernel work are paid once per session, not per run.
//
// Each run is still a process that never ran anyone's code before: a fork
// of the zygote, which has run nothing but the bootstrap. It gets its own
// mount, PID, IPC and cgroup namespaces, a fresh /tmp, /dev/shm and /proc,
// its own cgroup with the run's memory limit, its own Landlock domain, the
// same seccomp filter, capabilities dropped and limits set as a fresh run,
// all before its first line; the server kills it, and with it its whole PID
// namespace, like any run. What runs of one zygote share is what runs of
// one session shared before: the workspace, the read-only trees, and the
// sandbox's network namespace (loopback), where Landlock closes TCP without
// --network and scopes abstract sockets and signals to each run.
type zygote struct {
	r   *Runner
	key string
	job Job    // the template it was started for
	c   *child // the sandbox: its init and the zygote

	mu   sync.Mutex // one request at a time on conn
	conn *net.UnixConn

	// refs counts runs being forked or in flight; a zygote that is
	// retired (stale, idle) is stopped when the last one ends.
	rmu      sync.Mutex
	refs     int
	retired  bool
	lastUsed time.Time
	spare    *zfork // the next run's PID 1, forked ahead (prefork)
	forking  bool   // a prefork is under way
	stopOnce sync.Once
	errTail  syncTail // the zygote's own stderr, for diagnostics
}

// zygoteReplyWait bounds how long a fork may take to say hello.
const zygoteReplyWait = 30 * time.Second

// openZygote starts a zygote sandbox for job's interpreter, environment and
// workspace.
func (r *Runner) openZygote(job Job, key string) (*zygote, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "zygote")
	theirs := os.NewFile(uintptr(fds[1]), "zygote-peer")
	job.script, job.ctl, job.zygote = zygoteProgram, theirs, true
	job.Code, job.Stdout, job.Stderr = "", nil, nil
	c, err := r.start(job)
	theirs.Close()
	if err != nil {
		ours.Close()
		return nil, err
	}
	fc, err := net.FileConn(ours)
	ours.Close()
	if err != nil {
		c.kill()
		return nil, err
	}
	z := &zygote{r: r, key: key, job: job, c: c, conn: fc.(*net.UnixConn), lastUsed: time.Now()}
	// The zygote's own cgroup holds the zygote and each run's first
	// moments; an OOM kill there must not take it all at once.
	if c.mem.mode == MemoryCgroupV2 && c.mem.dir != "" {
		_ = os.WriteFile(filepath.Join(c.mem.dir, "memory.oom.group"), []byte("0"), 0)
	}
	go func() { _ = pump(c.outR, io.Discard) }()
	go func() { _ = pump(c.errR, &z.errTail) }()
	var hello struct {
		PID int `json:"pid"`
	}
	if _, err := recvMsg(z.conn, &hello, time.Now().Add(zygoteReplyWait)); err != nil || hello.PID == 0 {
		z.stop()
		return nil, fmt.Errorf("%w: the zygote did not start: %v %s", ErrStart, err, z.errTail.String())
	}
	_ = z.conn.SetReadDeadline(time.Time{})
	return z, nil
}

// alive reports whether the zygote can still fork runs.
func (z *zygote) alive() bool { return !z.c.dead() }

// acquire counts a run; false when the zygote is retired.
func (z *zygote) acquire() bool {
	z.rmu.Lock()
	defer z.rmu.Unlock()
	if z.retired {
		return false
	}
	z.refs++
	z.lastUsed = time.Now()
	return true
}

func (z *zygote) release() {
	z.rmu.Lock()
	z.refs--
	stop := z.retired && z.refs == 0
	z.lastUsed = time.Now()
	z.rmu.Unlock()
	if stop {
		z.stop()
	}
}

// retire stops the zygote once no run uses it (now if none does).
func (z *zygote) retire() {
	z.rmu.Lock()
	z.retired = true
	stop := z.refs == 0
	z.rmu.Unlock()
	if stop {
		z.stop()
	}
}

// idle reports whether nothing used the zygote for d.
func (z *zygote) idle(d time.Duration) bool {
	z.rmu.Lock()
	defer z.rmu.Unlock()
	return z.refs == 0 && time.Since(z.lastUsed) > d
}

// stop ends the zygote's sandbox and every run in it.
func (z *zygote) stop() {
	z.stopOnce.Do(func() {
		z.rmu.Lock()
		z.retired = true // a prefork in flight discards what it made
		f := z.spare
		z.spare = nil
		z.rmu.Unlock()
		if f != nil {
			f.discard()
		}
		z.conn.Close()
		z.c.kill()
	})
}

// zfork is a run's PID 1 forked ahead of its run: in its namespaces, with
// its fresh /tmp and /proc, in the run's cgroup, waiting for the run's
// streams and code ("go"). Nothing of a run has happened in it yet.
type zfork struct {
	run   *net.UnixConn
	pid   int // host pid, from the kernel
	pidfd int
	mem   *memGuard
}

// kill9 kills the fork and everything it started.
func (f *zfork) kill9() { _ = unix.PidfdSendSignal(f.pidfd, unix.SIGKILL, nil, 0) }

// discard kills an unused fork and releases what it holds.
func (f *zfork) discard() {
	f.kill9()
	f.run.Close()
	unix.Close(f.pidfd)
	f.mem.remove()
}

// exited reports whether the fork is gone (its pidfd is readable then).
func (f *zfork) exited() bool {
	fds := []unix.PollFd{{Fd: int32(f.pidfd), Events: unix.POLLIN}}
	n, err := unix.Poll(fds, 0)
	return err == nil && n > 0
}

// fork asks the zygote for a run's PID 1 and readies it: placed in a cgroup
// of its own with the run's memory limit. The cgroup move is the slow part
// (milliseconds: the kernel waits for RCU), which is why a fork is made
// ahead of the run that takes it.
func (z *zygote) fork() (*zfork, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	// The run's hello carries its pid as the kernel gives it, in this
	// process's PID namespace: nothing the sandbox says is taken for it.
	if err := unix.SetsockoptInt(fds[0], unix.SOL_SOCKET, unix.SO_PASSCRED, 1); err != nil {
		unix.Close(fds[0])
		unix.Close(fds[1])
		return nil, os.NewSyscallError("SO_PASSCRED", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "zygote-run")
	theirs := os.NewFile(uintptr(fds[1]), "zygote-run-peer")
	z.mu.Lock()
	// A zygote that stopped reading must not hold every later run here.
	_ = z.conn.SetWriteDeadline(time.Now().Add(zygoteReplyWait))
	err = sendMsg(z.conn, map[string]string{"op": "run"}, []*os.File{theirs})
	z.mu.Unlock()
	theirs.Close()
	fc, ferr := net.FileConn(ours)
	ours.Close()
	if err != nil || ferr != nil {
		if fc != nil {
			fc.Close()
		}
		return nil, fmt.Errorf("%w: the zygote: %w", ErrStart, errors.Join(err, ferr))
	}
	run := fc.(*net.UnixConn)
	var hello struct {
		OK  bool   `json:"ok"`
		Err string `json:"err"`
	}
	pid, err := recvMsg(run, &hello, time.Now().Add(zygoteReplyWait))
	switch {
	case err != nil:
		err = fmt.Errorf("the zygote's fork: %w %s", err, z.errTail.String())
	case hello.Err != "":
		err = errors.New(hello.Err)
	case !hello.OK || pid <= 0:
		err = errors.New("the zygote's fork did not say who it is")
	}
	if err != nil {
		run.Close()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	// The run's PID 1 is the zygote's child, not ours: once it is gone
	// its pid may name another process, so it is signalled through a
	// pidfd taken while it waits for "go".
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		run.Close()
		return nil, fmt.Errorf("%w: %w", ErrStart, os.NewSyscallError("pidfd_open", err))
	}
	f := &zfork{run: run, pid: pid, pidfd: pidfd, mem: z.r.newMemGuard()}
	if err := f.mem.move(pid); err != nil {
		z.r.log.Warn("could not place the run in its memory cgroup; counting its processes instead", "err", err)
		f.mem.remove()
		f.mem.mode = MemoryAccounting
	}
	if err := sendMsg(run, map[string]string{"op": "placed"}, nil); err != nil {
		f.discard()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	return f, nil
}

// takeSpare returns the fork made ahead, if it is still alive, and starts
// making the next one.
func (z *zygote) takeSpare() *zfork {
	z.rmu.Lock()
	f := z.spare
	z.spare = nil
	z.rmu.Unlock()
	if f != nil && f.exited() {
		f.discard()
		f = nil
	}
	return f
}

// prefork makes the fork the next run takes, in the background, unless one
// is waiting or being made; it holds a ref of its own while it works.
func (z *zygote) prefork() {
	z.rmu.Lock()
	if z.spare != nil || z.forking || z.retired {
		z.rmu.Unlock()
		return
	}
	z.forking = true
	z.refs++
	z.rmu.Unlock()
	go func() {
		f, err := z.fork()
		z.rmu.Lock()
		z.forking = false
		keep := err == nil && !z.retired && z.spare == nil
		if keep {
			z.spare = f
		}
		z.rmu.Unlock()
		if err == nil && !keep {
			f.discard()
		}
		z.release()
	}()
}

// start hands a fork (made ahead, or now) the run's streams and code pipe:
// a child whose program waits for its code on the pipe, as a started
// sandbox's does. The caller holds a ref.
func (z *zygote) start(job Job) (*child, error) {
	f := z.takeSpare()
	if f == nil {
		var err error
		if f, err = z.fork(); err != nil {
			return nil, err
		}
	}
	z.prefork()
	var files []*os.File
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	pipe := func() (*os.File, *os.File, error) {
		rd, wr, err := os.Pipe()
		if err == nil {
			files = append(files, rd, wr)
		}
		return rd, wr, err
	}
	outR, outW, err1 := pipe()
	errR, errW, err2 := pipe()
	codeR, codeW, err3 := pipe()
	if err := errors.Join(err1, err2, err3); err != nil {
		closeAll()
		f.discard()
		return nil, err
	}
	err := sendMsg(f.run, map[string]string{"op": "go"}, []*os.File{outW, errW, codeR})
	outW.Close()
	errW.Close()
	codeR.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		codeW.Close()
		f.discard()
		return nil, fmt.Errorf("%w: %w", ErrStart, err)
	}
	c := &child{pid: f.pid, kill9: f.kill9, codeW: codeW, outR: outR, errR: errR, waitDone: make(chan struct{}), mem: f.mem, warm: true}
	var st childStatus
	var end error
	run := f.run
	go func() {
		// The run's one report, then EOF when its PID 1 is gone: it
		// holds the only copy of the socket.
		var rep struct {
			Status *int   `json:"status"`
			CPU    int64  `json:"cpu_ns"`
			Err    string `json:"err"`
		}
		if _, err := recvMsg(run, &rep, time.Time{}); err == nil {
			switch {
			case rep.Err != "":
				end = errors.New(rep.Err)
			case rep.Status != nil:
				st = childStatus{ws: rawWaitStatus(*rep.Status), cpu: time.Duration(rep.CPU)}
			}
			var more [1]byte
			_, _ = run.Read(more[:])
		}
		if st.ws == nil && end == nil {
			// Killed before it could report (a limit, a timeout,
			// the zygote stopped): as the init's wait would see it.
			st.ws = rawWaitStatus(int(unix.SIGKILL))
		}
		run.Close()
		close(c.waitDone)
	}()
	// The pidfd outlives the run's end, for the kills that come after it
	// (execute kills what is left once the program is done), until the
	// caller has its status: finish is the child's last step.
	var closeOnce sync.Once
	c.end = func() (childStatus, error) {
		<-c.waitDone
		closeOnce.Do(func() { unix.Close(f.pidfd) })
		return st, end
	}
	return c, nil
}

// move puts a zygote's run, born in the zygote's cgroup, into the run's
// cgroup before any of its code runs.
func (g *memGuard) move(pid int) error {
	g.pid = pid
	if g.dir == "" {
		return nil
	}
	if g.tasks != nil {
		g.tasks.Close()
		g.tasks = nil
	}
	return os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// zygotes are a runner's zygote sandboxes, one per warm key.
type zygotes struct {
	mu     sync.Mutex
	m      map[string]*zygote
	failed map[string]int // consecutive failures to start or fork, per key
	closed bool
	flight singleflight.Group
	once   sync.Once // the janitor
}

// maxZygoteFailures is how many times in a row a key's zygote may fail
// before its runs go back to starting their sandbox anew.
const maxZygoteFailures = 3

// usesZygote reports whether job's runs fork from a zygote once it is
// started: Python runs in the namespaces tier of a runner that keeps
// sandboxes warm (Config.Warm), unless Config.NoZygote. The zygote takes
// the place of the warm pool's waiting sandboxes.
func (r *Runner) usesZygote(job Job) bool {
	return r.tier == TierNamespaces && r.cfg.Warm > 0 && !r.cfg.NoZygote &&
		job.cmd == nil && job.script == "" && job.ctl == nil
}

// liveZygote returns key's zygote with a ref the caller releases, or nil
// when there is none ready.
func (r *Runner) liveZygote(key string) *zygote {
	zs := &r.zygotes
	zs.mu.Lock()
	z := zs.m[key]
	zs.mu.Unlock()
	if z == nil {
		return nil
	}
	if z.alive() && z.acquire() {
		return z
	}
	if !z.alive() {
		r.dropZygote(z, true)
	}
	return nil
}

// startZygote starts key's zygote unless it is running, being started, or
// failed too often.
func (r *Runner) startZygote(key string, job Job) {
	zs := &r.zygotes
	zs.mu.Lock()
	z := zs.m[key]
	stop := zs.closed || zs.failed[key] >= maxZygoteFailures || (z != nil && z.alive())
	zs.mu.Unlock()
	if stop {
		return
	}
	if z != nil {
		r.dropZygote(z, true)
	}
	_, _, _ = zs.flight.Do(key, func() (any, error) {
		r.openZygoteFor(key, job)
		return nil, nil
	})
}

// openZygoteFor starts key's zygote and registers it, retiring the zygotes
// of the same paths (an environment rebuilt under them).
func (r *Runner) openZygoteFor(key string, job Job) {
	zs := &r.zygotes
	z, err := r.openZygote(job, key)
	zs.mu.Lock()
	defer zs.mu.Unlock()
	if err != nil {
		r.log.Warn("the zygote did not start; runs start their sandbox anew", "err", err)
		if zs.failed == nil {
			zs.failed = map[string]int{}
		}
		zs.failed[key]++
		return
	}
	if zs.closed {
		go z.stop()
		return
	}
	if zs.m == nil {
		zs.m = map[string]*zygote{}
	}
	for k, old := range zs.m {
		if samePaths(old.job, job) {
			delete(zs.m, k)
			go old.retire()
		}
	}
	zs.m[key] = z
	z.prefork()
	zs.once.Do(func() { go r.zygoteJanitor() })
}

// dropZygote unregisters z; dead counts against its key.
func (r *Runner) dropZygote(z *zygote, dead bool) {
	zs := &r.zygotes
	zs.mu.Lock()
	if zs.m[z.key] == z {
		delete(zs.m, z.key)
		if dead {
			if zs.failed == nil {
				zs.failed = map[string]int{}
			}
			zs.failed[z.key]++
		}
	}
	zs.mu.Unlock()
	z.retire()
}

// runZygote runs job forked from its zygote; ok is false when there is no
// zygote ready for it (then nothing was started).
func (r *Runner) runZygote(ctx context.Context, job Job, key string) (res Result, ok bool, err error) {
	if !r.usesZygote(job) {
		return Result{}, false, nil
	}
	z := r.liveZygote(key)
	if z == nil {
		return Result{}, false, nil
	}
	defer z.release()
	c, err := z.start(job)
	if err != nil {
		r.log.Warn("the zygote could not fork a run; starting it anew", "err", err)
		r.dropZygote(z, true)
		return Result{}, false, nil
	}
	r.zygotes.mu.Lock()
	delete(r.zygotes.failed, key)
	r.zygotes.mu.Unlock()
	res, err = r.execute(ctx, c, job)
	return res, true, err
}

// prewarmZygote starts job's zygote in the background; false when its runs
// do not fork from one.
func (r *Runner) prewarmZygote(job Job, key string) bool {
	if !r.usesZygote(job) {
		return false
	}
	go r.startZygote(key, job)
	return true
}

// forgetZygotes stops the zygotes of workspace dir, and their runs.
func (r *Runner) forgetZygotes(dir string) {
	zs := &r.zygotes
	zs.mu.Lock()
	var stop []*zygote
	for k, z := range zs.m {
		if z.job.Dir == dir {
			delete(zs.m, k)
			delete(zs.failed, k)
			stop = append(stop, z)
		}
	}
	zs.mu.Unlock()
	for _, z := range stop {
		z.stop()
	}
}

// closeZygotes stops every zygote; none starts afterwards.
func (r *Runner) closeZygotes() {
	zs := &r.zygotes
	zs.mu.Lock()
	zs.closed = true
	all := zs.m
	zs.m = nil
	zs.mu.Unlock()
	for _, z := range all {
		z.stop()
	}
}

// zygoteJanitor retires zygotes nobody used for the warm pool's idle time.
func (r *Runner) zygoteJanitor() {
	idle := r.pool.idle
	t := time.NewTicker(max(idle/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-r.pool.stop:
			return
		case <-t.C:
		}
		zs := &r.zygotes
		zs.mu.Lock()
		var old []*zygote
		for k, z := range zs.m {
			if z.idle(idle) || !z.alive() {
				delete(zs.m, k)
				old = append(old, z)
			}
		}
		zs.mu.Unlock()
		for _, z := range old {
			z.retire()
		}
	}
}

// zygoteStats counts the zygotes and their resident memory.
func (r *Runner) zygoteStats() (n int, rss int64) {
	zs := &r.zygotes
	zs.mu.Lock()
	var pids []int
	for _, z := range zs.m {
		pids = append(pids, z.c.pid)
	}
	zs.mu.Unlock()
	for _, pid := range pids {
		rss += treeRSS(pid)
	}
	return len(pids), rss
}
