// Command transcript records what a model receives from PRIMS for three
// typical runs (one that plots, one that fails on a missing module, one
// that times out) and prints it as Markdown. It drives a real server and
// real Python through the go-sdk client, so the output is what a client
// gets over the wire, with image bytes elided.
//
//	go run ./examples/transcript -python /usr/bin/python3 > examples/transcript/transcript.md
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/mcp"
	"github.com/prims-mcp/prims/sandbox"
)

// The plot is drawn with the standard library (zlib + struct) so the
// transcript can be made on a machine without matplotlib; with matplotlib
// installed, plt.show() or plt.savefig("output/...png") returns the same way.
const plotCode = `import math, struct, zlib

W, H = 240, 120
px = [[(255, 255, 255)] * W for _ in range(H)]
for x in range(W):
    y = int(H / 2 - math.sin(x / W * 4 * math.pi) * (H / 2 - 10))
    for dy in (-1, 0, 1):
        px[y + dy][x] = (31, 119, 180)
raw = b"".join(b"\x00" + bytes(c for p in row for c in p) for row in px)

def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

with open("output/sine.png", "wb") as f:
    f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", W, H, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
with open("output/sine.csv", "w") as f:
    f.write("x,sin\n" + "".join(f"{i},{math.sin(i / 10):.4f}\n" for i in range(63)))
print("two periods of sin(x) plotted")
`

const missingModuleCode = `import pandas as pd
from sklearn.linear_model import LinearRegression

df = pd.read_csv("mounts/sales.csv")
print(LinearRegression().fit(df[["month"]], df["revenue"]).coef_)
`

const timeoutCode = `import time

for step in range(1, 100):
    print(f"step {step}", flush=True)
    time.sleep(0.4)
`

func main() {
	python := flag.String("python", "/usr/bin/python3", "Python interpreter")
	flag.Parse()
	if err := run(context.Background(), *python); err != nil {
		log.Fatal(err)
	}
}

func run(ctx context.Context, python string) error {
	runner, err := sandbox.New(sandbox.Config{})
	if err != nil {
		return err
	}
	srv, err := mcp.New(mcp.Config{Python: python, Version: "transcript"}, runner)
	if err != nil {
		return err
	}
	defer srv.Close()
	st, ct := sdk.NewInMemoryTransports()
	ss, err := srv.SDK().Connect(ctx, st, nil)
	if err != nil {
		return err
	}
	defer ss.Close()
	cs, err := sdk.NewClient(&sdk.Implementation{Name: "transcript", Version: "v0"}, nil).Connect(ctx, ct, nil)
	if err != nil {
		return err
	}
	defer cs.Close()

	fmt.Println("# What a model receives from PRIMS")
	fmt.Println()
	fmt.Println("Recorded by `go run ./examples/transcript` against a real server and Python", "("+python+"),", "protocol", cs.InitializeResult().ProtocolVersion+".")
	fmt.Println("Each section shows the `run_code` arguments, the text the model reads, and the complete `tools/call` result (image bytes elided).")
	calls := []struct {
		title string
		args  map[string]any
	}{
		{"A run that plots", map[string]any{"code": plotCode}},
		{"A run that fails on a missing module", map[string]any{"code": missingModuleCode}},
		{"A run that times out", map[string]any{"code": timeoutCode, "timeout_s": 2}},
	}
	for _, c := range calls {
		res, err := cs.CallTool(ctx, &sdk.CallToolParams{Name: "run_code", Arguments: c.args})
		if err != nil {
			return fmt.Errorf("%s: %w", c.title, err)
		}
		args, _ := indent(c.args)
		fmt.Printf("\n## %s\n\n### Arguments\n\n```json\n%s\n```\n", c.title, args)
		fmt.Printf("\n### Text content (isError: %v)\n\n```text\n%s```\n", res.IsError, strings.TrimLeft(texts(res), "\n"))
		wire, err := elided(res)
		if err != nil {
			return err
		}
		fmt.Printf("\n### Result on the wire\n\n```json\n%s\n```\n", wire)
	}
	return nil
}

func texts(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*sdk.TextContent); ok {
			b.WriteString(t.Text)
			if !strings.HasSuffix(t.Text, "\n") {
				b.WriteString("\n")
			}
		}
	}
	return b.String()
}

// elided is the result's JSON with image data replaced by its size.
func elided(res *sdk.CallToolResult) ([]byte, error) {
	raw, err := json.Marshal(res)
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, err
	}
	content, _ := m["content"].([]any)
	for _, c := range content {
		if c, ok := c.(map[string]any); ok && c["type"] == "image" {
			if d, ok := c["data"].(string); ok {
				c["data"] = fmt.Sprintf("<%d characters of base64 elided>", len(d))
			}
		}
	}
	return indent(m)
}

// indent is json.MarshalIndent without escaping <, > and &, which code and
// tracebacks are full of.
func indent(v any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
