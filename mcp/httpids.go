package mcp

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// httpIDs gives the HTTP transport what NewStdioTransport gives stdio:
// every request id comes back byte for byte. The SDK holds ids as int64 or
// string, so 1.5, 2**64 or 1e308 came back as something else. A request
// whose id would not survive reaches the SDK under a token of ours (a
// string no client guesses), and the token is swapped back for the
// client's id in every byte the SDK writes for it, replays of the event
// store included. Hand-written on purpose: it works around one limit of
// the SDK's own JSON-RPC types, and the parsing is encoding/json's.
type httpIDs struct {
	prefix []byte // `"prims-id-<random>-`: a token is prefix, a number, `"`

	mu    sync.Mutex
	next  int64
	raw   map[string]json.RawMessage // token (quoted) -> the client's id
	byRaw map[string]string          // the client's id (compact) -> token
	order []string                   // tokens, oldest first
}

// maxHTTPIDs bounds the ids remembered: one per request whose id needed a
// token, kept for replays after the response.
const maxHTTPIDs = 4096

func newHTTPIDs() *httpIDs {
	return &httpIDs{
		prefix: []byte(`"prims-id-` + rand.Text()[:12] + `-`),
		raw:    map[string]json.RawMessage{},
		byRaw:  map[string]string{},
	}
}

// plainID matches the ids the SDK carries exactly: integers that a
// float64 holds (the SDK decodes numbers as float64; checked after the
// match) and strings without escapes.
var plainID = regexp.MustCompile(`^(-?[1-9][0-9]{0,15}|0|"[^"\\]*")$`)

func survives(id json.RawMessage) bool {
	if !plainID.Match(id) {
		return false
	}
	if id[0] == '"' {
		return true
	}
	n, err := strconv.ParseInt(string(id), 10, 64)
	return err == nil && n >= -1<<53 && n <= 1<<53
}

// token returns the token standing for id, making one if needed.
func (m *httpIDs) token(id json.RawMessage) string {
	key := compactJSON(id)
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.byRaw[key]; ok {
		return t
	}
	m.next++
	t := string(m.prefix) + strconv.FormatInt(m.next, 10) + `"`
	m.raw[t] = json.RawMessage(key)
	m.byRaw[key] = t
	m.order = append(m.order, t)
	if len(m.order) > maxHTTPIDs {
		old := m.order[0]
		m.order = m.order[1:]
		delete(m.byRaw, string(m.raw[old]))
		delete(m.raw, old)
	}
	return t
}

func (m *httpIDs) lookup(token []byte) (json.RawMessage, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.raw[string(token)]
	return id, ok
}

func (m *httpIDs) tokenOf(id json.RawMessage) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, ok := m.byRaw[compactJSON(id)]
	return t, ok
}

// wrap rewrites the ids of POSTed messages on the way in and the tokens
// of every response on the way out.
func (m *httpIDs) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.Body != nil {
			body, err := io.ReadAll(io.LimitReader(r.Body, sdk.DefaultMaxRequestBodyBytes+1))
			r.Body.Close()
			if err == nil && len(body) <= sdk.DefaultMaxRequestBodyBytes {
				body = m.rewriteRequest(body)
				r.ContentLength = int64(len(body))
				r.Header.Set("Content-Length", strconv.Itoa(len(body)))
			}
			r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), errReader{err}))
		}
		next.ServeHTTP(&idWriter{ResponseWriter: w, ids: m}, r)
	})
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	return 0, io.EOF
}

// rewriteRequest returns body with the ids that need one replaced by
// tokens; anything it cannot parse it leaves to the SDK to refuse.
func (m *httpIDs) rewriteRequest(body []byte) []byte {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 {
		return body
	}
	switch trimmed[0] {
	case '{':
		var msg map[string]json.RawMessage
		if json.Unmarshal(trimmed, &msg) != nil || !m.rewriteMessage(msg) {
			return body
		}
		out, err := json.Marshal(msg)
		if err != nil {
			return body
		}
		return out
	case '[':
		var msgs []map[string]json.RawMessage
		if json.Unmarshal(trimmed, &msgs) != nil {
			return body
		}
		changed := false
		for _, msg := range msgs {
			if m.rewriteMessage(msg) {
				changed = true
			}
		}
		if !changed {
			return body
		}
		out, err := json.Marshal(msgs)
		if err != nil {
			return body
		}
		return out
	}
	return body
}

func (m *httpIDs) rewriteMessage(msg map[string]json.RawMessage) bool {
	if msg == nil {
		return false
	}
	if _, isReq := msg["method"]; !isReq {
		return false // a response to a request of ours: our ids survive
	}
	changed := false
	if id, ok := msg["id"]; ok && validID(id) && !survives(id) {
		msg["id"] = json.RawMessage(m.token(id))
		changed = true
	}
	if string(msg["method"]) == `"notifications/cancelled"` {
		var p map[string]json.RawMessage
		if json.Unmarshal(msg["params"], &p) == nil {
			if rid, ok := p["requestId"]; ok && !survives(rid) {
				if t, ok := m.tokenOf(rid); ok {
					p["requestId"] = json.RawMessage(t)
					if out, err := json.Marshal(p); err == nil {
						msg["params"] = out
						changed = true
					}
				}
			}
		}
	}
	return changed
}

// idWriter swaps tokens back for the client's ids. The SDK writes each
// message (a JSON body, or one event of a stream) in one Write, so a token
// is never split between two.
type idWriter struct {
	http.ResponseWriter
	ids *httpIDs
}

func (w *idWriter) Write(b []byte) (int, error) {
	if !bytes.Contains(b, w.ids.prefix) {
		return w.ResponseWriter.Write(b)
	}
	var out []byte
	rest := b
	for {
		i := bytes.Index(rest, w.ids.prefix)
		if i < 0 {
			break
		}
		end := bytes.IndexByte(rest[i+len(w.ids.prefix):], '"')
		if end < 0 {
			break
		}
		tok := rest[i : i+len(w.ids.prefix)+end+1]
		out = append(out, rest[:i]...)
		if id, ok := w.ids.lookup(tok); ok {
			out = append(out, id...)
		} else {
			out = append(out, tok...)
		}
		rest = rest[i+len(tok):]
	}
	out = append(out, rest...)
	if _, err := w.ResponseWriter.Write(out); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (w *idWriter) Flush() { http.NewResponseController(w.ResponseWriter).Flush() }

func (w *idWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
