package initproc

import (
	"fmt"
	"os"
	"path"

	"golang.org/x/sys/unix"
)

// The sandbox's root filesystem: a read-only tmpfs holding the system
// directories, a few /etc entries, a minimal /dev, a fresh /proc, a private
// /tmp and the run's binds, built by the init inside its mount namespace.

// newRoot is where buildRoot assembles the new root, under the scratch root.
const newRoot = "/newroot"

// buildRoot makes the minimal root in two pivot_root steps: first a scratch
// tmpfs becomes "/" with the host's root under /oldroot, so every host path
// stays reachable while the new root is assembled in /newroot; then /newroot
// becomes "/" and the old root is detached.
func buildRoot(cfg *initConfig) error {
	if err := pivotToScratch(); err != nil {
		return err
	}
	trace.mark("scratch root")
	const nr = newRoot
	if err := unix.Mount("tmpfs", nr, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=1m"); err != nil {
		return os.NewSyscallError("mount root tmpfs", err)
	}
	for _, d := range systemDirs {
		if err := bindHost(d, nr+d, true, true); err != nil {
			return err
		}
	}
	trace.mark("system dirs bound")
	if err := buildEtc(nr+"/etc", cfg); err != nil {
		return err
	}
	trace.mark("/etc")
	if err := buildDev(nr + "/dev"); err != nil {
		return err
	}
	trace.mark("/dev")
	if err := mountProc(nr + "/proc"); err != nil {
		return err
	}
	trace.mark("/proc")
	if err := mountRunTrees(nr, cfg); err != nil {
		return err
	}
	trace.mark("/tmp, workspace and trees")
	return enterRoot(nr)
}

// pivotToScratch makes a small tmpfs the root, with the host's root under
// /oldroot and an empty /newroot to build in.
func pivotToScratch() error {
	// Nothing mounted here may propagate back to the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return os.NewSyscallError("make mounts private", err)
	}
	if err := unix.Mount("tmpfs", "/tmp", "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755,size=64k"); err != nil {
		return os.NewSyscallError("mount scratch tmpfs", err)
	}
	for _, d := range []string{"/tmp/oldroot", "/tmp" + newRoot} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	if err := unix.PivotRoot("/tmp", "/tmp/oldroot"); err != nil {
		return os.NewSyscallError("pivot_root to scratch", err)
	}
	return os.Chdir("/")
}

// buildEtc binds the /etc entries a program may need (resolv.conf only with
// network) and writes a passwd and group that name only the sandbox user,
// whose home is the workspace's.
func buildEtc(etc string, cfg *initConfig) error {
	if err := os.Mkdir(etc, 0o755); err != nil {
		return err
	}
	for _, e := range etcEntries {
		if e == "resolv.conf" && !cfg.Network {
			continue
		}
		if err := bindHost("/etc/"+e, etc+"/"+e, true, true); err != nil {
			return err
		}
	}
	if err := os.WriteFile(etc+"/passwd", []byte("sandbox:x:0:0:sandbox:"+cfg.Home+":/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"), 0o644); err != nil {
		return err
	}
	return os.WriteFile(etc+"/group", []byte("sandbox:x:0:\nnogroup:x:65534:\n"), 0o644)
}

// mountProc mounts a fresh /proc for the new PID namespace, while the old
// root's /proc is still visible (the kernel refuses otherwise); subset=pid
// leaves out /proc/sys and the other host-wide files.
func mountProc(dst string) error {
	if err := os.Mkdir(dst, 0o555); err != nil {
		return err
	}
	const procFlags = unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC
	if err := unix.Mount("proc", dst, "proc", procFlags, "subset=pid"); err != nil {
		if err := unix.Mount("proc", dst, "proc", procFlags, ""); err != nil {
			return os.NewSyscallError("mount /proc", err)
		}
	}
	return nil
}

// mountRunTrees gives the run its private /tmp and its binds: the workspace,
// the interpreter and the mounts, host paths or trees the server cloned.
func mountRunTrees(nr string, cfg *initConfig) error {
	if err := mountTmpfs(nr+"/tmp", "mode=1777,size=64m"); err != nil {
		return err
	}
	for i, b := range cfg.Binds {
		dst := nr + b.Path
		if b.Tree {
			if err := attachTree(fdTrees+i, dst); err != nil {
				return err
			}
			continue
		}
		if err := bindHost(b.Src, dst, !b.Write, false); err != nil {
			return err
		}
	}
	return nil
}

// enterRoot makes nr read-only, pivots into it and detaches the old root.
func enterRoot(nr string) error {
	if err := unix.Mount("", nr, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV, ""); err != nil {
		return os.NewSyscallError("make root read-only", err)
	}
	if err := os.Chdir(nr); err != nil {
		return err
	}
	if err := unix.PivotRoot(".", "."); err != nil {
		return os.NewSyscallError("pivot_root", err)
	}
	trace.mark("pivot_root")
	if err := unix.Unmount(".", unix.MNT_DETACH); err != nil {
		return os.NewSyscallError("detach old root", err)
	}
	trace.mark("old root detached")
	return os.Chdir("/")
}

