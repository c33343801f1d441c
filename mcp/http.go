package mcp

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"time"

	"github.com/modelcontextprotocol/go-sdk/auth"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/prims-mcp/prims/internal/netguard"
	"github.com/prims-mcp/prims/workspace"
)

// HTTPConfig configures [Server.Handler]. Zero fields take the defaults
// shown.
type HTTPConfig struct {
	// PublicURL is the base URL clients reach the server at, such as
	// "https://prims.example.com"; the MCP endpoint is PublicURL + "/mcp".
	// Required with OAuth, whose metadata names it.
	PublicURL   string
	MaxSessions int           // live MCP sessions at once (64); more are refused with 503
	MaxRuns     int           // programs running at once (2 per CPU); more wait in a queue
	SessionTTL  time.Duration // idle time after which a session and its workspace are deleted (30m)

	// Token, if set, is the static bearer token every request must carry.
	Token string
	// OAuth, if set, makes the server accept JWT access tokens instead.
	OAuth *OAuthConfig

	// AllowedHosts, if set, are the only Host header values accepted (with
	// or without port). Whatever it says, a server listening on loopback
	// accepts only loopback Hosts: that defeats DNS rebinding.
	AllowedHosts []string
}

func (c *HTTPConfig) setDefaults() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 64
	}
	if c.MaxRuns <= 0 {
		c.MaxRuns = 2 * runtime.NumCPU()
	}
	if c.SessionTTL <= 0 {
		c.SessionTTL = 30 * time.Minute
	}
	c.PublicURL = strings.TrimRight(c.PublicURL, "/")
}

