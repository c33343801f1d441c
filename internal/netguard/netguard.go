// Package netguard tells public addresses from the ones a server must not
// reach on a program's behalf: loopback, private, link-local, metadata and
// the other special-purpose ranges. The workspace's fetches and the
// sandbox's egress proxy both ask it, so they agree.
package netguard

import (
	"net"
	"net/netip"
	"strings"
)

// nonPublic are the ranges no host-side fetch may reach besides the ones
// netip classifies itself: shared address space (carrier NAT, and Alibaba's
// metadata service at 100.100.100.200), IETF protocol assignments, benchmark
// nets, the reserved and broadcast block, and the IPv6 prefixes that embed
// an IPv4 address (NAT64, 6to4, IPv4-compatible) or are documentation.
var nonPublic = []struct {
	p    netip.Prefix
	kind string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier NAT)"},
	{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
	{netip.MustParsePrefix("192.0.2.0/24"), "documentation"},
	{netip.MustParsePrefix("198.18.0.0/15"), "benchmark"},
	{netip.MustParsePrefix("198.51.100.0/24"), "documentation"},
	{netip.MustParsePrefix("203.0.113.0/24"), "documentation"},
	{netip.MustParsePrefix("240.0.0.0/4"), "reserved"},
	{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64"},
	{netip.MustParsePrefix("64:ff9b:1::/48"), "NAT64"},
	{netip.MustParsePrefix("2002::/16"), "6to4"},
	{netip.MustParsePrefix("2001:db8::/32"), "documentation"},
	{netip.MustParsePrefix("100::/64"), "discard"},
}

// Kind names why ip is not a public unicast address ("loopback",
// "private", "cloud metadata", ...), or returns "" for a public one.
func Kind(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case !ip.IsValid():
		return "invalid"
	case ip.IsUnspecified():
		return "unspecified"
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		if ip.Is6() {
			return "unique-local"
		}
		return "private"
	case ip == netip.AddrFrom4([4]byte{169, 254, 169, 254}):
		return "cloud metadata"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	case ip.IsMulticast(), ip.IsLinkLocalMulticast(), ip.IsInterfaceLocalMulticast():
		return "multicast"
	}
	for _, r := range nonPublic {
		if r.p.Contains(ip) {
			return r.kind
		}
	}
	return ""
}

// IsLoopback reports whether hostport ("host:port", or a host alone) names
// this machine only: "localhost" or a loopback address. The HTTP server's
// Host check and prims serve's listen-address checks both ask it.
func IsLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
