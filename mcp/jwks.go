package mcp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/modelcontextprotocol/go-sdk/auth"
)

// How long a fetched key set is used, and how often it may be fetched.
const (
	// refetchEvery bounds fetches of the key set, whatever tokens ask for:
	// a flood of tokens naming unknown keys costs the issuer one request
	// per interval.
	refetchEvery = 30 * time.Second
	// defaultFresh is how long a key set whose response has no cache
	// headers is used before it is fetched again, so rotated-out keys stop
	// working within the hour.
	defaultFresh = time.Hour
	// maxFresh caps what the cache headers may ask for.
	maxFresh = 24 * time.Hour
	// maxKeySet is the largest key set read; real ones are a few KiB.
	maxKeySet = 1 << 20
)

// errKeys marks a failure to get the issuer's keys: the server's problem,
// not the token's. Its text is what the client sees; the cause is logged.
var errKeys = errors.New("the authorization server's signing keys are unavailable")

// errUnknownKey is a token naming a key the issuer's set does not have,
// even after fetching it again.
var errUnknownKey = errors.New("unknown signing key")

// keySet is the issuer's JSON Web Key Set (RFC 7517), fetched on first
// use and again when its cache headers say it is stale or a token names a
// key it does not have, at most once per refetchEvery. go-jose parses and
// checks each key; keySet keeps the RS256 and ES256 verification keys.
// A fetch that fails keeps the keys already held, so a bad publish at the
// issuer does not lock out tokens signed with keys it already served.
type keySet struct {
	issuer string
	client *http.Client
	log    *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	url      string                     // "" until found in the issuer's metadata
	keys     map[string]jose.JSONWebKey // by kid; nil until a fetch succeeds
	staleAt  time.Time                  // when the cache headers say to fetch again
	tried    time.Time                  // the last fetch attempt
	fetching chan struct{}              // closed when the fetch under way ends; nil when none is
}

// key returns the verification key named kid; a token without kid may use
// the set's only key.
func (s *keySet) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	for {
		s.mu.Lock()
		now := s.now()
		k, found := s.pick(kid)
		if found && now.Before(s.staleAt) {
			s.mu.Unlock()
			return k, nil
		}
		if wait := s.fetching; wait != nil {
			s.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return jose.JSONWebKey{}, fmt.Errorf("%w: %w", errKeys, ctx.Err())
			}
		}
		if now.Sub(s.tried) < refetchEvery {
			s.mu.Unlock()
			switch {
			case found: // stale, but a fresh set could not be had yet
				return k, nil
			case s.keys == nil:
				return jose.JSONWebKey{}, errKeys
			}
			return jose.JSONWebKey{}, errUnknownKey
		}
		s.tried = now
		done := make(chan struct{})
		s.fetching = done
		s.mu.Unlock()

		// The fetch serves every waiting request: it must not end
		// because the one that started it went away.
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		keys, fresh, err := s.fetch(fctx)
		cancel()

		s.mu.Lock()
		s.fetching = nil
		close(done)
		if err != nil {
			s.log.Error("fetch the issuer's signing keys; keeping the keys held", "issuer", s.issuer, "keys_held", len(s.keys), "err", err)
		} else {
			s.keys, s.staleAt = keys, now.Add(fresh)
		}
		s.mu.Unlock()
		// Round again: the fresh set, or the old one if the fetch failed
		// (tried is now, so no second fetch).
	}
}

// pick finds kid in the set. Callers hold s.mu.
func (s *keySet) pick(kid string) (jose.JSONWebKey, bool) {
	if k, ok := s.keys[kid]; ok {
		return k, true
	}
	if kid == "" && len(s.keys) == 1 {
		for _, k := range s.keys {
			return k, true
		}
	}
	return jose.JSONWebKey{}, false
}

// fetch gets the key set and how long it may be used, discovering its URL
// from the issuer's metadata (RFC 8414 or OpenID Connect discovery) the
// first time. Only one fetch runs at a time (s.fetching).
func (s *keySet) fetch(ctx context.Context) (map[string]jose.JSONWebKey, time.Duration, error) {
	s.mu.Lock()
	url := s.url
	s.mu.Unlock()
	if url == "" {
		meta, err := auth.GetAuthServerMetadata(ctx, s.issuer, s.client)
		if err != nil {
			return nil, 0, fmt.Errorf("issuer metadata: %w", err)
		}
		if meta == nil || meta.JWKSURI == "" {
			return nil, 0, errors.New("the issuer publishes no jwks_uri; pass --oauth-jwks-url")
		}
		url = meta.JWKSURI
		s.mu.Lock()
		s.url = url
		s.mu.Unlock()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, 0, fmt.Errorf("jwks %s: %s", url, resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySet+1))
	if err != nil {
		return nil, 0, fmt.Errorf("jwks %s: %w", url, err)
	}
	if len(body) > maxKeySet {
		return nil, 0, fmt.Errorf("jwks %s: larger than %d bytes", url, maxKeySet)
	}
	keys, err := s.parse(body)
	if err != nil {
		return nil, 0, fmt.Errorf("jwks %s: %w", url, err)
	}
	return keys, freshFor(resp.Header, s.now()), nil
}

