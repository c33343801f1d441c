package mcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/modelcontextprotocol/go-sdk/jsonrpc"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/workspace"
)

// Workspace files are MCP resources named prims://workspace/<path>.
const (
	resourcePrefix   = "prims://workspace/"
	resourceTemplate = resourcePrefix + "{+path}"
	// maxResourceBytes caps one resources/read: the whole file travels
	// base64-encoded in one JSON-RPC message.
	maxResourceBytes = 8 << 20
	// maxListedResources caps resources/list, which is not paginated.
	maxListedResources = 200
	// maxSubscriptions caps the files one session can watch: each is
	// stat'ed before and after every run.
	maxSubscriptions = 100
)

func (s *Server) addResources() {
	s.sdk.AddResourceTemplate(&sdk.ResourceTemplate{
		URITemplate: resourceTemplate,
		Name:        "workspace-file",
		Title:       "Workspace file",
		Description: "A file in the session's PRIMS workspace: output/ holds what the code wrote, mounts/ the inputs, logs/ the complete stdout and stderr of each run.",
	}, s.readResource)
	// resources/list must show this session's files, which the SDK's static
	// resource table cannot: answer it here, before the SDK does.
	s.sdk.AddReceivingMiddleware(func(next sdk.MethodHandler) sdk.MethodHandler {
		return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
			if method != "resources/list" {
				return next(ctx, method, req)
			}
			ss, _ := req.GetSession().(*sdk.ServerSession)
			return s.listResources(ss)
		}
	})
}

// resourceURI names a workspace path (slash-separated, relative) as a resource.
func resourceURI(p string) string {
	parts := strings.Split(p, "/")
	for i, seg := range parts {
		parts[i] = url.PathEscape(seg)
	}
	return resourcePrefix + strings.Join(parts, "/")
}

// resourcePath returns the workspace path a resource URI names, unchecked:
// callers resolve it through the workspace.
func resourcePath(uri string) (string, error) {
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "prims" || u.Host != "workspace" {
		return "", &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("%q is not a workspace resource: use %s<path>", uri, resourcePrefix)}
	}
	// Exactly one slash separates the host from the path, so that
	// prims://workspace//etc/passwd stays absolute and is refused.
	return strings.TrimPrefix(u.Path, "/"), nil
}

// listResources lists the files under output/ (newest first) and mounts/,
// at most maxListedResources of them.
func (s *Server) listResources(ss *sdk.ServerSession) (*sdk.ListResourcesResult, error) {
	res := &sdk.ListResourcesResult{Resources: []*sdk.Resource{}}
	res.CacheScope = "private"
	sess, err := s.session(ss)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
	}
	res.Resources = append(res.Resources, statesResource)
	for _, dir := range []string{workspace.OutputDir, workspace.MountsDir} {
		// Files never follows a symlink: it walks through directory descriptors.
		files := sess.Workspace().Files(dir, maxListedResources-len(res.Resources))
		slices.SortStableFunc(files, func(a, b workspace.Entry) int { return b.Modified.Compare(a.Modified) })
		for _, e := range files {
			res.Resources = append(res.Resources, &sdk.Resource{
				URI:         resourceURI(e.Path),
				Name:        e.Name,
				Title:       e.Path,
				MIMEType:    e.MIME,
				Size:        e.Size,
				Annotations: &sdk.Annotations{LastModified: e.Modified.Format(time.RFC3339)},
			})
		}
	}
	return res, nil
}

