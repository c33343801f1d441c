package workspace

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/prims-mcp/prims/internal/netguard"
)

// PrivateAddrError is the cause of a fetch or upload refused because the
// destination, as actually dialled, is not a public address.
type PrivateAddrError struct {
	Addr netip.Addr
	Kind string // "loopback", "private", "link-local", ...
}

func (e *PrivateAddrError) Error() string {
	if !e.Addr.IsValid() {
		return "address is not an IP address"
	}
	return fmt.Sprintf("%s is a %s address", e.Addr, e.Kind)
}

// transferHooks let tests resolve names through a fake DNS server and
// treat one loopback listener as if it were a public host.
type transferHooks struct {
	resolver *net.Resolver
	public   netip.AddrPort
}

// refusePrivate returns a net.Dialer Control hook: it sees the address the
// socket is about to connect to, after DNS resolution, so neither a name
// that resolves to loopback nor a rebinding DNS server gets past it, and it
// runs again for every redirect's connection.
func refusePrivate(public netip.AddrPort) func(network, address string, _ syscall.RawConn) error {
	return func(network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return &PrivateAddrError{}
		}
		ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
		if k := netguard.Kind(ap.Addr()); k != "" && ap != public {
			return &PrivateAddrError{Addr: ap.Addr(), Kind: k}
		}
		return nil
	}
}

// newHTTPClient is the client for fetches and uploads. Unless allowPrivate,
// it connects only to public addresses and ignores HTTP_PROXY: through a
// proxy the destination's address would be the proxy's to check, not ours.
func newHTTPClient(allowPrivate bool, test *transferHooks) *http.Client {
	if test == nil {
		test = &transferHooks{}
	}
	d := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second, Resolver: test.resolver}
	tr := &http.Transport{
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	if allowPrivate {
		tr.Proxy = http.ProxyFromEnvironment
	} else {
		d.Control = refusePrivate(test.public)
	}
	return &http.Client{
		Transport: tr,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= 5 {
				return errors.New("too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("redirect to a %s: URL", req.URL.Scheme)
			}
			return nil
		},
	}
}

var (
	clientsOnce            sync.Once
	publicOnly, anyAddress *http.Client
)

// client returns the HTTP client that lim's policy calls for.
func (l Limits) client() *http.Client {
	if l.test != nil {
		return newHTTPClient(l.AllowPrivate, l.test)
	}
	clientsOnce.Do(func() {
		publicOnly = newHTTPClient(false, nil)
		anyAddress = newHTTPClient(true, nil)
	})
	if l.AllowPrivate {
		return anyAddress
	}
	return publicOnly
}

// privateRefusal is the model-facing text for a refused destination, or "".
func privateRefusal(err error) string {
	var pe *PrivateAddrError
	if !errors.As(err, &pe) {
		return ""
	}
	return fmt.Sprintf("refused: the destination %s. This server does not fetch from or upload to "+
		"loopback, private, link-local or metadata addresses; use a public http(s) URL "+
		"(the server's operator can lift this with --allow-private-fetch)", pe)
}
