package pythonenv

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Options configures a Cache. The zero value works: environments go under
// DefaultDir and the index settings come from pip's environment variables.
type Options struct {
	Dir      string // cache root; default DefaultDir()
	MaxBytes int64  // LRU size cap for environments; 0 means 5 GiB, negative means no cap

	// Index configuration, part of every cache key. When all four are
	// unset, New takes them from PIP_INDEX_URL, PIP_EXTRA_INDEX_URL,
	// PIP_FIND_LINKS and PIP_NO_INDEX.
	IndexURL       string
	ExtraIndexURLs []string
	FindLinks      []string
	Offline        bool

	AllowDirect bool // allow local paths and direct URLs in requirements (operator flag)

	// OnlyBinary refuses source distributions: building one runs the
	// package's own code (confined by Confine when set).
	OnlyBinary bool

	InstallTimeout time.Duration // bounds one pip run; default 5 minutes

	// Confine, when set, runs pip and every build it starts in a sandbox
	// (Confined says what it may touch); without it pip runs on the host.
	Confine ConfineFunc
	Logger  *slog.Logger
}

// DefaultDir is $XDG_CACHE_HOME/prims, or ~/.cache/prims (the platform's
// user cache directory elsewhere).
func DefaultDir() (string, error) {
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find cache directory: %w", err)
	}
	return filepath.Join(d, "prims"), nil
}

// Cache holds content-addressed Python environments under one directory:
//
//	envs/<key>/   published environments (venv roots), read-only once there
//	tmp/          builds in progress, renamed into envs/ when complete
//	locks/<key>   held while a process builds <key>, so another waits for it
//	pip/          pip's download and wheel cache, shared by all builds
//
// Several processes may share one directory.
type Cache struct {
	opts     Options
	log      *slog.Logger
	envsDir  string
	tmpDir   string
	locksDir string
	pipCache string

	builds sync.WaitGroup // running fly goroutines

	mu        sync.Mutex
	pins      map[string]*pin
	flights   map[string]*flight
	manifests map[string]*manifest // parsed metadata of published environments, by key

	stats struct {
		builds atomic.Int64 // builds started
		venv   atomic.Int64 // total ns spent creating venvs
		pip    atomic.Int64 // total ns spent in pip
		build  atomic.Int64 // total ns of whole builds
	}
}

// pin holds a shared flock on a published environment, telling evictors in
// every process that it is in use.
type pin struct {
	key string
	n   int
	f   *os.File
}

// flight is one build that concurrent Acquires for the same key wait on.
type flight struct {
	key     string
	cancel  context.CancelFunc
	done    chan struct{}
	err     error
	pin     *pin // taken once for each waiter when the build succeeds
	waiters int  // Acquires still waiting; the build is cancelled at zero

	pmu  sync.Mutex
	subs map[int]func(string)
	next int
}

func (f *flight) emit(line string) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	for _, fn := range f.subs {
		fn(line)
	}
}

func (f *flight) subscribe(fn func(string)) int {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	f.next++
	if fn != nil {
		f.subs[f.next] = fn
	}
	return f.next
}

func (f *flight) unsubscribe(id int) {
	f.pmu.Lock()
	defer f.pmu.Unlock()
	delete(f.subs, id)
}

const metaFile = "prims-env.json"

// meta is written into each environment before it is published. Its mtime
// records the environment's last use, for LRU eviction.
type meta struct {
	Key          string       `json:"key"`
	Python       string       `json:"python"`
	Version      string       `json:"version"`
	Requirements []string     `json:"requirements"`
	Bytes        int64        `json:"bytes"`
	Created      time.Time    `json:"created"`
	Files        []fileRecord `json:"files"`
}