// parse reads a key set. Each key is parsed on its own: RFC 7517 §5 says
// to ignore keys one does not understand, so an encryption key or a new
// key type in the set must not hide the signing keys next to it.
func (s *keySet) parse(body []byte) (map[string]jose.JSONWebKey, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(body, &set); err != nil {
		return nil, fmt.Errorf("not a JSON Web Key Set: %w", err)
	}
	keys := map[string]jose.JSONWebKey{}
	var skipped []string
	for i, raw := range set.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("key %d: %v", i, err))
			continue
		}
		if why := unusable(k); why != "" {
			skipped = append(skipped, fmt.Sprintf("key %d (kid %q): %s", i, k.KeyID, why))
			continue
		}
		if _, dup := keys[k.KeyID]; dup {
			skipped = append(skipped, fmt.Sprintf("key %d: kid %q named twice", i, k.KeyID))
			continue
		}
		keys[k.KeyID] = k.Public()
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("no usable RS256 or ES256 signing key among %d keys: %s", len(set.Keys), strings.Join(skipped, "; "))
	}
	if len(skipped) > 0 {
		s.log.Debug("keys in the issuer's set that PRIMS does not use", "issuer", s.issuer, "skipped", skipped)
	}
	return keys, nil
}

// unusable says why k cannot verify PRIMS's tokens, or "" when it can.
func unusable(k jose.JSONWebKey) string {
	if k.Use != "" && k.Use != "sig" {
		return fmt.Sprintf("use %q", k.Use)
	}
	if k.Algorithm != "" && !slices.Contains(allowedAlgs, jose.SignatureAlgorithm(k.Algorithm)) {
		return fmt.Sprintf("alg %q is not allowed", k.Algorithm)
	}
	switch pub := k.Public().Key.(type) {
	case *rsa.PublicKey:
		if pub.N.BitLen() < 2048 {
			return fmt.Sprintf("RSA key of %d bits (2048 at least)", pub.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if pub.Curve != elliptic.P256() {
			return "EC key not on P-256"
		}
	default: // symmetric keys included: never HMAC
		return "not an RSA or EC public key"
	}
	return ""
}

// freshFor is how long a key set may be used, from its response's
// Cache-Control (max-age less Age; no-cache and no-store: fetch again as
// soon as refetchEvery allows) or else Expires, up to maxFresh. Hand-written:
// the libraries that parse these headers (pquerna/cachecontrol) carry a
// whole shared-cache policy to answer a question of one directive.
func freshFor(h http.Header, now time.Time) time.Duration {
	var d time.Duration
	switch maxAge, ok := cacheMaxAge(h.Get("Cache-Control")); {
	case ok:
		d = maxAge
		if age, err := strconv.Atoi(h.Get("Age")); err == nil && age > 0 {
			d -= time.Duration(age) * time.Second
		}
	case h.Get("Expires") != "":
		exp, err := http.ParseTime(h.Get("Expires"))
		if err != nil { // RFC 9111 §5.3: an invalid Expires is already expired
			return 0
		}
		date, err := http.ParseTime(h.Get("Date"))
		if err != nil {
			date = now
		}
		d = exp.Sub(date)
	default:
		return defaultFresh
	}
	return min(max(d, 0), maxFresh)
}

// cacheMaxAge reads max-age from a Cache-Control value; no-cache and
// no-store count as max-age=0.
func cacheMaxAge(cc string) (time.Duration, bool) {
	var age time.Duration
	found := false
	for _, dir := range strings.Split(cc, ",") {
		name, val, _ := strings.Cut(strings.TrimSpace(dir), "=")
		switch strings.ToLower(name) {
		case "no-cache", "no-store":
			return 0, true
		case "max-age":
			n, err := strconv.ParseInt(strings.Trim(val, `"`), 10, 64)
			if err != nil || n < 0 {
				return 0, true // unparsable: do not keep it
			}
			age, found = time.Duration(min(n, int64(maxFresh/time.Second)))*time.Second, true
		}
	}
	return age, found
}
