// Package artifactstore keeps files from a workspace's output/ in a bucket
// that outlives the session: S3 (or any S3-compatible server), a local
// directory, Google Cloud Storage or Azure Blob Storage, named by a
// gocloud.dev/blob URL.
//
//	st, err := artifactstore.Open(ctx, "s3://results?region=eu-west-1", artifactstore.Options{})
//	if err != nil { ... }
//	defer st.Close()
//	a, err := st.Put(ctx, ws, "output/plot.png", "sessions/4f2a9c")
//	// a.Key == "sessions/4f2a9c/plot.png", a.SHA256, a.URL (signed, where the backend can sign)
//
// Credentials come from each backend's standard environment (AWS_*, the
// shared config files, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*), read
// by the server only: the sandboxed code never sees them (its environment is
// scrubbed), and no message of this package names them.
//
// Errors a client can act on are [*Error] values whose text is safe to show
// to the model: they name the store by scheme and bucket, never a host path
// or a credential.
package artifactstore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"path"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"gocloud.dev/blob"
	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"

	// S3 and local directories are always built in; gs and azblob are in
	// drivers_gcs.go and drivers_azure.go, which build tags can leave out.
	_ "gocloud.dev/blob/s3blob"

	"github.com/prims-mcp/prims/workspace"
)

// Schemes are the URL schemes Open accepts.
var Schemes = []string{"s3", "file", "gs", "azblob"}

// Options tune a Store; zero fields take the defaults.
type Options struct {
	MaxBytes  int64         // largest artifact stored (5 GiB)
	Timeout   time.Duration // for one whole upload (30 minutes)
	URLExpiry time.Duration // lifetime of a signed download URL (1 hour)
	// PartSize and Concurrency bound what one upload holds in memory:
	// about PartSize × Concurrency (8 MiB × 4), whatever the file's size.
	PartSize    int
	Concurrency int

	afterHash func() // tests only: runs between the two reads of Put
}