// New opens (creating if needed) the cache directory and removes what
// crashed builds left behind.
func New(opts Options) (*Cache, error) {
	if opts.Dir == "" {
		d, err := DefaultDir()
		if err != nil {
			return nil, err
		}
		opts.Dir = d
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("cache directory %s: %w", opts.Dir, err)
	}
	opts.Dir = dir
	if opts.MaxBytes == 0 {
		opts.MaxBytes = 5 << 30
	}
	if opts.InstallTimeout <= 0 {
		opts.InstallTimeout = 5 * time.Minute
	}
	if opts.IndexURL == "" && opts.ExtraIndexURLs == nil && opts.FindLinks == nil && !opts.Offline {
		opts.IndexURL = os.Getenv("PIP_INDEX_URL")
		opts.ExtraIndexURLs = strings.Fields(os.Getenv("PIP_EXTRA_INDEX_URL"))
		opts.FindLinks = strings.Fields(os.Getenv("PIP_FIND_LINKS"))
		switch strings.ToLower(os.Getenv("PIP_NO_INDEX")) {
		case "1", "true", "yes", "on":
			opts.Offline = true
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Cache{
		opts:      opts,
		log:       log,
		envsDir:   filepath.Join(dir, "envs"),
		tmpDir:    filepath.Join(dir, "tmp"),
		locksDir:  filepath.Join(dir, "locks"),
		pipCache:  filepath.Join(dir, "pip"),
		pins:      map[string]*pin{},
		flights:   map[string]*flight{},
		manifests: map[string]*manifest{},
	}
	for _, d := range []string{c.envsDir, c.tmpDir, c.locksDir, c.pipCache} {
		// 0755: a sandboxed run under another uid must read environments.
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("create cache directory: %w", err)
		}
	}
	c.cleanStale()
	c.evict()
	return c, nil
}

// cleanStale removes build and eviction leftovers that no live process holds
// locked: a killed server leaves its half-built environment in tmp/, never
// in envs/.
func (c *Cache) cleanStale() {
	entries, err := os.ReadDir(c.tmpDir)
	if err != nil {
		c.log.Warn("list cache tmp", "err", err)
		return
	}
	for _, e := range entries {
		p := filepath.Join(c.tmpDir, e.Name())
		f, err := os.Open(p)
		if err != nil {
			continue
		}
		ok, _ := tryLockExclusive(f)
		if ok {
			if err := os.RemoveAll(p); err != nil {
				c.log.Warn("remove stale build", "dir", p, "err", err)
			} else {
				c.log.Info("removed stale build", "dir", e.Name())
			}
		}
		f.Close()
	}
}

// Key is the cache key of an environment: a hash of everything that decides
// what pip would install.
func (c *Cache) Key(interp Interpreter, reqs []string) string {
	h := sha256.New()
	fmt.Fprintf(h, "prims-env v2\npython %s\nversion %s\n", interp.Path, interp.Version)
	fmt.Fprintf(h, "index %q\nextra %q\nfind-links %q\noffline %t\nonly-binary %t\n",
		c.opts.IndexURL, c.opts.ExtraIndexURLs, c.opts.FindLinks, c.opts.Offline, c.opts.OnlyBinary)
	for _, r := range reqs {
		fmt.Fprintf(h, "req %q\n", r)
	}
	return hex.EncodeToString(h.Sum(nil))[:32]
}

// Env is a ready environment, pinned against eviction until Release.
type Env struct {
	Key    string
	Dir    string // venv root, to be mounted read-only for runs
	Python string // Dir/bin/python
	Hit    bool   // it came from the cache without a build

	Requirements []string // normalized requirement set

	release sync.Once
	c       *Cache
	pin     *pin
}

// Release unpins the environment; it may be evicted afterwards. Calling it
// twice is harmless.
func (e *Env) Release() {
	e.release.Do(func() {
		e.c.mu.Lock()
		defer e.c.mu.Unlock()
		e.c.unpinLocked(e.pin)
	})
}

func (c *Cache) newEnv(key string, reqs []string, hit bool, p *pin) *Env {
	dir := filepath.Join(c.envsDir, key)
	return &Env{Key: key, Dir: dir, Python: filepath.Join(dir, "bin", "python"), Hit: hit, Requirements: reqs, c: c, pin: p}
}

// Acquire returns a ready environment with reqs installed for interp,
// building it at most once: concurrent callers for the same set wait for
// one build, and later callers reuse it. reqs are validated with
// ValidateRequirements. progress, when not nil, receives short lines
// ("resolving foo", "downloading foo-1.0 (2 kB)", "installing foo") from
// the build's goroutine while pip works; it must return quickly. The caller
// must Release the Env.
//
// Failures a model can act on are *RequirementError (joined) and
// *InstallError; a cancelled ctx gives ctx.Err().
func (c *Cache) Acquire(ctx context.Context, interp Interpreter, reqs []string, progress func(string)) (*Env, error) {
	norm, err := ValidateRequirements(reqs, c.opts.AllowDirect)
	if err != nil {
		return nil, err
	}
	if interp.Path == "" {
		return nil, errors.New("acquire environment: no interpreter given")
	}
	key := c.Key(interp, norm)
	for range 3 {
		env, err := c.acquire(ctx, key, interp, norm, progress)
		if !errors.Is(err, errBroken) {
			return env, err
		}
		// Rebuilt environments that fail their check again (another
		// process corrupting them, a disk dropping writes) are retried a
		// bounded number of times.
	}
	return nil, errors.New("acquire environment: the environment was found damaged after every rebuild; check the cache directory's disk")
}

// errBroken is an environment that failed its check; acquire moved it out.
var errBroken = errors.New("environment damaged")

func (c *Cache) acquire(ctx context.Context, key string, interp Interpreter, norm []string, progress func(string)) (*Env, error) {
	c.mu.Lock()
	if p := c.pinLocked(key, 1); p != nil {
		c.mu.Unlock()
		if err := c.verify(key); err != nil {
			c.log.Warn("cached environment damaged: rebuilding it", "key", key, "err", err)
			if progress != nil {
				progress("the cached environment is damaged: rebuilding it")
			}
			c.mu.Lock()
			trash := c.quarantineLocked(key, p)
			c.unpinLocked(p)
			c.mu.Unlock()
			c.removeIfFree(trash)
			return nil, errBroken
		}
		c.touch(key)
		return c.newEnv(key, norm, true, p), nil
	}
	var sub int
	f := c.flights[key]
	if f == nil {
		bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{key: key, cancel: cancel, done: make(chan struct{}), subs: map[int]func(string){}, waiters: 1}
		c.flights[key] = f
		sub = f.subscribe(progress) // before the build can say anything
		c.builds.Add(1)
		go c.fly(bctx, f, interp, norm)
		c.mu.Unlock()
	} else {
		f.waiters++
		c.mu.Unlock()
		// Outside c.mu: a progress callback may hold f.pmu and want c.mu.
		// A joiner hears the build from where it is.
		sub = f.subscribe(progress)
	}
	defer f.unsubscribe(sub)

	select {
	case <-f.done:
		if f.err != nil {
			return nil, f.err
		}
		// fly pinned the environment once for each waiter.
		return c.newEnv(key, norm, false, f.pin), nil
	case <-ctx.Done():
		c.mu.Lock()
		defer c.mu.Unlock()
		select {
		case <-f.done:
			if f.err == nil {
				c.unpinLocked(f.pin)
			}
		default:
			f.waiters--
			if f.waiters == 0 {
				// Nobody wants this build any more: stop pip, and let
				// the next Acquire start afresh.
				f.cancel()
				if c.flights[key] == f {
					delete(c.flights, key)
				}
			}
		}
		return nil, fmt.Errorf("acquire environment: %w", ctx.Err())
	}
}

// fly runs one build and hands the result to its waiters.
func (c *Cache) fly(ctx context.Context, f *flight, interp Interpreter, reqs []string) {
	defer c.builds.Done()
	err := c.build(ctx, f.key, interp, reqs, f.emit)
	c.mu.Lock()
	if c.flights[f.key] == f {
		delete(c.flights, f.key)
	}
	if err == nil && f.waiters > 0 {
		if f.pin = c.pinLocked(f.key, f.waiters); f.pin == nil {
			err = errors.New("acquire environment: evicted by another process right after its build; retry")
		}
	}
	f.err = err
	close(f.done)
	c.mu.Unlock()
	f.cancel()
	if err == nil {
		c.evict()
	}
}

// pinLocked takes n pins on a published environment, returning nil when it
// is not there. c.mu is held.
func (c *Cache) pinLocked(key string, n int) *pin {
	dir := filepath.Join(c.envsDir, key)
	if p := c.pins[key]; p != nil {
		// The directory may have been replaced behind our pin (another
		// process found it damaged and rebuilt it): pin the new one.
		fi, err1 := p.f.Stat()
		di, err2 := os.Stat(dir)
		if err1 == nil && err2 == nil && os.SameFile(fi, di) {
			p.n += n
			return p
		}
		delete(c.pins, key) // its holders keep it until they release it
	}
	f, err := os.Open(dir)
	if err != nil {
		return nil
	}
	if err := lockShared(f); err != nil {
		c.log.Warn("lock environment", "key", key, "err", err)
		f.Close()
		return nil
	}
	// An evictor in another process may have renamed the directory away
	// between our open and our lock.
	fi, err1 := f.Stat()
	di, err2 := os.Stat(dir)
	if err1 != nil || err2 != nil || !os.SameFile(fi, di) {
		f.Close()
		return nil
	}
	p := &pin{key: key, n: n, f: f}
	c.pins[key] = p
	return p
}

func (c *Cache) unpinLocked(p *pin) {
	if p == nil {
		return
	}
	if p.n--; p.n == 0 {
		p.f.Close()
		if c.pins[p.key] == p {
			delete(c.pins, p.key)
		}
	}
}

func (c *Cache) touch(key string) {
	now := time.Now()
	if err := os.Chtimes(filepath.Join(c.envsDir, key, metaFile), now, now); err != nil {
		c.log.Debug("touch environment", "key", key, "err", err)
	}
}

// build creates the environment in tmp/, installs reqs with one pip from
// outside it, and publishes it with an atomic rename. Whatever fails, only
// complete environments ever appear under envs/.
func (c *Cache) build(ctx context.Context, key string, interp Interpreter, reqs []string, progress func(string)) (err error) {
	c.stats.builds.Add(1)
	start := time.Now()
	defer func() {
		c.stats.build.Add(int64(time.Since(start)))
		err = diskFull(err)
	}()
	if interp.Pip == "" {
		return &InstallError{
			Kind:    "other",
			Summary: fmt.Sprintf("this server has no pip that can install packages for Python %s: %s", interp.Version, interp.NoPip),
			Hint:    "Ask for another Python version (\"python\"), or run the code without requirements; the server's operator can install pip",
		}
	}

	// One build per key across every process sharing this cache: the
	// second waits here and then finds the first one's environment.
	unlock, err := c.lockKey(ctx, key, progress)
	if err != nil {
		return err
	}
	defer unlock()
	if _, err := os.Stat(filepath.Join(c.envsDir, key)); err == nil {
		if err := c.verify(key); err == nil {
			return nil
		}
		c.mu.Lock()
		trash := c.quarantineLocked(key, nil)
		c.mu.Unlock()
		c.removeIfFree(trash)
	}

	work, err := os.MkdirTemp(c.tmpDir, "build-"+key[:12]+"-")
	if err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}
	// The lock tells cleanStale in other processes that this build is alive.
	lock, err := os.Open(work)
	if err == nil {
		err = lockExclusive(lock)
	}
	if err != nil {
		os.RemoveAll(work)
		return fmt.Errorf("lock build directory: %w", err)
	}
	defer func() {
		if rmErr := os.RemoveAll(work); rmErr != nil {
			c.log.Warn("remove build directory", "dir", work, "err", rmErr)
		}
		lock.Close()
	}()
	envDir := filepath.Join(work, "env")
	tmp := filepath.Join(work, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		return fmt.Errorf("create build directory: %w", err)
	}

	if progress != nil {
		progress("creating environment")
	}
	if err := c.createVenv(ctx, interp, envDir, tmp); err != nil {
		return err
	}
	envPython := filepath.Join(envDir, "bin", "python")
	if len(reqs) > 0 {
		if err := c.runPip(ctx, interp, envPython, tmp, reqs, progress); err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("install requirements: %w", ctx.Err())
			}
			return err
		}
	}

	files, size, err := record(envDir)
	if err != nil {
		return fmt.Errorf("measure environment: %w", err)
	}
	m, _ := json.Marshal(meta{Key: key, Python: interp.Path, Version: interp.Version,
		Requirements: reqs, Bytes: size, Created: time.Now().UTC(), Files: files})
	if err := os.WriteFile(filepath.Join(envDir, metaFile), m, 0o644); err != nil {
		return fmt.Errorf("write environment metadata: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("build environment: %w", err)
	}
	final := filepath.Join(c.envsDir, key)
	if err := os.Rename(envDir, final); err != nil {
		if errors.Is(err, fs.ErrExist) {
			// Another process published the same key first; its
			// environment is as good as ours.
			return nil
		}
		return fmt.Errorf("publish environment: %w", err)
	}
	c.log.Info("built environment", "key", key, "python", interp.Version, "requirements", reqs,
		"bytes", size, "elapsed", time.Since(start))
	return nil
}

