package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
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
}

type pooled struct {
	c       *child
	started time.Time
}

func newPool(r *Runner, size int, idle time.Duration) *pool {
	if idle <= 0 {
		idle = 5 * time.Minute
	}
	p := &pool{r: r, size: size, idle: idle, keys: map[string]*poolKey{}, stop: make(chan struct{})}
	if size > 0 {
		go p.janitor()
	}
	return p
}

// warmKey identifies what a waiting sandbox was started for.
func warmKey(job Job) string {
	h := sha256.New()
	ro := slices.Clone(job.ReadOnly)
	slices.Sort(ro)
	for _, part := range [][]string{{job.Python, job.Dir}, ro, job.Env} {
		h.Write([]byte(strconv.Itoa(len(part))))
		for _, s := range part {
			h.Write([]byte{0})
			h.Write([]byte(s))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

// take returns a live waiting sandbox for key, or nil.
func (p *pool) take(key string) *child {
	if p.size <= 0 {
		return nil
	}
	p.mu.Lock()
	k := p.keys[key]
	var dead []*pooled
	var got *child
	if k != nil {
		k.lastUsed = time.Now()
		for len(k.ready) > 0 && got == nil {
			w := k.ready[0]
			k.ready = k.ready[1:]
			if w.c.dead() {
				dead = append(dead, w)
				continue
			}
			got = w.c
		}
	}
	p.mu.Unlock()
	for _, w := range dead {
		w.c.kill()
	}
	if got != nil {
		got.warm = true
	}
	return got
}

// refill starts sandboxes for key in the background until size wait.
func (p *pool) refill(key string, job Job) {
	if p.size <= 0 {
		return
	}
	job.Code, job.Stdout, job.Stderr = "", nil, nil
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return
	}
	k := p.keys[key]
	if k == nil {
		k = &poolKey{job: job}
		p.keys[key] = k
	}
	k.lastUsed = time.Now()
	if k.filling || len(k.ready) >= p.size {
		return
	}
	k.filling = true
	go p.fill(key, k)
}

func (p *pool) fill(key string, k *poolKey) {
	for {
		p.mu.Lock()
		if p.closed || len(k.ready) >= p.size || time.Since(k.lastUsed) > p.idle {
			k.filling = false
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
		c, err := p.r.start(job)
		if err != nil {
			p.r.log.Warn("warm sandbox did not start", "err", err)
			p.mu.Lock()
			k.filling = false
			p.mu.Unlock()
			return
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			c.kill()
			return
		}
		k.ready = append(k.ready, &pooled{c: c, started: time.Now()})
		p.mu.Unlock()
	}
}

// forget drops key and stops what waits for it.
func (p *pool) forget(key string) {
	p.mu.Lock()
	k := p.keys[key]
	delete(p.keys, key)
	p.mu.Unlock()
	if k != nil {
		for _, w := range k.ready {
			w.c.kill()
		}
	}
}

// ForgetDir stops the waiting sandboxes started for the workspace dir, for
// a caller that is about to delete it.
func (r *Runner) ForgetDir(dir string) {
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
// that nobody used for that long.
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
				if time.Since(w.started) > p.idle || w.c.dead() {
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
	}
	p.keys = map[string]*poolKey{}
	p.mu.Unlock()
	for _, w := range all {
		w.c.kill()
	}
}

// PoolStats describes the sandboxes waiting in the warm pool.
type PoolStats struct {
	Waiting  int   // sandboxes started and waiting for code
	RSSBytes int64 // their resident memory: init and interpreter together
}

// PoolStats reports the warm pool's size and memory.
func (r *Runner) PoolStats() PoolStats {
	p := r.pool
	p.mu.Lock()
	var pids []int
	for _, k := range p.keys {
		for _, w := range k.ready {
			pids = append(pids, w.c.l.cmd.Process.Pid)
		}
	}
	p.mu.Unlock()
	st := PoolStats{Waiting: len(pids)}
	for _, pid := range pids {
		st.RSSBytes += treeRSS(pid)
	}
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
