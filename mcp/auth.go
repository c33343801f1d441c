package mcp

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
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

// allowedAlgs are the only signature algorithms a token may use, named
// so that go-jose refuses every other before looking at a key: never
// "none", never HMAC (whose secret an attacker could take from a public
// key).
var allowedAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.ES256}

// jwtVerifier checks JWT access tokens (RFC 9068) with go-jose against the
// issuer's key set (jwks.go).
type jwtVerifier struct {
	cfg      OAuthConfig
	audience string
	keys     *keySet
	now      func() time.Time
}

func newJWTVerifier(cfg OAuthConfig, audience string, log *slog.Logger) *jwtVerifier {
	c := cfg.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	ks := &keySet{issuer: cfg.Issuer, url: cfg.JWKSURL, client: c, log: log, now: time.Now}
	return &jwtVerifier{cfg: cfg, audience: audience, keys: ks, now: time.Now}
}

// accessClaims are the claims PRIMS reads from an access token. Scopes come
// as "scope" (RFC 9068, space-separated) or "scp" (a list, as some issuers
// write it).
type accessClaims struct {
	jwt.Claims
	Scope string   `json:"scope,omitempty"`
	Scp   []string `json:"scp,omitempty"`
}

func (v *jwtVerifier) verify(ctx context.Context, token string, _ *http.Request) (*auth.TokenInfo, error) {
	// Say which check failed, never echo the token or key details.
	invalid := func(reason string) error { return fmt.Errorf("%w: %s", auth.ErrInvalidToken, reason) }
	tok, err := jwt.ParseSigned(token, allowedAlgs)
	if err != nil || len(tok.Headers) != 1 {
		return nil, invalid("not a JWT signed with " + algList())
	}
	h := tok.Headers[0]
	key, err := v.keys.key(ctx, h.KeyID)
	switch {
	case errors.Is(err, errKeys):
		return nil, errKeys
	case err != nil:
		return nil, invalid("token signed with an unknown key")
	case key.Algorithm != "" && key.Algorithm != h.Algorithm:
		return nil, invalid("token signature not verified")
	}
	var claims accessClaims
	if err := tok.Claims(key.Key, &claims); err != nil {
		return nil, invalid("token signature not verified")
	}
	if claims.Expiry == nil {
		return nil, invalid("token has no expiry")
	}
	err = claims.ValidateWithLeeway(jwt.Expected{
		Issuer:      v.cfg.Issuer,
		AnyAudience: jwt.Audience{v.audience},
		Time:        v.now(),
	}, clockSkew)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return nil, invalid("token expired")
	case errors.Is(err, jwt.ErrNotValidYet), errors.Is(err, jwt.ErrIssuedInTheFuture):
		return nil, invalid("token not valid yet")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return nil, invalid("token is for another audience")
	case errors.Is(err, jwt.ErrInvalidIssuer):
		return nil, invalid("token is from another issuer")
	case err != nil:
		return nil, invalid("invalid token")
	}
	return &auth.TokenInfo{
		Scopes:     append(strings.Fields(claims.Scope), claims.Scp...),
		Expiration: claims.Expiry.Time(),
		UserID:     claims.Subject,
	}, nil
}

// algList names allowedAlgs for messages.
func algList() string {
	names := make([]string, len(allowedAlgs))
	for i, a := range allowedAlgs {
		names[i] = string(a)
	}
	return strings.Join(names, " or ")
}
