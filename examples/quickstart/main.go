// Quickstart launches `prims stdio` as a subprocess, the way a desktop agent
// does, and uses the MCP Go SDK's client to list the tools, run code while
// printing its live output, and look at the files the code wrote.
//
//	go build -o prims . && go run ./examples/quickstart -prims ./prims
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

const program = `
import time
for i in range(3):
    print(f"step {i}", flush=True)
    time.sleep(0.3)
with open("output/squares.csv", "w") as f:
    f.write("n,square\n")
    for n in range(10):
        f.write(f"{n},{n*n}\n")
print("wrote output/squares.csv")
`

func main() {
	prims := flag.String("prims", "prims", "path of the prims binary")
	flag.Parse()
	ctx := context.Background()

	client := sdk.NewClient(&sdk.Implementation{Name: "quickstart", Version: "1"}, &sdk.ClientOptions{
		ProgressNotificationHandler: func(_ context.Context, req *sdk.ProgressNotificationClientRequest) {
			fmt.Printf("  progress: %s\n", strings.TrimSpace(req.Params.Message))
		},
	})
	cmd := exec.Command(*prims, "stdio", "--log-level", "warn")
	cmd.Stderr = os.Stderr
	session, err := client.Connect(ctx, &sdk.CommandTransport{Command: cmd}, nil)
	if err != nil {
		log.Fatalf("start prims: %v", err)
	}
	defer session.Close()

	// 1. What can the server do?
	tools, err := session.ListTools(ctx, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("tools:")
	for _, t := range tools.Tools {
		fmt.Printf("  %-17s %s\n", t.Name, firstLine(t.Description))
	}

	// 2. Run code; a progress token asks for live output.
	fmt.Println("\nrun_code:")
	params := &sdk.CallToolParams{Name: "run_code", Arguments: map[string]any{"code": program}}
	params.SetProgressToken("quickstart")
	res, err := session.CallTool(ctx, params)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(indent(text(res)))

	// 3. Look at what it wrote.
	for _, call := range []*sdk.CallToolParams{
		{Name: "list_dir", Arguments: map[string]any{"path": "output"}},
		{Name: "preview_file", Arguments: map[string]any{"path": "output/squares.csv", "max_bytes": 40}},
	} {
		res, err := session.CallTool(ctx, call)
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s:\n%s\n", call.Name, indent(text(res)))
	}
}

func text(res *sdk.CallToolResult) string {
	var b strings.Builder
	for _, c := range res.Content {
		if t, ok := c.(*sdk.TextContent); ok {
			b.WriteString(t.Text)
		}
	}
	return strings.TrimRight(b.String(), "\n")
}

func firstLine(s string) string { return strings.SplitN(s, "\n", 2)[0] }

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }
