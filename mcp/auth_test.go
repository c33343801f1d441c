package mcp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/oauthex"
)

func TestStaticToken(t *testing.T) {
	const token = "correct-horse-battery-staple-42"
	f := newHTTPFixture(t, HTTPConfig{Token: token})

	for _, tt := range []struct {
		name, token string
	}{
		{"missing", ""},
		{"wrong", "correct-horse-battery-staple-43"},
		{"prefix", token[:10]},
		{"longer", token + "x"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.connect(t, clientOpts{token: tt.token}); err == nil {
				t.Fatal("MCP session opened")
			}
			hdr := map[string]string{sessionHeader: "AAAAAAAAAAAAAAAAAAAAAAAAAA"}
			if tt.token != "" {
				hdr["Authorization"] = "Bearer " + tt.token
			}
			for _, p := range []string{"/mcp", "/artifacts/x"} {
				resp, body := get(t, f.url+p, hdr)
				if resp.StatusCode != http.StatusUnauthorized || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s: %d %q WWW-Authenticate %q", p, resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	cs := f.mustConnect(t, clientOpts{token: token})
	runOK(t, cs, "open('output/a.txt','w').write('ok')")
	resp, body := get(t, f.url+"/artifacts/a.txt", map[string]string{sessionHeader: cs.ID(), "Authorization": "Bearer " + token})
	if resp.StatusCode != 200 || body != "ok" || resp.Header.Get("WWW-Authenticate") != "" {
		t.Errorf("artifact with the token: %d %q %q", resp.StatusCode, body, resp.Header.Get("WWW-Authenticate"))
	}
	if resp, _ := get(t, f.url+"/healthz", nil); resp.StatusCode != 200 {
		t.Errorf("/healthz needs no token, got %d", resp.StatusCode)
	}
}

// issuer is a fake OAuth authorization server: RFC 8414 metadata, a JWKS,
// and keys to mint tokens with.
type issuer struct {
	ts     *httptest.Server
	rsaKey *rsa.PrivateKey
	ecKey  *ecdsa.PrivateKey
}

func newIssuer(t *testing.T) *issuer {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{rsaKey: rk, ecKey: ek}
	b64 := base64.RawURLEncoding.EncodeToString
	mux := http.NewServeMux()
	is.ts = httptest.NewServer(mux)
	t.Cleanup(is.ts.Close)
	mux.HandleFunc("/.well-known/oauth-authorization-server", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{
			"issuer":                           is.ts.URL,
			"authorization_endpoint":           is.ts.URL + "/authorize",
			"token_endpoint":                   is.ts.URL + "/token",
			"jwks_uri":                         is.ts.URL + "/jwks.json",
			"response_types_supported":         []string{"code"},
			"code_challenge_methods_supported": []string{"S256"},
		})
	})
	ecBytes, err := ek.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	mux.HandleFunc("/jwks.json", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"keys": []map[string]string{
			{"kty": "RSA", "kid": "rsa1", "use": "sig", "alg": "RS256", "n": b64(rk.N.Bytes()), "e": b64(big.NewInt(int64(rk.E)).Bytes())},
			{"kty": "EC", "kid": "ec1", "use": "sig", "alg": "ES256", "crv": "P-256", "x": b64(ecBytes[1:33]), "y": b64(ecBytes[33:])},
			{"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}, // not a signing key we accept
		}})
	})
	return is
}

type mint struct {
	method jwt.SigningMethod
	kid    string
	key    crypto.Signer
	iss    string
	aud    string
	sub    string
	scope  string
	exp    time.Time
	nbf    time.Time
}

