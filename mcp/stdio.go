package mcp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// MaxMessageBytes bounds one JSON-RPC message on stdio.
const MaxMessageBytes = sdk.DefaultMaxLineLength

// EOFGrace is how long requests in flight when the client closes its input
// may take to answer before the session ends and their runs are killed: long
// enough for anything but a run, short enough that a client that closed
// stdin to stop the server need not send a signal.
const EOFGrace = 5 * time.Second

// NewStdioTransport returns a newline-delimited JSON-RPC transport over in
// and out that no client line can break.
//
// The SDK's own stdio transport ends the session at the first line it cannot
// decode, and its ids are int64 or string, so 1.5, 2**64 or 10**400 came back
// changed (or ended the session). This one checks each line itself: a line
// that is not JSON gets a parse error (-32700), one that is JSON but not a
// JSON-RPC 2.0 message (`{}`, `1`, a batch, a boolean id, "jsonrpc":"1.0")
// gets an invalid-request error (-32600) with the request's id when it has a
// valid one, and the session reads on. Every request reaches the SDK under an
// id of our own; its response goes back with the client's id byte for byte.
//
// The end of in is the client's way to shut the server down (the MCP stdio
// transport's shutdown sequence), and `printf REQUEST | prims stdio` its
// simplest use: requests already read get up to EOFGrace to answer before
// the session ends, so their answers are not lost.
//
// When out is a pipe whose reader goes away, the session ends (io.EOF) at
// once, even while nothing is being written, so that the server kills its
// runs and removes its workspace instead of waiting or dying of SIGPIPE.
func NewStdioTransport(in io.Reader, out io.WriteCloser) sdk.Transport {
	return &stdioTransport{in: in, out: out}
}

type stdioTransport struct {
	in  io.Reader
	out io.WriteCloser
}

func (t *stdioTransport) Connect(context.Context) (sdk.Connection, error) {
	c := &stdioConn{
		in:       t.in,
		out:      t.out,
		incoming: make(chan jsonrpc.Message),
		eof:      make(chan struct{}),
		closed:   make(chan struct{}),
		calls:    make(map[int64]clientCall),
		answered: make(chan struct{}),
		inFlight: make(map[string]int64),
	}
	go c.readLoop()
	if f, ok := t.out.(*os.File); ok {
		go watchReaderGone(f, c.closed, func() { c.Close() })
	}
	return c, nil
}

// clientCall is a request in flight under one of our ids.
type clientCall struct {
	id      json.RawMessage // as the client sent it
	key     string          // its key in inFlight
	preInit bool            // read before any initialize
}

type stdioConn struct {
	in  io.Reader
	out io.WriteCloser

	incoming chan jsonrpc.Message
	eof      chan struct{} // closed when the input ends
	closed   chan struct{} // closed by Close

	closeOnce sync.Once

	writeMu sync.Mutex // one line at a time

	mu          sync.Mutex
	next        int64
	calls       map[int64]clientCall
	answered    chan struct{}    // closed (and renewed) when a call is answered
	inFlight    map[string]int64 // client id (compact JSON) -> our id
	initialized bool             // an initialize request has been read
}

func (c *stdioConn) SessionID() string { return "" }

func (c *stdioConn) Read(ctx context.Context) (jsonrpc.Message, error) {
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-c.closed:
		return nil, io.EOF
	default:
	}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case m := <-c.incoming:
		return m, nil
	case <-c.eof:
		return nil, c.drain(ctx)
	case <-c.closed:
		return nil, io.EOF
	}
}

