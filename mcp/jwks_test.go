package mcp

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// jwksServer is an issuer's key set endpoint on loopback whose content,
// headers and status the test changes as it goes. It counts the fetches.
type jwksServer struct {
	url     string
	fetches atomic.Int64

	mu     sync.Mutex
	body   []byte
	status int
	cache  string // Cache-Control; "" = none
}

func newJWKSServer(t *testing.T, keys ...jose.JSONWebKey) *jwksServer {
	t.Helper()
	js := &jwksServer{}
	js.publish(t, keys...)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		js.fetches.Add(1)
		js.mu.Lock()
		body, status, cache := js.body, js.status, js.cache
		js.mu.Unlock()
		if cache != "" {
			w.Header().Set("Cache-Control", cache)
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.WriteHeader(status)
		w.Write(body)
	}))
	t.Cleanup(ts.Close)
	js.url = ts.URL
	return js
}

// publish serves a key set of the public halves of keys.
func (js *jwksServer) publish(t *testing.T, keys ...jose.JSONWebKey) {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.Public())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	js.serve(http.StatusOK, b, "")
}

func (js *jwksServer) current() []byte {
	js.mu.Lock()
	defer js.mu.Unlock()
	return js.body
}

func (js *jwksServer) serve(status int, body []byte, cacheControl string) {
	js.mu.Lock()
	js.status, js.body, js.cache = status, body, cacheControl
	js.mu.Unlock()
}

// clock is the verifier's time, moved by the test: the refetch interval
// and the cache lifetimes are checked without waiting for them.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// syncBuffer is a log destination the race detector accepts.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

const testIssuer = "https://issuer.test"

// jwksFixture is a verifier of tokens for audience "prims" from
// testIssuer, whose keys are served by js, on a test clock.
type jwksFixture struct {
	js  *jwksServer
	clk *clock
	log *syncBuffer
	v   *jwtVerifier
}

func newJWKSFixture(t *testing.T, keys ...jose.JSONWebKey) *jwksFixture {
	t.Helper()
	f := &jwksFixture{js: newJWKSServer(t, keys...), clk: &clock{t: time.Now()}, log: &syncBuffer{}}
	log := slog.New(slog.NewTextHandler(f.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.v = newJWTVerifier(OAuthConfig{Issuer: testIssuer, JWKSURL: f.js.url}, "prims", log)
	f.v.now, f.v.keys.now = f.clk.now, f.clk.now
	return f
}

// verify checks token and returns the error a client would see.
func (f *jwksFixture) verify(token string) error {
	_, err := f.v.verify(context.Background(), token, nil)
	return err
}

func rsaJWK(t *testing.T, kid string) jose.JSONWebKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "RS256", Use: "sig"}
}

func ecJWK(t *testing.T, kid string) jose.JSONWebKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return jose.JSONWebKey{Key: k, KeyID: kid, Algorithm: "ES256", Use: "sig"}
}

// token is a good access token for the fixture signed by k (golang-jwt
// mints it: tokens from another implementation than the verifier's). It
// outlives every step the tests move their clock by.
func token(t *testing.T, k jose.JSONWebKey, edit ...func(*mint)) string {
	t.Helper()
	m := mint{kid: k.KeyID, iss: testIssuer, aud: "prims", sub: "alice", scope: "prims:run", exp: time.Now().Add(48 * time.Hour)}
	switch key := k.Key.(type) {
	case *rsa.PrivateKey:
		m.method, m.key = jwt.SigningMethodRS256, key
	case *ecdsa.PrivateKey:
		m.method, m.key = jwt.SigningMethodES256, key
	default:
		t.Fatalf("no signing method for %T", k.Key)
	}
	for _, e := range edit {
		e(&m)
	}
	return m.sign(t)
}

func TestJWTVerifierAcceptsGoodTokens(t *testing.T) {
	t.Parallel()
	r, e := rsaJWK(t, "r1"), ecJWK(t, "e1")
	f := newJWKSFixture(t, r, e)
	for _, k := range []jose.JSONWebKey{r, e} {
		info, err := f.v.verify(context.Background(), token(t, k), nil)
		if err != nil {
			t.Fatalf("%s token: %v", k.Algorithm, err)
		}
		if info.UserID != "alice" || len(info.Scopes) != 1 || info.Scopes[0] != "prims:run" {
			t.Errorf("%s token: %+v", k.Algorithm, info)
		}
	}
	if n := f.js.fetches.Load(); n != 1 {
		t.Errorf("%d fetches of the key set for two tokens, want 1", n)
	}
}

