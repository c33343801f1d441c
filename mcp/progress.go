package mcp

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// progress turns a run's output into notifications/progress for clients
// that asked for them (by sending a progress token). Output is coalesced
// every flushEvery, so a flood becomes a few notifications a second, and a
// silent run still sends a heartbeat so clients with request timeouts keep
// waiting.
type progress struct {
	ctx       context.Context
	send      func(context.Context, *sdk.ProgressNotificationParams) error
	token     any
	heartbeat time.Duration
	start     time.Time

	mu      sync.Mutex
	pending map[string]*strings.Builder
	dropped map[string]int64
	seq     float64
	last    time.Time

	stopOnce sync.Once
	quit     chan struct{}
	done     chan struct{}
}

const (
	flushEvery      = 200 * time.Millisecond
	maxNotification = 4 << 10 // bytes of one stream per notification
)

func newProgress(ctx context.Context, req *sdk.CallToolRequest, heartbeat time.Duration) *progress {
	p := &progress{
		ctx:       ctx,
		heartbeat: heartbeat,
		start:     time.Now(),
		last:      time.Now(),
		pending:   map[string]*strings.Builder{},
		dropped:   map[string]int64{},
		quit:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	if req != nil && req.Params != nil && req.Session != nil {
		p.token = req.Params.GetProgressToken()
		p.send = req.Session.NotifyProgress
	}
	if p.token == nil {
		close(p.done)
		return p
	}
	go p.loop()
	return p
}

func (p *progress) loop() {
	defer close(p.done)
	t := time.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-p.quit:
			p.flush()
			return
		case <-p.ctx.Done():
			return
		case <-t.C:
			p.flush()
			p.mu.Lock()
			idle := time.Since(p.last) >= p.heartbeat
			p.mu.Unlock()
			if idle {
				p.status(fmt.Sprintf("still running (%s elapsed, no new output)", time.Since(p.start).Round(time.Second)))
			}
		}
	}
}

// stream returns a writer whose bytes are reported as output of the named
// stream.
func (p *progress) stream(name string) streamWriter { return streamWriter{p, name} }

type streamWriter struct {
	p    *progress
	name string
}

func (w streamWriter) Write(b []byte) (int, error) {
	p := w.p
	if p.token == nil {
		return len(b), nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	sb := p.pending[w.name]
	if sb == nil {
		sb = &strings.Builder{}
		p.pending[w.name] = sb
	}
	if room := maxNotification - sb.Len(); room > 0 {
		k := min(room, len(b))
		sb.Write(b[:k])
		p.dropped[w.name] += int64(len(b) - k)
	} else {
		p.dropped[w.name] += int64(len(b))
	}
	return len(b), nil
}

func (p *progress) flush() {
	p.mu.Lock()
	var msgs []string
	for _, name := range []string{"stdout", "stderr"} {
		sb := p.pending[name]
		if sb == nil || (sb.Len() == 0 && p.dropped[name] == 0) {
			continue
		}
		msg := name + ": " + strings.ToValidUTF8(sb.String(), "\uFFFD")
		if d := p.dropped[name]; d > 0 {
			msg += fmt.Sprintf("\n[... %d more bytes of %s not streamed; the result and logs/ have them]", d, name)
		}
		sb.Reset()
		p.dropped[name] = 0
		msgs = append(msgs, msg)
	}
	p.mu.Unlock()
	for _, m := range msgs {
		p.notify(m)
	}
}

// status sends a progress message that is not program output.
func (p *progress) status(msg string) {
	if p.token != nil {
		p.notify(msg)
	}
}

func (p *progress) notify(msg string) {
	p.mu.Lock()
	p.seq++
	seq := p.seq
	p.last = time.Now()
	p.mu.Unlock()
	// A client that went away is not the run's problem: errors are dropped.
	_ = p.send(p.ctx, &sdk.ProgressNotificationParams{ProgressToken: p.token, Message: msg, Progress: seq})
}

// stop flushes what is pending and ends the loop. It is idempotent.
func (p *progress) stop() {
	p.stopOnce.Do(func() { close(p.quit) })
	<-p.done
}
