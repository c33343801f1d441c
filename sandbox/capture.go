package sandbox

import (
	"fmt"
	"strings"
	"sync"
)

// Capture keeps the head and the tail of a stream within a byte budget while
// the stream is written, and counts the bytes in between, so a run that
// prints a gigabyte costs the server a few kilobytes. It is safe for
// concurrent use.
type Capture struct {
	mu       sync.Mutex
	budget   int
	head     []byte
	tail     []byte // ring buffer once full
	tailPos  int
	tailFull bool
	total    int64
}

// NewCapture returns a Capture that keeps at most budget bytes: the first
// half of the budget and the last half.
func NewCapture(budget int) *Capture {
	if budget < 2 {
		budget = 2
	}
	return &Capture{budget: budget}
}

// Write records p. It never fails.
func (c *Capture) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := len(p)
	c.total += int64(n)
	headMax := c.budget / 2
	if room := headMax - len(c.head); room > 0 {
		k := min(room, len(p))
		c.head = append(c.head, p[:k]...)
		p = p[k:]
	}
	tailMax := c.budget - headMax
	for len(p) > 0 {
		if !c.tailFull {
			k := min(tailMax-len(c.tail), len(p))
			c.tail = append(c.tail, p[:k]...)
			p = p[k:]
			if len(c.tail) == tailMax {
				c.tailFull = true
			}
			continue
		}
		if len(p) >= tailMax {
			copy(c.tail, p[len(p)-tailMax:])
			c.tailPos = 0
			p = nil
			continue
		}
		k := copy(c.tail[c.tailPos:], p)
		c.tailPos = (c.tailPos + k) % tailMax
		p = p[k:]
	}
	return n, nil
}

// Total is the number of bytes written so far.
func (c *Capture) Total() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// Truncated reports whether bytes were dropped from the middle.
func (c *Capture) Truncated() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total > int64(len(c.head)+len(c.tail))
}

// String returns the kept bytes as text: invalid UTF-8 becomes U+FFFD, and a
// marker between head and tail says how many bytes were left out.
func (c *Capture) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	tail := c.tail
	if c.tailFull && c.tailPos != 0 {
		tail = append(append([]byte{}, c.tail[c.tailPos:]...), c.tail[:c.tailPos]...)
	}
	var b strings.Builder
	b.WriteString(strings.ToValidUTF8(string(c.head), "\uFFFD"))
	if omitted := c.total - int64(len(c.head)+len(tail)); omitted > 0 {
		fmt.Fprintf(&b, "\n[... %d bytes omitted ...]\n", omitted)
	}
	b.WriteString(strings.ToValidUTF8(string(tail), "\uFFFD"))
	return b.String()
}
