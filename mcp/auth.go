package mcp

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// OAuthConfig puts the server in OAuth 2.0 resource-server mode: it accepts
// JWT access tokens signed (RS256 or ES256) by one authorization server and
// publishes RFC 9728 metadata naming it, so MCP clients can find where to
// get a token.
type OAuthConfig struct {
	Issuer   string   // the authorization server's issuer URL; tokens' iss must equal it
	Audience string   // tokens' aud must contain it; "" = the resource URL (PublicURL + "/mcp")
	JWKSURL  string   // the signing keys; "" = jwks_uri from the issuer's metadata
	Scopes   []string // scopes every token must carry
	// Client fetches metadata and keys; nil = a client with a 10s timeout.
	Client *http.Client
}

// clockSkew is how far token times may be off from ours.
const clockSkew = 30 * time.Second

// staticVerifier accepts exactly one token. Both sides are hashed first so
// that the comparison takes the same time whatever the lengths.
func staticVerifier(token string) auth.TokenVerifier {
	want := sha256.Sum256([]byte(token))
	return func(_ context.Context, got string, _ *http.Request) (*auth.TokenInfo, error) {
		sum := sha256.Sum256([]byte(got))
		if subtle.ConstantTimeCompare(want[:], sum[:]) != 1 {
			return nil, fmt.Errorf("%w: wrong token", auth.ErrInvalidToken)
		}
		return &auth.TokenInfo{}, nil
	}
}

// jwtVerifier checks JWT access tokens against the issuer's keys, which it
// fetches on first use and again when a token names a key it has not seen.
type jwtVerifier struct {
	cfg      OAuthConfig
	audience string
	client   *http.Client
	log      *slog.Logger

	mu      sync.Mutex
	jwksURL string
	keys    map[string]crypto.PublicKey
	fetched time.Time // last fetch attempt, to bound refetches driven by unknown kids
}

func newJWTVerifier(cfg OAuthConfig, audience string, log *slog.Logger) *jwtVerifier {
	c := cfg.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	return &jwtVerifier{cfg: cfg, audience: audience, client: c, log: log, jwksURL: cfg.JWKSURL}
}

// accessClaims are the claims PRIMS reads from an access token. Scopes come
// as "scope" (RFC 9068, space-separated) or "scp" (a list, as some issuers
// write it).
type accessClaims struct {
	jwt.RegisteredClaims
	Scope string   `json:"scope,omitempty"`
	Scp   []string `json:"scp,omitempty"`
}

// errKeys marks a failure to get the issuer's keys: the server's problem,
// not the token's.
var errKeys = errors.New("the authorization server's signing keys are unavailable")

func (v *jwtVerifier) verify(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
	var claims accessClaims
	_, err := jwt.ParseWithClaims(token, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		return v.key(ctx, kid)
	},
		jwt.WithValidMethods([]string{"RS256", "ES256"}),
		jwt.WithIssuer(v.cfg.Issuer),
		jwt.WithAudience(v.audience),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(clockSkew),
	)
	if err != nil {
		if errors.Is(err, errKeys) {
			return nil, errKeys
		}
		// Say which check failed, never echo the token or key details.
		reason := "invalid token"
		switch {
		case errors.Is(err, jwt.ErrTokenExpired):
			reason = "token expired"
		case errors.Is(err, jwt.ErrTokenNotValidYet):
			reason = "token not valid yet"
		case errors.Is(err, jwt.ErrTokenInvalidAudience):
			reason = "token is for another audience"
		case errors.Is(err, jwt.ErrTokenInvalidIssuer):
			reason = "token is from another issuer"
		case errors.Is(err, jwt.ErrTokenSignatureInvalid), errors.Is(err, jwt.ErrTokenUnverifiable):
			reason = "token signature not verified"
		}
		return nil, fmt.Errorf("%w: %s", auth.ErrInvalidToken, reason)
	}
	scopes := strings.Fields(claims.Scope)
	scopes = append(scopes, claims.Scp...)
	return &auth.TokenInfo{
		Scopes:     scopes,
		Expiration: claims.ExpiresAt.Time,
		UserID:     claims.Subject,
	}, nil
}

// refetchEvery bounds how often tokens with unknown key IDs make us fetch
// the key set again.
const refetchEvery = 30 * time.Second

func (v *jwtVerifier) key(ctx context.Context, kid string) (crypto.PublicKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if k, ok := v.pick(kid); ok {
		return k, nil
	}
	if v.keys != nil && time.Since(v.fetched) < refetchEvery {
		return nil, errors.New("unknown signing key")
	}
	v.fetched = time.Now()
	keys, err := v.fetch(ctx)
	if err != nil {
		v.log.Error("fetch the issuer's signing keys", "issuer", v.cfg.Issuer, "err", err)
		return nil, fmt.Errorf("%w: %v", errKeys, err)
	}
	v.keys = keys
	if k, ok := v.pick(kid); ok {
		return k, nil
	}
	return nil, errors.New("unknown signing key")
}

// pick finds the key named kid; a token without kid may use the only key.
// Callers hold v.mu.
func (v *jwtVerifier) pick(kid string) (crypto.PublicKey, bool) {
	if k, ok := v.keys[kid]; ok {
		return k, true
	}
	if kid == "" && len(v.keys) == 1 {
		for _, k := range v.keys {
			return k, true
		}
	}
	return nil, false
}

// fetch gets the key set, discovering its URL from the issuer's metadata
// (RFC 8414 or OpenID Connect discovery) the first time. Callers hold v.mu.
func (v *jwtVerifier) fetch(ctx context.Context) (map[string]crypto.PublicKey, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if v.jwksURL == "" {
		meta, err := auth.GetAuthServerMetadata(ctx, v.cfg.Issuer, v.client)
		if err != nil {
			return nil, fmt.Errorf("issuer metadata: %w", err)
		}
		if meta == nil || meta.JWKSURI == "" {
			return nil, errors.New("the issuer publishes no jwks_uri; pass --oauth-jwks-url")
		}
		v.jwksURL = meta.JWKSURI
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, v.jwksURL, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := v.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("jwks: %s", resp.Status)
	}
	var set struct {
		Keys []jsonWebKey `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	keys := map[string]crypto.PublicKey{}
	for _, k := range set.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			continue // a key type we do not use must not hide the others
		}
		keys[k.Kid] = pub
	}
	if len(keys) == 0 {
		return nil, errors.New("jwks: no usable RSA or P-256 signing keys")
	}
	return keys, nil
}

// jsonWebKey is the part of RFC 7517 that RS256 and ES256 keys use.
type jsonWebKey struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	N   string `json:"n"`
	E   string `json:"e"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func (k jsonWebKey) publicKey() (crypto.PublicKey, error) {
	b64 := base64.RawURLEncoding.DecodeString
	switch k.Kty {
	case "RSA":
		n, err := b64(k.N)
		if err != nil {
			return nil, err
		}
		e, err := b64(k.E)
		if err != nil || len(e) > 4 {
			return nil, errors.New("bad RSA exponent")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
		if pub.N.BitLen() < 2048 || pub.E < 3 {
			return nil, errors.New("weak RSA key")
		}
		return pub, nil
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("curve %q", k.Crv)
		}
		x, err := b64(k.X)
		if err != nil || len(x) != 32 {
			return nil, errors.New("bad EC x")
		}
		y, err := b64(k.Y)
		if err != nil || len(y) != 32 {
			return nil, errors.New("bad EC y")
		}
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	}
	return nil, fmt.Errorf("key type %q", k.Kty)
}
