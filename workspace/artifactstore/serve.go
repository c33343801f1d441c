package artifactstore

import (
	"errors"
	"io/fs"
	"mime"
	"net/http"
	"net/url"
	"os"
	"path"

	"gocloud.dev/blob/fileblob"
	"gocloud.dev/gcerrors"
)

// fileSigner reads the signing settings of a file:// store URL
// (base_url, secret_key_path: fileblob's own), so that the server can check
// the URLs fileblob signs. Nil without them.
func fileSigner(u *url.URL) (*fileblob.URLSignerHMAC, *url.URL, error) {
	q := u.Query()
	base, keyPath := q.Get("base_url"), q.Get("secret_key_path")
	if u.Scheme != "file" || base == "" || keyPath == "" {
		return nil, nil, nil
	}
	bu, err := url.Parse(base)
	if err != nil {
		return nil, nil, errors.New("base_url is not a URL")
	}
	key, err := os.ReadFile(keyPath)
	if err != nil || len(key) == 0 {
		return nil, nil, errors.New("secret_key_path names no readable, non-empty key file")
	}
	return fileblob.NewURLSignerHMAC(bu, key), bu, nil
}

// Handler serves the download URLs a file:// store signs, when its URL has
// base_url and secret_key_path: mount it at the path of base_url (Path).
// The signature is the credential, as for an S3 presigned URL: no other
// authentication applies. Nil for other stores.
func (s *Store) Handler() http.Handler {
	if s == nil || s.signer == nil {
		return nil
	}
	return http.HandlerFunc(s.serveSigned)
}

// Path is where Handler serves: the path of the store's base_url.
func (s *Store) Path() string {
	if s == nil || s.base == nil {
		return ""
	}
	return path.Clean("/" + s.base.Path)
}

func (s *Store) serveSigned(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	key, err := s.signer.KeyFromURL(r.Context(), r.URL)
	if err != nil || r.URL.Query().Get("method") != http.MethodGet {
		// Expired, forged, or signed for another method: all the same.
		http.Error(w, "the link is invalid or has expired", http.StatusForbidden)
		return
	}
	rd, err := s.bucket.NewReader(r.Context(), key, nil)
	if err != nil {
		if gcerrors.Code(err) == gcerrors.NotFound || errors.Is(err, fs.ErrNotExist) {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		http.Error(w, "the store could not read the file", http.StatusInternalServerError)
		return
	}
	defer rd.Close()
	h := w.Header()
	h.Set("Content-Type", rd.ContentType())
	h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(key)}))
	h.Set("X-Content-Type-Options", "nosniff")
	// Model-written code wrote the file: never let a browser run it.
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	h.Set("Cache-Control", "private, no-store")
	http.ServeContent(w, r, "", rd.ModTime(), rd)
}
