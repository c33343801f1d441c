package mcp

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/workspace"
)

func TestResourcesListAndRead(t *testing.T) {
	for _, v := range contentProtocols {
		t.Run(v, func(t *testing.T) {
			srv, cs := startContent(t, Config{}, nil, v)
			res, _ := callRun(t, cs, map[string]any{"code": pngFunc + `
png("output/img.png", 4, 4)
os.makedirs("output/sub dir", exist_ok=True)
open("output/sub dir/report.txt", "w").write("hello\n")
os.symlink("/etc/passwd", "output/link")
`})
			if res.IsError {
				t.Fatal(resultText(res))
			}
			ws := srv.Workspace()
			if err := os.WriteFile(filepath.Join(ws, "mounts", "in.csv"), []byte("a,b\n"), 0o600); err != nil {
				t.Fatal(err)
			}

			list, err := cs.ListResources(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			var uris []string
			for _, r := range list.Resources {
				uris = append(uris, r.URI)
			}
			slices.Sort(uris)
			want := []string{
				statesURI,
				"prims://workspace/mounts/in.csv",
				"prims://workspace/output/img.png",
				"prims://workspace/output/sub%20dir/report.txt",
			}
			if !slices.Equal(uris, want) {
				t.Errorf("resources/list = %v, want %v (no symlink, no logs)", uris, want)
			}

			tmpls, err := cs.ListResourceTemplates(t.Context(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(tmpls.ResourceTemplates) != 1 || tmpls.ResourceTemplates[0].URITemplate != "prims://workspace/{+path}" {
				t.Errorf("templates = %+v", tmpls.ResourceTemplates)
			}

			rr, err := cs.ReadResource(t.Context(), &sdk.ReadResourceParams{URI: "prims://workspace/output/sub%20dir/report.txt"})
			if err != nil {
				t.Fatal(err)
			}
			if c := rr.Contents[0]; c.Text != "hello\n" || c.Blob != nil || !strings.HasPrefix(c.MIMEType, "text/plain") {
				t.Errorf("report.txt read as %+v", c)
			}
			img, _ := os.ReadFile(filepath.Join(ws, "output", "img.png"))
			rr, err = cs.ReadResource(t.Context(), &sdk.ReadResourceParams{URI: "prims://workspace/output/img.png"})
			if err != nil {
				t.Fatal(err)
			}
			if c := rr.Contents[0]; !bytes.Equal(c.Blob, img) || c.Text != "" || c.MIMEType != "image/png" {
				t.Errorf("img.png read as %s, %d bytes of blob; want image/png, %d bytes", c.MIMEType, len(c.Blob), len(img))
			}

			// A secret next to the workspace, where a traversal would land.
			secret := filepath.Join(filepath.Dir(ws), filepath.Base(ws)+"-secret")
			if err := os.WriteFile(secret, []byte("TOP SECRET"), 0o600); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.Remove(secret) })
			for _, uri := range []string{
				"prims://workspace/../" + filepath.Base(secret),
				"prims://workspace/%2e%2e/" + filepath.Base(secret),
				"prims://workspace/output/../../" + filepath.Base(secret),
				"prims://workspace/" + secret, // absolute: prims://workspace//tmp/...
				"prims://workspace/output/link",
				"prims://workspace/output/missing.txt",
				"prims://other/output/img.png",
				"file://" + secret,
			} {
				rr, err := cs.ReadResource(t.Context(), &sdk.ReadResourceParams{URI: uri})
				if err == nil {
					t.Errorf("read %s = %+v, want an error", uri, rr.Contents)
					continue
				}
				t.Logf("%s: %v", uri, err)
				if strings.Contains(err.Error(), "TOP SECRET") || (strings.Contains(err.Error(), ws) && !strings.Contains(uri, ws)) {
					t.Errorf("read %s: error leaks host details: %v", uri, err)
				}
			}
		})
	}
}

func TestResourceReadSizeCap(t *testing.T) {
	srv, cs := startContent(t, Config{}, nil, "")
	callRun(t, cs, map[string]any{"code": "pass"})
	f, err := os.Create(filepath.Join(srv.Workspace(), "output", "huge.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(maxResourceBytes + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	_, err = cs.ReadResource(t.Context(), &sdk.ReadResourceParams{URI: "prims://workspace/output/huge.bin"})
	if err == nil || !strings.Contains(err.Error(), "preview_file") {
		t.Errorf("read of an oversized file: err = %v, want a size-cap error naming preview_file", err)
	}
}

func TestResourceSubscription(t *testing.T) {
	for _, v := range contentProtocols {
		t.Run(v, func(t *testing.T) {
			updated := make(chan string, 10)
			srv, cs := startContent(t, Config{}, &sdk.ClientOptions{
				ResourceUpdatedHandler: func(_ context.Context, req *sdk.ResourceUpdatedNotificationRequest) {
					updated <- req.Params.URI
				},
			}, v)
			const uri = "prims://workspace/output/watched.txt"
			// On 2026-07-28 Subscribe holds a subscriptions/listen stream
			// open until the session ends.
			subErr := make(chan error, 1)
			go func() { subErr <- cs.Subscribe(t.Context(), &sdk.SubscribeParams{URI: uri}) }()
			for !watching(srv, uri) {
				select {
				case err := <-subErr:
					if err != nil {
						t.Fatalf("subscribe: %v", err)
					}
				case <-t.Context().Done():
					t.Fatal("subscription never reached the server")
				case <-time.After(10 * time.Millisecond):
				}
			}

			callRun(t, cs, map[string]any{"code": `open("output/other.txt", "w").write("x")`})
			callRun(t, cs, map[string]any{"code": `open("output/watched.txt", "w").write("new")`})
			select {
			case got := <-updated:
				if got != uri {
					t.Errorf("update for %s, want %s (only the watched file changed)", got, uri)
				}
			case <-t.Context().Done():
				t.Fatal("no notifications/resources/updated after the run changed the file")
			}
		})
	}
}

// watching reports whether the stdio session of srv has subscribed to uri.
func watching(srv *Server, uri string) bool {
	srv.mu.Lock()
	sess := srv.sess
	srv.mu.Unlock()
	if sess == nil {
		return false
	}
	sess.subs.mu.Lock()
	defer sess.subs.mu.Unlock()
	_, ok := sess.subs.uris[uri]
	return ok
}

func TestSubscriptionsChanged(t *testing.T) {
	ws, err := workspace.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(ws.Dir(), name), []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("output/same.txt", "same")
	write("output/grows.txt", "a")
	write("output/goes.txt", "x")
	sub := subscriptions{uris: map[string]string{}}
	for _, n := range []string{"same.txt", "grows.txt", "goes.txt", "comes.txt"} {
		sub.uris[resourceURI("output/"+n)] = filepath.Join("output", n)
	}
	before := sub.stamps(ws)
	write("output/grows.txt", "ab")
	os.Remove(filepath.Join(ws.Dir(), "output/goes.txt"))
	write("output/comes.txt", "new")
	got := sub.changed(ws, before)
	want := []string{"prims://workspace/output/comes.txt", "prims://workspace/output/goes.txt", "prims://workspace/output/grows.txt"}
	if !slices.Equal(got, want) {
		t.Errorf("changed = %v, want %v", got, want)
	}
}

func TestResourceURI(t *testing.T) {
	tests := []struct {
		path, uri string
	}{
		{"output/plot.png", "prims://workspace/output/plot.png"},
		{"output/a b/c#d?.txt", "prims://workspace/output/a%20b/c%23d%3F.txt"},
		{"mounts/données.csv", "prims://workspace/mounts/donn%C3%A9es.csv"},
	}
	for _, tt := range tests {
		if got := resourceURI(tt.path); got != tt.uri {
			t.Errorf("resourceURI(%q) = %q, want %q", tt.path, got, tt.uri)
		}
		if got, err := resourcePath(tt.uri); err != nil || got != tt.path {
			t.Errorf("resourcePath(%q) = %q, %v; want %q", tt.uri, got, err, tt.path)
		}
	}
}