// Handler returns the HTTP face of the server: MCP over streamable HTTP at
// /mcp, one workspace per MCP session, GET /artifacts/{path} for files
// under the caller's own output/, /healthz, /readyz and /metrics, and with
// OAuth the RFC 9728 metadata under /.well-known/oauth-protected-resource.
// Call it once per Server.
func (s *Server) Handler(hc HTTPConfig) (http.Handler, error) {
	hc.setDefaults()
	if hc.Token != "" && hc.OAuth != nil {
		return nil, errors.New("mcp: choose a static token or OAuth, not both")
	}
	s.table.init(hc.MaxSessions)
	s.rt.LimitRuns(hc.MaxRuns)

	mux := http.NewServeMux()
	protect := func(h http.Handler) http.Handler { return h }
	switch {
	case hc.Token != "":
		require := auth.RequireBearerToken(staticVerifier(hc.Token), &auth.RequireBearerTokenOptions{AllowMissingExpiration: true})
		protect = func(h http.Handler) http.Handler {
			// RequireBearerToken writes a challenge only when it has
			// metadata to point to; RFC 6750 wants one on every 401.
			inner := require(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Del("WWW-Authenticate")
				h.ServeHTTP(w, r)
			}))
			return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="prims"`)
				inner.ServeHTTP(w, r)
			})
		}
	case hc.OAuth != nil:
		if hc.OAuth.Issuer == "" {
			return nil, errors.New("mcp: OAuth needs an issuer")
		}
		if hc.PublicURL == "" {
			return nil, errors.New("mcp: OAuth needs the server's public URL")
		}
		resource := hc.PublicURL + "/mcp"
		metaURL := hc.PublicURL + "/.well-known/oauth-protected-resource/mcp"
		aud := hc.OAuth.Audience
		if aud == "" {
			aud = resource
		}
		v := newJWTVerifier(*hc.OAuth, aud, s.log)
		protect = auth.RequireBearerToken(v.verify, &auth.RequireBearerTokenOptions{
			ResourceMetadataURL: metaURL,
			Scopes:              hc.OAuth.Scopes,
			ClockSkew:           clockSkew,
		})
		meta := auth.ProtectedResourceMetadataHandler(&oauthex.ProtectedResourceMetadata{
			Resource:               resource,
			AuthorizationServers:   []string{hc.OAuth.Issuer},
			ScopesSupported:        hc.OAuth.Scopes,
			BearerMethodsSupported: []string{"header"},
			ResourceName:           "PRIMS Python sandbox",
		})
		// RFC 9728 §3.1 puts the resource's path after the well-known
		// name; clients that try the bare name get the same document.
		mux.Handle("/.well-known/oauth-protected-resource/mcp", meta)
		mux.Handle("/.well-known/oauth-protected-resource", meta)
	}

	// The event store gives every event of a stream an id, so that a
	// client whose connection drops during a long run reconnects with
	// Last-Event-ID and gets the progress it missed and the result.
	events := sdk.NewMemoryEventStore(nil)
	events.SetMaxBytes(eventStoreBytes)
	streamable := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return s.sdk }, &sdk.StreamableHTTPOptions{
		SessionTimeout: hc.SessionTTL,
		Logger:         s.log,
		EventStore:     events,
	})
	mux.Handle("/mcp", protect(s.sessionHooks(withRetry(newHTTPIDs().wrap(streamable)))))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelError),
	}))
	artifacts := protect(http.HandlerFunc(s.serveArtifact))

	// /artifacts/ is routed before the mux, which would answer a path with
	// ".." by redirecting to its cleaned form instead of refusing it.
	// A file artifact store's signed download links carry their own
	// credential, as S3 presigned URLs do: no bearer token.
	signed, signedPath := s.cfg.Artifacts.Handler(), s.cfg.Artifacts.Path()
	var root http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/artifacts/") {
			artifacts.ServeHTTP(w, r)
			return
		}
		if signed != nil && r.URL.Path == signedPath {
			signed.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
	root = http.NewCrossOriginProtection().Handler(root)
	root = checkHost(root, hc.AllowedHosts)
	return s.logRequests(root), nil
}

// eventStoreBytes bounds the events kept for resumption, across sessions:
// enough for the progress of a few long runs; a client that comes back
// for events already dropped is told so and must call again.
const eventStoreBytes = 32 << 20

// retryMillis is the reconnection delay sent at the start of each event
// stream (the SSE "retry" field): a client whose connection drops tries
// again after this long instead of its own default.
const retryMillis = 1000

// withRetry starts every event stream with a "retry" field. The SDK's
// streams carry event ids once there is an event store, but a retry only
// when the server itself closes a stream.
func withRetry(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(&retryWriter{ResponseWriter: w}, r)
	})
}

type retryWriter struct {
	http.ResponseWriter
	decided bool
}

func (w *retryWriter) WriteHeader(code int) {
	if !w.decided {
		w.decided = true
		ct := w.Header().Get("Content-Type")
		w.ResponseWriter.WriteHeader(code)
		if code == http.StatusOK && strings.HasPrefix(ct, "text/event-stream") {
			fmt.Fprintf(w.ResponseWriter, "retry: %d\n\n", retryMillis)
		}
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *retryWriter) Write(b []byte) (int, error) {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *retryWriter) Flush() {
	if !w.decided {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *retryWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// sessionHooks wraps the SDK's handler with what the table needs to know:
// new sessions are counted against the cap and registered with their
// owner, and DELETE kills the session's runs first so that the SDK's close,
// which waits for handlers, does not wait for them.
func (s *Server) sessionHooks(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(sessionHeader)
		user := userOf(r)
		switch {
		case r.Method == http.MethodPost && id == "":
			room, err := s.table.reserve()
			if err != nil {
				w.Header().Set("Retry-After", "30")
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
				return
			}
			defer room.release()
			// Register the session as its response starts, before the
			// client can learn its ID and use or delete it.
			hw := &headerHook{ResponseWriter: w, hook: func() {
				if nid := w.Header().Get(sessionHeader); nid != "" {
					s.trackSession(nid, user, room)
				} else {
					room.release()
				}
			}}
			next.ServeHTTP(hw, r)
			hw.fire()
			if nid := w.Header().Get(sessionHeader); nid != "" {
				// A request that did not initialize (a 2026-07-28 client's
				// probe) leaves a session the SDK has closed already.
				s.dropUninitialized(nid)
			}
		case r.Method == http.MethodDelete && id != "":
			e := s.lookup(id, user)
			if e != nil {
				e.cancel()
			}
			next.ServeHTTP(w, r)
			if e != nil {
				// The session's watcher may be removing the workspace
				// already; either way it is gone when DELETE returns.
				s.endSession(id, "deleted by the client")
				<-e.ended
			}
		default:
			next.ServeHTTP(w, r)
		}
	})
}

const sessionHeader = "Mcp-Session-Id"

func userOf(r *http.Request) string {
	if ti := auth.TokenInfoFromContext(r.Context()); ti != nil {
		return ti.UserID
	}
	return ""
}

// sessionIDPattern is what the SDK's IDs (crypto/rand.Text) and any sane
// client-visible ID look like. Anything else is refused before lookup.
var sessionIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,128}$`)