// drain waits, after the input ended, until every request read has been
// answered or EOFGrace has passed, and then reports the end of the input.
func (c *stdioConn) drain(ctx context.Context) error {
	grace := time.NewTimer(EOFGrace)
	defer grace.Stop()
	for {
		c.mu.Lock()
		pending, answered := len(c.calls), c.answered
		c.mu.Unlock()
		if pending == 0 {
			return io.EOF
		}
		select {
		case <-answered:
		case <-grace.C:
			return io.EOF
		case <-c.closed:
			return io.EOF
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (c *stdioConn) Write(ctx context.Context, msg jsonrpc.Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	var data []byte
	var err error
	if r, ok := msg.(*jsonrpc.Response); ok {
		data, err = c.encodeResponse(r)
	} else {
		data, err = jsonrpc.EncodeMessage(msg)
	}
	if err != nil {
		return fmt.Errorf("encode message: %w", err)
	}
	return c.writeLine(data)
}

// writeLine writes one message and its newline in one call. A failed write
// means the client no longer reads us: the session ends.
func (c *stdioConn) writeLine(data []byte) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	select {
	case <-c.closed:
		return fmt.Errorf("write: %w", io.EOF)
	default:
	}
	_, err := c.out.Write(append(data, '\n'))
	if err != nil {
		go c.Close()
		if errors.Is(err, syscall.EPIPE) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, os.ErrClosed) {
			// The SDK reports io.EOF as the client leaving, not as a failure.
			return fmt.Errorf("the client closed its input: %w", io.EOF)
		}
		return err
	}
	return nil
}

func (c *stdioConn) Close() error {
	c.closeOnce.Do(func() {
		close(c.closed)
		if rc, ok := c.in.(io.Closer); ok {
			rc.Close()
		}
		c.out.Close()
	})
	return nil
}

// encodeResponse writes a response under the id the client sent, and gives
// errors without a JSON-RPC code one: a request before initialize is an
// invalid request, anything else an internal error.
func (c *stdioConn) encodeResponse(r *jsonrpc.Response) ([]byte, error) {
	n, _ := r.ID.Raw().(int64)
	c.mu.Lock()
	call, ok := c.calls[n]
	if ok {
		delete(c.calls, n)
		if c.inFlight[call.key] == n {
			delete(c.inFlight, call.key)
		}
		close(c.answered)
		c.answered = make(chan struct{})
	}
	c.mu.Unlock()
	if !ok {
		return jsonrpc.EncodeMessage(r)
	}
	out := wireResponse{JSONRPC: "2.0", ID: call.id, Result: r.Result}
	if r.Error != nil {
		out.Result = nil
		out.Error = wireError(r.Error, call.preInit)
	} else if out.Result == nil {
		out.Result = json.RawMessage("{}")
	}
	return json.Marshal(out)
}

type wireResponse struct {
	JSONRPC string          `json:"jsonrpc"`
	ID      json.RawMessage `json:"id"`
	Result  json.RawMessage `json:"result,omitempty"`
	Error   *jsonrpc.Error  `json:"error,omitempty"`
}

func wireError(err error, preInit bool) *jsonrpc.Error {
	var we *jsonrpc.Error
	if errors.As(err, &we) {
		if we == err {
			return we
		}
		// As the SDK does: the wrapped code, the outer message.
		return &jsonrpc.Error{Code: we.Code, Message: err.Error()}
	}
	code := int64(jsonrpc.CodeInternalError)
	if preInit {
		code = jsonrpc.CodeInvalidRequest
	}
	return &jsonrpc.Error{Code: code, Message: err.Error()}
}

func (c *stdioConn) readLoop() {
	defer close(c.eof)
	r := bufio.NewReaderSize(c.in, 64<<10)
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
			c.replyError(nil, jsonrpc.CodeParseError, fmt.Sprintf("Parse error: message longer than %d bytes", MaxMessageBytes))
		case len(msg) == 0:
			// Blank lines are allowed between messages.
		case !json.Valid(msg):
			c.replyError(nil, jsonrpc.CodeParseError, "Parse error: the line is not valid JSON")
		default:
			if m := c.accept(msg); m != nil {
				select {
				case c.incoming <- m:
				case <-c.closed:
					return
				}
			}
		}
		line, tooLong = nil, false
		if err != nil {
			return
		}
	}
}

// replyError answers a message the SDK never sees. id is the client's, or
// nil when it has none that is valid (sent as null).
func (c *stdioConn) replyError(id json.RawMessage, code int64, msg string) {
	if id == nil {
		id = json.RawMessage("null")
	}
	data, _ := json.Marshal(wireResponse{JSONRPC: "2.0", ID: id, Error: &jsonrpc.Error{Code: code, Message: msg}})
	c.writeLine(data)
}

