package mcp

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// MaxMessageBytes bounds one JSON-RPC message on stdio.
const MaxMessageBytes = sdk.DefaultMaxLineLength

// NewStdioTransport returns a newline-delimited JSON-RPC transport over in
// and out that survives a client's malformed lines. The SDK's own stdio
// transport decodes one JSON stream and ends the session at the first bad
// byte; this one answers a line that is not JSON, or is longer than
// MaxMessageBytes, with a JSON-RPC parse error (-32700) and reads on, as the
// JSON-RPC spec asks.
func NewStdioTransport(in io.Reader, out io.WriteCloser) sdk.Transport {
	pr, pw := io.Pipe()
	w := &lockedWriter{w: out}
	go filterLines(in, pw, w)
	return &sdk.IOTransport{Reader: pr, Writer: w}
}

// lockedWriter serializes the SDK's writes with the parse errors we write,
// so that lines never interleave. The SDK writes each message, newline
// included, in one Write call.
type lockedWriter struct {
	mu sync.Mutex
	w  io.WriteCloser
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) Close() error { return l.w.Close() }

func filterLines(in io.Reader, pw *io.PipeWriter, out io.Writer) {
	r := bufio.NewReaderSize(in, 64<<10)
	var line []byte
	tooLong := false
	for {
		chunk, err := r.ReadSlice('\n')
		if !tooLong && len(line)+len(chunk) > MaxMessageBytes+1 {
			tooLong, line = true, nil // drop it, but read on to its end
		}
		if !tooLong {
			line = append(line, chunk...)
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		msg := bytes.TrimSpace(line)
		switch {
		case tooLong:
			writeParseError(out, fmt.Sprintf("message longer than %d bytes", MaxMessageBytes))
		case len(msg) == 0:
			// Blank lines are allowed between messages.
		case !json.Valid(msg):
			writeParseError(out, "the line is not valid JSON")
		default:
			if _, werr := pw.Write(append(msg, '\n')); werr != nil {
				return // the session is closed
			}
		}
		line, tooLong = nil, false
		if err != nil {
			pw.CloseWithError(err)
			return
		}
	}
}

func writeParseError(out io.Writer, msg string) {
	b, _ := json.Marshal(map[string]any{
		"jsonrpc": "2.0",
		"id":      nil,
		"error":   map[string]any{"code": -32700, "message": "Parse error: " + msg},
	})
	out.Write(append(b, '\n'))
}
