package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// StateHost is one sandbox that keeps named Python states alive between
// calls (stateserver.py). It has the tier, limits and workspace view of a
// fresh run of the job it was opened with; its memory limit bounds all its
// states and the call running in it together. Calls run one at a time.
//
//	h, err := r.OpenStates(sandbox.Job{Python: py, Dir: ws})
//	err = h.New(ctx, "df", "")
//	res, err := h.Run(ctx, "df", sandbox.Job{Code: "import pandas as pd; df = pd.read_csv('x.csv')"})
//	res, err = h.Run(ctx, "df", sandbox.Job{Code: "print(len(df))"}) // df is still there
//	h.Close()
type StateHost struct {
	r    *Runner
	job  Job
	c    *child
	conn *net.UnixConn

	// mu serializes what talks to the state server (New, Drop, Run):
	// one at a time. hmu guards the fields below it, which Memory, Has
	// and Close read without waiting for a call to end.
	mu      sync.Mutex
	hmu     sync.Mutex
	holders map[string]int // state name -> host pid of its interpreter
	broken  error          // set once the sandbox is unusable
	closed  bool

	anchor   int // host pid of the state server
	killOnce sync.Once
	aerr     syncTail // the state server's own stderr, for diagnostics
}

// stateReplyWait bounds how long the state server may take to answer
// anything but a call's end: a fork of a large state takes milliseconds.
const stateReplyWait = 30 * time.Second

// OpenStates starts a sandbox for states of job's interpreter, environment
// (ReadOnly) and workspace (Dir). It holds no state until New.
func (r *Runner) OpenStates(job Job) (*StateHost, error) {
	return r.openStates(job, r.tier == TierNamespaces)
}

// openStates opens a host whose processes are not dumpable when private
// (see stateserver.py); only the escape test's control opens one without.
func (r *Runner) openStates(job Job, private bool) (*StateHost, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socketpair", err)
	}
	ours := os.NewFile(uintptr(fds[0]), "state-server")
	theirs := os.NewFile(uintptr(fds[1]), "state-server-peer")
	job, _ = r.warmJob(job)
	if private {
		job.Env = append(slices.Clip(job.Env), "PRIMS_STATE_PRIVATE=1")
	}
	job.script, job.ctl = stateProgram, theirs
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
	h := &StateHost{r: r, job: job, c: c, conn: fc.(*net.UnixConn), holders: map[string]int{}}
	// An OOM kill must take the call that went over, not every state:
	// the call's fork gets the highest OOM score (prepareCall), and the
	// kernel's group kill is off for this sandbox.
	if c.mem.mode == MemoryCgroupV2 && c.mem.dir != "" {
		_ = os.WriteFile(filepath.Join(c.mem.dir, "memory.oom.group"), []byte("0"), 0)
	}
	go func() { _ = pump(c.outR, io.Discard) }()
	go func() { _ = pump(c.errR, &h.aerr) }()
	var hello struct {
		PID int `json:"pid"`
	}
	if err := h.recv(&hello, time.Now().Add(stateReplyWait)); err != nil {
		h.Close()
		return nil, fmt.Errorf("%w: the state server did not start: %w", ErrStart, err)
	}
	h.anchor = h.hostPID(hello.PID)
	return h, nil
}

// Job is the job the host was opened with (its interpreter, workspace and
// read-only paths).
func (h *StateHost) Job() Job { return h.job }

// Tier is the isolation tier of the host's sandbox.
func (h *StateHost) Tier() Tier { return h.r.tier }

// New makes a state called name: an empty interpreter, or with from a
// copy-on-write copy of that state as it is now.
func (h *StateHost) New(ctx context.Context, name, from string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := h.usable(); err != nil {
		return err
	}
	if _, ok := h.holder(name); ok {
		return fmt.Errorf("state %q exists already", name)
	}
	if from != "" {
		if _, ok := h.holder(from); !ok {
			return fmt.Errorf("%w: %q", ErrNoState, from)
		}
	}
	var rep struct {
		PID  int    `json:"pid"`
		Lost bool   `json:"lost"`
		Err  string `json:"err"`
	}
	if err := h.call(map[string]any{"op": "new", "name": name, "from": from}, nil, &rep); err != nil {
		return err
	}
	switch {
	case rep.Err != "":
		return fmt.Errorf("make state %q: %s", name, rep.Err)
	case rep.Lost:
		h.setHolder(from, 0)
		return fmt.Errorf("copy state %q: %w", from, ErrStateLost)
	}
	h.setHolder(name, h.hostPID(rep.PID))
	return nil
}

// Drop ends a state and frees what it held.
func (h *StateHost) Drop(name string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.holder(name); !ok {
		return fmt.Errorf("%w: %q", ErrNoState, name)
	}
	h.setHolder(name, 0)
	if h.usable() != nil {
		return nil
	}
	var rep struct{}
	return h.call(map[string]any{"op": "drop", "name": name}, nil, &rep)
}

// Has reports whether a state called name is alive here.
func (h *StateHost) Has(name string) bool {
	_, ok := h.holder(name)
	return ok && h.usable() == nil
}

// Memory is the memory a state holds: the proportional set size of its
// interpreter, so pages it shares with copies of it count once in all.
func (h *StateHost) Memory(name string) int64 {
	pid, ok := h.holder(name)
	if !ok {
		return 0
	}
	return proportionalMemory(pid)
}

// Close ends every state and the sandbox. A call in flight is killed at
// once; Close then waits for it to return.
func (h *StateHost) Close() {
	h.hmu.Lock()
	h.closed = true
	h.hmu.Unlock()
	h.conn.Close()
	killTree(h.c.pid)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.kill()
}

// kill releases the sandbox; the caller holds mu, so no call is using it.
func (h *StateHost) kill() {
	h.killOnce.Do(func() {
		h.conn.Close()
		h.c.kill()
	})
}

func (h *StateHost) holder(name string) (int, bool) {
	h.hmu.Lock()
	defer h.hmu.Unlock()
	pid, ok := h.holders[name]
	return pid, ok
}

// setHolder records name's interpreter; pid 0 forgets the state.
func (h *StateHost) setHolder(name string, pid int) {
	h.hmu.Lock()
	defer h.hmu.Unlock()
	if pid == 0 {
		delete(h.holders, name)
		return
	}
	h.holders[name] = pid
}

func (h *StateHost) usable() error {
	h.hmu.Lock()
	defer h.hmu.Unlock()
	if h.broken != nil {
		return h.broken
	}
	if h.closed {
		return errors.New("the states' sandbox is closed")
	}
	return nil
}

// fail marks the host unusable: its sandbox is killed and every state in
// it is lost.
func (h *StateHost) fail(err error) error {
	h.hmu.Lock()
	if h.broken == nil {
		if h.closed {
			err = errors.New("the states' sandbox was closed")
		}
		h.broken = fmt.Errorf("%w: %w", ErrStateLost, err)
		h.closed = true
		h.holders = map[string]int{}
		if tail := strings.TrimSpace(h.aerr.String()); tail != "" {
			h.r.log.Warn("state server failed", "err", err, "stderr", tail)
		}
	}
	broken := h.broken
	h.hmu.Unlock()
	h.kill()
	return broken
}

// Run runs job's program on the state called name, in a fork of it, and
// waits for it and everything it started. If the program ends well, the
// fork is the state from now on; otherwise the state is as it was. job's
// Code, Filename, Stdout, Stderr and Timeout are used; the rest is the
// host's. Like Runner.Run, the error is non-nil only when the program could
// not be started (or the state is gone).
func (h *StateHost) Run(ctx context.Context, name string, job Job) (StateResult, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	res := StateResult{Result: Result{Tier: h.r.tier, Memory: h.c.mem.mode}}
	if err := h.usable(); err != nil {
		return res, err
	}
	if _, ok := h.holder(name); !ok {
		return res, fmt.Errorf("%w: %q", ErrNoState, name)
	}
	c, err := h.startCall(name, job, &res)
	if c == nil || err != nil {
		return res, err
	}
	defer c.outR.Close()
	defer c.errR.Close()
	end, err := h.watchCall(ctx, c, job, &res)
	if err != nil {
		return res, err
	}
	return h.endCall(name, c, end, res)
}

// stateCall is a call's fork in flight: its pids and its output.
type stateCall struct {
	pid        int // in the sandbox
	hostPID    int
	outR, errR *os.File
	tail       *tailBuffer   // the end of its stderr, for limitHit
	pumps      chan struct{} // closed when both streams are copied
}

// callEnding is the state server's report of a call's end.
type callEnding struct {
	Status    *int     `json:"status"`
	CPUNanos  int64    `json:"cpu_ns"`
	Committed bool     `json:"committed"`
	PID       int      `json:"pid"`
	Threads   []string `json:"threads"`
	Files     int      `json:"files"`
	Sockets   int      `json:"sockets"`
	Lost      bool     `json:"lost"`
	Err       string   `json:"err"`
}

