package mcp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/testpython"
	"github.com/prims-mcp/prims/sandbox"
)

// The two protocol generations a client may speak: Go clients negotiate the
// newest; most other clients speak 2025-11-25.
var contentProtocols = []string{"2026-07-28", "2025-11-25"}

// startContent serves a Server to an SDK client over in-memory transports,
// speaking the given protocol version ("" for the client's default).
func startContent(t *testing.T, cfg Config, copts *sdk.ClientOptions, version string) (*Server, *sdk.ClientSession) {
	t.Helper()
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return serveWith(t, cfg, runner, copts, version)
}

// serveWith serves a Server whose runs runner starts to an SDK client over
// in-memory transports (see startContent).
func serveWith(t *testing.T, cfg Config, runner *sandbox.Runner, copts *sdk.ClientOptions, version string) (*Server, *sdk.ClientSession) {
	t.Helper()
	cfg.Python = testpython.Path(t)
	srv, err := New(cfg, runner)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	st, ct := sdk.NewInMemoryTransports()
	ss, err := srv.SDK().Connect(t.Context(), st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ss.Close() })
	client := sdk.NewClient(&sdk.Implementation{Name: "test-client", Version: "v0"}, copts)
	cs, err := client.Connect(t.Context(), ct, &sdk.ClientSessionOptions{ProtocolVersion: version})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cs.Close() })
	if version != "" {
		if got := cs.InitializeResult().ProtocolVersion; got != version {
			t.Fatalf("negotiated protocol %s, want %s", got, version)
		}
	}
	return srv, cs
}

// callRun calls run_code and decodes its structured result.
func callRun(t *testing.T, cs *sdk.ClientSession, args map[string]any) (*sdk.CallToolResult, RunOutput) {
	t.Helper()
	res, err := cs.CallTool(t.Context(), &sdk.CallToolParams{Name: "run_code", Arguments: args})
	if err != nil {
		t.Fatalf("run_code: %v", err)
	}
	var out RunOutput
	if res.StructuredContent != nil {
		b, _ := json.Marshal(res.StructuredContent)
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("decode RunOutput: %v", err)
		}
	}
	return res, out
}

func resultText(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if tc, ok := c.(*sdk.TextContent); ok {
			b.WriteString(tc.Text)
			b.WriteString("\n")
		}
	}
	return b.String()
}

func contentOf[T sdk.Content](res *sdk.CallToolResult) []T {
	var out []T
	for _, c := range res.Content {
		if x, ok := c.(T); ok {
			out = append(out, x)
		}
	}
	return out
}

// pngFunc defines png(path, w, h, noise) in the program: a valid RGB PNG
// written with the standard library only. Noise makes it incompressible, so
// its size is predictable.
const pngFunc = `
import os, struct, zlib
def png(path, w, h, noise=False):
    raw = bytearray()
    for y in range(h):
        raw.append(0)
        for x in range(w):
            raw += os.urandom(3) if noise else bytes(((x * 7) % 256, (y * 5) % 256, 128))
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                + chunk(b"IDAT", zlib.compress(bytes(raw))) + chunk(b"IEND", b""))
`

func TestRunReturnsImageContent(t *testing.T) {
	for _, v := range contentProtocols {
		t.Run(v, func(t *testing.T) {
			srv, cs := startContent(t, Config{}, nil, v)
			res, out := callRun(t, cs, map[string]any{"code": pngFunc + `png("output/plot.png", 40, 30)`})
			if res.IsError {
				t.Fatalf("run failed: %s", resultText(res))
			}
			want, err := os.ReadFile(filepath.Join(srv.Workspace(), "output", "plot.png"))
			if err != nil {
				t.Fatal(err)
			}
			imgs := contentOf[*sdk.ImageContent](res)
			if len(imgs) != 1 {
				t.Fatalf("got %d images, want 1; content: %s", len(imgs), resultText(res))
			}
			if imgs[0].MIMEType != "image/png" || !bytes.Equal(imgs[0].Data, want) {
				t.Errorf("image: %s, %d bytes; want image/png, the %d bytes of output/plot.png", imgs[0].MIMEType, len(imgs[0].Data), len(want))
			}
			if len(out.Artifacts) != 1 || out.Artifacts[0].URI != "prims://workspace/output/plot.png" || out.Artifacts[0].Note != "shown below as an image" {
				t.Errorf("artifacts = %+v", out.Artifacts)
			}
			if !strings.Contains(resultText(res), "output/plot.png (") {
				t.Errorf("summary does not list the image:\n%s", resultText(res))
			}
		})
	}
}

