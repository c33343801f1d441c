package mcp

import (
	"bufio"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// TestStdioTransportSurvivesBadLines feeds the server garbage, an oversized
// line and blank lines between real requests: each bad line gets a parse
// error and every real request its answer.
func TestStdioTransportSurvivesBadLines(t *testing.T) {
	srv, err := New(Config{Python: "python3"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), NewStdioTransport(inR, nopCloser{outW})) }()
	go func() {
		lines := []string{
			`{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"0"}}}`,
			``,
			`{"jsonrpc":"2.0","method":"notifications/initialized"}`,
			`{not json`,
			`{"jsonrpc":"2.0","id":2,"method":"ping"}`,
			`"` + strings.Repeat("x", MaxMessageBytes+10) + `"`,
			`{"jsonrpc":"2.0","id":3,"method":"tools/list"}`,
		}
		for _, l := range lines {
			io.WriteString(inW, l+"\n")
		}
	}()
	sc := bufio.NewScanner(outR)
	sc.Buffer(nil, 1<<20)
	var got []string
	for len(got) < 5 && sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, `"id":1,`):
			got = append(got, "initialized")
		case strings.Contains(line, `"id":2,`):
			got = append(got, "pong")
		case strings.Contains(line, `"id":3,`):
			got = append(got, "tools")
		case strings.Contains(line, "not valid JSON"):
			got = append(got, "bad json")
		case strings.Contains(line, "longer than"):
			got = append(got, "too long")
		default:
			t.Errorf("unexpected line %.200s", line)
		}
	}
	inW.Close() // stdin EOF ends the session
	// Responses are written as handlers finish, so only the set is fixed.
	want := []string{"bad json", "initialized", "pong", "too long", "tools"}
	if diff := cmp.Diff(want, got, sortStrings); diff != "" {
		t.Errorf("lines (-want +got):\n%s", diff)
	}
	if err := <-done; err != nil {
		t.Logf("serve ended: %v", err)
	}
}

var _ io.WriteCloser = (*lockedWriter)(nil)