// startCall has the state server fork the state called name for job, with
// output pipes of the call's own, and starts copying them. It returns nil
// when the fork was not made (res says why when it is a limit).
func (h *StateHost) startCall(name string, job Job, res *StateResult) (*stateCall, error) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return nil, err
	}
	msg := map[string]any{"op": "run", "name": name, "code": job.Code, "filename": job.Filename}
	var started struct {
		PID     int    `json:"pid"`
		Lost    bool   `json:"lost"`
		Err     string `json:"err"`
		ForkErr string `json:"forkerr"`
		Errno   int    `json:"errno"`
	}
	err = h.call(msg, []*os.File{outW, errW}, &started)
	outW.Close()
	errW.Close()
	if err == nil {
		switch {
		case started.Err != "":
			err = fmt.Errorf("%w: %s", ErrStart, started.Err)
		case started.Lost:
			h.setHolder(name, 0)
			err = fmt.Errorf("state %q: %w", name, ErrStateLost)
		case started.ForkErr != "":
			// The state could not be forked: the call never ran, and
			// the state is as it was.
			fmt.Fprintf(orDiscard(job.Stderr), "PRIMS: the state could not be copied for this call: %s\n", started.ForkErr)
			res.ExitCode = -1
			switch syscall.Errno(started.Errno) {
			case syscall.EAGAIN:
				res.Limit = LimitMaxProcs
			case syscall.ENOMEM:
				res.Limit = LimitMemory
			}
		}
	}
	if err != nil || started.ForkErr != "" {
		outR.Close()
		errR.Close()
		return nil, err
	}
	c := &stateCall{pid: started.PID, hostPID: h.hostPID(started.PID), outR: outR, errR: errR, tail: &tailBuffer{}, pumps: make(chan struct{})}
	// The kernel's OOM killer, when the sandbox's memory runs out, picks
	// the call, never a state: raising one's own score is always allowed
	// (Landlock keeps the program from writing /proc, so the server does).
	if c.hostPID > 0 {
		_ = os.WriteFile("/proc/"+strconv.Itoa(c.hostPID)+"/oom_score_adj", []byte("1000"), 0)
	}
	go func() {
		var wg sync.WaitGroup
		wg.Add(2)
		go func() { defer wg.Done(); _ = pump(outR, job.Stdout) }()
		go func() { defer wg.Done(); _ = pump(errR, io.MultiWriter(c.tail, orDiscard(job.Stderr))) }()
		wg.Wait()
		close(c.pumps)
	}()
	return c, nil
}

// watchCall lets the call go and waits for its end, killing it when a
// limit fires, it times out or ctx is cancelled (res says which). An error
// means the host is lost.
func (h *StateHost) watchCall(ctx context.Context, c *stateCall, job Job, res *StateResult) (callEnding, error) {
	var end callEnding
	timeout := job.Timeout
	if timeout <= 0 {
		timeout = h.r.cfg.DefaultTimeout
	}
	runCtx, cancel := context.WithTimeoutCause(ctx, timeout, errTimeout)
	defer cancel()
	quotaHit := make(chan struct{})
	stopQuota := watchQuota(Job{Dir: h.job.Dir, QuotaUsed: job.QuotaUsed}, h.c.pid, h.r.limits.WorkspaceQuota, quotaHit)
	defer stopQuota()
	memHit := make(chan struct{})
	h.c.mem.arm()
	stopMem := h.c.mem.watch(memHit)
	defer stopMem()
	start := time.Now()
	defer func() { res.Duration = time.Since(start) }()
	if err := h.send(map[string]any{"op": "go"}, nil); err != nil {
		return end, h.fail(err)
	}
	ended := make(chan error, 1)
	go func() { ended <- h.recv(&end, time.Time{}) }()
	var endErr error
	select {
	case endErr = <-ended:
	case <-quotaHit:
		res.Limit = LimitWorkspaceQuota
	case <-memHit:
		res.Limit = LimitMemory
	case <-runCtx.Done():
		if errors.Is(context.Cause(runCtx), errTimeout) {
			res.TimedOut = true
			res.Limit = LimitWallTime
		} else {
			res.Cancelled = true
		}
	}
	if res.Limit != "" || res.Cancelled {
		h.killCall()
		select {
		case endErr = <-ended:
		case <-time.After(stateReplyWait):
			endErr = errors.New("no answer after the call was killed")
		}
	}
	if endErr != nil {
		return end, h.fail(endErr)
	}
	return end, nil
}

