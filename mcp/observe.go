package mcp

import (
	"time"

	"github.com/prims-mcp/prims/sandbox"
)

// observer feeds the metrics from what the session package reports about
// runs (session.Observer).
type observer struct{ m *metrics }

func (o observer) Refused()               { o.m.countRun(outcomeRefused) }
func (o observer) Queued(delta int)       { o.m.queued.Add(int64(delta)) }
func (o observer) Waited(d time.Duration) { o.m.queueWait.Observe(d.Seconds()) }
func (o observer) Started()               { o.m.inFlight.Add(1) }
func (o observer) EnvCache(hit bool)      { o.m.envCache(hit) }

func (o observer) Ended(res sandbox.Result, err error, stdout, stderr int64) {
	o.m.inFlight.Add(-1)
	o.m.observeRun(res, err, stdout, stderr)
}