// createVenv makes a venv without pip (tens of milliseconds, where ensurepip
// costs seconds): pip is run from outside with --python. The venv is built
// under a temporary name and renamed later, which is safe because nothing in
// it that a run uses embeds its path: bin/python is a symlink to the base
// interpreter and pyvenv.cfg names only the base.
func (c *Cache) createVenv(ctx context.Context, interp Interpreter, envDir, tmp string) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, interp.Path, "-I", "-m", "venv", "--without-pip", envDir)
	cmd.Env = []string{"PATH=/usr/bin:/bin", "TMPDIR=" + tmp, "LANG=C.UTF-8"}
	killTree(cmd)
	out, err := cmd.CombinedOutput()
	c.stats.venv.Add(int64(time.Since(start)))
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("create venv: %w", ctx.Err())
		}
		c.log.Error("create venv", "python", interp.Path, "err", err, "output", string(out))
		return &InstallError{
			Kind:     "other",
			Summary:  fmt.Sprintf("creating a Python %s environment failed on the server", interp.Version),
			Hint:     "Ask for another Python version, or run the code without requirements",
			PipLines: sanitize(tail(strings.Split(strings.TrimSpace(string(out)), "\n"), 3), []string{envDir, interp.BasePrefix}),
		}
	}
	return nil
}