// TestJWTVerifierRefusesBadTokens: every token is refused as invalid (401,
// not a server error), each for its own reason.
func TestJWTVerifierRefusesBadTokens(t *testing.T) {
	t.Parallel()
	r, e := rsaJWK(t, "r1"), ecJWK(t, "e1")
	f := newJWKSFixture(t, r, e)
	other := rsaJWK(t, "r1") // same kid, another key

	// The RSA public key as an HMAC secret: a verifier that takes the
	// algorithm from the token and the key's bytes as they come would
	// accept this token (the control below shows it does verify so).
	der, err := x509.MarshalPKIXPublicKey(r.Public().Key)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	claims := jwt.MapClaims{"iss": testIssuer, "aud": "prims", "sub": "mallory", "exp": time.Now().Add(time.Hour).Unix()}
	hmacTok := jwt.NewWithClaims(jwt.SigningMethodHS256, claims)
	hmacTok.Header["kid"] = "r1"
	hmacWithPub, err := hmacTok.SignedString(pubPEM)
	if err != nil {
		t.Fatal(err)
	}
	noneTok := jwt.NewWithClaims(jwt.SigningMethodNone, claims)
	noneTok.Header["kid"] = "r1"
	none, err := noneTok.SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	// Controls: both forgeries are well-formed tokens with good claims
	// that a verifier trusting their header would accept.
	if _, err := jwt.Parse(hmacWithPub, func(*jwt.Token) (any, error) { return pubPEM, nil }); err != nil {
		t.Fatalf("control: the HMAC forgery does not verify with the public key as secret: %v", err)
	}
	if _, err := jwt.Parse(none, func(*jwt.Token) (any, error) { return jwt.UnsafeAllowNoneSignatureType, nil }); err != nil {
		t.Fatalf("control: the alg none token does not parse: %v", err)
	}

	for _, tt := range []struct {
		name, token, want string
	}{
		{"alg none", none, "not a JWT signed with RS256 or ES256"},
		{"HMAC with the RSA public key", hmacWithPub, "not a JWT signed with RS256 or ES256"},
		{"expired", token(t, r, func(m *mint) { m.exp = time.Now().Add(-time.Hour) }), "token expired"},
		{"expired within the clock skew", token(t, r, func(m *mint) { m.exp = time.Now().Add(-clockSkew - 2*time.Second) }), "token expired"},
		{"no expiry", token(t, r, func(m *mint) { m.exp = time.Time{} }), "token has no expiry"},
		{"not valid yet", token(t, r, func(m *mint) { m.nbf = time.Now().Add(time.Hour) }), "token not valid yet"},
		{"wrong audience", token(t, r, func(m *mint) { m.aud = "https://other.example/mcp" }), "token is for another audience"},
		{"wrong issuer", token(t, r, func(m *mint) { m.iss = "https://evil.example" }), "token is from another issuer"},
		{"wrong key", token(t, other), "token signature not verified"},
		{"ES256 naming an RSA key", token(t, e, func(m *mint) { m.kid = "r1" }), "token signature not verified"},
		{"unknown kid", token(t, rsaJWK(t, "r9")), "token signed with an unknown key"},
		{"garbage", "not.a.jwt", "not a JWT signed with RS256 or ES256"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := f.verify(tt.token)
			if !errors.Is(err, auth.ErrInvalidToken) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an invalid token: %s", err, tt.want)
			}
		})
	}
}

// TestJWKSRotation: the issuer rotates its key mid-test; the first token
// signed with the new key makes the verifier fetch the set again, and the
// rotated-out key stops working.
func TestJWKSRotation(t *testing.T) {
	t.Parallel()
	old, next := rsaJWK(t, "2026-01"), ecJWK(t, "2026-02")
	f := newJWKSFixture(t, old)
	if err := f.verify(token(t, old)); err != nil {
		t.Fatalf("old key before the rotation: %v", err)
	}
	f.js.publish(t, next)
	f.clk.advance(refetchEvery)
	if err := f.verify(token(t, next)); err != nil {
		t.Fatalf("new key after the rotation: %v", err)
	}
	if err := f.verify(token(t, old)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Errorf("rotated-out key: %v, want invalid", err)
	}
	if n := f.js.fetches.Load(); n != 2 {
		t.Errorf("%d fetches, want 2 (first use, then the new kid)", n)
	}
}

