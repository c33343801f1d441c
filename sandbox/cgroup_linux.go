package sandbox

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The memory limit bounds a whole run, every process it starts together,
// not each process alone (RLIMIT_DATA, which stays on as well, is per
// process: five processes could each take the limit). Where the server can
// get a cgroup with the memory controller, each run gets its own, and the
// kernel does the counting; elsewhere the server adds up the memory of the
// run's processes while it runs and kills the run past the limit.

// cgroupHost is where this server can make a memory cgroup per run.
type cgroupHost struct {
	mode MemoryEnforcement // MemoryCgroupV2 or MemoryCgroupV1
	dir  string            // the cgroup directory run cgroups are made in
}

var (
	cgroupOnce = sync.OnceValues(findCgroup)
	cgroupSeq  atomic.Uint64
)

// findCgroup looks for a place to make run cgroups: a cgroup v2 subtree
// of the server's own cgroup with the memory controller enabled for its
// children (a delegated subtree), else, as root, the server's own cgroup
// in the v1 memory hierarchy. The error says why neither works.
func findCgroup() (cgroupHost, error) {
	v2, err2 := findCgroupV2()
	if err2 == nil {
		return v2, nil
	}
	v1, err1 := findCgroupV1()
	if err1 == nil {
		return v1, nil
	}
	return cgroupHost{}, fmt.Errorf("cgroup v2: %w; cgroup v1: %w", err2, err1)
}

// cgroupMount is one mounted cgroup hierarchy: where it is mounted, and the
// cgroup path that mount shows as its root.
type cgroupMount struct{ point, root string }

// cgroupMounts lists mounted hierarchies of fstype ("cgroup2" or "cgroup")
// whose super options include opt ("" for any).
func cgroupMounts(fstype, opt string) []cgroupMount {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []cgroupMount
	for _, line := range strings.Split(string(b), "\n") {
		pre, post, ok := strings.Cut(line, " - ")
		f, g := strings.Fields(pre), strings.Fields(post)
		if !ok || len(f) < 5 || len(g) < 3 || g[0] != fstype {
			continue
		}
		if opt != "" && !hasWord(g[2], ",", opt) {
			continue
		}
		out = append(out, cgroupMount{point: f[4], root: f[3]})
	}
	return out
}

func hasWord(list, sep, w string) bool {
	for _, x := range strings.Split(list, sep) {
		if x == w {
			return true
		}
	}
	return false
}

// ownCgroup is this process's cgroup path in the hierarchy whose
// /proc/self/cgroup controller list includes ctrl ("" for v2's "0::").
func ownCgroup(ctrl string) (string, bool) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", false
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		f := strings.SplitN(line, ":", 3)
		if len(f) != 3 {
			continue
		}
		if (ctrl == "" && f[0] == "0" && f[1] == "") || (ctrl != "" && hasWord(f[1], ",", ctrl)) {
			return f[2], true
		}
	}
	return "", false
}

// cgroupDir joins a mount and a cgroup path seen from this process.
func cgroupDir(m cgroupMount, path string) string {
	rel := path
	if m.root != "/" {
		rel = strings.TrimPrefix(path, m.root)
	}
	return filepath.Join(m.point, rel)
}

func findCgroupV2() (cgroupHost, error) {
	ms := cgroupMounts("cgroup2", "")
	own, ok := ownCgroup("")
	if len(ms) == 0 || !ok {
		return cgroupHost{}, errors.New("not mounted")
	}
	h, err := cgroupV2At(cgroupDir(ms[0], own))
	if err != nil && os.Geteuid() == 0 {
		// Root may use the root cgroup, which may hold processes and
		// still pass controllers on (as with v1 below).
		if hr, rerr := cgroupV2At(ms[0].point); rerr == nil {
			return hr, nil
		}
	}
	return h, err
}