func (m mint) sign(t *testing.T) string {
	t.Helper()
	claims := jwt.MapClaims{"iss": m.iss, "aud": m.aud, "sub": m.sub, "iat": time.Now().Unix()}
	if !m.exp.IsZero() {
		claims["exp"] = m.exp.Unix()
	}
	if !m.nbf.IsZero() {
		claims["nbf"] = m.nbf.Unix()
	}
	if m.scope != "" {
		claims["scope"] = m.scope
	}
	tok := jwt.NewWithClaims(m.method, claims)
	tok.Header["kid"] = m.kid
	s, err := tok.SignedString(m.key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestOAuth(t *testing.T) {
	is := newIssuer(t)
	f := newHTTPFixture(t, HTTPConfig{OAuth: &OAuthConfig{Issuer: is.ts.URL, Scopes: []string{"prims:run"}}})
	resource := f.url + "/mcp"
	good := mint{
		method: jwt.SigningMethodRS256, kid: "rsa1", key: is.rsaKey,
		iss: is.ts.URL, aud: resource, sub: "alice", scope: "openid prims:run",
		exp: time.Now().Add(time.Hour),
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}

	reject := []struct {
		name   string
		token  func() string
		status int
	}{
		{"missing", func() string { return "" }, 401},
		{"garbage", func() string { return "not.a.jwt" }, 401},
		{"expired", func() string { m := good; m.exp = time.Now().Add(-time.Hour); return m.sign(t) }, 401},
		{"not yet valid", func() string { m := good; m.nbf = time.Now().Add(time.Hour); return m.sign(t) }, 401},
		{"wrong audience", func() string { m := good; m.aud = "https://other.example/mcp"; return m.sign(t) }, 401},
		{"wrong issuer", func() string { m := good; m.iss = "https://evil.example"; return m.sign(t) }, 401},
		{"wrong key", func() string { m := good; m.key = otherKey; return m.sign(t) }, 401},
		{"unknown kid", func() string { m := good; m.kid = "nope"; m.key = otherKey; return m.sign(t) }, 401},
		{"HS256", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"iss": good.iss, "aud": good.aud, "exp": good.exp.Unix(), "scope": good.scope})
			tok.Header["kid"] = "hmac"
			s, _ := tok.SignedString([]byte("secret"))
			return s
		}, 401},
		{"none", func() string {
			tok := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": good.iss, "aud": good.aud, "exp": good.exp.Unix(), "scope": good.scope})
			s, _ := tok.SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}, 401},
		{"missing scope", func() string { m := good; m.scope = "openid"; return m.sign(t) }, 403},
	}
	metaURL := f.url + "/.well-known/oauth-protected-resource/mcp"
	for _, tt := range reject {
		t.Run(tt.name, func(t *testing.T) {
			tok := tt.token()
			if _, err := f.connect(t, clientOpts{token: tok}); err == nil {
				t.Fatal("MCP session opened")
			}
			hdr := map[string]string{"Accept": "text/event-stream", sessionHeader: "AAAAAAAAAAAAAAAAAAAAAAAAAA"}
			if tok != "" {
				hdr["Authorization"] = "Bearer " + tok
			}
			resp, body := get(t, f.url+"/mcp", hdr)
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d (%q)", resp.StatusCode, tt.status, body)
			}
			challenges, err := oauthex.ParseWWWAuthenticate(resp.Header.Values("WWW-Authenticate"))
			if err != nil || len(challenges) != 1 || challenges[0].Scheme != "bearer" || challenges[0].Params["resource_metadata"] != metaURL {
				t.Errorf("WWW-Authenticate %q: %+v %v", resp.Header.Values("WWW-Authenticate"), challenges, err)
			}
		})
	}

	// Protected-resource metadata tells clients where to get tokens.
	for _, p := range []string{"/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"} {
		resp, body := get(t, f.url+p, nil)
		var meta oauthex.ProtectedResourceMetadata
		if err := json.Unmarshal([]byte(body), &meta); err != nil || resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", p, resp.StatusCode, body)
		}
		if meta.Resource != resource || len(meta.AuthorizationServers) != 1 || meta.AuthorizationServers[0] != is.ts.URL {
			t.Errorf("%s: %+v", p, meta)
		}
	}

	// Valid tokens, RS256 and ES256, open sessions; a session is its
	// owner's: another user's token cannot fetch its artifacts.
	alice := good.sign(t)
	cs := f.mustConnect(t, clientOpts{token: alice})
	runOK(t, cs, "open('output/a.txt','w').write('alice')")
	es := good
	es.method, es.kid, es.key, es.sub = jwt.SigningMethodES256, "ec1", is.ecKey, "bob"
	bob := es.sign(t)
	f.mustConnect(t, clientOpts{token: bob})

	if resp, body := get(t, f.url+"/artifacts/a.txt", map[string]string{sessionHeader: cs.ID(), "Authorization": "Bearer " + alice}); resp.StatusCode != 200 || body != "alice" {
		t.Errorf("alice's artifact for alice: %d %q", resp.StatusCode, body)
	}
	if resp, body := get(t, f.url+"/artifacts/a.txt", map[string]string{sessionHeader: cs.ID(), "Authorization": "Bearer " + bob}); resp.StatusCode != 404 {
		t.Errorf("alice's artifact for bob: %d %q", resp.StatusCode, body)
	}
	req, _ := http.NewRequest(http.MethodDelete, f.url+"/mcp", nil)
	req.Header.Set(sessionHeader, cs.ID())
	req.Header.Set("Authorization", "Bearer "+bob)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("bob deleting alice's session: %v %v", resp.StatusCode, err)
	}
	if f.workspaceDir(cs.ID()) == "" {
		t.Errorf("bob's DELETE removed alice's workspace")
	}
}

func TestOAuthExplicitJWKSAndAudience(t *testing.T) {
	is := newIssuer(t)
	f := newHTTPFixture(t, HTTPConfig{OAuth: &OAuthConfig{
		Issuer:   "https://issuer.example", // not fetched: the JWKS URL is given
		Audience: "prims",
		JWKSURL:  is.ts.URL + "/jwks.json",
	}})
	m := mint{
		method: jwt.SigningMethodES256, kid: "ec1", key: is.ecKey,
		iss: "https://issuer.example", aud: "prims", sub: "carol", exp: time.Now().Add(time.Hour),
	}
	f.mustConnect(t, clientOpts{token: m.sign(t)})
	m.aud = f.url + "/mcp" // the default audience no longer applies
	if _, err := f.connect(t, clientOpts{token: m.sign(t)}); err == nil {
		t.Error("token for the resource URL accepted with --oauth-audience prims")
	}
}