// TestJWKSUnknownKidRefetchOncePerInterval: tokens naming unknown keys,
// many at once, make at most one fetch per refetchEvery.
func TestJWKSUnknownKidRefetchOncePerInterval(t *testing.T) {
	t.Parallel()
	k := rsaJWK(t, "k1")
	f := newJWKSFixture(t, k)
	if err := f.verify(token(t, k)); err != nil {
		t.Fatal(err)
	}
	unknown := token(t, rsaJWK(t, "k-unknown"))
	flood := func() {
		var wg sync.WaitGroup
		for range 20 {
			wg.Go(func() {
				if err := f.verify(unknown); !errors.Is(err, auth.ErrInvalidToken) {
					t.Errorf("unknown kid: %v, want invalid", err)
				}
			})
		}
		wg.Wait()
	}
	for _, step := range []struct {
		advance time.Duration
		fetches int64
	}{
		{0, 1},                          // fetched for k1 a moment ago
		{refetchEvery / 2, 1},           // still within the interval
		{refetchEvery / 2, 2},           // one interval since: one fetch for twenty tokens
		{refetchEvery - time.Second, 2}, // within the new interval
		{time.Second, 3},                // and the next
		{refetchEvery + time.Hour, 4},   // a long quiet time: one fetch, not several
		{0, 4},
	} {
		f.clk.advance(step.advance)
		flood()
		if n := f.js.fetches.Load(); n != step.fetches {
			t.Fatalf("after %v more: %d fetches, want %d", step.advance, n, step.fetches)
		}
	}
	if err := f.verify(token(t, k)); err != nil {
		t.Errorf("the known key after the flood: %v", err)
	}
}

// TestJWKSCacheHeaders: the set is used as long as its response's
// Cache-Control says, and fetched again once stale.
func TestJWKSCacheHeaders(t *testing.T) {
	t.Parallel()
	k := rsaJWK(t, "k1")
	for _, tt := range []struct {
		cacheControl string
		fresh        time.Duration // fetched again after this, not before
	}{
		{"max-age=120", 120 * time.Second},
		{"public, max-age=3600, must-revalidate", time.Hour},
		{"", defaultFresh},
		{"no-store", refetchEvery}, // as often as the refetch limit allows
		{"max-age=99999999", maxFresh},
	} {
		t.Run(tt.cacheControl, func(t *testing.T) {
			t.Parallel()
			f := newJWKSFixture(t, k)
			f.js.serve(http.StatusOK, f.js.current(), tt.cacheControl)
			tok := token(t, k)
			if err := f.verify(tok); err != nil {
				t.Fatal(err)
			}
			f.clk.advance(tt.fresh - time.Second)
			if err := f.verify(tok); err != nil || f.js.fetches.Load() != 1 {
				t.Fatalf("a second before stale: %v, %d fetches, want 1", err, f.js.fetches.Load())
			}
			f.clk.advance(time.Second)
			if err := f.verify(tok); err != nil || f.js.fetches.Load() != 2 {
				t.Fatalf("stale: %v, %d fetches, want 2", err, f.js.fetches.Load())
			}
		})
	}
}

func TestFreshFor(t *testing.T) {
	date := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	for _, tt := range []struct {
		hdr  map[string]string
		want time.Duration
	}{
		{map[string]string{"Cache-Control": "max-age=600"}, 10 * time.Minute},
		{map[string]string{"Cache-Control": "max-age=600", "Age": "100"}, 500 * time.Second},
		{map[string]string{"Cache-Control": "max-age=60", "Age": "100"}, 0},
		{map[string]string{"Cache-Control": `Max-Age="60"`}, time.Minute},
		{map[string]string{"Cache-Control": "max-age=600, no-cache"}, 0},
		{map[string]string{"Cache-Control": "max-age=soon"}, 0},
		{map[string]string{"Cache-Control": "max-age=-1"}, 0},
		{map[string]string{"Cache-Control": "max-age=9223372036854775807"}, maxFresh},
		{map[string]string{"Cache-Control": "public"}, defaultFresh},
		{map[string]string{"Expires": date.Add(time.Hour).Format(http.TimeFormat), "Date": date.Format(http.TimeFormat)}, time.Hour},
		{map[string]string{"Expires": "0"}, 0},
		{map[string]string{"Cache-Control": "max-age=60", "Expires": date.Add(time.Hour).Format(http.TimeFormat)}, time.Minute},
		{nil, defaultFresh},
	} {
		h := http.Header{}
		for k, v := range tt.hdr {
			h.Set(k, v)
		}
		if got := freshFor(h, date); got != tt.want {
			t.Errorf("freshFor(%v) = %v, want %v", tt.hdr, got, tt.want)
		}
	}
}

