package mcp

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
)

// promtoolCheck runs `promtool check metrics`, Prometheus's own linter of
// the text exposition format, on text.
func promtoolCheck(t *testing.T, text string) (string, error) {
	t.Helper()
	promtool, err := exec.LookPath("promtool")
	testenv.Need(t, err == nil, testenv.Promtool, "promtool is not on PATH (Debian: apt-get install prometheus)")
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(text)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestMetricsPromtool: promtool accepts /metrics once runs have filled the
// histograms and the labelled series, and the output has the standard Go
// runtime and process series next to PRIMS's own. The control shows that
// promtool refuses what a hand-written exposition can get wrong.
func TestMetricsPromtool(t *testing.T) {
	for _, bad := range []string{
		"# HELP prims_runs Runs.\n# TYPE prims_runs counter\nprims_runs 1\n", // a counter without _total
		"# HELP prims_x X.\n# TYPE prims_x gauge\nprims_x{a=b} 1\n",          // an unquoted label value
		"# HELP prims_x X.\n# TYPE prims_x gauge\nprims_x 1 2 3\n",           // not a sample
	} {
		if out, err := promtoolCheck(t, bad); err == nil {
			t.Errorf("control: promtool accepted %q: %s", bad, out)
		}
	}

	f := newHTTPFixture(t, HTTPConfig{})
	cs := f.mustConnect(t, clientOpts{})
	runOK(t, cs, "print('hello')")
	call(t, cs, "run_code", map[string]any{"code": "import sys; sys.exit(3)"})
	resp, body := get(t, f.url+"/metrics", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/metrics: %d", resp.StatusCode)
	}
	if out, err := promtoolCheck(t, body); err != nil {
		t.Errorf("promtool check metrics: %v\n%s\n/metrics:\n%s", err, out, body)
	}
	m, err := parseMetrics(body)
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}
	for _, k := range []string{
		"go_goroutines", "go_memstats_heap_inuse_bytes", "go_gc_duration_seconds_count",
		"process_open_fds", "process_resident_memory_bytes", "process_cpu_seconds_total",
		"prims_warm_sandboxes", "prims_zygotes", "prims_warm_sandbox_rss_bytes",
		`prims_env_cache_total{result="hit"}`, `prims_env_cache_total{result="miss"}`,
		`prims_runs_total{outcome="refused"}`, `prims_output_bytes_total{stream="stderr"}`,
		`prims_egress_requests_total{result="denied"}`, `prims_run_queue_wait_seconds_bucket{le="+Inf"}`,
	} {
		if _, ok := m[k]; !ok {
			t.Errorf("/metrics has no %s", k)
		}
	}
	if m[`prims_run_duration_seconds_bucket{le="+Inf"}`] != 2 || m["process_open_fds"] <= 0 {
		t.Errorf("duration +Inf bucket %v, open fds %v: want 2 runs and some descriptors", m[`prims_run_duration_seconds_bucket{le="+Inf"}`], m["process_open_fds"])
	}
}