// accept checks that one valid JSON value is a JSON-RPC 2.0 message and
// returns it for the SDK, or answers it with an error and returns nil.
func (c *stdioConn) accept(line []byte) jsonrpc.Message {
	invalid := func(id json.RawMessage, why string) jsonrpc.Message {
		c.replyError(id, jsonrpc.CodeInvalidRequest, "Invalid Request: "+why)
		return nil
	}
	switch line[0] {
	case '{':
	case '[':
		return invalid(nil, "batches are not supported: send one message per line")
	default:
		return invalid(nil, "a JSON-RPC message is a JSON object")
	}
	// A map, not a struct: encoding/json matches struct fields without
	// regard to case, and "ID" is not "id".
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(line, &fields); err != nil {
		return invalid(nil, "a JSON-RPC message is a JSON object")
	}
	id, hasID := fields["id"]
	if hasID && !validID(id) {
		return invalid(nil, "the id must be a string or a number")
	}
	var version string
	if err := json.Unmarshal(fields["jsonrpc"], &version); err != nil || version != "2.0" {
		return invalid(id, `"jsonrpc" must be "2.0"`)
	}
	rawMethod, hasMethod := fields["method"]
	if !hasMethod {
		_, hasResult := fields["result"]
		_, hasError := fields["error"]
		if !hasResult && !hasError {
			return invalid(id, `a request needs a "method"`)
		}
		return c.acceptResponse(id, fields)
	}
	var method string
	if rawMethod[0] != '"' || json.Unmarshal(rawMethod, &method) != nil {
		return invalid(id, `"method" must be a string`)
	}
	params := fields["params"]
	if !hasID {
		if method == "notifications/cancelled" {
			params = c.translateCancel(params)
			if params == nil {
				return nil // for a request that is not in flight
			}
		}
		return &jsonrpc.Request{Method: method, Params: params}
	}
	key := compactJSON(id)
	c.mu.Lock()
	if _, busy := c.inFlight[key]; busy {
		c.mu.Unlock()
		return invalid(nil, "this id is already in use by a request in flight")
	}
	c.next++
	n := c.next
	preInit := !c.initialized && method != "initialize" && !perRequestProtocol(params)
	c.calls[n] = clientCall{id: bytes.Clone(id), key: key, preInit: preInit}
	c.inFlight[key] = n
	if method == "initialize" {
		c.initialized = true
	}
	c.mu.Unlock()
	return &jsonrpc.Request{ID: internalID(n), Method: method, Params: params}
}

// acceptResponse passes on the client's answer to a request of ours (such
// as sampling), whose ids are small integers; anything else answers nothing
// we asked, and a response gets no response.
func (c *stdioConn) acceptResponse(id json.RawMessage, fields map[string]json.RawMessage) jsonrpc.Message {
	n, err := strconv.ParseInt(string(id), 10, 64)
	if err != nil {
		return nil
	}
	r := &jsonrpc.Response{ID: internalID(n), Result: fields["result"]}
	if raw, ok := fields["error"]; ok {
		we := &jsonrpc.Error{}
		if err := json.Unmarshal(raw, we); err != nil {
			we = &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "malformed error in the client's response"}
		}
		r.Error, r.Result = we, nil
	}
	return r
}

// translateCancel rewrites the requestId of notifications/cancelled to our
// id for it. It returns nil when that request is not in flight.
func (c *stdioConn) translateCancel(params json.RawMessage) json.RawMessage {
	var p map[string]json.RawMessage
	if json.Unmarshal(params, &p) != nil {
		return nil
	}
	c.mu.Lock()
	n, ok := c.inFlight[compactJSON(p["requestId"])]
	c.mu.Unlock()
	if !ok {
		return nil
	}
	p["requestId"] = json.RawMessage(strconv.FormatInt(n, 10))
	out, err := json.Marshal(p)
	if err != nil {
		return nil
	}
	return out
}

// perRequestProtocol reports whether params carry the protocol version in
// _meta, as requests of 2026-07-28, which has no initialize, do.
func perRequestProtocol(params json.RawMessage) bool {
	var p struct {
		Meta map[string]json.RawMessage `json:"_meta"`
	}
	if json.Unmarshal(params, &p) != nil {
		return false
	}
	_, ok := p.Meta[sdk.MetaKeyProtocolVersion]
	return ok
}

func internalID(n int64) jsonrpc.ID {
	id, _ := jsonrpc.MakeID(float64(n)) // exact: n stays far below 2**53
	return id
}

// validID reports whether raw (valid JSON) is a string or a number. Null is
// not: MCP forbids it, and JSON-RPC reserves it for errors without an id.
func validID(raw json.RawMessage) bool {
	if len(raw) == 0 {
		return false
	}
	switch b := raw[0]; {
	case b == '"', b == '-', b >= '0' && b <= '9':
		return true
	}
	return false
}

func compactJSON(raw json.RawMessage) string {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return string(raw)
	}
	return b.String()
}
