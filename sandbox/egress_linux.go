package sandbox

import (
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"

	"github.com/landlock-lsm/go-landlock/landlock"
	"golang.org/x/sys/unix"
)

// egressConfig tells the init how the program reaches the egress proxy.
type egressConfig struct {
	Port int `json:"port"` // the proxy is 127.0.0.1:Port to the program
	// Fd, in the namespaces tier, is an O_PATH descriptor of the proxy's
	// unix socket: the init connects through /proc/self/fd/Fd, which the
	// sandbox's mount namespace cannot hide and its uid need not traverse.
	Fd int `json:"fd,omitempty"`
}

// openGateSocket is the O_PATH descriptor of g's socket for an init.
func openGateSocket(g *gate) (*os.File, error) {
	fd, err := unix.Open(g.sock, unix.O_PATH|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("open egress socket", err)
	}
	return os.NewFile(uintptr(fd), g.sock), nil
}

// startEgress runs the namespaces tier's forwarder: it listens on
// 127.0.0.1:Port in the run's own network namespace (which has nothing
// else) and carries each connection to the server's proxy. It must run
// before Landlock, which forbids binding TCP ports.
func startEgress(cfg *initConfig) error {
	e := cfg.Egress
	if e == nil || e.Fd == 0 {
		return nil
	}
	unix.CloseOnExec(e.Fd)
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(e.Port)))
	if err != nil {
		return fmt.Errorf("egress forwarder: %w", err)
	}
	path := "/proc/self/fd/" + strconv.Itoa(e.Fd)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go forward(c, path)
		}
	}()
	return nil
}

func forward(c net.Conn, path string) {
	defer c.Close()
	up, err := net.Dial("unix", path)
	if err != nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		io.Copy(up, c)
		up.(*net.UnixConn).CloseWrite()
	}()
	io.Copy(c, up)
	c.(*net.TCPConn).CloseWrite()
	wg.Wait()
}

// egressRules lets the program connect to the proxy's port, the one TCP
// destination Landlock allows a run without --network.
func egressRules(cfg *initConfig) []landlock.Rule {
	if cfg.Egress == nil || cfg.Network {
		return nil
	}
	return []landlock.Rule{landlock.ConnectTCP(uint16(cfg.Egress.Port))}
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