// readResource reads a workspace file through the workspace resolver, which
// refuses paths outside the workspace and symlinks. Text comes back as text,
// anything else as a blob.
func (s *Server) readResource(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	uri := req.Params.URI
	name, err := resourcePath(uri)
	if err != nil {
		return nil, err
	}
	sess, err := s.session(req.Session)
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
	}
	f, e, err := sess.Workspace().Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, sdk.ResourceNotFoundError(uri)
		}
		var we *workspace.Error
		if errors.As(err, &we) {
			return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: we.Msg}
		}
		s.log.Error("read resource", "uri", uri, "err", err)
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: "the file could not be read"}
	}
	defer f.Close()
	if e.Size > maxResourceBytes {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf(
			"%s is %s, over the %s limit of resources/read: use preview_file to read it in pages, or persist_artifact to upload it",
			e.Path, human.Bytes(e.Size), human.Bytes(maxResourceBytes))}
	}
	data, err := io.ReadAll(io.LimitReader(f, maxResourceBytes))
	if err != nil {
		return nil, &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: fmt.Sprintf("%s could not be read", e.Path)}
	}
	head := data[:min(len(data), 512)]
	rc := &sdk.ResourceContents{URI: uri, MIMEType: workspace.MIMEType(e.Name, head)}
	if !workspace.IsBinary(head) && utf8.Valid(data) {
		rc.Text = string(data)
	} else {
		rc.Blob = data
	}
	res := &sdk.ReadResourceResult{Contents: []*sdk.ResourceContents{rc}}
	res.CacheScope = "private"
	return res, nil
}

// subscriptions are the workspace files one session watches, by URI.
type subscriptions struct {
	mu   sync.Mutex
	uris map[string]string // URI -> resolved local path
}

// stamp is what tells a file's versions apart: an absent file has none.
type stamp struct {
	exists bool
	size   int64
	mtime  time.Time
}

// stamps records the current state of every watched file.
func (sub *subscriptions) stamps(ws *workspace.Workspace) map[string]stamp {
	sub.mu.Lock()
	defer sub.mu.Unlock()
	if len(sub.uris) == 0 {
		return nil
	}
	out := make(map[string]stamp, len(sub.uris))
	for uri, local := range sub.uris {
		out[uri] = stampOf(ws, local)
	}
	return out
}

func stampOf(ws *workspace.Workspace, local string) stamp {
	fi, err := ws.Lstat(local)
	if err != nil {
		return stamp{}
	}
	return stamp{exists: true, size: fi.Size(), mtime: fi.ModTime()}
}

// changed returns the watched URIs whose files differ from before, sorted.
func (sub *subscriptions) changed(ws *workspace.Workspace, before map[string]stamp) []string {
	var out []string
	for uri, old := range before {
		sub.mu.Lock()
		local, ok := sub.uris[uri]
		sub.mu.Unlock()
		if ok && stampOf(ws, local) != old {
			out = append(out, uri)
		}
	}
	slices.Sort(out)
	return out
}

// notifyUpdated sends notifications/resources/updated for each watched file
// that the run changed.
func (s *Server) notifyUpdated(ctx context.Context, sess *client, before map[string]stamp) {
	for _, uri := range sess.subs.changed(sess.Workspace(), before) {
		if err := s.sdk.ResourceUpdated(ctx, &sdk.ResourceUpdatedNotificationParams{URI: uri}); err != nil {
			s.log.Debug("resource updated", "uri", uri, "err", err)
		}
	}
}

func (s *Server) subscribe(ctx context.Context, req *sdk.SubscribeRequest) error {
	name, err := resourcePath(req.Params.URI)
	if err != nil {
		return err
	}
	sess, err := s.session(req.Session)
	if err != nil {
		return &jsonrpc.Error{Code: jsonrpc.CodeInternalError, Message: err.Error()}
	}
	// A file that does not exist yet can be watched (a run may create it);
	// a path outside the workspace or through a symlink cannot.
	local, err := sess.Workspace().Resolve(name)
	if err != nil {
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: err.Error()}
	}
	sess.subs.mu.Lock()
	defer sess.subs.mu.Unlock()
	if sess.subs.uris == nil {
		sess.subs.uris = map[string]string{}
	}
	if _, ok := sess.subs.uris[req.Params.URI]; !ok && len(sess.subs.uris) >= maxSubscriptions {
		return &jsonrpc.Error{Code: jsonrpc.CodeInvalidParams, Message: fmt.Sprintf("at most %d resources can be subscribed at once", maxSubscriptions)}
	}
	sess.subs.uris[req.Params.URI] = filepath.Clean(local)
	return nil
}

func (s *Server) unsubscribe(ctx context.Context, req *sdk.UnsubscribeRequest) error {
	sess, err := s.session(req.Session)
	if err != nil {
		return nil // nothing to forget
	}
	sess.subs.mu.Lock()
	delete(sess.subs.uris, req.Params.URI)
	sess.subs.mu.Unlock()
	return nil
}
