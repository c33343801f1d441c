package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/internal/netguard"
	"github.com/prims-mcp/prims/mcp"
)

type serveOptions struct {
	runOptions
	contentOptions
	addr          string
	publicURL     string
	maxSessions   int
	maxRuns       int
	sessionTTL    time.Duration
	shutdownGrace time.Duration
	allowedHosts  []string

	authTokenFile string
	noAuth        bool
	oauthIssuer   string
	oauthAudience string
	oauthJWKSURL  string
	oauthScopes   []string

	// ready, if set, receives the bound address once the server listens
	// (for tests that listen on port 0).
	ready func(addr string)
}

// tokenEnv names the environment variable that may carry the static token.
const tokenEnv = "PRIMS_AUTH_TOKEN"

// newServeCmd returns the serve command; runF replaces runServe in tests
// of argument parsing (nil in main).
func newServeCmd(runF func(context.Context, *serveOptions) error) *cobra.Command {
	if runF == nil {
		runF = runServe
	}
	opts := &serveOptions{}
	opts.jsonLogs = true
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Serve MCP over streamable HTTP for remote agents",
		Long: `Serve the Model Context Protocol over streamable HTTP at /mcp, with one
throw-away workspace per MCP session. Files a session writes under output/
can be downloaded with GET /artifacts/{path} and the session's
Mcp-Session-Id header. /healthz, /readyz and /metrics (Prometheus) are for
operators. Logs are JSON lines on stderr.

Authentication is a static bearer token (--auth-token-file, or the
PRIMS_AUTH_TOKEN environment variable) or OAuth 2.0 JWT access tokens
(--oauth-issuer). Without either the server only listens on loopback,
unless --no-auth says otherwise.

On SIGTERM or SIGINT the server stops taking sessions and runs, lets runs
in flight finish for --shutdown-grace, kills the rest, and deletes every
workspace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runF(cmd.Context(), opts) },
	}
	opts.runOptions.addFlags(cmd.Flags())
	opts.contentOptions.addFlags(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&opts.addr, "addr", "127.0.0.1:9000", "address to listen on; use 0.0.0.0:9000 to accept remote clients")
	f.StringVar(&opts.publicURL, "public-url", "", "base URL clients use to reach the server (default http://ADDR); names the resource in OAuth metadata")
	f.Var(newCountValue(&opts.maxSessions, 64, 1), "max-sessions", "live MCP sessions at once; more are refused with 503")
	f.Var(newCountValue(&opts.maxRuns, 2*runtime.NumCPU(), 1), "max-runs", "programs running at once (2 per CPU unless set); more wait in a queue")
	f.Var(newDurationValue(&opts.sessionTTL, 30*time.Minute, false), "session-ttl", "delete a session and its workspace after this long without requests")
	f.Var(newDurationValue(&opts.shutdownGrace, 30*time.Second, true), "shutdown-grace", "on SIGTERM, how long runs in flight may take before they are killed (0: kill them at once)")
	f.StringSliceVar(&opts.allowedHosts, "allowed-host", nil, "Host header values to accept (repeatable); default any, but only loopback names on a loopback address")
	f.StringVar(&opts.authTokenFile, "auth-token-file", "", "file holding the static bearer token clients must send (or set "+tokenEnv+")")
	f.BoolVar(&opts.noAuth, "no-auth", false, "allow serving a non-loopback address without authentication")
	f.StringVar(&opts.oauthIssuer, "oauth-issuer", "", "accept JWT access tokens from this OAuth 2.0 authorization server (issuer URL)")
	f.StringVar(&opts.oauthAudience, "oauth-audience", "", "audience tokens must carry (default PUBLIC-URL/mcp)")
	f.StringVar(&opts.oauthJWKSURL, "oauth-jwks-url", "", "the issuer's JSON Web Key Set (default: discovered from the issuer's metadata)")
	f.StringSliceVar(&opts.oauthScopes, "oauth-scopes", nil, "scopes every token must carry (comma-separated)")
	return cmd
}

// token reads the static bearer token from --auth-token-file or the
// environment; it is never taken from the command line, where other users
// of the host could read it.
func (o *serveOptions) token() (string, error) {
	tok := os.Getenv(tokenEnv)
	if o.authTokenFile != "" {
		b, err := os.ReadFile(o.authTokenFile)
		if err != nil {
			return "", fmt.Errorf("read --auth-token-file: %w", err)
		}
		tok = string(b)
	}
	tok = strings.TrimSpace(tok)
	if tok == "" && (o.authTokenFile != "" || os.Getenv(tokenEnv) != "") {
		return "", errors.New("the auth token is empty")
	}
	if tok != "" && len(tok) < 16 {
		return "", errors.New("the auth token is shorter than 16 characters; generate one with: openssl rand -hex 32")
	}
	return tok, nil
}

// checkAddr says what is wrong with a listen address before anything
// else is judged by it.
func checkAddr(addr string) error {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		if _, _, err2 := net.SplitHostPort(addr + ":0"); err2 == nil {
			return fmt.Errorf("--addr %q has no port: give HOST:PORT, such as 127.0.0.1:9000", addr)
		}
		return fmt.Errorf("--addr %q is not HOST:PORT, such as 127.0.0.1:9000 or [::1]:9000", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		if _, err := net.LookupPort("tcp", port); err != nil {
			return fmt.Errorf("--addr %q: %q is not a port number", addr, port)
		}
	}
	return nil
}

// httpConfig turns the flags into the handler's configuration.
func (o *serveOptions) httpConfig(listenAddr string) (mcp.HTTPConfig, error) {
	if err := checkAddr(listenAddr); err != nil {
		return mcp.HTTPConfig{}, err
	}
	hc := mcp.HTTPConfig{
		PublicURL:    o.publicURL,
		MaxSessions:  o.maxSessions,
		MaxRuns:      o.maxRuns,
		SessionTTL:   o.sessionTTL,
		AllowedHosts: o.allowedHosts,
	}
	if hc.PublicURL == "" {
		hc.PublicURL = "http://" + reachable(listenAddr)
	}
	tok, err := o.token()
	if err != nil {
		return hc, err
	}
	hc.Token = tok
	if o.oauthIssuer != "" {
		if tok != "" {
			return hc, errors.New("choose --oauth-issuer or a static token, not both")
		}
		hc.OAuth = &mcp.OAuthConfig{
			Issuer:   o.oauthIssuer,
			Audience: o.oauthAudience,
			JWKSURL:  o.oauthJWKSURL,
			Scopes:   o.oauthScopes,
		}
		if o.publicURL == "" && !netguard.IsLoopback(listenAddr) {
			return hc, errors.New("--oauth-issuer on a non-loopback address needs --public-url: tokens name the URL clients use")
		}
	} else if o.oauthAudience != "" || o.oauthJWKSURL != "" || len(o.oauthScopes) > 0 {
		return hc, errors.New("--oauth-audience, --oauth-jwks-url and --oauth-scopes need --oauth-issuer")
	}
	if hc.Token == "" && hc.OAuth == nil && !o.noAuth && !netguard.IsLoopback(listenAddr) {
		return hc, fmt.Errorf("refusing to serve %s without authentication: pass --auth-token-file (or set %s), --oauth-issuer, or --no-auth", listenAddr, tokenEnv)
	}
	return hc, nil
}

// reachable turns a listen address into one a local client can dial: a
// wildcard host (0.0.0.0, ::) becomes localhost.
func reachable(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "localhost"
	}
	return net.JoinHostPort(host, port)
}

func runServe(ctx context.Context, opts *serveOptions) error {
	// Check the auth flags before anything else costs time.
	if _, err := opts.httpConfig(opts.addr); err != nil {
		return err
	}
	d, err := opts.deps(ctx)
	if err != nil {
		return err
	}
	defer d.close()
	log := d.log
	store, err := opts.openStore(ctx, log)
	if err != nil {
		return err
	}
	defer store.Close()
	cfg := serverConfig(d, &opts.runOptions, &opts.contentOptions)
	cfg.Artifacts = store
	srv, err := mcp.New(cfg, d.runner)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", opts.addr)
	if err != nil {
		srv.Close()
		return fmt.Errorf("listen: %w", err)
	}
	hc, err := opts.httpConfig(ln.Addr().String())
	if err == nil {
		var h http.Handler
		if h, err = srv.Handler(hc); err == nil {
			err = serveUntil(ctx, log, srv, ln, h, hc, opts)
		}
	}
	ln.Close()
	if cerr := srv.Close(); cerr != nil {
		log.Error("close", "err", cerr)
	}
	log.Info("stopped; all workspaces removed")
	return err
}

// serveUntil serves on ln until ctx ends, then shuts down gracefully: stop
// accepting, let runs finish within the grace period, kill the rest.
func serveUntil(ctx context.Context, log *slog.Logger, srv *mcp.Server, ln net.Listener, h http.Handler, hc mcp.HTTPConfig, opts *serveOptions) error {
	hs := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(ln) }()
	auth := "none"
	switch {
	case hc.Token != "":
		auth = "static token"
	case hc.OAuth != nil:
		auth = "oauth " + hc.OAuth.Issuer
	}
	log.Info("serving MCP over streamable HTTP", "addr", ln.Addr().String(), "url", hc.PublicURL+"/mcp",
		"python", srv.Python(), "isolation", srv.Isolation(), "auth", auth)
	if opts.ready != nil {
		opts.ready(ln.Addr().String())
	}

	select {
	case err := <-served:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", opts.shutdownGrace.String())
	// The listener stays open while runs drain: /readyz answers 503 to the
	// load balancer instead of refusing the connection, new sessions and
	// runs are refused with a reason, and the runs' results reach their
	// clients. Connections are not kept alive for another request.
	hs.SetKeepAlivesEnabled(false)
	grace, cancel := context.WithTimeout(context.Background(), opts.shutdownGrace)
	defer cancel()
	if err := srv.Drain(grace); err != nil {
		log.Warn("grace period over: killing the runs left", "err", err)
	}
	// Kill what is left, delete every workspace, end the event streams.
	if err := srv.Close(); err != nil {
		log.Error("close", "err", err)
	}
	stopCtx, stopNow := context.WithTimeout(context.Background(), 5*time.Second)
	defer stopNow()
	if err := hs.Shutdown(stopCtx); err != nil {
		hs.Close()
	}
	return nil
}
