package sandbox

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox/egress"
)

// egressProbe asks an allowed host through the proxy, a denied host over
// https (CONNECT) and http, then tries the way around the proxy: a direct
// TCP connection to the same service, UDP to an outside address and a raw
// socket.
const egressProbe = `
import socket, ssl, urllib.request, urllib.error
PORT, TLS_PORT = %d, %d
print("allowed:", urllib.request.urlopen("http://localhost:%%d/ok" %% PORT, timeout=10).read().decode())
tls = ssl._create_unverified_context()  # the test server's certificate is self-signed
print("tunnel:", urllib.request.urlopen("https://localhost:%%d/ok" %% TLS_PORT, timeout=10, context=tls).read().decode())
for url in ("https://denied.example/", "http://denied.example/"):
    try:
        urllib.request.urlopen(url, timeout=10)
        print("denied host answered")
    except urllib.error.HTTPError as e:
        print("refused:", e.code, e.read().decode().strip())
    except Exception as e:
        print("refused:", e)
def probe(name, fn):
    try:
        fn()
        print(name + ": open")
    except OSError as e:
        print(name + ": no route (%%s)" %% type(e).__name__)
probe("direct", lambda: socket.create_connection(("127.0.0.1", PORT), timeout=3))
probe("udp", lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b"x", ("192.0.2.1", 53)))
probe("raw", lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))
`

// TestAllowHost is issue 12's middle ground between no network and
// --network: the code reaches the allowed host through the server's egress
// proxy, a denied host is refused with a message that names it and the
// allowed ones, and nothing gets around the proxy. The control runs the
// same probe with --network, where the direct connection succeeds.
func TestAllowHost(t *testing.T) {
	py := testpython.Path(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello over TLS")
	}))
	defer tlsSrv.Close()
	tlsPort := tlsSrv.Listener.Addr().(*net.TCPAddr).Port
	code := fmt.Sprintf(egressProbe, port, tlsPort)
	// With cfg.Warm, the probe runs twice in one workspace, the second
	// time forked by the zygote (namespaces) or handed to a waiting
	// sandbox; the second run's output is returned.
	run := func(t *testing.T, cfg Config) string {
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		ws := mkWorkspace(t)
		var out, errOut strings.Builder
		for i := range 1 + min(cfg.Warm, 1) {
			if i > 0 {
				waitWarm(t, r)
			}
			out.Reset()
			errOut.Reset()
			res, err := r.Run(context.Background(), Job{Python: py, Code: code, Dir: ws, Stdout: &out, Stderr: &errOut})
			if err != nil {
				t.Fatal(err)
			}
			if res.ExitCode != 0 {
				t.Fatalf("exit %d:\n%s%s", res.ExitCode, out.String(), errOut.String())
			}
			if res.Warm != (i > 0) {
				t.Fatalf("run %d: warm %v", i, res.Warm)
			}
		}
		return out.String()
	}
	t.Run("control", func(t *testing.T) {
		out := run(t, Config{Network: true})
		if !strings.Contains(out, "direct: open") {
			t.Errorf("with --network the probe cannot reach the service directly:\n%s", out)
		}
	})
	s := Probe()
	for _, v := range []struct {
		tier Tier
		warm int
	}{{TierNamespaces, 0}, {TierNamespaces, 1}, {TierLandlock, 0}} {
		tier := v.tier
		t.Run(fmt.Sprintf("%s/warm=%d", tier, v.warm), func(t *testing.T) {
			if !s.Can(tier) {
				feature := testenv.Userns
				if tier == TierLandlock {
					feature = testenv.Landlock
				}
				testenv.Skip(t, feature, "%s", s.Missing())
			}
			if tier == TierLandlock && s.Landlock < 4 {
				testenv.Skip(t, testenv.Landlock, "Landlock ABI %d has no TCP rules", s.Landlock)
			}
			out := run(t, Config{Tier: tier, Warm: v.warm, Egress: egress.Policy{Allow: []string{fmt.Sprintf("localhost:%d", port), fmt.Sprintf("localhost:%d", tlsPort)}, AllowPrivate: true}})
			t.Logf("in the %s tier:\n%s", tier, out)
			for _, want := range []string{
				"allowed: hello",
				"tunnel: hello over TLS",
				fmt.Sprintf("Tunnel connection failed: 403 prims egress refused denied.example:443: not an allowed host (allowed: localhost:%d, localhost:%d)", port, tlsPort),
				fmt.Sprintf("refused: 403 prims egress refused denied.example:80: not an allowed host (allowed: localhost:%d, localhost:%d)", port, tlsPort),
				"direct: no route", "udp: no route", "raw: no route",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("output lacks %q", want)
				}
			}
		})
	}
}
