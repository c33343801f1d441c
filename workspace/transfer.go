package workspace

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Transfer limits for Fetch and Upload.
type Limits struct {
	MaxDownload int64         // bytes one mounted file may have
	MaxUpload   int64         // bytes one persisted artifact may have
	Timeout     time.Duration // for one whole transfer

	// AllowPrivate lets transfers reach loopback, private, link-local and
	// metadata addresses (and go through HTTP_PROXY). Off, a URL whose
	// host resolves to one is refused (--allow-private-fetch).
	AllowPrivate bool

	test *transferHooks // tests only

	// Quota is what the workspace may hold in all, the program's files
	// and mounted ones together (Usage); a download that would pass it is
	// refused. 0 leaves downloads to MaxDownload alone.
	Quota int64
}

// DefaultLimits are the limits used when a field is zero.
var DefaultLimits = Limits{MaxDownload: 512 << 20, MaxUpload: 100 << 20, Timeout: 5 * time.Minute}

func (l Limits) withDefaults() Limits {
	if l.MaxDownload <= 0 {
		l.MaxDownload = DefaultLimits.MaxDownload
	}
	if l.MaxUpload <= 0 {
		l.MaxUpload = DefaultLimits.MaxUpload
	}
	if l.Timeout <= 0 {
		l.Timeout = DefaultLimits.Timeout
	}
	return l
}

func checkURL(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err == nil && u.Scheme != "" && u.Scheme != "http" && u.Scheme != "https" {
		return nil, errorf(nil, "URL scheme %q is not allowed: only http and https URLs can be fetched or uploaded to", u.Scheme)
	}
	if err != nil || u.Host == "" || u.Scheme == "" {
		return nil, errorf(err, "%q is not a valid URL: give an http:// or https:// URL", raw)
	}
	return u, nil
}

// MountPath resolves a mount_path: relative to mounts/, with an optional
// leading "mounts/" accepted, so "data.csv" and "mounts/data.csv" mean the
// same file.
func (w *Workspace) MountPath(name string) (string, error) {
	clean, err := cleanLocal(name)
	if err != nil {
		return "", err
	}
	if !inDir(clean, MountsDir) {
		clean = filepath.Join(MountsDir, clean)
	}
	if clean == MountsDir {
		return "", errorf(nil, "mount_path must name a file, such as %q", "data/input.csv")
	}
	return w.Resolve(clean)
}

// Fetch downloads url into the file at mountPath under mounts/, streaming it
// to disk. It fails without leaving a partial file when the body is larger
// than the limit, the server answers with an error, or the transfer times
// out. The finished file is read-only.
func (w *Workspace) Fetch(ctx context.Context, rawURL, mountPath string, lim Limits) (Entry, error) {
	lim = lim.withDefaults()
	u, err := checkURL(rawURL)
	if err != nil {
		return Entry{}, err
	}
	local, err := w.MountPath(mountPath)
	if err != nil {
		return Entry{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, lim.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return Entry{}, errorf(err, "%q is not a valid URL", rawURL)
	}
	resp, err := lim.client().Do(req)
	if err != nil {
		return Entry{}, errorf(err, "download %s failed: %s", redact(u), netErrText(ctx, err, lim.Timeout))
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return Entry{}, errorf(nil, "download %s failed: the server answered %s", redact(u), resp.Status)
	}
	if resp.ContentLength > lim.MaxDownload {
		return Entry{}, errorf(nil, "download %s refused: it is %d bytes, over the %d-byte limit for mounted files", redact(u), resp.ContentLength, lim.MaxDownload)
	}

	limit, quotaCut := lim.MaxDownload, false
	if lim.Quota > 0 {
		used := w.Usage(lim.Quota)
		if left := lim.Quota - used; left < limit {
			limit, quotaCut = max(left, 0), true
		}
	}
	if quotaCut && resp.ContentLength > limit {
		return Entry{}, w.quotaError(u, lim.Quota)
	}

	// mounts/ is the server's own directory (see Workspace): the program
	// cannot plant links or swap directories there.
	_, rel := w.locate(local)
	dir := filepath.Dir(rel)
	if err := w.mounts.MkdirAll(dir, 0o755); err != nil {
		return Entry{}, errorf(err, "cannot create %q: %s", filepath.ToSlash(filepath.Dir(local)), errText(err))
	}
	// Readable by the sandbox user whatever the umask.
	for d := dir; d != "."; d = filepath.Dir(d) {
		_ = w.mounts.Chmod(d, 0o755)
	}
	tmp := filepath.Join(dir, fmt.Sprintf(".part-%d", time.Now().UnixNano()))
	f, err := w.mounts.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|oNoFollow, 0o600)
	if err != nil {
		return Entry{}, errorf(err, "cannot write %q: %s", filepath.ToSlash(local), errText(err))
	}
	defer w.mounts.Remove(tmp) // no-op once renamed
	n, err := io.Copy(f, io.LimitReader(resp.Body, limit+1))
	if err == nil {
		err = f.Chmod(0o444)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		if isNoSpace(err) {
			return Entry{}, errorf(err, "download %s failed after %d bytes: the disk is full. Delete files in the workspace, then try again", redact(u), n)
		}
		return Entry{}, errorf(err, "download %s failed after %d bytes: %s", redact(u), n, netErrText(ctx, err, lim.Timeout))
	}
	if n > limit {
		if quotaCut {
			return Entry{}, w.quotaError(u, lim.Quota)
		}
		return Entry{}, errorf(nil, "download %s stopped: it is larger than the %d-byte limit for mounted files", redact(u), lim.MaxDownload)
	}
	if fi, err := w.mounts.Lstat(rel); err == nil && fi.IsDir() {
		return Entry{}, errorf(nil, "mount_path %q is an existing directory", filepath.ToSlash(local))
	}
	if err := w.mounts.Rename(tmp, rel); err != nil {
		return Entry{}, errorf(err, "cannot write %q: %s", filepath.ToSlash(local), errText(err))
	}
	fi, err := w.mounts.Lstat(rel)
	if err != nil {
		return Entry{}, errorf(err, "%q: %s", filepath.ToSlash(local), errText(err))
	}
	return entryOf(local, fi), nil
}

