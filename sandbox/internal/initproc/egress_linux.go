package initproc

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"sync"

	"golang.org/x/sys/unix"
)

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
	ln, err := listenLoopback(e.Port)
	if err != nil {
		return fmt.Errorf("egress forwarder: %w", err)
	}
	path := "/proc/self/fd/" + strconv.Itoa(e.Fd)
	go func() {
		for {
			c, err := accept(ln)
			if errors.Is(err, unix.ECONNABORTED) || errors.Is(err, unix.EINTR) {
				continue
			}
			if err != nil {
				return
			}
			go forward(c, path)
		}
	}()
	return nil
}

// The forwarder speaks to sockets through x/sys and os.File (whose
// non-blocking descriptors wait in Go's poller, as package net's do) rather
// than through package net, whose import alone would have most of the
// binary's packages initialized before the init (see init).

// listenLoopback listens on 127.0.0.1:port.
func listenLoopback(port int) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("bind", err)
	}
	if err := unix.Listen(fd, unix.SOMAXCONN); err != nil {
		unix.Close(fd)
		return nil, os.NewSyscallError("listen", err)
	}
	return os.NewFile(uintptr(fd), "egress listener"), nil
}

// accept waits in the poller for the next connection on ln.
func accept(ln *os.File) (*os.File, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd, aerr := -1, error(nil)
	err = rc.Read(func(fd uintptr) bool {
		nfd, _, aerr = unix.Accept4(int(fd), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		return !errors.Is(aerr, unix.EAGAIN)
	})
	if err != nil {
		return nil, err
	}
	if aerr != nil {
		return nil, aerr
	}
	return os.NewFile(uintptr(nfd), "egress connection"), nil
}

// dialUnix connects to the unix socket at path.
func dialUnix(path string) (*os.File, error) {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, err
	}
	return os.NewFile(uintptr(fd), "egress proxy"), nil
}

// closeWrite tells the peer that nothing more comes from this side.
func closeWrite(f *os.File) {
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) { unix.Shutdown(int(fd), unix.SHUT_WR) })
	}
}

func forward(c *os.File, path string) {
	defer c.Close()
	up, err := dialUnix(path)
	if err != nil {
		return
	}
	defer up.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		io.Copy(up, c)
		closeWrite(up)
	})
	io.Copy(c, up)
	closeWrite(c)
	wg.Wait()
}