func TestImageBudget(t *testing.T) {
	_, cs := startContent(t, Config{ImageBudget: 2000}, nil, "")
	code := pngFunc + `
png("output/small.png", 8, 8)               # ~100 B: always fits
png("output/noise1.png", 20, 20, noise=True) # ~1.3 KB: one of the two fits
png("output/noise2.png", 20, 20, noise=True)
png("output/big.png", 64, 64, noise=True)    # ~12 KB: over the whole budget
open("output/data.csv", "w").write("a,b\n1,2\n")
open("output/fake.png", "w").write("not an image\n")
`
	res, out := callRun(t, cs, map[string]any{"code": code})
	if res.IsError {
		t.Fatalf("run failed: %s", resultText(res))
	}
	if n := len(contentOf[*sdk.ImageContent](res)); n != 2 {
		t.Errorf("got %d images, want 2 (small.png and one noise image)", n)
	}
	links := map[string]*sdk.ResourceLink{}
	for _, l := range contentOf[*sdk.ResourceLink](res) {
		links[l.URI] = l
	}
	big := links["prims://workspace/output/big.png"]
	if big == nil || big.MIMEType != "image/png" || big.Size == nil || *big.Size < 12000 {
		t.Errorf("big.png link = %+v, want an image/png link with its size", big)
	}
	for _, name := range []string{"data.csv", "fake.png"} {
		if links["prims://workspace/output/"+name] == nil {
			t.Errorf("no resource link for output/%s; links: %v", name, slices.Collect(mapsKeys(links)))
		}
	}
	if len(links) != 4 {
		t.Errorf("got %d links, want 4 (big.png, a noise image, data.csv, fake.png)", len(links))
	}
	notes := map[string]string{}
	for _, a := range out.Artifacts {
		notes[a.Path] = a.Note
	}
	if !strings.Contains(notes["output/big.png"], "over the 2.0 KiB image budget") {
		t.Errorf("big.png note = %q", notes["output/big.png"])
	}
	if !strings.Contains(notes["output/fake.png"], "its content is text/plain") {
		t.Errorf("fake.png note = %q", notes["output/fake.png"])
	}
	if n1, n2 := notes["output/noise1.png"], notes["output/noise2.png"]; !strings.Contains(n1+n2, "newer images used") {
		t.Errorf("noise notes = %q, %q; want one to say the budget was used", n1, n2)
	}
	if text := resultText(res); !strings.Contains(text, "big.png (") || !strings.Contains(text, "image budget") {
		t.Errorf("summary does not say why big.png was left out:\n%s", text)
	}
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func TestShowSavesFigures(t *testing.T) {
	_, cs := startContent(t, Config{}, nil, "")
	// A fake matplotlib goes into the workspace, written by a run as an
	// agent's earlier code would, where the code's imports find it first.
	fakePyplot := pngFunc + `
_figs = {}
class Figure:
    def __init__(self, num):
        self.num = num
    def savefig(self, fname, **kwargs):
        png(fname, 10 + self.num, 10)
def figure(num=None):
    if num is None:
        num = max(_figs, default=0) + 1
    return _figs.setdefault(num, Figure(num))
def get_fignums():
    return sorted(_figs)
def close(fig):
    _figs.pop(fig.num, None)
def savefig(fname, **kwargs):
    _figs[max(_figs)].savefig(fname, **kwargs)
def show(*args, **kwargs):
    print("the real headless show() does nothing")
`
	files, _ := json.Marshal(map[string]string{"__init__.py": "", "pyplot.py": fakePyplot})
	write := "import json, os\nos.mkdir('matplotlib')\nfor name, src in json.loads(" + strconv.Quote(string(files)) + ").items():\n    open(os.path.join('matplotlib', name), 'w').write(src)"
	if res, _ := callRun(t, cs, map[string]any{"code": write}); res.IsError {
		t.Fatal(resultText(res))
	}
	const countHooks = `import sys; print(sum(type(f).__name__ == "_PrimsShowHook" for f in sys.meta_path))`

	res, out := callRun(t, cs, map[string]any{"code": countHooks})
	if strings.TrimSpace(out.Stdout) != "1" {
		t.Errorf("without matplotlib: %d hooks in sys.meta_path, want 1 idle hook; %s", len(out.Stdout), resultText(res))
	}

	res, out = callRun(t, cs, map[string]any{"code": "import matplotlib.pyplot as plt\nplt.figure(); plt.figure()\nplt.show()\n" + countHooks + "\nprint(plt.get_fignums())"})
	if res.IsError {
		t.Fatal(resultText(res))
	}
	if got, want := out.Stdout, "0\n[]\n"; got != want {
		t.Errorf("stdout = %q, want %q (hook removed once used, figures closed by show)", got, want)
	}
	var paths []string
	for _, a := range out.Artifacts {
		paths = append(paths, a.Path)
	}
	slices.Sort(paths)
	if want := []string{"output/figure-1.png", "output/figure-2.png"}; !slices.Equal(paths, want) {
		t.Errorf("artifacts = %v, want %v", paths, want)
	}
	if imgs := contentOf[*sdk.ImageContent](res); len(imgs) != 2 {
		t.Errorf("got %d images, want 2", len(imgs))
	}

	// A figure the program saved itself is not saved again; numbering
	// does not overwrite earlier figures.
	_, out = callRun(t, cs, map[string]any{"code": "import matplotlib.pyplot as plt\nplt.figure(); plt.savefig('output/mine.png')\nplt.figure()\nplt.show()"})
	paths = nil
	for _, a := range out.Artifacts {
		paths = append(paths, a.Path)
	}
	slices.Sort(paths)
	if want := []string{"output/figure-3.png", "output/mine.png"}; !slices.Equal(paths, want) {
		t.Errorf("artifacts = %v, want %v", paths, want)
	}
}

// TestContentPerProtocolVersion: a raw JSON-RPC client of each protocol
// version gets only the content types that version defines. resource_link
// came with 2025-06-18; older clients read the file's resource URI in text.
func TestContentPerProtocolVersion(t *testing.T) {
	t.Parallel()
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		t.Fatal(err)
	}
	code := `import base64
open("output/h.txt", "w").write("hello")
open("output/p.png", "wb").write(base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="))`
	args, _ := json.Marshal(map[string]any{"code": code})
	tests := []struct {
		version string
		want    []string // content types in order
		link    bool     // the text names the resource to read
	}{
		{"2024-11-05", []string{"text", "image"}, true},
		{"2025-03-26", []string{"text", "image"}, true},
		{"2025-06-18", []string{"text", "image", "resource_link"}, false},
		{"2025-11-25", []string{"text", "image", "resource_link"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.version, func(t *testing.T) {
			t.Parallel()
			c := startRaw(t, newStdioServer(t, runner))
			c.send(`{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"` + tt.version + `","capabilities":{},"clientInfo":{"name":"raw","version":"0"}}}`)
			var init struct {
				ProtocolVersion string `json:"protocolVersion"`
			}
			if err := json.Unmarshal(c.reply(`0`)["result"], &init); err != nil || init.ProtocolVersion != tt.version {
				t.Fatalf("negotiated %q (%v), want %s", init.ProtocolVersion, err, tt.version)
			}
			c.send(`{"jsonrpc":"2.0","method":"notifications/initialized"}`)
			c.send(`{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"run_code","arguments":` + string(args) + `}}`)
			m := c.reply(`1`)
			var res struct {
				IsError bool `json:"isError"`
				Content []struct {
					Type string `json:"type"`
					Text string `json:"text"`
				} `json:"content"`
			}
			if err := json.Unmarshal(m["result"], &res); err != nil || res.IsError {
				t.Fatalf("run_code: %s %s", m["result"], m["error"])
			}
			var types []string
			for _, c := range res.Content {
				types = append(types, c.Type)
			}
			if diff := cmp.Diff(tt.want, types); diff != "" {
				t.Errorf("content types (-want +got):\n%s", diff)
			}
			named := strings.Contains(res.Content[0].Text, "output/h.txt (5 B, text/plain; charset=utf-8): read it as resource prims://workspace/output/h.txt")
			if named != tt.link {
				t.Errorf("text names the resource to read: %v, want %v:\n%s", named, tt.link, res.Content[0].Text)
			}
		})
	}
}

// TestContentFor downgrades what a protocol version cannot carry.
func TestContentFor(t *testing.T) {
	size := int64(3)
	in := []sdk.Content{
		&sdk.TextContent{Text: "t"},
		&sdk.ResourceLink{URI: "prims://workspace/output/a.csv", Name: "a.csv", Title: "output/a.csv", MIMEType: "text/csv", Size: &size},
		&sdk.AudioContent{MIMEType: "audio/wav", Data: []byte("RIFF")},
		&sdk.ImageContent{MIMEType: "image/png", Data: []byte("x")},
	}
	kinds := func(cs []sdk.Content) []string {
		var out []string
		for _, c := range cs {
			out = append(out, fmt.Sprintf("%T", c))
		}
		return out
	}
	tests := []struct {
		version string
		want    []string
	}{
		{"2024-11-05", []string{"*mcp.TextContent", "*mcp.TextContent", "*mcp.TextContent", "*mcp.ImageContent"}},
		{"2025-03-26", []string{"*mcp.TextContent", "*mcp.TextContent", "*mcp.AudioContent", "*mcp.ImageContent"}},
		{"2025-06-18", []string{"*mcp.TextContent", "*mcp.ResourceLink", "*mcp.AudioContent", "*mcp.ImageContent"}},
		{"2026-07-28", []string{"*mcp.TextContent", "*mcp.ResourceLink", "*mcp.AudioContent", "*mcp.ImageContent"}},
		{"", []string{"*mcp.TextContent", "*mcp.ResourceLink", "*mcp.AudioContent", "*mcp.ImageContent"}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, kinds(contentFor(tt.version, in))); diff != "" {
			t.Errorf("%q (-want +got):\n%s", tt.version, diff)
		}
	}
	if got := contentFor("2025-03-26", in)[1].(*sdk.TextContent).Text; got != "output/a.csv (text/csv): read it as resource prims://workspace/output/a.csv" {
		t.Errorf("link as text: %q", got)
	}
}
