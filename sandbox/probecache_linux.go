package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// A short-lived prims (`prims run`) would otherwise start the init twice on
// every call only to learn that it works. The cache keeps a success, never
// a failure: a stale or forged entry can only claim that the full sandbox
// works, which makes runs fail, never run with less isolation than the
// host gives. The key changes with everything the probes' answer depends on.

// probeCacheFile is the cache's file in its directory.
const probeCacheFile = "sandbox-probe.json"

type probeCacheEntry struct {
	Key string `json:"key"`
}

// probeKey identifies what the probes found: this binary (the init is this
// binary), the boot, the user, the namespaces this process is in, its
// AppArmor confinement and the sysctls that allow or forbid user
// namespaces. "" when this binary cannot be identified.
func probeKey() string {
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/exe", &st); err != nil {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "exe %d %d %d %d.%d %d.%d\n", st.Dev, st.Ino, st.Size, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
	fmt.Fprintf(h, "ids %d %d\n", os.Geteuid(), os.Getegid())
	for _, f := range []string{
		"/proc/sys/kernel/random/boot_id",
		"/proc/sys/user/max_user_namespaces",
		"/proc/sys/user/max_mnt_namespaces",
		"/proc/sys/kernel/unprivileged_userns_clone",
		"/proc/sys/kernel/apparmor_restrict_unprivileged_userns",
		"/proc/self/attr/apparmor/current",
	} {
		b, _ := os.ReadFile(f)
		fmt.Fprintf(h, "%s %q\n", f, b)
	}
	for _, ns := range []string{"user", "mnt", "pid", "net", "cgroup"} {
		l, _ := os.Readlink("/proc/self/ns/" + ns)
		fmt.Fprintf(h, "ns %s\n", l)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// cachedProbeOK reports whether dir holds a success for key.
func cachedProbeOK(dir, key string) bool {
	if dir == "" || key == "" {
		return false
	}
	f, err := os.OpenFile(filepath.Join(dir, probeCacheFile), os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0)
	if err != nil {
		return false
	}
	defer f.Close()
	var st unix.Stat_t
	if unix.Fstat(int(f.Fd()), &st) != nil || st.Mode&unix.S_IFMT != unix.S_IFREG || int(st.Uid) != os.Geteuid() || st.Size > 4096 {
		return false
	}
	var e probeCacheEntry
	return json.NewDecoder(f).Decode(&e) == nil && e.Key == key
}

// saveProbeOK records a success for key in dir, atomically; errors leave no
// cache, which only costs the next call a probe.
func saveProbeOK(dir, key string) {
	if dir == "" || key == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return
	}
	f, err := os.CreateTemp(dir, probeCacheFile+".*")
	if err != nil {
		return
	}
	b, _ := json.Marshal(probeCacheEntry{Key: key})
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), filepath.Join(dir, probeCacheFile))
	}
	if err != nil {
		os.Remove(f.Name())
	}
}