// endCall makes the fork the state if the call committed, kills what the
// call left, and reads its ending into res.
func (h *StateHost) endCall(name string, c *stateCall, end callEnding, res StateResult) (StateResult, error) {
	if end.Committed {
		// The fork's host pid was looked up while its parent lived: now
		// that parent is being killed, and the fork may be between it and
		// its new parent, out of any tree a walk of /proc finds.
		callPID := c.hostPID
		if end.PID != c.pid {
			callPID = h.hostPID(end.PID)
		}
		h.setHolder(name, callPID)
	}
	// Whatever the call started dies with it, even when it ended well: a
	// state is an interpreter, not the processes it ran.
	h.killCall()
	select {
	case <-c.pumps:
	case <-time.After(2 * time.Second):
		h.r.log.Warn("a state call's output pipes are still open after it ended; closing them")
		c.outR.SetReadDeadline(time.Now())
		c.errR.SetReadDeadline(time.Now())
		<-c.pumps
	}
	switch {
	case end.Err != "":
		return res, h.fail(errors.New(end.Err))
	case end.Lost:
		h.setHolder(name, 0)
		return res, fmt.Errorf("state %q: %w", name, ErrStateLost)
	case end.Committed:
		res.Committed = true
		res.Threads, res.OpenFiles, res.Sockets = end.Threads, end.Files, end.Sockets
		return res, nil
	}
	st := childStatus{cpu: time.Duration(end.CPUNanos)}
	if end.Status != nil {
		st.ws = rawWaitStatus(*end.Status)
	}
	res.ExitCode, res.Signal = exitStatus(st.ws)
	if res.Limit == "" && res.ExitCode != 0 && !res.Cancelled && h.c.mem.exceeded() {
		res.Limit = LimitMemory
	}
	if res.Limit == "" {
		res.Limit = h.r.limitHit(res.Result, st, c.tail.String())
	}
	return res, nil
}

// killCall kills every process of the sandbox but the state server and
// the states' interpreters: the call's fork and whatever it started,
// wherever they were reparented. Killed processes cannot fork again, so
// a few passes reach a fork bomb's last generation.
func (h *StateHost) killCall() {
	keep := map[int]bool{h.anchor: true, h.c.pid: true}
	h.hmu.Lock()
	for _, p := range h.holders {
		keep[p] = true
	}
	h.hmu.Unlock()
	// An orphan being reparented can be missing from one walk: stop
	// after two in a row find nothing left.
	clean := 0
	for range 200 {
		n := 0
		for _, p := range h.procs() {
			if keep[p] || zombie(p) {
				continue
			}
			_ = syscall.Kill(p, syscall.SIGKILL)
			n++
		}
		if n == 0 {
			if clean++; clean == 2 {
				return
			}
		} else {
			clean = 0
		}
		time.Sleep(time.Millisecond)
	}
}

// procs lists the processes of the sandbox: the init's descendants (an
// orphan goes to the init, PID 1 of the namespace or a child subreaper in
// the landlock tier), and without an init the program's process group.
func (h *StateHost) procs() []int {
	root := h.c.pid
	seen := map[int]bool{root: true}
	queue := []int{root}
	if h.r.tier == TierNone {
		queue = append(queue, groupMembers(root)...)
	}
	var out []int
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range append([]int{p}, childrenOf(p)...) {
			if !seen[c] {
				seen[c] = true
				out = append(out, c)
				queue = append(queue, c)
			}
		}
	}
	return out
}

// hostPID maps a pid as the sandbox sees it to the host's. Only the
// namespaces tier has a PID namespace of its own.
func (h *StateHost) hostPID(pid int) int {
	if h.r.tier != TierNamespaces || pid <= 0 {
		return pid
	}
	for _, p := range h.procs() {
		if nsPID(p) == pid {
			return p
		}
	}
	return 0
}

// nsPID is pid's number in its innermost PID namespace (the last field of
// NSpid in /proc/PID/status).
func nsPID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "NSpid:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				return 0
			}
			n, _ := strconv.Atoi(f[len(f)-1])
			return n
		}
	}
	return 0
}

// zombie reports whether pid has exited and waits for its parent.
func zombie(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return true // gone
	}
	i := strings.LastIndexByte(string(b), ')')
	return i < 0 || i+2 >= len(b) || b[i+2] == 'Z' || b[i+2] == 'X'
}

// call sends msg and reads one reply into rep.
func (h *StateHost) call(msg any, fds []*os.File, rep any) error {
	if err := h.send(msg, fds); err != nil {
		return h.fail(err)
	}
	if err := h.recv(rep, time.Now().Add(stateReplyWait)); err != nil {
		return h.fail(err)
	}
	return nil
}

// send writes one message: a little-endian length, then JSON; fds ride on
// the length.
func (h *StateHost) send(msg any, fds []*os.File) error {
	if err := sendMsg(h.conn, msg, fds); err != nil {
		return fmt.Errorf("send to the state server: %w", err)
	}
	return nil
}

func (h *StateHost) recv(rep any, deadline time.Time) error {
	if _, err := recvMsg(h.conn, rep, deadline); err != nil {
		return fmt.Errorf("read from the state server: %w", err)
	}
	return nil
}

// syncTail is a tailBuffer written by one goroutine and read by another.
type syncTail struct {
	mu sync.Mutex
	t  tailBuffer
}

func (s *syncTail) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.Write(p)
}

func (s *syncTail) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.t.String()
}
