package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/workspace/pythonenv/pythonenvtest"
)

// TestStdioNetworkPolicy drives a real prims stdio built from its flags:
// a requirement whose sdist build tries the host's /tmp, a secret and a
// loopback service builds in the install sandbox (the wiring of
// --index-url to the install's egress policy), and --allow-host lets the
// code reach one host through the proxy and refuses another.
func TestStdioNetworkPolicy(t *testing.T) {
	py := testpython.Path(t)
	var probed atomic.Int64
	svc := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		probed.Add(1)
		io.WriteString(w, "service says hi")
	}))
	defer svc.Close()
	port := svc.Listener.Addr().(*net.TCPAddr).Port
	secret := filepath.Join(os.TempDir(), fmt.Sprintf("prims-e2e-secret-%d", os.Getpid()))
	os.WriteFile(secret, []byte("E2E-SECRET"), 0o644)
	defer os.Remove(secret)
	planted := filepath.Join(os.TempDir(), fmt.Sprintf("prims-e2e-planted-%d", os.Getpid()))
	defer os.Remove(planted)
	build := fmt.Sprintf(`
import os, socket
def probe(name, fn):
    try:
        report.append("%%s: %%s" %% (name, fn()))
    except Exception as e:
        report.append("%%s: refused (%%s)" %% (name, type(e).__name__))
probe("marker", lambda: open("marker", "w").write("x") and os.path.exists("marker"))
probe("plant", lambda: open(%q, "w").write("x"))
probe("secret", lambda: open(%q).read())
probe("service", lambda: socket.create_connection(("127.0.0.1", %d), timeout=3).close() or "connected")
`, planted, secret, port)
	ix := pythonenvtest.NewIndex(t, pythonenvtest.Package{Name: "hostile", Version: "1.0", Build: build})
	cache := t.TempDir()
	os.Chmod(cache, 0o755)
	os.Chmod(filepath.Dir(cache), 0o755)

	cmd := primsCmd(t, "stdio", "--python", py, "--index-url", ix.URL, "--cache-dir", cache,
		"--allow-host", fmt.Sprintf("localhost:%d", port), "--allow-private-fetch")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	ctx := context.Background()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "test"}, nil).Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer cs.Close()
	run := func(code string, reqs []string) (string, string) {
		t.Helper()
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": code, "requirements": reqs}})
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			Stdout, Stderr, Isolation string
		}
		b, _ := json.Marshal(res.StructuredContent)
		json.Unmarshal(b, &out)
		if res.IsError && out.Stdout == "" {
			b, _ := json.Marshal(res.Content)
			t.Fatalf("run_code failed: %s\nserver stderr:\n%s", b, stderr.String())
		}
		return out.Stdout, out.Isolation
	}

	report, isolation := run("import hostile, os\nprint(open(os.path.join(os.path.dirname(hostile.__file__), 'build_report.txt')).read())", []string{"hostile"})
	t.Logf("build report (%s):\n%s", isolation, report)
	if isolation == "none" {
		testenv.Skip(t, testenv.Userns, "no sandbox tier here: installs run on the host")
	}
	// "plant" may land in the sandbox's own /tmp; the host's is checked below.
	if !strings.Contains(report, "marker: True") || !strings.Contains(report, "secret: refused") || !strings.Contains(report, "service: refused") {
		t.Errorf("the install's build was not confined:\n%s", report)
	}
	if _, err := os.Stat(planted); err == nil {
		t.Errorf("the build planted %s on the host", planted)
	}
	if probed.Load() != 0 {
		t.Errorf("the build reached the loopback service")
	}

	out, _ := run(fmt.Sprintf(`
import urllib.request
print(urllib.request.urlopen("http://localhost:%d/", timeout=10).read().decode())
try:
    urllib.request.urlopen("https://elsewhere.example/", timeout=10)
except Exception as e:
    print(e)
`, port), nil)
	if !strings.Contains(out, "service says hi") || !strings.Contains(out, "403 prims egress refused elsewhere.example:443") {
		t.Errorf("--allow-host: %s", out)
	}
}