// serveArtifact serves GET /artifacts/{path}: a file under the output/ of
// the session named by the Mcp-Session-Id header, which must be live and
// belong to the caller. Every failure says as little as it can: a session
// that does not exist, belongs to someone else or has no such file is the
// same 404.
func (s *Server) serveArtifact(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	id := r.Header.Get(sessionHeader)
	if id == "" {
		http.Error(w, "the Mcp-Session-Id header is required", http.StatusBadRequest)
		return
	}
	if !sessionIDPattern.MatchString(id) {
		http.Error(w, "malformed Mcp-Session-Id header", http.StatusBadRequest)
		return
	}
	name := strings.TrimPrefix(r.URL.Path, "/artifacts/")
	// run_code reports output/h.txt: that path works, and so does the
	// shorter h.txt, relative to output/.
	name = strings.TrimPrefix(name, workspace.OutputDir+"/")
	if name == "" || strings.ContainsRune(name, '\\') || !filepath.IsLocal(name) || path.Clean(name) != name {
		http.Error(w, "artifact paths are relative to output/, without '..'", http.StatusBadRequest)
		return
	}
	e := s.lookup(id, userOf(r))
	if e == nil || e.sess == nil {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	f, entry, err := e.sess.Workspace().Open(path.Join(workspace.OutputDir, name))
	if err != nil {
		if errors.Is(err, workspace.ErrSymlink) {
			http.Error(w, "symlinks are not served", http.StatusForbidden)
			return
		}
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	defer f.Close()
	h := w.Header()
	h.Set("Content-Type", entry.MIME)
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(name)}))
	h.Set("X-Content-Type-Options", "nosniff")
	// The file was written by model-written code: never let a browser run it.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	h.Set("Cache-Control", "private, no-store")
	http.ServeContent(w, r, "", entry.Modified, f)
}

// serveReady answers /readyz: ready when the interpreter is there and
// executable and the server is not shutting down.
func (s *Server) serveReady(w http.ResponseWriter, r *http.Request) {
	status := struct {
		Ready     bool   `json:"ready"`
		Isolation string `json:"isolation"`
		Memory    string `json:"memory"` // how the memory limit bounds a run
		Python    bool   `json:"python"`
		Draining  bool   `json:"draining,omitempty"`
	}{Isolation: string(s.runner.Tier()), Memory: string(s.runner.MemoryEnforcement())}
	if fi, err := os.Stat(s.cfg.Python); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
		status.Python = true
	}
	status.Draining = s.table.isDraining() || s.base.Err() != nil
	status.Ready = status.Python && status.Isolation != "" && !status.Draining
	w.Header().Set("Content-Type", "application/json")
	if !status.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(status)
}

