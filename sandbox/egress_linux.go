package sandbox

import (
	"os"

	"golang.org/x/sys/unix"
)

// openGateSocket is the O_PATH descriptor of g's socket for an init.
func openGateSocket(g *gate) (*os.File, error) {
	fd, err := unix.Open(g.sock, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open egress socket", err)
	}
	return os.NewFile(uintptr(fd), g.sock), nil
}

// attachEgress gives a run without network its way to the egress proxy:
// the proxy settings in its environment and, in the namespaces tier, the
// socket's descriptor, which the caller passes to the init as fd. It
// returns that descriptor, or nil.
func (r *Runner) attachEgress(job Job, cfg *initConfig, fd int) (*os.File, error) {
	g := r.gate
	if job.cmd != nil {
		g = job.cmd.gate
	}
	if g == nil || cfg.Network {
		return nil, nil
	}
	if r.tier == TierLandlock && r.support.Landlock < 4 {
		// Without Landlock's TCP rules nothing would keep the program
		// to the proxy's port: it gets no network instead.
		r.log.Warn("egress proxy unavailable in the landlock tier: Landlock ABI 4 (kernel 6.7) is needed to confine TCP", "abi", r.support.Landlock)
		return nil, nil
	}
	cfg.Egress = &egressConfig{Port: g.port}
	cfg.Env = g.withProxyEnv(cfg.Env)
	if r.tier != TierNamespaces {
		return nil, nil
	}
	f, err := openGateSocket(g)
	if err != nil {
		return nil, err
	}
	cfg.Egress.Fd = fd
	return f, nil
}
