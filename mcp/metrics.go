package mcp

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/egress"
)

// metrics are the counters behind GET /metrics, written in the Prometheus
// text format by hand: a dozen series do not need a client library. The
// zero value is ready to use.
type metrics struct {
	runs      [numOutcomes]atomic.Uint64
	duration  histogram // seconds from start to exit of each program
	queueWait histogram // seconds each run waited for a slot
	inFlight  atomic.Int64
	queued    atomic.Int64
	outBytes  [2]atomic.Uint64 // stdout, stderr
	envHits   atomic.Uint64
	envMisses atomic.Uint64
	limits    sync.Map // sandbox.Result.Limit → *atomic.Uint64: runs each limit ended or broke
}

type outcome int

const (
	outcomeOK        outcome = iota // exit status 0
	outcomeError                    // non-zero exit or killed by a signal
	outcomeTimeout                  // the wall-clock limit ended it
	outcomeCancelled                // the client or the server cancelled it
	outcomeFailed                   // the interpreter could not be started
	outcomeRefused                  // never started: no slot (shutdown or cancelled while queued)
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "error", "timeout", "cancelled", "failed", "refused"}

func (m *metrics) countRun(o outcome) { m.runs[o].Add(1) }

func (m *metrics) observeRun(res sandbox.Result, err error, stdout, stderr int64) {
	m.outBytes[0].Add(uint64(stdout))
	m.outBytes[1].Add(uint64(stderr))
	switch {
	case err != nil:
		m.countRun(outcomeFailed)
		return
	case res.TimedOut:
		m.countRun(outcomeTimeout)
	case res.Cancelled:
		m.countRun(outcomeCancelled)
	case res.ExitCode == 0:
		m.countRun(outcomeOK)
	default:
		m.countRun(outcomeError)
	}
	m.duration.observe(res.Duration.Seconds())
	if res.Limit != "" {
		n, _ := m.limits.LoadOrStore(res.Limit, new(atomic.Uint64))
		n.(*atomic.Uint64).Add(1)
	}
}

// envCache records a lookup in the Python environment cache:
// prepareEnvironment calls it once per run that needed an environment.
func (m *metrics) envCache(hit bool) {
	if hit {
		m.envHits.Add(1)
	} else {
		m.envMisses.Add(1)
	}
}

// bucketBounds are the histogram's upper bounds in seconds, from a quick
// print(1) (~15 ms) to the longest default timeout.
var bucketBounds = [...]float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

type histogram struct {
	mu     sync.Mutex
	counts [len(bucketBounds) + 1]uint64 // per bucket, not cumulative; last is +Inf
	sum    float64
	n      uint64
}

func (h *histogram) observe(v float64) {
	i := len(bucketBounds)
	for j, b := range bucketBounds {
		if v <= b {
			i = j
			break
		}
	}
	h.mu.Lock()
	h.counts[i]++
	h.sum += v
	h.n++
	h.mu.Unlock()
}

func (h *histogram) write(w io.Writer, name, help string) {
	h.mu.Lock()
	counts, sum, n := h.counts, h.sum, h.n
	h.mu.Unlock()
	fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name)
	var cum uint64
	for i, c := range counts {
		cum += c
		le := "+Inf"
		if i < len(bucketBounds) {
			le = formatFloat(bucketBounds[i])
		}
		fmt.Fprintf(w, "%s_bucket{le=%q} %d\n", name, le, cum)
	}
	fmt.Fprintf(w, "%s_sum %s\n%s_count %d\n", name, formatFloat(sum), name, n)
}

func formatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "+Inf"
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// writeMetrics writes every series in the Prometheus text exposition format.
func (s *Server) writeMetrics(w io.Writer) {
	m := &s.metrics
	counter := func(name, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s counter\n", name, help, name)
	}
	gauge := func(name, help string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
	}

	counter("prims_runs_total", "Programs run_code was asked to run, by outcome.")
	for o, name := range outcomeNames {
		fmt.Fprintf(w, "prims_runs_total{outcome=%q} %d\n", name, m.runs[o].Load())
	}
	m.duration.write(w, "prims_run_duration_seconds", "Wall-clock time of each program, from start to exit.")
	m.queueWait.write(w, "prims_run_queue_wait_seconds", "Time each run waited for a free run slot.")
	gauge("prims_runs_in_flight", "Programs running now.")
	fmt.Fprintf(w, "prims_runs_in_flight %d\n", m.inFlight.Load())
	gauge("prims_runs_queued", "Runs waiting for a run slot now.")
	fmt.Fprintf(w, "prims_runs_queued %d\n", m.queued.Load())

	s.table.mu.Lock()
	sessions, workspaces := len(s.table.entries), 0
	for _, e := range s.table.entries {
		if e.sess != nil {
			workspaces++
		}
	}
	s.table.mu.Unlock()
	gauge("prims_sessions_active", "Live MCP sessions.")
	fmt.Fprintf(w, "prims_sessions_active %d\n", sessions)
	gauge("prims_workspaces_active", "Session workspaces on disk.")
	fmt.Fprintf(w, "prims_workspaces_active %d\n", workspaces)

	counter("prims_env_cache_total", "Lookups in the Python environment cache, by result.")
	fmt.Fprintf(w, "prims_env_cache_total{result=\"hit\"} %d\n", m.envHits.Load())
	fmt.Fprintf(w, "prims_env_cache_total{result=\"miss\"} %d\n", m.envMisses.Load())

	counter("prims_output_bytes_total", "Bytes programs wrote, by stream.")
	fmt.Fprintf(w, "prims_output_bytes_total{stream=\"stdout\"} %d\n", m.outBytes[0].Load())
	fmt.Fprintf(w, "prims_output_bytes_total{stream=\"stderr\"} %d\n", m.outBytes[1].Load())

	gauge("prims_sandbox_tier", "The isolation tier runs use (1 for the active tier).")
	fmt.Fprintf(w, "prims_sandbox_tier{tier=%q} 1\n", string(s.runner.Tier()))
	gauge("prims_sandbox_memory_enforcement", "How the memory limit bounds a run (1 for the active way).")
	fmt.Fprintf(w, "prims_sandbox_memory_enforcement{mode=%q} 1\n", string(s.runner.MemoryEnforcement()))
	counter("prims_runs_limited_total", "Runs a sandbox limit ended or broke, by limit.")
	for _, l := range []string{sandbox.LimitWallTime, sandbox.LimitCPUTime, sandbox.LimitMemory, sandbox.LimitMaxProcs, sandbox.LimitMaxFileSize, sandbox.LimitMaxOpenFiles, sandbox.LimitWorkspaceQuota} {
		var n uint64
		if c, ok := m.limits.Load(l); ok {
			n = c.(*atomic.Uint64).Load()
		}
		fmt.Fprintf(w, "prims_runs_limited_total{limit=%q} %d\n", l, n)
	}
	pool := s.runner.PoolStats()
	gauge("prims_warm_sandboxes", "Sandboxes started and waiting for code (--warm).")
	fmt.Fprintf(w, "prims_warm_sandboxes %d\n", pool.Waiting)
	gauge("prims_warm_sandbox_rss_bytes", "Resident memory of the waiting sandboxes.")
	fmt.Fprintf(w, "prims_warm_sandbox_rss_bytes %d\n", pool.RSSBytes)

	eg := egress.ReadTotals()
	counter("prims_egress_requests_total", "Requests through the egress proxy (installs and --allow-host), by result.")
	fmt.Fprintf(w, "prims_egress_requests_total{result=\"allowed\"} %d\n", eg.Requests-eg.Denied)
	fmt.Fprintf(w, "prims_egress_requests_total{result=\"denied\"} %d\n", eg.Denied)
	counter("prims_egress_bytes_total", "Bytes carried by the egress proxy, by direction.")
	fmt.Fprintf(w, "prims_egress_bytes_total{direction=\"up\"} %d\n", eg.BytesUp)
	fmt.Fprintf(w, "prims_egress_bytes_total{direction=\"down\"} %d\n", eg.BytesDown)
}

// countWriter counts the bytes passed through to w.
type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	c.n += int64(len(p))
	if c.w == nil {
		return len(p), nil
	}
	return c.w.Write(p)
}