func (o Options) withDefaults() Options {
	if o.MaxBytes <= 0 {
		o.MaxBytes = 5 << 30
	}
	if o.Timeout <= 0 {
		o.Timeout = 30 * time.Minute
	}
	if o.URLExpiry <= 0 {
		o.URLExpiry = time.Hour
	}
	if o.PartSize <= 0 {
		o.PartSize = 8 << 20
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	return o
}

// Store is an open bucket. Its methods are safe for concurrent use.
type Store struct {
	bucket *blob.Bucket
	name   string // how messages name the store: "s3://bucket", "file store"
	opts   Options

	// A file store with base_url and secret_key_path: what checks the
	// URLs fileblob signs, and where they point (Handler).
	signer *fileblob.URLSignerHMAC
	base   *url.URL
}

// Artifact describes one stored file.
type Artifact struct {
	Path       string    `json:"path" jsonschema:"the file's path in the workspace"`
	Key        string    `json:"key" jsonschema:"the object's key in the artifact store"`
	Size       int64     `json:"size"`
	MIME       string    `json:"mime"`
	SHA256     string    `json:"sha256" jsonschema:"hex SHA-256 of the stored bytes, also in the object's metadata"`
	URL        string    `json:"url,omitempty" jsonschema:"time-limited download URL, when the store can sign one"`
	URLExpires time.Time `json:"url_expires,omitzero"`
}

// Error is a failure the client can act on; its text is safe to show.
type Error struct {
	msg string
	err error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

func errorf(err error, format string, args ...any) *Error {
	return &Error{msg: fmt.Sprintf(format, args...), err: err}
}

// Open opens the bucket at rawURL, a gocloud.dev/blob URL such as
// s3://bucket?region=…&endpoint=…&use_path_style=true, file:///dir,
// gs://bucket or azblob://container. It does not contact the store; see
// Check.
func Open(ctx context.Context, rawURL string, opts Options) (*Store, error) {
	u, err := url.Parse(rawURL)
	if err != nil || u.Scheme == "" {
		return nil, fmt.Errorf("artifact store %q is not a URL: give one such as s3://bucket?region=us-east-1 or file:///var/lib/prims/artifacts", rawURL)
	}
	if !slices.Contains(Schemes, u.Scheme) {
		return nil, fmt.Errorf("artifact store scheme %q is not supported: use one of %s", u.Scheme, strings.Join(Schemes, ", "))
	}
	if !blob.DefaultURLMux().ValidBucketScheme(u.Scheme) {
		return nil, fmt.Errorf("this prims was built without the %s:// driver (build tag prims_no%s): rebuild without that tag", u.Scheme, u.Scheme)
	}
	signer, base, err := fileSigner(u)
	if err != nil {
		return nil, fmt.Errorf("open artifact store %s: %w", shown(u), err)
	}
	b, err := blob.OpenBucket(ctx, rawURL)
	if err != nil {
		return nil, fmt.Errorf("open artifact store %s: %w", shown(u), err)
	}
	return &Store{bucket: b, name: shown(u), opts: opts.withDefaults(), signer: signer, base: base}, nil
}

// shown names a store in messages: scheme and bucket, never a directory of
// the host nor the query (which may name a profile or a key file).
func shown(u *url.URL) string {
	if u.Scheme == "file" {
		return "the file store"
	}
	return u.Scheme + "://" + u.Host
}

// String names the store as messages do.
func (s *Store) String() string { return s.name }

// Close releases the bucket. A nil Store (no store configured) closes too.
func (s *Store) Close() error {
	if s == nil {
		return nil
	}
	return s.bucket.Close()
}

// Check asks the store whether the bucket can be reached, for a warning at
// start-up; Put reports the same failures per call.
func (s *Store) Check(ctx context.Context) error {
	ok, err := s.bucket.IsAccessible(ctx)
	if err == nil && !ok {
		return s.failure("reach", gcerrors.NotFound, nil)
	}
	if err != nil {
		return s.classify(ctx, "reach", err)
	}
	return nil
}

// Put stores the regular file at name, which must lie under output/, as
// prefix + "/" + its path below output/. The object carries the file's
// content type and, in its metadata, "sha256". The file is read twice, never
// held in memory: once to hash it, since S3 and the others take metadata
// before the body, and once to upload it, hashing again; if the two differ
// (the code changed the file meanwhile) the upload is abandoned.
func (s *Store) Put(ctx context.Context, ws *workspace.Workspace, name, prefix string) (Artifact, error) {
	f, e, err := ws.OpenOutput(name)
	if err != nil {
		return Artifact{}, err
	}
	defer f.Close()
	rel := strings.TrimPrefix(e.Path, workspace.OutputDir+"/")
	if !utf8.ValidString(rel) {
		return Artifact{}, errorf(nil, "%q: the artifact store takes UTF-8 names only; rename the file under output/ and try again", e.Path)
	}
	if e.Size > s.opts.MaxBytes {
		return Artifact{}, errorf(nil, "%q is %d bytes, over the %d-byte limit for stored artifacts", e.Path, e.Size, s.opts.MaxBytes)
	}
	key := path.Join(prefix, rel)
	ctx, cancel := context.WithTimeout(ctx, s.opts.Timeout)
	defer cancel()

	first := sha256.New()
	if _, err := io.Copy(first, io.NewSectionReader(f, 0, e.Size)); err != nil {
		return Artifact{}, errorf(err, "cannot read %q; try again", e.Path)
	}
	sum := hex.EncodeToString(first.Sum(nil))
	if s.opts.afterHash != nil {
		s.opts.afterHash()
	}

	// Cancelling wctx before Close abandons the upload (blob.NewWriter).
	wctx, abandon := context.WithCancel(ctx)
	defer abandon()
	w, err := s.bucket.NewWriter(wctx, key, &blob.WriterOptions{
		ContentType:    e.MIME,
		Metadata:       map[string]string{"sha256": sum},
		BufferSize:     s.opts.PartSize,
		MaxConcurrency: s.opts.Concurrency,
	})
	if err != nil {
		return Artifact{}, s.classify(ctx, "store "+e.Path+" in", err)
	}
	second := sha256.New()
	n, err := io.Copy(w, io.TeeReader(io.NewSectionReader(f, 0, e.Size), second))
	if err == nil && (n != e.Size || hex.EncodeToString(second.Sum(nil)) != sum) {
		abandon()
		_ = w.Close()
		return Artifact{}, errorf(nil, "%q changed while it was being stored, so nothing was stored; wait until the code has finished writing it, then try again", e.Path)
	}
	if err != nil {
		abandon()
		_ = w.Close()
		return Artifact{}, s.classify(ctx, "store "+e.Path+" in", err)
	}
	if err := w.Close(); err != nil {
		return Artifact{}, s.classify(ctx, "store "+e.Path+" in", err)
	}
	a := Artifact{Path: e.Path, Key: key, Size: e.Size, MIME: e.MIME, SHA256: sum}
	a.URL, a.URLExpires = s.sign(ctx, key)
	return a, nil
}

// sign returns a download URL for key, or nothing where the backend cannot
// sign one (a file store without base_url and secret_key_path).
func (s *Store) sign(ctx context.Context, key string) (string, time.Time) {
	expires := time.Now().Add(s.opts.URLExpiry)
	u, err := s.bucket.SignedURL(ctx, key, &blob.SignedURLOptions{Expiry: s.opts.URLExpiry})
	if err != nil {
		return "", time.Time{}
	}
	return u, expires.UTC().Truncate(time.Second)
}

// classify turns a backend's error into one the model can act on. The
// backend's own text stays out of it: it may name hosts, paths or request
// ids of the operator's account.
func (s *Store) classify(ctx context.Context, action string, err error) error {
	var we *workspace.Error
	if errors.As(err, &we) {
		return err
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return errorf(err, "could not %s %s: it did not finish within %s", action, s.name, s.opts.Timeout)
	}
	if errors.Is(err, context.Canceled) {
		return errorf(err, "the upload to %s was cancelled", s.name)
	}
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) {
		return errorf(err, "could not %s %s: the store cannot be reached (%s). The file is still in the workspace; try again later, or tell the operator", action, s.name, netText(dnsErr, opErr))
	}
	code := gcerrors.Code(err)
	if errors.Is(err, fs.ErrPermission) {
		// fileblob reports a directory it may not write as Unknown.
		code = gcerrors.PermissionDenied
	}
	return s.failure(action, code, err)
}

func netText(dnsErr *net.DNSError, opErr *net.OpError) string {
	if dnsErr != nil {
		return fmt.Sprintf("host %q was not found", dnsErr.Name)
	}
	var sysErr interface{ Unwrap() error }
	if errors.As(opErr.Err, &sysErr) {
		if inner := sysErr.Unwrap(); inner != nil {
			return inner.Error()
		}
	}
	return opErr.Op + " failed"
}

func (s *Store) failure(action string, code gcerrors.ErrorCode, err error) error {
	switch code {
	case gcerrors.PermissionDenied:
		return errorf(err, "could not %s %s: the store denied access. The server's credentials may not write there; tell the operator", action, s.name)
	case gcerrors.NotFound:
		return errorf(err, "could not %s %s: the bucket does not exist. Tell the operator", action, s.name)
	}
	return errorf(err, "could not %s %s: the store answered with an error (%s). The file is still in the workspace; try again, or tell the operator", action, s.name, code)
}