// checkHost refuses requests whose Host header could come from DNS
// rebinding: on a loopback listener only loopback names are accepted, and
// with allowed set only those names. The SDK's /mcp handler makes the
// first check too; this one also covers /artifacts.
func checkHost(next http.Handler, allowed []string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok && la != nil {
			if netguard.IsLoopback(la.String()) && !netguard.IsLoopback(host) {
				http.Error(w, "forbidden Host header", http.StatusForbidden)
				return
			}
		}
		if len(allowed) > 0 && !netguard.IsLoopback(host) {
			ok := false
			for _, a := range allowed {
				if strings.EqualFold(a, host) || strings.EqualFold(a, r.Host) {
					ok = true
					break
				}
			}
			if !ok {
				http.Error(w, "forbidden Host header", http.StatusForbidden)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// logRequests gives each request an ID (X-Request-Id, echoed back) and logs
// one JSON line when it ends, with the session it belonged to.
func (s *Server) logRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rid := r.Header.Get("X-Request-Id")
		if !sessionIDPattern.MatchString(rid) || len(rid) > 64 {
			rid = rand.Text()[:16]
		}
		w.Header().Set("X-Request-Id", rid)
		sw := &statusWriter{ResponseWriter: w}
		next.ServeHTTP(sw, r)
		id := r.Header.Get(sessionHeader)
		if id == "" {
			id = w.Header().Get(sessionHeader)
		}
		attrs := []any{
			"request_id", rid,
			"method", r.Method,
			"path", logPath(r.URL.Path),
			"status", sw.status(),
			"duration_ms", time.Since(start).Milliseconds(),
		}
		if id != "" && sessionIDPattern.MatchString(id) {
			attrs = append(attrs, "session", id)
		}
		level := slog.LevelInfo
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || r.URL.Path == "/metrics" {
			level = slog.LevelDebug
		}
		s.log.Log(r.Context(), level, "http request", attrs...)
	})
}

// logPath keeps artifact names out of the logs; they are the client's data.
func logPath(p string) string {
	if strings.HasPrefix(p, "/artifacts/") {
		return "/artifacts/..."
	}
	if len(p) > 128 {
		return p[:128] + "..."
	}
	return p
}

// headerHook calls hook once, just before the response's first message is
// sent, and holds back what comes before it. With an event store the SDK
// starts an event stream (status, header and a priming event without data)
// before it has handled the request; a session is only worth registering
// once initialize has been handled, which its first message shows.
type headerHook struct {
	http.ResponseWriter
	hook  func()
	fired bool
	code  int    // status held back
	held  []byte // event-stream lines held back
}

// fire calls the hook, then sends what was held back.
func (w *headerHook) fire() {
	if w.fired {
		return
	}
	w.fired = true
	w.hook()
	if w.code != 0 {
		w.ResponseWriter.WriteHeader(w.code)
	}
	if len(w.held) > 0 {
		w.ResponseWriter.Write(w.held)
		w.held = nil
		http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *headerHook) WriteHeader(code int) {
	if w.fired {
		w.ResponseWriter.WriteHeader(code)
		return
	}
	if w.code == 0 {
		w.code = code
	}
	if !w.isStream() {
		w.fire()
	}
}

func (w *headerHook) isStream() bool {
	return strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream")
}

func (w *headerHook) Write(b []byte) (int, error) {
	if !w.fired {
		if w.isStream() && !bytes.Contains(b, []byte("data: {")) {
			w.held = append(w.held, b...)
			return len(b), nil
		}
		w.fire()
	}
	return w.ResponseWriter.Write(b)
}

func (w *headerHook) Flush() {
	if !w.fired {
		if w.isStream() {
			return // nothing worth sending yet
		}
		w.fire()
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *headerHook) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// statusWriter remembers the status code. Unwrap lets the SDK's
// http.ResponseController reach the real writer to flush event streams.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}

// Python returns the interpreter runs use.
func (s *Server) Python() string { return s.cfg.Python }

// Isolation returns the sandbox tier runs use.
func (s *Server) Isolation() string { return string(s.runner.Tier()) }
