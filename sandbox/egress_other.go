//go:build !linux

package sandbox

// Without the sandbox tiers there is nothing to route through the proxy.
type egressConfig struct{}
