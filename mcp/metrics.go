package mcp

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/egress"
)

// metrics are the series behind GET /metrics, in a Prometheus registry of
// the server's own (not the global one: a test process runs many servers)
// next to the Go runtime and process collectors. initMetrics fills it.
type metrics struct {
	reg *prometheus.Registry

	// The server reads these too (drain, tests), so they stay plain
	// atomics that the registry reads at scrape time.
	runs     [numOutcomes]atomic.Uint64
	inFlight atomic.Int64
	queued   atomic.Int64

	duration  prometheus.Histogram   // seconds from start to exit of each program
	queueWait prometheus.Histogram   // seconds each run waited for a slot
	outBytes  *prometheus.CounterVec // by stream
	envLookup *prometheus.CounterVec // by result
	limited   *prometheus.CounterVec // by sandbox.Result.Limit
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

// bucketBounds are the histograms' upper bounds in seconds, from a quick
// print(1) (~15 ms) to the longest default timeout.
var bucketBounds = []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300}

// limitNames are the limits prims_runs_limited_total always shows, at 0
// until one fires, so a dashboard's query has a series from the start.
var limitNames = []string{sandbox.LimitWallTime, sandbox.LimitCPUTime, sandbox.LimitMemory, sandbox.LimitMaxProcs, sandbox.LimitMaxFileSize, sandbox.LimitMaxOpenFiles, sandbox.LimitWorkspaceQuota}

// initMetrics builds s.metrics and its registry. New calls it once.
func (s *Server) initMetrics() {
	m := &s.metrics
	m.duration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "prims_run_duration_seconds", Help: "Wall-clock time of each program, from start to exit.", Buckets: bucketBounds,
	})
	m.queueWait = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "prims_run_queue_wait_seconds", Help: "Time each run waited for a free run slot.", Buckets: bucketBounds,
	})
	m.outBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prims_output_bytes_total", Help: "Bytes programs wrote, by stream.",
	}, []string{"stream"})
	m.envLookup = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prims_env_cache_total", Help: "Lookups in the Python environment cache, by result.",
	}, []string{"result"})
	m.limited = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "prims_runs_limited_total", Help: "Runs a sandbox limit ended or broke, by limit.",
	}, []string{"limit"})
	// Every label value a dashboard may ask for is there from the start.
	for _, v := range []string{"stdout", "stderr"} {
		m.outBytes.WithLabelValues(v)
	}
	for _, v := range []string{"hit", "miss"} {
		m.envLookup.WithLabelValues(v)
	}
	for _, v := range limitNames {
		m.limited.WithLabelValues(v)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.duration, m.queueWait, m.outBytes, m.envLookup, m.limited,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prims_runs_in_flight", Help: "Programs running now."},
			func() float64 { return float64(m.inFlight.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "prims_runs_queued", Help: "Runs waiting for a run slot now."},
			func() float64 { return float64(m.queued.Load()) }),
		scrapeCollector{s},
	)
	for o, name := range outcomeNames {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "prims_runs_total", Help: "Programs run_code was asked to run, by outcome.",
			ConstLabels: prometheus.Labels{"outcome": name},
		}, func() float64 { return float64(m.runs[o].Load()) }))
	}
	m.reg = reg
}

func (m *metrics) countRun(o outcome) { m.runs[o].Add(1) }

func (m *metrics) observeRun(res sandbox.Result, err error, stdout, stderr int64) {
	m.outBytes.WithLabelValues("stdout").Add(float64(stdout))
	m.outBytes.WithLabelValues("stderr").Add(float64(stderr))
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
	m.duration.Observe(res.Duration.Seconds())
	if res.Limit != "" {
		m.limited.WithLabelValues(res.Limit).Inc()
	}
}

// envCache records a lookup in the Python environment cache:
// prepareEnvironment calls it once per run that needed an environment.
func (m *metrics) envCache(hit bool) {
	result := "miss"
	if hit {
		result = "hit"
	}
	m.envLookup.WithLabelValues(result).Inc()
}

// Series whose values live elsewhere (the session table, the runner, the
// egress proxy) and are read when Prometheus scrapes.
var (
	descSessions   = prometheus.NewDesc("prims_sessions_active", "Live MCP sessions.", nil, nil)
	descWorkspaces = prometheus.NewDesc("prims_workspaces_active", "Session workspaces on disk.", nil, nil)
	descTier       = prometheus.NewDesc("prims_sandbox_tier", "The isolation tier runs use (1 for the active tier).", []string{"tier"}, nil)
	descMemory     = prometheus.NewDesc("prims_sandbox_memory_enforcement", "How the memory limit bounds a run (1 for the active way).", []string{"mode"}, nil)
	descWarm       = prometheus.NewDesc("prims_warm_sandboxes", "Sandboxes started and waiting for code (--warm).", nil, nil)
	descZygotes    = prometheus.NewDesc("prims_zygotes", "Zygote sandboxes that fork each run's fresh interpreter (--zygote).", nil, nil)
	descWarmRSS    = prometheus.NewDesc("prims_warm_sandbox_rss_bytes", "Resident memory of the waiting sandboxes and the zygotes.", nil, nil)
	descEgressReqs = prometheus.NewDesc("prims_egress_requests_total", "Requests through the egress proxy (installs and --allow-host), by result.", []string{"result"}, nil)
	descEgressByte = prometheus.NewDesc("prims_egress_bytes_total", "Bytes carried by the egress proxy, by direction.", []string{"direction"}, nil)
)

// scrapeCollector reads the series of values the server keeps elsewhere,
// once per scrape: the warm pool's stats walk /proc, so they are read once
// for both of their series.
type scrapeCollector struct{ s *Server }

func (c scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descSessions, descWorkspaces, descTier, descMemory, descWarm, descZygotes, descWarmRSS, descEgressReqs, descEgressByte} {
		ch <- d
	}
}

func (c scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.s
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v int64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	s.table.mu.Lock()
	sessions, workspaces := len(s.table.entries), 0
	for _, e := range s.table.entries {
		if e.sess != nil {
			workspaces++
		}
	}
	s.table.mu.Unlock()
	gauge(descSessions, float64(sessions))
	gauge(descWorkspaces, float64(workspaces))

	if s.runner != nil {
		gauge(descTier, 1, string(s.runner.Tier()))
		gauge(descMemory, 1, string(s.runner.MemoryEnforcement()))
		pool := s.runner.PoolStats()
		gauge(descWarm, float64(pool.Waiting))
		gauge(descZygotes, float64(pool.Zygotes))
		gauge(descWarmRSS, float64(pool.RSSBytes))
	}

	eg := egress.ReadTotals()
	counter(descEgressReqs, eg.Requests-eg.Denied, "allowed")
	counter(descEgressReqs, eg.Denied, "denied")
	counter(descEgressByte, eg.BytesUp, "up")
	counter(descEgressByte, eg.BytesDown, "down")
}
