package pythonenv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Confined is pip's install as a sandbox runs it (Options.Confine): the
// build may write Dir and Writable only, read the system and ReadOnly, and
// reach Hosts only.
type Confined struct {
	Args     []string // Args[0] is the interpreter that runs pip (a host path)
	Env      []string // the whole environment
	Dir      string   // the build directory: the environment and its temporary directory
	Writable []string // pip's cache
	ReadOnly []string // the interpreters' trees and local --find-links directories
	// Hosts are the index hosts, "host" or "host:port", pip needs to
	// reach; none means no network at all (--offline with local links).
	Hosts []string
	// PrivateHosts says the hosts were named by the operator (index
	// settings, not PyPI by default), so they may resolve to private
	// addresses: a mirror on the LAN, a test index on loopback.
	PrivateHosts bool
	Output       io.Writer // pip's stdout and stderr, in order
	Timeout      time.Duration
}

// ConfineFunc runs c in a sandbox and returns the command's exit status
// (non-zero, or negative when a signal or limit ended it); err is set only
// when the sandbox could not start it.
type ConfineFunc func(ctx context.Context, c Confined) (exitCode int, err error)

// confinedExit is a confined pip's non-zero exit status.
type confinedExit int

func (e confinedExit) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// runConfined runs pip through Options.Confine: the build directory (the
// environment and tmp) and pip's cache are all it can write.
func (c *Cache) runConfined(ctx context.Context, interp Interpreter, envPython, tmp string, args []string, out io.Writer) error {
	env := c.pipEnv(tmp)
	for i, kv := range env {
		if strings.HasPrefix(kv, "HOME=") {
			env[i] = "HOME=" + tmp // the cache root is not the build's to see
		}
	}
	ro := []string{interp.BasePrefix, filepath.Dir(filepath.Dir(interp.Path)), filepath.Dir(filepath.Dir(interp.Pip))}
	// The certificates pip is told to trust (passThroughEnv) must be
	// readable where it runs.
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE", "PIP_CERT", "PIP_CLIENT_CERT":
			if filepath.IsAbs(v) {
				ro = append(ro, v)
			}
		}
	}
	for _, l := range c.opts.FindLinks {
		if u, err := url.Parse(l); err == nil && u.Scheme == "file" {
			ro = append(ro, u.Path)
		} else if filepath.IsAbs(l) {
			ro = append(ro, l)
		}
	}
	envDir := filepath.Dir(filepath.Dir(envPython))
	before, err := os.Lstat(envDir)
	if err != nil {
		return fmt.Errorf("environment before install: %w", err)
	}
	code, err := c.opts.Confine(ctx, Confined{
		Args:         append([]string{interp.Pip}, args...),
		Env:          env,
		Dir:          filepath.Dir(tmp),
		Writable:     []string{c.pipCache},
		ReadOnly:     ro,
		Hosts:        c.indexHosts(),
		PrivateHosts: c.opts.IndexURL != "" || len(c.opts.ExtraIndexURLs) > 0 || len(c.opts.FindLinks) > 0,
		Output:       out,
		Timeout:      c.opts.InstallTimeout,
	})
	if err != nil {
		return fmt.Errorf("start pip in its sandbox: %w", err)
	}
	if code != 0 {
		return confinedExit(code)
	}
	return checkBuilt(envDir, before, interp)
}

// checkBuilt looks at what a confined build left before the server acts on
// it as itself: the build ran someone else's code with write access to the
// environment, and the server is about to write its metadata there, publish
// it, and bind its interpreter's tree into runs. Nothing of the build is
// running any more (its sandbox ended with it), so what is checked here
// stays so.
func checkBuilt(envDir string, before os.FileInfo, interp Interpreter) error {
	tampered := func(what string) error {
		return &InstallError{
			Kind:    "build_failed",
			Summary: "a package's build code tampered with the environment being built (" + what + ")",
			Hint:    "Do not use that package; pick another one, or a version that publishes a wheel",
		}
	}
	fi, err := os.Lstat(envDir)
	if err != nil || !fi.IsDir() || !os.SameFile(fi, before) {
		return tampered("the environment directory was replaced")
	}
	want, err1 := filepath.EvalSymlinks(interp.Path)
	got, err2 := filepath.EvalSymlinks(filepath.Join(envDir, "bin", "python"))
	if err1 != nil || err2 != nil || got != want {
		return tampered("bin/python no longer leads to the interpreter")
	}
	// The server writes its metadata file here next: whatever the build
	// put at that name (a link to a host file, say) goes first.
	if err := os.Remove(filepath.Join(envDir, metaFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return tampered("the metadata file cannot be replaced")
	}
	return nil
}

// pypiHosts are where pip goes without an --index-url.
var pypiHosts = []string{"pypi.org", "files.pythonhosted.org"}

// indexHosts lists the hosts the index settings name, with a port where
// the URL has one: the only destinations an install needs. A simple index
// may link its files elsewhere (PyPI's do, to files.pythonhosted.org); such
// a host must be named too (--find-links or --extra-index-url).
func (c *Cache) indexHosts() []string {
	var urls []string
	if !c.opts.Offline {
		if c.opts.IndexURL == "" {
			return append(pypiHostsWith(c.opts.ExtraIndexURLs), hostsOf(c.opts.FindLinks)...)
		}
		urls = append(urls, c.opts.IndexURL)
		urls = append(urls, c.opts.ExtraIndexURLs...)
	}
	return append(hostsOf(urls), hostsOf(c.opts.FindLinks)...)
}

func pypiHostsWith(extra []string) []string {
	return append(append([]string{}, pypiHosts...), hostsOf(extra)...)
}

func hostsOf(urls []string) []string {
	var hs []string
	for _, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			continue
		}
		hs = append(hs, u.Host)
	}
	return hs
}
