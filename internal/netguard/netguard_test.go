package netguard

import (
	"net/netip"
	"testing"
)

func TestKind(t *testing.T) {
	for _, tt := range []struct{ ip, want string }{
		{"127.0.0.1", "loopback"}, {"127.255.0.9", "loopback"}, {"::1", "loopback"},
		{"10.1.2.3", "private"}, {"172.16.0.1", "private"}, {"192.168.1.1", "private"},
		{"169.254.169.254", "cloud metadata"}, {"169.254.1.1", "link-local"}, {"fe80::1", "link-local"},
		{"fd00:ec2::254", "unique-local"}, {"0.0.0.0", "unspecified"}, {"::", "unspecified"},
		{"0.1.2.3", "unspecified"}, {"100.100.100.200", "shared (carrier NAT)"},
		{"::ffff:10.0.0.1", "private"}, {"64:ff9b::7f00:1", "NAT64"}, {"2002:7f00:1::", "6to4"},
		{"224.0.0.1", "multicast"}, {"255.255.255.255", "reserved"},
		{"93.184.215.14", ""}, {"2606:2800:21f:cb07:6820:80da:af6b:8b2c", ""}, {"8.8.8.8", ""},
	} {
		if got := Kind(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("Kind(%s) = %q, want %q", tt.ip, got, tt.want)
		}
	}
}

func TestIsLoopback(t *testing.T) {
	for in, want := range map[string]bool{
		"localhost:8080": true, "LOCALHOST": true, "127.0.0.1:1": true, "127.9.9.9": true, "[::1]:80": true, "::1": true,
		":8080": false, "0.0.0.0:80": false, "[::]:80": false, "10.0.0.1:80": false, "example.com:80": false, "localhost.example.com": false, "": false,
	} {
		if got := IsLoopback(in); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", in, got, want)
		}
	}
}
