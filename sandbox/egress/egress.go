// Package egress is the only way out of a sandbox that has network: an HTTP
// proxy (CONNECT and plain HTTP) that lets a request through when its host
// name and port match the policy, resolves names itself, and refuses
// private addresses unless the policy allows them.
//
//	p, err := egress.New(egress.Policy{Allow: []string{"api.example.com", "*.data.example.org:8443"}}, log)
//	if err != nil { ... }
//	defer p.Close()
//	go p.Serve(listener) // the sandbox's HTTP(S)_PROXY leads here
//
// A refused request gets a 403 whose reason phrase and body name the host
// that was refused and the ones that are allowed, so the program can print
// why. Every request is logged (host, port, bytes) and counted in Totals.
package egress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prims-mcp/prims/internal/netguard"
)

// Policy says where requests may go.
type Policy struct {
	// Allow lists host patterns: "example.com", "*.example.com" (any
	// subdomain, not the name itself), each with an optional ":port". A
	// pattern without a port allows 80 and 443.
	Allow []string
	// AllowPrivate lets allowed hosts resolve to loopback, private and
	// link-local addresses (an operator's own index or service).
	AllowPrivate bool
}

type rule struct {
	host     string // lower case; "*.x" for subdomains of x
	port     int    // 0: 80 and 443
	wildcard bool
}

func parseRule(s string) (rule, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	host, port := s, 0
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return rule{}, fmt.Errorf("allow-host %q: the port must be a number from 1 to 65535", s)
		}
		host, port = h, n
	}
	r := rule{host: host, port: port}
	if rest, ok := strings.CutPrefix(host, "*."); ok {
		r.wildcard, r.host = true, rest
	}
	if r.host == "" || strings.ContainsAny(r.host, "*/ @") {
		return rule{}, fmt.Errorf("allow-host %q: want a host name such as api.example.com or *.example.com, optionally with :port", s)
	}
	return r, nil
}

func (r rule) matches(host string, port int) bool {
	if r.port == 0 && port != 80 && port != 443 || r.port != 0 && port != r.port {
		return false
	}
	if r.wildcard {
		return strings.HasSuffix(host, "."+r.host)
	}
	return host == r.host
}

func (r rule) String() string {
	h := r.host
	if r.wildcard {
		h = "*." + h
	}
	if r.port != 0 {
		return net.JoinHostPort(h, strconv.Itoa(r.port))
	}
	return h
}

// Totals are counts over every proxy of this process.
type Totals struct {
	Requests, Denied, BytesUp, BytesDown int64
}

var totals struct{ requests, denied, up, down atomic.Int64 }

// ReadTotals returns the counts so far.
func ReadTotals() Totals {
	return Totals{totals.requests.Load(), totals.denied.Load(), totals.up.Load(), totals.down.Load()}
}

// Proxy is a running egress proxy. It is safe for concurrent use.
type Proxy struct {
	rules   []rule
	private bool
	log     *slog.Logger
	srv     *http.Server
	dialer  *net.Dialer
	fwd     *httputil.ReverseProxy

	slots chan struct{} // bounds the requests and tunnels open at once

	mu    sync.Mutex
	conns map[net.Conn]struct{} // tunnels, closed with the proxy
	done  bool
}

// New checks the policy and returns a proxy for it; Serve starts it.
func New(p Policy, log *slog.Logger) (*Proxy, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	px := &Proxy{private: p.AllowPrivate, log: log, conns: map[net.Conn]struct{}{}, slots: make(chan struct{}, maxOpen)}
	for _, s := range p.Allow {
		r, err := parseRule(s)
		if err != nil {
			return nil, err
		}
		px.rules = append(px.rules, r)
	}
	px.dialer = &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	if !p.AllowPrivate {
		px.dialer.Control = refusePrivate
	}
	px.fwd = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = pr.In.URL
			pr.Out.Host = pr.In.Host
		},
		Transport: &http.Transport{
			DialContext:         px.dialCounted,
			MaxIdleConns:        16,
			IdleConnTimeout:     30 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if errors.As(err, new(*privateError)) {
				totals.denied.Add(1)
				http.Error(w, "prims egress refused "+dialErrText(r.URL.Hostname(), err), http.StatusForbidden)
				return
			}
			http.Error(w, "prims egress: "+dialErrText(r.URL.Hostname(), err), http.StatusBadGateway)
		},
	}
	px.srv = &http.Server{Handler: px, ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
	return px, nil
}

// Allowed lists the policy's patterns, as a person would write them.
func (p *Proxy) Allowed() []string {
	out := make([]string, len(p.rules))
	for i, r := range p.rules {
		out[i] = r.String()
	}
	return out
}

// Serve answers proxy requests on l until Close.
func (p *Proxy) Serve(l net.Listener) error {
	err := p.srv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the proxy and cuts its tunnels.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.done = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	return p.srv.Close()
}

func (p *Proxy) allows(host string, port int) bool {
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	for _, r := range p.rules {
		if r.matches(host, port) {
			return true
		}
	}
	return false
}

// refusal is the reason phrase and body of a 403: clients print the reason
// of a failed CONNECT (Python: "Tunnel connection failed: 403 ...").
func (p *Proxy) refusal(host string, port int) string {
	allowed := "none"
	if len(p.rules) > 0 {
		allowed = strings.Join(p.Allowed(), ", ")
	}
	return fmt.Sprintf("prims egress refused %s: not an allowed host (allowed: %s)", net.JoinHostPort(host, strconv.Itoa(port)), allowed)
}