// diskFull turns a build that failed for want of disk space into an
// InstallError that says so, so that the model is not told to check its
// requirements: pip reports it as an OSError with errno 28 among its lines,
// Go as ENOSPC.
func diskFull(err error) error {
	if err == nil {
		return nil
	}
	full := errors.Is(err, syscall.ENOSPC)
	var lines []string
	var ie *InstallError
	if errors.As(err, &ie) {
		lines = ie.PipLines
		for _, l := range lines {
			if strings.Contains(l, "[Errno 28]") || strings.Contains(l, "No space left on device") ||
				strings.Contains(l, "Disk quota exceeded") {
				full = true
			}
		}
	}
	if !full {
		return err
	}
	return &InstallError{
		Kind:     "disk_full",
		Summary:  "the server's disk that holds the package cache is full, so the packages could not be installed",
		Hint:     "This is not a problem with the requirements. Run the code without requirements, or with fewer or smaller packages; the server's operator must free space in its cache directory (or lower --cache-max-bytes)",
		PipLines: lines,
	}
}

func dirSize(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info() // Lstat: symlinks count as themselves
		if err != nil {
			return err
		}
		n += fi.Size()
		return nil
	})
	return n, err
}

type envInfo struct {
	key      string
	bytes    int64
	lastUsed time.Time
}

