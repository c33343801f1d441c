package sandbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pool keeps sandboxes started and waiting for code, so that a run skips
// the interpreter's and the sandbox's start-up. A waiting sandbox is used
// once and never returned: every run is still a brand-new process.
type pool struct {
	r    *Runner
	size int
	idle time.Duration

	// starts bounds how many sandboxes the pool starts at once, so that
	// refills do not take the CPUs from live runs.
	starts chan struct{}

	mu     sync.Mutex
	keys   map[string]*poolKey
	closed bool
	stop   chan struct{}
}

// poolKey is the waiting sandboxes for one combination of everything that
// is fixed when a sandbox starts.
type poolKey struct {
	job      Job // the template: code, streams and timeout are not used
	ready    []*pooled
	filling  bool
	lastUsed time.Time
	// landed is closed (and replaced) whenever a started sandbox joins
	// ready or filling stops, for a run that waits for one in flight.
	landed  chan struct{}
	waiters int // runs waiting on landed
	deaths  int // sandboxes that died while waiting, since the last good take
}

type pooled struct {
	c       *child
	started time.Time
}

func newPool(r *Runner, size int, idle time.Duration) *pool {
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	p := &pool{r: r, size: size, idle: idle, keys: map[string]*poolKey{}, stop: make(chan struct{}),
		starts: make(chan struct{}, max(1, runtime.NumCPU()/2))}
	if size > 0 {
		go p.janitor()
	}
	return p
}