// cgroupV2At checks that run cgroups with the memory controller can be
// made in dir.
func cgroupV2At(dir string) (cgroupHost, error) {
	ctrls, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
	if err != nil {
		return cgroupHost{}, err
	}
	if !hasWord(strings.TrimSpace(string(ctrls)), " ", "memory") {
		return cgroupHost{}, errors.New("the memory controller is not available to this process's cgroup (it may be bound to the v1 hierarchy)")
	}
	sub, err := os.ReadFile(filepath.Join(dir, "cgroup.subtree_control"))
	if err != nil {
		return cgroupHost{}, err
	}
	if !hasWord(strings.TrimSpace(string(sub)), " ", "memory") {
		// A cgroup that holds processes cannot pass controllers to
		// children ("no internal processes"): the server would have to
		// move itself into a leaf first, which is its supervisor's call.
		return cgroupHost{}, errors.New("the memory controller is not enabled for this process's cgroup's children (delegate a subtree with memory enabled, e.g. systemd Delegate=yes)")
	}
	h := cgroupHost{mode: MemoryCgroupV2, dir: dir}
	return h, h.try("memory.max")
}

func findCgroupV1() (cgroupHost, error) {
	if os.Geteuid() != 0 {
		return cgroupHost{}, errors.New("needs root")
	}
	ms := cgroupMounts("cgroup", "memory")
	if len(ms) == 0 {
		return cgroupHost{}, errors.New("no memory controller mounted")
	}
	dir := ms[0].point
	if own, ok := ownCgroup("memory"); ok {
		if d := cgroupDir(ms[0], own); isDir(d) {
			dir = d
		}
	}
	h := cgroupHost{mode: MemoryCgroupV1, dir: dir}
	return h, h.try("memory.limit_in_bytes")
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

// try makes and removes a cgroup, which must show file, and sweeps what
// servers that died left behind.
func (h cgroupHost) try(file string) error {
	h.sweep()
	d := filepath.Join(h.dir, fmt.Sprintf("prims-%d-probe", os.Getpid()))
	if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return err
	}
	defer os.Remove(d)
	if _, err := os.Stat(filepath.Join(d, file)); err != nil {
		return fmt.Errorf("a new cgroup has no %s", file)
	}
	return nil
}

// sweep removes the empty run cgroups of servers that are gone (killed
// before they could remove them).
func (h cgroupHost) sweep() {
	ents, _ := os.ReadDir(h.dir)
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), "prims-")
		if !ok || !e.IsDir() {
			continue
		}
		pidText, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidText)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		_ = os.Remove(filepath.Join(h.dir, e.Name()))
	}
}

// detectMemory reports how runs' memory can be bounded here, and why
// nothing better was available.
func detectMemory() (MemoryEnforcement, error) {
	h, err := cgroupOnce()
	if err == nil {
		return h.mode, nil
	}
	if _, serr := os.Stat("/proc/self/smaps_rollup"); serr != nil {
		if _, serr := os.Stat("/proc/self/statm"); serr != nil {
			return MemoryPerProcess, fmt.Errorf("%w; /proc cannot be read to count processes", err)
		}
	}
	return MemoryAccounting, err
}

// memGuard bounds one run's memory as a whole, from the child's start to
// the run's end.
type memGuard struct {
	mode  MemoryEnforcement
	limit int64
	dir   string   // the run's cgroup; "" without one
	fd    int      // an O_PATH descriptor of dir for CLONE_INTO_CGROUP (v2); -1
	tasks *os.File // dir's tasks file (v1) until the child's launch takes it
	pid   int      // the child (its process group has the same id)
	ooms  int64    // the cgroup's OOM kills when the code was handed over

	// Accounting: whether to look for the child's process group outside
	// its tree, what the last look found, and how many polls were made.
	groupScan bool
	group     []int
	polls     int

	spares *cgroupSpares
}

// newMemGuard makes the guard for one child in mode. A cgroup that cannot
// be made leaves the run to accounting, which Result.Memory then says.
func (r *Runner) newMemGuard() *memGuard {
	g := &memGuard{mode: r.memory, limit: r.limits.Memory, fd: -1, groupScan: r.tier != TierNamespaces, spares: &runCgroups}
	if g.mode != MemoryCgroupV1 && g.mode != MemoryCgroupV2 {
		return g
	}
	h, _ := cgroupOnce()
	if err := g.setupCgroup(h); err != nil {
		r.log.Warn("no memory cgroup for this run; counting its processes instead", "err", err)
		g.remove()
		g.mode = MemoryAccounting
	}
	return g
}

