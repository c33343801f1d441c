package initproc

import (
	"time"
)

// The sandbox init is this same binary, re-executed through /proc/self/exe
// (as runc does) with argv[0] and an environment variable as the marker that
// MaybeInit looks for.
const (
	initArg0   = "prims-sandbox-init"
	initEnv    = "_PRIMS_SANDBOX_INIT"
	initModeNS = "namespaces"
	initModeLL = "landlock"
	initProbe  = "probe"
)

// Descriptors the init inherits. The program's code stays on fd 3, where
// bootstrap.py reads it.
const (
	fdCode   = 3
	fdConfig = 4
	fdReport = 5
	fdTrees  = 6 // and up: detached mount trees, in initConfig.Binds order

	// fdGate is where the program, started by the init as PID 2, waits for
	// the gateOpen byte that says its limits are on (see reap); gateEnv
	// names the descriptor to the bootstrap, which removes it.
	fdGate   = 4
	gateEnv  = "PRIMS_GATE_FD"
	gateOpen = '1'
)

// initConfig is everything the init needs, sent as JSON on fdConfig.
type initConfig struct {
	Mode    string   `json:"mode"`
	Python  string   `json:"python"`
	Args    []string `json:"args"`
	Env     []string `json:"env"`
	Dir     string   `json:"dir"`
	Home    string   `json:"home"` // the program's HOME (Job.Home), for /etc/passwd
	Binds   []bind   `json:"binds"`
	Network bool     `json:"network"`
	Limits  Limits   `json:"limits"`
	// DropTo is the uid and gid the landlock tier switches to when the
	// server runs as root; 0 means stay.
	DropTo int `json:"drop_to,omitempty"`
	// CgroupFD, when not 0, is the tasks file of the run's cgroup v1,
	// which the init joins before it starts the program (joinCgroup).
	CgroupFD int `json:"cgroup_fd,omitempty"`
	// TraceT0, when not 0, asks the init to trace its stages (traceEnv):
	// the server's CLOCK_MONOTONIC reading as it prepared the run.
	TraceT0 int64 `json:"trace_t0,omitempty"`
	// FDAttrs holds the program to the descriptor forms of chmod, chown,
	// utime and setxattr in the landlock tier (filterOptions.denyPathAttr);
	// bootstrap.py falls back to them when a path form is refused.
	FDAttrs bool `json:"fd_attrs,omitempty"`
	// Egress, without Network, is the way to the server's egress proxy.
	Egress *egressConfig `json:"egress,omitempty"`
	// Zygote, in the namespaces tier, makes the program a zygote that
	// forks each run (zygote_linux.go): the init keeps the namespace's
	// capabilities for it and confines nothing itself.
	Zygote bool `json:"zygote,omitempty"`
}

// bind is one host path the sandbox sees at the same path.
type bind struct {
	Path  string `json:"path"`           // where it appears in the sandbox
	Src   string `json:"src"`            // the host path, symlinks resolved
	Write bool   `json:"write"`          // read-write (the workspace) or read-only
	Tree  bool   `json:"tree,omitempty"` // attach the next detached tree fd instead of binding Src
}

// Limits are the run's limits the init sets on the program (the server's
// sandbox.Limits, less what the server enforces itself).
type Limits struct {
	Memory       int64         // RLIMIT_DATA
	CPUTime      time.Duration // RLIMIT_CPU, rounded up to seconds
	MaxProcs     int           // RLIMIT_NPROC, over the tasks that already count
	MaxFileSize  int64         // RLIMIT_FSIZE
	MaxOpenFiles int           // RLIMIT_NOFILE
}

// egressConfig tells the init how the program reaches the egress proxy.
type egressConfig struct {
	Port int `json:"port"` // the proxy is 127.0.0.1:Port to the program
	// Fd, in the namespaces tier, is an O_PATH descriptor of the proxy's
	// unix socket: the init connects through /proc/self/fd/Fd, which the
	// sandbox's mount namespace cannot hide and its uid need not traverse.
	Fd int `json:"fd,omitempty"`
}

// systemDirs are bound read-only into every sandbox (and readable in the
// landlock tier) when they exist; symlinks among them (merged /usr) are
// recreated as symlinks.
var systemDirs = []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"}

// etcEntries are the parts of /etc a Python program may need; the rest
// (shadow, ssh keys, credentials) stays out of the sandbox.
var etcEntries = []string{
	"ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone",
	"nsswitch.conf", "hosts", "host.conf", "gai.conf", "resolv.conf", "protocols", "services",
	"ssl", "ca-certificates", "pki", "fonts", "mime.types", "alternatives", "os-release",
	"matplotlibrc", "debian_version", "lsb-release", "python3", "python3.9", "python3.10", "python3.11", "python3.12", "python3.13",
}