// TestJWKSMalformed: a key set that cannot be used is a clear error in the
// log and "keys unavailable" (a server error, not the token's fault) to
// the client; keys already held keep working, and the verifier recovers
// when the issuer serves a good set again.
func TestJWKSMalformed(t *testing.T) {
	t.Parallel()
	weak, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	weakSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &weak.PublicKey, KeyID: "k1"}}})
	encSet, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &rsaJWK(t, "k1").Key.(*rsa.PrivateKey).PublicKey, KeyID: "k1", Use: "enc"}}})
	bad := []struct {
		name   string
		status int
		body   string
		log    string
	}{
		{"not JSON", 200, "<html>maintenance</html>", "not a JSON Web Key Set"},
		{"keys not a list", 200, `{"keys": {"kty": "RSA"}}`, "not a JSON Web Key Set"},
		{"empty set", 200, `{"keys": []}`, "no usable RS256 or ES256 signing key among 0 keys"},
		{"HMAC secret only", 200, `{"keys": [{"kty": "oct", "kid": "k1", "k": "c2VjcmV0"}]}`, "not an RSA or EC public key"},
		{"RSA modulus garbage", 200, `{"keys": [{"kty": "RSA", "kid": "k1", "n": "!!", "e": "AQAB"}]}`, "key 0:"},
		{"EC point off the curve", 200, `{"keys": [{"kty": "EC", "kid": "k1", "crv": "P-256", "x": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "y": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}`, "key 0:"},
		{"weak RSA key", 200, string(weakSet), "RSA key of 1024 bits"},
		{"encryption key", 200, string(encSet), `use \"enc\"`},
		{"server error", 500, "oops", "500 Internal Server Error"},
		{"too large", 200, `{"keys": [], "pad": "` + strings.Repeat("x", maxKeySet) + `"}`, "larger than"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			good := rsaJWK(t, "k1")
			f := newJWKSFixture(t, good)
			saved := f.js.current()
			f.js.serve(tt.status, []byte(tt.body), "")
			err := f.verify(token(t, good))
			if !errors.Is(err, errKeys) || errors.Is(err, auth.ErrInvalidToken) || err.Error() != errKeys.Error() {
				t.Errorf("bad set from the start: %v, want only %v", err, errKeys)
			}
			if !strings.Contains(f.log.String(), tt.log) {
				t.Errorf("the log does not say %q:\n%s", tt.log, f.log)
			}

			// The issuer fixes its set: the next fetch allowed works.
			f.js.serve(http.StatusOK, saved, "")
			f.clk.advance(refetchEvery)
			if err := f.verify(token(t, good)); err != nil {
				t.Fatalf("after the fix: %v", err)
			}
			// A bad publish while keys are held: they keep working
			// past their freshness, and the failure is logged.
			f.js.serve(tt.status, []byte(tt.body), "")
			f.clk.advance(defaultFresh)
			if err := f.verify(token(t, good)); err != nil {
				t.Errorf("held key while the set is bad: %v", err)
			}
			if n := f.js.fetches.Load(); n != 3 {
				t.Errorf("%d fetches, want 3", n)
			}
			if !strings.Contains(f.log.String(), "keeping the keys held") {
				t.Errorf("the log does not say the held keys are kept:\n%s", f.log)
			}
		})
	}
}

// TestOAuthMalformedKeySetServerServes: with an issuer serving a broken
// key set, a request with a token fails with a message saying so, and
// the server goes on serving what needs no token.
func TestOAuthMalformedKeySetServerServes(t *testing.T) {
	t.Parallel()
	js := newJWKSServer(t)
	js.serve(http.StatusOK, []byte(`{"keys": "none"}`), "")
	f := newHTTPFixture(t, HTTPConfig{OAuth: &OAuthConfig{Issuer: testIssuer, Audience: "prims", JWKSURL: js.url}})
	tok := token(t, rsaJWK(t, "k1"))
	resp, body := get(t, f.url+"/mcp", map[string]string{"Authorization": "Bearer " + tok, "Accept": "text/event-stream"})
	if resp.StatusCode != http.StatusInternalServerError || !strings.Contains(body, errKeys.Error()) {
		t.Errorf("token with a broken key set: %d %q, want 500 saying %q", resp.StatusCode, body, errKeys)
	}
	for range 3 {
		if resp, _ := get(t, f.url+"/healthz", nil); resp.StatusCode != 200 {
			t.Errorf("/healthz: %d", resp.StatusCode)
		}
		if resp, _ := get(t, f.url+"/metrics", nil); resp.StatusCode != 200 {
			t.Errorf("/metrics: %d", resp.StatusCode)
		}
		if resp, _ := get(t, f.url+"/mcp", map[string]string{"Authorization": "Bearer " + tok}); resp.StatusCode != http.StatusInternalServerError {
			t.Errorf("token again: %d", resp.StatusCode)
		}
	}
	if n := js.fetches.Load(); n != 1 {
		t.Errorf("%d fetches of the broken set for four requests, want 1", n)
	}
}