// makeRunCgroup makes an empty cgroup for one run.
func makeRunCgroup(h cgroupHost) (string, error) {
	dir := filepath.Join(h.dir, fmt.Sprintf("prims-%d-%d", os.Getpid(), cgroupSeq.Add(1)))
	return dir, os.Mkdir(dir, 0o755)
}

// setupCgroup takes a cgroup for the run and sets its limits.
func (g *memGuard) setupCgroup(h cgroupHost) error {
	dir, err := g.spares.take(h)
	if err != nil {
		return err
	}
	g.dir = dir
	limit := strconv.FormatInt(g.limit, 10)
	var files [][2]string
	if h.mode == MemoryCgroupV2 {
		// No swap to spill into, and an OOM kill takes the whole run at
		// once rather than one process the program may just restart.
		files = [][2]string{{"memory.max", limit}, {"memory.swap.max", "0"}, {"memory.oom.group", "1"}}
	} else {
		// memsw (memory + swap) exists where swap is accounted; it must
		// not be below limit_in_bytes, so it comes second.
		files = [][2]string{{"memory.limit_in_bytes", limit}, {"memory.memsw.limit_in_bytes", limit}}
	}
	for i, f := range files {
		err := os.WriteFile(filepath.Join(g.dir, f[0]), []byte(f[1]), 0)
		if err != nil && (i == 0 || !errors.Is(err, os.ErrNotExist)) {
			return fmt.Errorf("set %s: %w", f[0], err)
		}
	}
	if h.mode == MemoryCgroupV2 {
		fd, err := unix.Open(g.dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return os.NewSyscallError("open cgroup", err)
		}
		g.fd = fd
		return nil
	}
	// The init joins through this (joinCgroup): opened here, by the
	// server, whose credentials the kernel checks on the write.
	f, err := os.OpenFile(filepath.Join(g.dir, "tasks"), os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	g.tasks = f
	return nil
}

// attach makes cmd start inside the run's cgroup v2 (CLONE_INTO_CGROUP):
// not one instruction of the child runs outside it.
func (g *memGuard) attach(cmd *exec.Cmd) {
	if g.fd < 0 {
		return
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = g.fd
}

// place records the started child, and puts it into the run's cgroup v1
// unless the init joins by itself (joinCgroup: every sandbox tier does).
func (g *memGuard) place(pid int) error {
	g.pid = pid
	if g.mode != MemoryCgroupV1 || g.tasks == nil {
		return nil
	}
	g.tasks.Close()
	g.tasks = nil
	return os.WriteFile(filepath.Join(g.dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
}

// arm starts counting at the handover of the code: what a waiting sandbox
// did before does not count against the run.
func (g *memGuard) arm() {
	g.ooms = g.oomKills()
}

// oomKills is how many processes the kernel's OOM killer took in the
// run's cgroup.
func (g *memGuard) oomKills() int64 {
	file, key := "memory.events", "oom_kill"
	switch g.mode {
	case MemoryCgroupV1:
		file = "memory.oom_control"
	case MemoryCgroupV2:
	default:
		return 0
	}
	b, err := os.ReadFile(filepath.Join(g.dir, file))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+" "); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// memPoll is how often a run's memory is checked. In accounting mode a run
// can overshoot the limit by what it allocates in one interval (and
// RLIMIT_DATA still bounds each process); a cgroup never lets it.
const memPoll = 50 * time.Millisecond

// exceeded reports whether the run has gone over its limit: the kernel
// OOM-killed one of its processes (cgroups), or its processes together hold
// more than the limit (accounting).
func (g *memGuard) exceeded() bool {
	switch g.mode {
	case MemoryCgroupV1, MemoryCgroupV2:
		return g.oomKills() > g.ooms
	case MemoryAccounting:
		return g.runMemory() > g.limit
	}
	return false
}

// watch polls exceeded and closes hit when it turns true.
func (g *memGuard) watch(hit chan<- struct{}) (stop func()) {
	if g.mode == MemoryPerProcess || g.mode == MemoryNone {
		return func() {}
	}
	return poll(memPoll, hit, func() (func() bool, func()) { return g.exceeded, nil })
}

// killAll kills every process left in the run's cgroup, wherever it went:
// a cgroup holds what a process group may lose.
func (g *memGuard) killAll() {
	if g.dir != "" {
		killCgroup(g.dir)
	}
}

func killCgroup(dir string) {
	// cgroup.kill exists in cgroup v2 only (Linux 5.14+).
	if os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0) == nil {
		return
	}
	for range 10 {
		b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
		if err != nil || len(bytes.TrimSpace(b)) == 0 {
			return
		}
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
}

// remove kills what is left in the run's cgroup and removes it. Killed
// processes leave the cgroup as they finish exiting: wait a little for
// that, and leave the cgroup to the next server's sweep if it never empties.
func (g *memGuard) remove() {
	if g.fd >= 0 {
		unix.Close(g.fd)
		g.fd = -1
	}
	if g.tasks != nil {
		g.tasks.Close()
		g.tasks = nil
	}
	if g.dir == "" {
		return
	}
	g.killAll()
	g.spares.discard(g.dir)
	g.dir = ""
}

// cgroupSpares keeps a run cgroup made ahead and removes used ones in the
// background: making and removing a memory cgroup take 0.1-0.3 ms here,
// and now and then several milliseconds, which a run should not wait for.
// One per process (runCgroups), shared by its Runners: a process that never
// closes its Runners (a test binary) leaves at most one spare behind, which
// the next server to start sweeps.
type cgroupSpares struct {
	mu      sync.Mutex
	ready   []string
	making  bool
	pending int // spares being made, cgroups being removed
	users   int // Runners open
}

var runCgroups cgroupSpares

// open counts a Runner that may take cgroups.
func (s *cgroupSpares) open() {
	s.mu.Lock()
	s.users++
	s.mu.Unlock()
}

// take returns an empty run cgroup: the spare, or a new one.
func (s *cgroupSpares) take(h cgroupHost) (string, error) {
	s.mu.Lock()
	var dir string
	if n := len(s.ready); n > 0 {
		dir, s.ready = s.ready[n-1], s.ready[:n-1]
	}
	s.mu.Unlock()
	var err error
	if dir == "" {
		dir, err = makeRunCgroup(h)
	}
	s.refill(h)
	return dir, err
}

// refill makes a spare in the background unless there is one.
func (s *cgroupSpares) refill(h cgroupHost) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.making || len(s.ready) > 0 || s.users <= 0 {
		return
	}
	s.making = true
	s.pending++
	go func() {
		dir, err := makeRunCgroup(h)
		s.mu.Lock()
		defer s.mu.Unlock()
		s.making = false
		s.pending--
		switch {
		case err != nil:
		case s.users <= 0:
			_ = unix.Rmdir(dir)
		default:
			s.ready = append(s.ready, dir)
		}
	}()
}

// discard removes a run's cgroup in the background. Killed processes leave
// it as they finish exiting: wait a little for that, killing again, and
// leave it to the next server's sweep if it never empties.
func (s *cgroupSpares) discard(dir string) {
	s.mu.Lock()
	s.pending++
	s.mu.Unlock()
	go func() {
		for i := range 100 {
			err := unix.Rmdir(dir)
			if err == nil || !errors.Is(err, unix.EBUSY) || i == 99 {
				break
			}
			time.Sleep(10 * time.Millisecond)
			killCgroup(dir)
		}
		s.mu.Lock()
		s.pending--
		s.mu.Unlock()
	}()
}

// close uncounts a Runner; the last one removes the spare. Either way it
// waits for the removals under way, so that a closed Runner's cgroups are
// gone.
func (s *cgroupSpares) close() {
	s.mu.Lock()
	s.users--
	var ready []string
	if s.users <= 0 {
		ready, s.ready = s.ready, nil
	}
	s.mu.Unlock()
	for _, d := range ready {
		_ = unix.Rmdir(d)
	}
	for {
		s.mu.Lock()
		n := s.pending
		s.mu.Unlock()
		if n == 0 {
			return
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// runMemory adds up the memory of the run's processes (runProcs): their
// resident sets, which cost nothing to read, and, only when those add up
// to more than the limit, their proportional set sizes, which count pages
// shared between them (a fork's copy-on-write pages, the interpreter's
// libraries) once, split between the sharers, but take a walk of each
// process's page tables to read.
func (g *memGuard) runMemory() int64 {
	procs := g.runProcs()
	var rss int64
	for _, p := range procs {
		rss += residentMemory(p)
	}
	if rss <= g.limit {
		return rss
	}
	var pss int64
	for _, p := range procs {
		pss += proportionalMemory(p)
	}
	return pss
}

// fullScanEvery is how many polls apart the accounting looks through all
// of /proc for the run's process group (about 1.5 ms with 100 processes):
// in between it follows the run's process tree only, which costs in
// proportion to the run.
const fullScanEvery = 10

// runProcs lists the run's processes: the child's descendants (the child
// is the sandbox init) and,
// outside the namespaces tier, whatever has the child's process group: an
// orphan reparented out of the tree keeps it (the seccomp filter denies
// setsid and setpgid there). Inside a PID namespace the init adopts every
// orphan, so the tree is the whole run.
func (g *memGuard) runProcs() []int {
	in := map[int]bool{}
	var out []int
	add := func(p int) {
		if !in[p] {
			in[p] = true
			out = append(out, p)
		}
	}
	if g.groupScan {
		if g.polls%fullScanEvery == 0 {
			g.group = groupMembers(g.pid)
		}
		g.polls++
		for _, p := range g.group {
			if _, pgrp, ok := procStat(p); ok && pgrp == g.pid && p != g.pid {
				add(p)
			}
		}
	}
	walked := map[int]bool{}
	queue := append([]int{g.pid}, out...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		if walked[p] {
			continue
		}
		walked[p] = true
		// The child is the sandbox init in every tier, which waits for
		// the program and holds none of its memory: like RLIMIT_DATA,
		// the limit is on the program (a race-built init alone holds
		// more than a small limit).
		if p != g.pid {
			add(p)
		}
		queue = append(queue, childrenOf(p)...)
	}
	return out
}

// groupMembers lists the processes whose process group is pgid, from one
// pass over /proc.
func groupMembers(pgid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, pgrp, ok := procStat(pid); ok && pgrp == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// childrenOf lists the children of every thread of pid.
func childrenOf(pid int) []int {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	tasks, _ := os.ReadDir(dir)
	var out []int
	for _, t := range tasks {
		b, _ := os.ReadFile(dir + "/" + t.Name() + "/children")
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				out = append(out, n)
			}
		}
	}
	return out
}

// procStat reads the parent and process group of pid from /proc/pid/stat.
func procStat(pid int) (ppid, pgrp int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	// The command name may hold spaces and parentheses: fields start
	// after its last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 3 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	pgrp, _ = strconv.Atoi(f[2])
	return ppid, pgrp, true
}

var pageSize = int64(os.Getpagesize())

// proportionalMemory is pid's PSS in bytes, or its RSS where smaps_rollup
// is missing (kernels before 4.14).
func proportionalMemory(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return residentMemory(pid)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// residentMemory is pid's RSS in bytes.
func residentMemory(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/statm")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0
	}
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * pageSize
}

// memorySupport says, for `prims doctor`, how a run's memory is bounded
// here when best is the tier.
func memorySupport(best Tier) string {
	if best == TierNone {
		return string(MemoryNone)
	}
	const perProcess = "; RLIMIT_DATA bounds each process too"
	mode, err := detectMemory()
	switch mode {
	case MemoryCgroupV2, MemoryCgroupV1:
		h, _ := cgroupOnce()
		return fmt.Sprintf("%s: a memory cgroup per run (under %s) bounds the whole run%s", mode, h.dir, perProcess)
	case MemoryAccounting:
		return fmt.Sprintf("%s: the memory of the run's processes is added up every %s and the run is killed past the limit%s (no cgroup: %v)", mode, memPoll, perProcess, err)
	}
	return fmt.Sprintf("%s only: a run of several processes may use more (%v)", MemoryPerProcess, err)
}