// bindHost binds the host path src (seen under /oldroot) at dst. A missing
// src is skipped when optional; a symlink is copied as a symlink, so merged
// /usr layouts and /etc/localtime keep working.
func bindHost(src, dst string, readOnly, optional bool) error {
	host := "/oldroot" + src
	fi, err := os.Lstat(host)
	if err != nil {
		if optional {
			return nil
		}
		return fmt.Errorf("sandbox path %s: %w", src, err)
	}
	if fi.Mode()&os.ModeSymlink != 0 {
		target, err := os.Readlink(host)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(path.Dir(dst), 0o755); err != nil {
			return err
		}
		return os.Symlink(target, dst)
	}
	if err := mountpoint(dst, fi.IsDir()); err != nil {
		return err
	}
	if err := unix.Mount(host, dst, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return os.NewSyscallError("bind "+src, err)
	}
	attr := unix.MountAttr{Attr_set: unix.MOUNT_ATTR_NOSUID | unix.MOUNT_ATTR_NODEV}
	if readOnly {
		attr.Attr_set |= unix.MOUNT_ATTR_RDONLY
	}
	if err := unix.MountSetattr(unix.AT_FDCWD, dst, unix.AT_RECURSIVE, &attr); err != nil {
		return remountBind(dst, readOnly)
	}
	return nil
}

// remountBind is the pre-5.12 way to make a bind read-only: a remount that
// keeps the flags the kernel locked on the source mount.
func remountBind(dst string, readOnly bool) error {
	var st unix.Statfs_t
	if err := unix.Statfs(dst, &st); err != nil {
		return os.NewSyscallError("statfs "+dst, err)
	}
	flags := uintptr(unix.MS_REMOUNT|unix.MS_BIND|unix.MS_NOSUID|unix.MS_NODEV) |
		uintptr(st.Flags)&(unix.MS_NOEXEC|unix.MS_NOATIME|unix.MS_NODIRATIME|unix.MS_RELATIME|unix.MS_RDONLY)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	return os.NewSyscallError("remount "+dst, unix.Mount("", dst, "", flags, ""))
}

// attachTree attaches a detached mount tree the server cloned for us.
func attachTree(fd int, dst string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return os.NewSyscallError("fstat tree", err)
	}
	if err := mountpoint(dst, st.Mode&unix.S_IFMT == unix.S_IFDIR); err != nil {
		return err
	}
	err := unix.MoveMount(fd, "", unix.AT_FDCWD, dst, unix.MOVE_MOUNT_F_EMPTY_PATH)
	unix.Close(fd)
	return os.NewSyscallError("move_mount "+dst, err)
}

// mountpoint makes sure dst exists as a directory or a file to mount on.
func mountpoint(dst string, dir bool) error {
	if _, err := os.Stat(dst); err == nil {
		return nil
	}
	if dir {
		return os.MkdirAll(dst, 0o755)
	}
	if err := os.MkdirAll(path.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

func mountTmpfs(dst, opts string) error {
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	return os.NewSyscallError("mount tmpfs "+dst, unix.Mount("tmpfs", dst, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, opts))
}

// buildDev makes a /dev with only the harmless devices, a private /dev/shm
// for multiprocessing, and the usual fd links; no tty, so TIOCSTI has no
// terminal to type into.
func buildDev(dev string) error {
	if err := mountTmpfs(dev, "mode=0755,size=64k"); err != nil {
		return err
	}
	for _, n := range []string{"null", "zero", "full", "random", "urandom"} {
		if err := mountpoint(dev+"/"+n, false); err != nil {
			return err
		}
		if err := unix.Mount("/oldroot/dev/"+n, dev+"/"+n, "", unix.MS_BIND, ""); err != nil {
			return os.NewSyscallError("bind /dev/"+n, err)
		}
	}
	for link, target := range map[string]string{"fd": "/proc/self/fd", "stdin": "/proc/self/fd/0", "stdout": "/proc/self/fd/1", "stderr": "/proc/self/fd/2"} {
		if err := os.Symlink(target, dev+"/"+link); err != nil {
			return err
		}
	}
	if err := mountTmpfs(dev+"/shm", "mode=1777,size=64m"); err != nil {
		return err
	}
	return os.NewSyscallError("make /dev read-only", unix.Mount("", dev, "", unix.MS_REMOUNT|unix.MS_RDONLY|unix.MS_NOSUID, ""))
}

// loopbackUp brings up lo in the run's empty network namespace.
func loopbackUp() error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq("lo")
	if err != nil {
		return err
	}
	ifr.SetUint16(unix.IFF_UP | unix.IFF_RUNNING)
	return unix.IoctlIfreq(fd, unix.SIOCSIFFLAGS, ifr)
}
