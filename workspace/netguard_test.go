package workspace

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// fakeDNS answers every A query with 127.0.0.1 and every AAAA query with
// ::1: a public-looking name that resolves to loopback, as a hostile or
// rebinding DNS server would serve it.
func fakeDNS(t *testing.T) *net.Resolver {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 512)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if n < 12 {
				continue
			}
			q := buf[12:n]
			end := 0
			for end < len(q) && q[end] != 0 {
				end += int(q[end]) + 1
			}
			if end+5 > len(q) {
				continue
			}
			question := q[:end+5]
			qtype := binary.BigEndian.Uint16(question[end+1:])
			resp := append([]byte{}, buf[:2]...)        // id
			resp = append(resp, 0x81, 0x80, 0, 1, 0, 1) // answer, recursion; 1 question, 1 answer
			resp = append(resp, 0, 0, 0, 0)
			resp = append(resp, question...)
			resp = append(resp, 0xc0, 12) // the name in the question
			if qtype == 28 {
				resp = append(resp, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16)
				resp = append(resp, net.IPv6loopback...)
			} else {
				resp = append(resp, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1)
			}
			pc.WriteTo(resp, from)
		}
	}()
	return &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "udp", pc.LocalAddr().String())
	}}
}

// TestFetchRefusesPrivate is the attack from issue 12: a program has the
// server fetch a loopback-only service's secret with mount_file, or PUT to
// it with persist_artifact. Each spelling of loopback, a name that resolves
// to it, and a redirect from a public server to it must be refused before a
// byte reaches the service. The control proves each URL does reach the
// service when private fetches are allowed.
func TestFetchRefusesPrivate(t *testing.T) {
	var hits atomic.Int64
	secret := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(rw, "LOOPBACK-SECRET")
	}))
	defer secret.Close()
	port := secret.Listener.Addr().(*net.TCPAddr).Port
	// The "public" server: a loopback listener the hooks treat as public,
	// which redirects to the secret service.
	public := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ok":
			io.WriteString(rw, "public data")
		default:
			http.Redirect(rw, r, secret.URL+"/secret", http.StatusFound)
		}
	}))
	defer public.Close()
	hooks := &transferHooks{
		resolver: fakeDNS(t),
		public:   netip.MustParseAddrPort(public.Listener.Addr().String()),
	}
	p := func(host string) string { return "http://" + host + ":" + strconv.Itoa(port) + "/secret" }

	urls := []struct {
		url     string
		control bool // the control can reach it on this host
	}{
		{secret.URL + "/secret", true},
		{p("localhost"), true},
		{p("data.public-looking.example"), true}, // fake DNS: 127.0.0.1
		{p("127.1"), false},
		{p("0x7f000001"), false},
		{p("2130706433"), false},
		{p("0.0.0.0"), true},
		{p("[::ffff:127.0.0.1]"), true},
		{p("[::1]"), false},
		{p("169.254.169.254"), false},
		{p("10.0.0.1"), false},
		{p("[fd00::1]"), false},
		{public.URL + "/redirect", true},
	}
	w := newWS(t)
	write(t, w, "output/body.txt", "written by the program")
	ctx := context.Background()
	lim := Limits{MaxDownload: 1 << 20, Timeout: 2 * time.Second, test: hooks}
	for _, tt := range urls {
		t.Run(tt.url, func(t *testing.T) {
			before := hits.Load()
			_, ferr := w.Fetch(ctx, tt.url, "x.txt", lim)
			_, uerr := w.Upload(ctx, "output/body.txt", tt.url, lim)
			if hits.Load() != before {
				t.Fatalf("the loopback service was reached (%d requests)", hits.Load()-before)
			}
			for _, err := range []error{ferr, uerr} {
				if err == nil {
					t.Fatal("transfer succeeded")
				}
				var we *Error
				if !errors.As(err, &we) {
					t.Errorf("error is not a *workspace.Error: %T", err)
				}
				// Names that do not resolve fail before any dial; every
				// other destination must be refused by name.
				if msg := err.Error(); !strings.Contains(msg, "not found") && !strings.Contains(msg, "--allow-private-fetch") {
					t.Errorf("error does not say why or what to do: %v", err)
				}
				if strings.Contains(err.Error(), "LOOPBACK-SECRET") {
					t.Errorf("error shows the service's answer: %v", err)
				}
			}
			if !tt.control {
				return
			}
			open := lim
			open.AllowPrivate = true
			if _, err := w.Fetch(ctx, tt.url, "control.txt", open); err != nil {
				t.Errorf("control: with private fetches allowed: %v", err)
			}
			if hits.Load() == before {
				t.Errorf("control: the service was not reached")
			}
		})
	}
	// The "public" server itself stays reachable: the guard refuses
	// addresses, not every fetch.
	if _, err := w.Fetch(ctx, public.URL+"/ok", "ok.txt", lim); err != nil {
		t.Errorf("public fetch: %v", err)
	}
}