// evict removes the least recently used environments until the total size
// is under MaxBytes, skipping every environment pinned in this or another
// process.
func (c *Cache) evict() {
	if c.opts.MaxBytes < 0 {
		return
	}
	envs := c.listEnvs()
	var total int64
	for _, e := range envs {
		total += e.bytes
	}
	if total <= c.opts.MaxBytes {
		return
	}
	sort.Slice(envs, func(i, j int) bool { return envs[i].lastUsed.Before(envs[j].lastUsed) })
	for _, e := range envs {
		if total <= c.opts.MaxBytes {
			break
		}
		if c.evictOne(e.key) {
			total -= e.bytes
			c.log.Info("evicted environment", "key", e.key, "bytes", e.bytes, "last_used", e.lastUsed)
		}
	}
	if total > c.opts.MaxBytes {
		c.log.Warn("environment cache over its size cap: the rest is in use", "bytes", total, "max", c.opts.MaxBytes)
	}
}

// listEnvs reads the size and last use of every published environment.
func (c *Cache) listEnvs() []envInfo {
	entries, err := os.ReadDir(c.envsDir)
	if err != nil {
		c.log.Warn("list environments", "err", err)
		return nil
	}
	var envs []envInfo
	for _, e := range entries {
		mp := filepath.Join(c.envsDir, e.Name(), metaFile)
		var m meta
		fi, err := os.Stat(mp)
		if err == nil {
			var data []byte
			if data, err = os.ReadFile(mp); err == nil {
				err = json.Unmarshal(data, &m)
			}
		}
		if err != nil {
			// Damaged metadata: the environment still takes its space,
			// and it goes first (it is rebuilt on its next use anyway).
			n, err := dirSize(filepath.Join(c.envsDir, e.Name()))
			if err != nil {
				continue
			}
			envs = append(envs, envInfo{key: e.Name(), bytes: n})
			continue
		}
		envs = append(envs, envInfo{key: e.Name(), bytes: m.Bytes, lastUsed: fi.ModTime()})
	}
	return envs
}

// evictOne moves one unpinned environment out of envs/ and deletes it.
func (c *Cache) evictOne(key string) bool {
	c.mu.Lock()
	if c.pins[key] != nil {
		c.mu.Unlock()
		return false
	}
	delete(c.manifests, key)
	dir := filepath.Join(c.envsDir, key)
	f, err := os.Open(dir)
	if err != nil {
		c.mu.Unlock()
		return false
	}
	defer f.Close()
	if ok, _ := tryLockExclusive(f); !ok {
		c.mu.Unlock()
		return false // pinned by another process
	}
	trash, err := os.MkdirTemp(c.tmpDir, "evict-"+key[:12]+"-")
	if err == nil {
		err = os.Rename(dir, filepath.Join(trash, "env"))
	}
	c.mu.Unlock()
	if err != nil {
		c.log.Warn("evict environment", "key", key, "err", err)
		if trash != "" {
			os.Remove(trash)
		}
		return false
	}
	if err := os.RemoveAll(trash); err != nil {
		c.log.Warn("remove evicted environment", "key", key, "err", err)
	}
	return true
}
