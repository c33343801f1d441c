package sandbox

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/prims-mcp/prims/sandbox/egress"
)

// gate is a running egress proxy and the two ways a sandbox reaches it: a
// unix socket, for the forwarder the namespaces tier's init runs inside
// the run's empty network namespace, and a port on the host's loopback,
// for the landlock tier, where Landlock lets the program connect to that
// port only. The program sees the proxy at 127.0.0.1:port either way.
type gate struct {
	proxy *egress.Proxy
	dir   string // holds the socket; the server's alone
	sock  string
	port  int
	lns   []net.Listener
}

func openGate(p egress.Policy, log *slog.Logger) (*gate, error) {
	px, err := egress.New(p, log)
	if err != nil {
		return nil, err
	}
	g := &gate{proxy: px}
	g.dir, err = os.MkdirTemp("", "prims-egress-")
	if err != nil {
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	g.sock = filepath.Join(g.dir, "proxy.sock")
	uln, err := net.Listen("unix", g.sock)
	if err != nil {
		g.close()
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	g.lns = append(g.lns, uln)
	// The sandbox user connects through a descriptor, never by path: the
	// directory stays the server's (0700), the socket anyone's who holds it.
	if err := os.Chmod(g.sock, 0o666); err != nil {
		g.close()
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		g.close()
		return nil, fmt.Errorf("egress proxy: %w", err)
	}
	g.lns = append(g.lns, tln)
	g.port = tln.Addr().(*net.TCPAddr).Port
	for _, l := range g.lns {
		go px.Serve(l)
	}
	return g, nil
}

func (g *gate) close() {
	if g == nil {
		return
	}
	g.proxy.Close()
	for _, l := range g.lns {
		l.Close()
	}
	os.RemoveAll(g.dir)
}

// withProxyEnv points every HTTP client the program may use at the gate,
// replacing whatever proxy settings env had.
func (g *gate) withProxyEnv(env []string) []string {
	out := make([]string, 0, len(env)+8)
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch strings.ToLower(k) {
		case "http_proxy", "https_proxy", "all_proxy", "no_proxy":
			continue
		}
		out = append(out, kv)
	}
	u := "http://127.0.0.1:" + strconv.Itoa(g.port)
	for _, k := range []string{"HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"} {
		out = append(out, k+"="+u)
	}
	return out
}