// warmKey identifies what a waiting sandbox was started for. Paths count
// with the identity of what is there now: a waiting sandbox holds the
// trees it mounted, so once an environment is evicted and rebuilt under the
// same path, sandboxes started for the old one must not take its runs.
func warmKey(job Job) string {
	h := sha256.New()
	ro := slices.Clone(job.ReadOnly)
	slices.Sort(ro)
	ids := []string{fileID(job.Python), fileID(job.Dir)}
	for _, p := range ro {
		ids = append(ids, fileID(p))
	}
	for _, part := range [][]string{{job.Python, job.Dir, job.Home, job.Tmp}, ro, job.Env, ids} {
		h.Write([]byte(strconv.Itoa(len(part))))
		for _, s := range part {
			h.Write([]byte{0})
			h.Write([]byte(s))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// take returns a live waiting sandbox for key, or nil. When none is ready
// but one is being started for key, it waits for that one (it is further
// along than a cold start would be), unless another run already does.
func (p *pool) take(ctx context.Context, key string) *child {
	if p.size <= 0 {
		return nil
	}
	var dead []*pooled
	defer func() {
		for _, w := range dead {
			w.c.kill()
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	k := p.keys[key]
	if k == nil {
		return nil
	}
	k.lastUsed = time.Now()
	for {
		for len(k.ready) > 0 {
			w := k.ready[0]
			k.ready = k.ready[1:]
			if w.c.dead() || exited(w.c.pid) {
				dead = append(dead, w)
				continue
			}
			k.deaths = 0
			w.c.warm = true
			return w.c
		}
		if !k.filling || k.waiters > 0 || p.closed {
			return nil
		}
		landed := k.landed
		k.waiters++
		p.mu.Unlock()
		select {
		case <-landed:
		case <-ctx.Done():
		}
		p.mu.Lock()
		k.waiters--
		if ctx.Err() != nil {
			return nil
		}
	}
}

// signal wakes runs waiting for k. Called with p.mu held.
func (k *poolKey) signal() {
	close(k.landed)
	k.landed = make(chan struct{})
}

// refill starts sandboxes for key in the background until size wait.
func (p *pool) refill(key string, job Job) {
	if p.size <= 0 {
		return
	}
	job.Code, job.Stdout, job.Stderr = "", nil, nil
	var stale []string
	defer func() {
		for _, key := range stale {
			p.forget(key)
		}
	}()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	k := p.keys[key]
	if k == nil {
		// A new key for the same paths means a tree was replaced (an
		// environment rebuilt): what waits for the old one would hold
		// it, deleted, until it idled out.
		for other, ok := range p.keys {
			if samePaths(ok.job, job) {
				stale = append(stale, other)
			}
		}
		k = &poolKey{job: job, landed: make(chan struct{})}
		p.keys[key] = k
	}
	k.lastUsed = time.Now()
	p.topUp(key, k)
}

// samePaths reports whether two job templates name the same interpreter,
// workspace, read-only paths and environment.
func samePaths(a, b Job) bool {
	ra, rb := slices.Clone(a.ReadOnly), slices.Clone(b.ReadOnly)
	slices.Sort(ra)
	slices.Sort(rb)
	return a.Python == b.Python && a.Dir == b.Dir && slices.Equal(ra, rb) && slices.Equal(a.Env, b.Env)
}

// topUp starts filling k unless it is full or being filled. Called with
// p.mu held.
func (p *pool) topUp(key string, k *poolKey) {
	if p.closed || k.filling || len(k.ready) >= p.size || p.keys[key] != k {
		return
	}
	k.filling = true
	go p.fill(key, k)
}

func (p *pool) fill(key string, k *poolKey) {
	stopFilling := func() {
		p.mu.Lock()
		k.filling = false
		k.signal()
		p.mu.Unlock()
	}
	for {
		p.mu.Lock()
		if p.closed || len(k.ready) >= p.size || time.Since(k.lastUsed) > p.idle || k.deaths >= 3 {
			k.filling = false
			k.signal()
			p.mu.Unlock()
			return
		}
		job := k.job
		p.mu.Unlock()
		// The workspace may be gone (a session ended): then there is
		// nothing to start for it.
		if _, err := os.Stat(job.Dir); err != nil {
			p.forget(key)
			return
		}
		select {
		case p.starts <- struct{}{}:
		case <-p.stop:
			stopFilling()
			return
		}
		c, err := p.r.start(job)
		<-p.starts
		if err != nil {
			p.r.log.Warn("warm sandbox did not start", "err", err)
			stopFilling()
			return
		}
		p.mu.Lock()
		if p.closed || p.keys[key] != k {
			p.mu.Unlock()
			c.kill()
			return
		}
		w := &pooled{c: c, started: time.Now()}
		k.ready = append(k.ready, w)
		k.signal()
		p.mu.Unlock()
		go p.watch(key, k, w)
	}
}

// watch replaces a waiting sandbox that dies before a run takes it (the
// OOM killer, a failed setup): the pool never hands out a dead one.
func (p *pool) watch(key string, k *poolKey, w *pooled) {
	<-w.c.waitDone
	p.mu.Lock()
	i := slices.Index(k.ready, w)
	if i < 0 {
		// Taken, expired or stopped: someone else owns it.
		p.mu.Unlock()
		return
	}
	k.ready = slices.Delete(k.ready, i, i+1)
	k.deaths++
	p.r.log.Warn("a waiting sandbox died; replacing it", "pid", w.c.pid)
	p.topUp(key, k)
	p.mu.Unlock()
	w.c.kill()
}

// forget drops key and stops what waits for it.
func (p *pool) forget(key string) {
	p.mu.Lock()
	k := p.keys[key]
	var ready []*pooled
	if k != nil {
		delete(p.keys, key)
		ready, k.ready = k.ready, nil
		k.signal()
	}
	p.mu.Unlock()
	for _, w := range ready {
		w.c.kill()
	}
}

// Prewarm starts a sandbox for job in the background, to wait for the
// code of a run like it (same interpreter, workspace, paths and
// environment), as the pool does after each run. Without a pool (Config.Warm
// 0) it does nothing.
func (r *Runner) Prewarm(job Job) {
	job, key := r.warmJob(job)
	r.refill(key, job)
}

// ForgetDir stops the waiting sandboxes started for the workspace dir, for
// a caller that is about to delete it.
func (r *Runner) ForgetDir(dir string) {
	r.shared.Delete(dir)
	r.forgetZygotes(dir)
	p := r.pool
	p.mu.Lock()
	var keys []string
	for key, k := range p.keys {
		if k.job.Dir == dir {
			keys = append(keys, key)
		}
	}
	p.mu.Unlock()
	for _, key := range keys {
		p.forget(key)
	}
}

// janitor stops sandboxes that waited longer than idle, and forgets keys
// that nobody used for that long (watch replaces those that die).
func (p *pool) janitor() {
	t := time.NewTicker(max(p.idle/4, 100*time.Millisecond))
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
		var expired []*pooled
		p.mu.Lock()
		for key, k := range p.keys {
			keep := k.ready[:0]
			for _, w := range k.ready {
				if time.Since(w.started) > p.idle {
					expired = append(expired, w)
				} else {
					keep = append(keep, w)
				}
			}
			k.ready = keep
			if len(k.ready) == 0 && !k.filling && time.Since(k.lastUsed) > p.idle {
				delete(p.keys, key)
			}
		}
		p.mu.Unlock()
		for _, w := range expired {
			w.c.kill()
		}
	}
}

func (p *pool) close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	close(p.stop)
	var all []*pooled
	for _, k := range p.keys {
		all = append(all, k.ready...)
		k.ready = nil
		k.signal()
	}
	p.keys = map[string]*poolKey{}
	p.mu.Unlock()
	for _, w := range all {
		w.c.kill()
	}
}

// PoolStats describes the sandboxes waiting in the warm pool.
type PoolStats struct {
	Waiting int // sandboxes started and waiting for code
	// Zygotes are the sandboxes that fork each run of a session.
	Zygotes  int
	RSSBytes int64 // their resident memory: inits and interpreters together
}

// PoolStats reports the warm pool's size and memory.
func (r *Runner) PoolStats() PoolStats {
	p := r.pool
	p.mu.Lock()
	var pids []int
	for _, k := range p.keys {
		for _, w := range k.ready {
			pids = append(pids, w.c.pid)
		}
	}
	p.mu.Unlock()
	st := PoolStats{Waiting: len(pids)}
	for _, pid := range pids {
		st.RSSBytes += treeRSS(pid)
	}
	n, rss := r.zygoteStats()
	st.Zygotes, st.RSSBytes = n, st.RSSBytes+rss
	return st
}

// treeRSS sums VmRSS of pid and its descendants from /proc (0 elsewhere).
func treeRSS(pid int) int64 {
	var total int64
	queue := []int{pid}
	for len(queue) > 0 && len(queue) < 64 {
		p := queue[0]
		queue = queue[1:]
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/status"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
					kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
					total += kb << 10
				}
			}
		}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/task/" + strconv.Itoa(p) + "/children"); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if n, err := strconv.Atoi(f); err == nil {
					queue = append(queue, n)
				}
			}
		}
	}
	return total
}
