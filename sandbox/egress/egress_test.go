package egress

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
)

func start(t *testing.T, p Policy) string {
	t.Helper()
	px, err := New(p, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go px.Serve(ln)
	t.Cleanup(func() { px.Close() })
	return ln.Addr().String()
}

func get(t *testing.T, proxy, target string) (int, string) {
	t.Helper()
	pu, _ := url.Parse("http://" + proxy)
	c := &http.Client{Transport: &http.Transport{Proxy: http.ProxyURL(pu)}}
	resp, err := c.Get(target)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// connect sends a raw CONNECT and returns the status line.
func connect(t *testing.T, proxy, hostport string) (string, net.Conn) {
	t.Helper()
	c, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	fmt.Fprintf(c, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", hostport, hostport)
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	for {
		l, err := br.ReadString('\n')
		if err != nil || l == "\r\n" {
			break
		}
	}
	return strings.TrimSpace(line), c
}

func TestProxy(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "hello from "+r.Host)
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	open := start(t, Policy{Allow: []string{fmt.Sprintf("localhost:%d", port), "*.example.com"}, AllowPrivate: true})
	strict := start(t, Policy{Allow: []string{fmt.Sprintf("localhost:%d", port)}})
	target := fmt.Sprintf("http://localhost:%d/x", port)

	if code, body := get(t, open, target); code != 200 || !strings.Contains(body, "hello") {
		t.Errorf("allowed host: %d %q", code, body)
	}
	if line, _ := connect(t, open, fmt.Sprintf("localhost:%d", port)); !strings.Contains(line, " 200 ") {
		t.Errorf("CONNECT to an allowed host: %q", line)
	}
	before := hits.Load()
	for _, tt := range []struct{ proxy, target, want string }{
		{open, fmt.Sprintf("http://127.0.0.1:%d/x", port), "refused 127.0.0.1:"},    // an address, not the allowed name
		{open, fmt.Sprintf("http://localhost:%d/x", port+1), "allowed: localhost:"}, // another port
		{open, "http://example.com/", "refused example.com:80"},                     // *.example.com is not example.com
		{strict, target, "127.0.0.1 is a loopback address"},                         // allowed name, private address
	} {
		code, body := get(t, tt.proxy, tt.target)
		if code != http.StatusForbidden || !strings.Contains(body, tt.want) {
			t.Errorf("GET %s: %d %q, want 403 with %q", tt.target, code, body, tt.want)
		}
	}
	for _, tt := range []struct{ proxy, hostport, want string }{
		{open, "evil.test:443", "403 prims egress refused evil.test:443: not an allowed host (allowed: localhost:"},
		{strict, fmt.Sprintf("localhost:%d", port), "403 prims egress refused localhost: it resolves to 127.0.0.1"},
		{open, "169.254.169.254:80", "403 prims egress refused 169.254.169.254:80"},
	} {
		if line, _ := connect(t, tt.proxy, tt.hostport); !strings.Contains(line, tt.want) {
			t.Errorf("CONNECT %s: %q, want %q", tt.hostport, line, tt.want)
		}
	}
	if hits.Load() != before {
		t.Errorf("a refused request reached the server")
	}
	if tot := ReadTotals(); tot.Requests == 0 || tot.Denied == 0 || tot.BytesDown == 0 {
		t.Errorf("totals not counted: %+v", tot)
	}
}

func TestRules(t *testing.T) {
	for _, tt := range []struct {
		rule, host string
		port       int
		want       bool
	}{
		{"example.com", "example.com", 443, true},
		{"example.com", "example.com", 80, true},
		{"example.com", "example.com", 8080, false},
		{"example.com", "api.example.com", 443, false},
		{"*.example.com", "api.example.com", 443, true},
		{"*.example.com", "a.b.example.com", 443, true},
		{"*.example.com", "example.com", 443, false},
		{"*.example.com", "evilexample.com", 443, false},
		{"Example.COM:8443", "example.com", 8443, true},
		{"example.com:8443", "example.com", 443, false},
	} {
		r, err := parseRule(tt.rule)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.matches(tt.host, tt.port); got != tt.want {
			t.Errorf("%s matches %s:%d = %v, want %v", tt.rule, tt.host, tt.port, got, tt.want)
		}
	}
	for _, bad := range []string{"", "*", "a*.b.com", "http://x.com", "x.com:0", "x.com:http"} {
		if _, err := parseRule(bad); err == nil {
			t.Errorf("parseRule(%q) accepted", bad)
		}
	}
}

// TestProxyBoundsOpenConnections: a program cannot make the server hold an
// unbounded number of tunnels.
func TestProxyBoundsOpenConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	proxy := start(t, Policy{Allow: []string{fmt.Sprintf("localhost:%d", port)}, AllowPrivate: true})
	for i := range maxOpen {
		if line, _ := connect(t, proxy, fmt.Sprintf("localhost:%d", port)); !strings.Contains(line, " 200 ") {
			t.Fatalf("tunnel %d: %q", i, line)
		}
	}
	if line, _ := connect(t, proxy, fmt.Sprintf("localhost:%d", port)); !strings.Contains(line, " 503 ") {
		t.Errorf("tunnel %d: %q, want 503", maxOpen+1, line)
	}
}