// maxOpen bounds what one proxy carries at once: every open connection of
// a run is a goroutine pair and a socket in the server.
const maxOpen = 256

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	select {
	case p.slots <- struct{}{}:
		defer func() { <-p.slots }()
	default:
		http.Error(w, fmt.Sprintf("prims egress: more than %d connections open at once; close some and retry", maxOpen), http.StatusServiceUnavailable)
		return
	}
	host, port, err := target(r)
	if err != nil {
		http.Error(w, "prims egress: "+err.Error(), http.StatusBadRequest)
		return
	}
	totals.requests.Add(1)
	if !p.allows(host, port) {
		totals.denied.Add(1)
		msg := p.refusal(host, port)
		p.log.Info("egress refused", "host", host, "port", port, "method", r.Method)
		p.rawRefuse(w, msg)
		return
	}
	if r.Method == http.MethodConnect {
		p.tunnel(w, r, host, port)
		return
	}
	cw := &countingWriter{ResponseWriter: w}
	body := &countingReader{r: r.Body}
	if r.Body != nil && r.Body != http.NoBody {
		r.Body = body
	}
	start := time.Now()
	p.fwd.ServeHTTP(cw, r)
	p.log.Info("egress", "host", host, "port", port, "method", r.Method, "bytes_up", body.n, "bytes_down", cw.n, "elapsed", time.Since(start))
}

// rawRefuse answers with the refusal in the status line as well as the
// body: clients print the reason phrase of a failed CONNECT, and
// requests' raise_for_status that of a plain request.
func (p *Proxy) rawRefuse(w http.ResponseWriter, msg string) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, msg, http.StatusForbidden)
		return
	}
	c, buf, err := hj.Hijack()
	if err != nil {
		return
	}
	defer c.Close()
	fmt.Fprintf(buf, "HTTP/1.1 403 %s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s\n", msg, len(msg)+1, msg)
	buf.Flush()
}

func (p *Proxy) tunnel(w http.ResponseWriter, r *http.Request, host string, port int) {
	start := time.Now()
	up, err := p.dialer.DialContext(r.Context(), "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		msg := dialErrText(host, err)
		p.log.Info("egress dial failed", "host", host, "port", port, "err", err)
		if errors.As(err, new(*privateError)) {
			totals.denied.Add(1)
			p.rawRefuse(w, "prims egress refused "+msg)
			return
		}
		http.Error(w, "prims egress: "+msg, http.StatusBadGateway)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		up.Close()
		http.Error(w, "prims egress: cannot tunnel", http.StatusInternalServerError)
		return
	}
	down, buf, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !p.track(down, up) {
		return
	}
	defer p.untrack(down, up)
	io.WriteString(down, "HTTP/1.1 200 Connection established\r\n\r\n")
	var sent, recv int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(up, bufReader(buf.Reader, down))
		sent = n
		closeWrite(up)
	}()
	recv, _ = io.Copy(down, up)
	closeWrite(down)
	wg.Wait()
	totals.up.Add(sent)
	totals.down.Add(recv)
	p.log.Info("egress", "host", host, "port", port, "method", "CONNECT", "bytes_up", sent, "bytes_down", recv, "elapsed", time.Since(start))
}

func (p *Proxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

func (p *Proxy) untrack(cs ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range cs {
		c.Close()
		delete(p.conns, c)
	}
}

// target is the host and port a proxy request is for.
func target(r *http.Request) (string, int, error) {
	hostport := r.Host
	def := 0
	if r.Method != http.MethodConnect {
		if !r.URL.IsAbs() || r.URL.Scheme != "http" {
			return "", 0, errors.New("this is a proxy: send absolute http:// URLs, or CONNECT for https")
		}
		hostport, def = r.URL.Host, 80
	}
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		if def == 0 {
			return "", 0, fmt.Errorf("CONNECT %q: want host:port", hostport)
		}
		host, p = hostport, strconv.Itoa(def)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 1 || port > 65535 || host == "" {
		return "", 0, fmt.Errorf("bad destination %q", hostport)
	}
	return strings.Trim(host, "[]"), port, nil
}

func (p *Proxy) dialCounted(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := p.dialer.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &countingConn{Conn: c}, nil
}

type countingConn struct{ net.Conn }

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	totals.down.Add(int64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	totals.up.Add(int64(n))
	return n, err
}

type countingReader struct {
	r io.ReadCloser
	n int64
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	return n, err
}

func (c *countingReader) Close() error { return c.r.Close() }

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (w *countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n += int64(n)
	return n, err
}

func (w *countingWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// bufReader reads what the server had buffered past the CONNECT request
// first, then the connection.
func bufReader(br *bufio.Reader, c net.Conn) io.Reader {
	if br.Buffered() == 0 {
		return c
	}
	return io.MultiReader(io.LimitReader(br, int64(br.Buffered())), c)
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	} else {
		c.Close()
	}
}

type privateError struct {
	addr netip.Addr
	kind string
}

func (e *privateError) Error() string { return fmt.Sprintf("%s is a %s address", e.addr, e.kind) }

// refusePrivate checks the address each connection actually dials, after
// the proxy's own DNS resolution.
func refusePrivate(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &privateError{kind: "unparsable"}
	}
	if k := netguard.Kind(ap.Addr()); k != "" {
		return &privateError{addr: ap.Addr().Unmap(), kind: k}
	}
	return nil
}

func dialErrText(host string, err error) string {
	var pe *privateError
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &pe):
		return fmt.Sprintf("%s: it resolves to %s, and private destinations are not allowed", host, pe)
	case errors.As(err, &dnsErr):
		return fmt.Sprintf("host %q was not found", host)
	}
	return fmt.Sprintf("could not connect to %s: %v", host, err)
}