func (w *Workspace) quotaError(u *url.URL, quota int64) error {
	return errorf(nil, "download %s refused: the workspace would hold more than its quota of %d bytes (mounted files count too). Delete files the workspace no longer needs, then try again", redact(u), quota)
}

// UploadResult reports a finished Upload.
type UploadResult struct {
	Entry
	Status     int    `json:"status"`
	StatusText string `json:"status_text"`
}

// OpenOutput opens the regular file at name for reading as Open does, and
// only when it lies under output/: the one place persisted artifacts come
// from. The size in the Entry is the file's when it was opened; readers send
// no more than that, even if the code is still writing.
func (w *Workspace) OpenOutput(name string) (*os.File, Entry, error) {
	local, err := w.Resolve(name)
	if err != nil {
		return nil, Entry{}, err
	}
	if !inDir(local, OutputDir) || local == OutputDir {
		return nil, Entry{}, errorf(nil, "%q is not under output/: only files the code wrote to output/ can be persisted", filepath.ToSlash(local))
	}
	return w.openLocal(local)
}

// Upload sends the file at name, which must lie under output/, with an HTTP
// PUT to a presigned URL, streamed with Content-Length and Content-Type.
func (w *Workspace) Upload(ctx context.Context, name, rawURL string, lim Limits) (UploadResult, error) {
	lim = lim.withDefaults()
	f, e, err := w.OpenOutput(name)
	if err != nil {
		return UploadResult{}, err
	}
	defer f.Close()
	u, err := checkURL(rawURL)
	if err != nil {
		return UploadResult{}, err
	}
	if e.Size > lim.MaxUpload {
		return UploadResult{}, errorf(nil, "%q is %d bytes, over the %d-byte limit for persisted artifacts", e.Path, e.Size, lim.MaxUpload)
	}
	ctx, cancel := context.WithTimeout(ctx, lim.Timeout)
	defer cancel()
	// Send exactly the size we checked, even if the code is still writing.
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), io.LimitReader(f, e.Size))
	if err != nil {
		return UploadResult{}, errorf(err, "%q is not a valid URL", rawURL)
	}
	req.ContentLength = e.Size
	req.Header.Set("Content-Type", e.MIME)
	resp, err := lim.client().Do(req)
	if err != nil {
		return UploadResult{}, errorf(err, "upload to %s failed: %s", redact(u), netErrText(ctx, err, lim.Timeout))
	}
	defer resp.Body.Close()
	r := UploadResult{Entry: e, Status: resp.StatusCode, StatusText: resp.Status}
	if resp.StatusCode/100 != 2 {
		// The status line only: a body would hand the model whatever the
		// destination answers, which is a way to read a service.
		return r, errorf(nil, "upload to %s failed: the server answered %s", redact(u), resp.Status)
	}
	return r, nil
}

// redact drops the query of a presigned URL (it holds the signature) and any
// user info before a URL appears in a message.
func redact(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery = ""
	c.Fragment = ""
	return c.String()
}

func netErrText(ctx context.Context, err error, timeout time.Duration) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return fmt.Sprintf("it did not finish within %s", timeout)
	}
	if errors.Is(err, context.Canceled) {
		return "it was cancelled"
	}
	if msg := privateRefusal(err); msg != "" {
		return msg
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Sprintf("host %q was not found", dnsErr.Name)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) {
		return fmt.Sprintf("could not connect (%v)", opErr.Err)
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}
