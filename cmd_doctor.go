package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/sandbox/egress"
	"github.com/prims-mcp/prims/session"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

type doctorOptions struct {
	runOptions
}

func newDoctorCmd() *cobra.Command {
	opts := &doctorOptions{}
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Print what isolation this host gives runs, and how to get more",
		Long: `Probe the host once, as prims stdio does at start, and print the sandbox
tier runs would get, what each part of the sandbox needs, what is missing, and
the fix. Exits 1 when --isolation=strict could not start here.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return runDoctor(cmd.Context(), os.Stdout, opts) },
	}
	opts.addFlags(cmd.Flags())
	return cmd
}

func runDoctor(ctx context.Context, w io.Writer, opts *doctorOptions) error {
	s := sandbox.Probe()
	mark := func(err error) string {
		if err == nil {
			return "ok"
		}
		return "MISSING: " + err.Error()
	}
	fmt.Fprintf(w, "PRIMS sandbox on %s (running as %s)\n\n", s.OS, map[bool]string{true: "root: runs map to uid 65534", false: fmt.Sprintf("uid %d", os.Getuid())}[s.Root])
	fmt.Fprintf(w, "  sandbox init (re-exec):  %s\n", mark(s.Init))
	fmt.Fprintf(w, "  user namespaces:         %s\n", mark(s.UserNS))
	if s.Landlock > 0 {
		fmt.Fprintf(w, "  Landlock:                ok (ABI %d)\n", s.Landlock)
	} else {
		fmt.Fprintf(w, "  Landlock:                %s\n", mark(s.LandlockErr))
	}
	fmt.Fprintf(w, "  seccomp filters:         %s\n", mark(s.Seccomp))
	fmt.Fprintf(w, "  memory limit:            %s\n", s.Memory)
	fmt.Fprintf(w, "  process limit:           %s\n", s.Procs)
	fmt.Fprintf(w, "  workspace quota:         polled while code runs; RLIMIT_FSIZE bounds single files\n\n")

	tier := s.Best
	if opts.isolation == string(sandbox.IsolationOff) {
		tier = sandbox.TierNone
	}
	fmt.Fprintf(w, "Tier for --isolation=%s: %s\n", opts.isolation, tier)
	switch tier {
	case sandbox.TierNamespaces:
		fmt.Fprintln(w, "  Full isolation: a private read-only root, no network (unless --network), no host")
		fmt.Fprintln(w, "  processes, no capabilities, Landlock, seccomp, resource limits; nothing outlives a run.")
	case sandbox.TierLandlock:
		fmt.Fprintln(w, "  Reduced isolation: Landlock limits reads to system directories and the run's")
		fmt.Fprintln(w, "  paths and writes to the workspace; seccomp blocks sockets (unless --network) and")
		fmt.Fprintln(w, "  dangerous calls; host processes stay visible in /proc listings.")
		for _, l := range s.KnownLimits(tier) {
			fmt.Fprintln(w, "  Limit: "+l)
		}
		fmt.Fprintln(w, "  Fix for full isolation: allow unprivileged user namespaces (see above).")
	default:
		fmt.Fprintln(w, "  NO ISOLATION: the code can read and write everything this user can, and reach")
		fmt.Fprintln(w, "  the network. Runs still get timeouts, a scrubbed environment and process-group kill.")
	}
	fmt.Fprintf(w, "  Limits per run: memory %s, CPU %s, %d processes, files up to %s, %d open files, workspace %s\n",
		human.ExactBytes(opts.limits.Memory), opts.limits.CPUTime, opts.limits.MaxProcs, human.ExactBytes(opts.limits.MaxFileSize), opts.limits.MaxOpenFiles, human.ExactBytes(opts.limits.WorkspaceQuota))

	def, defErr := printPythons(ctx, w, opts)
	printWarm(ctx, w, opts, def, defErr)
	printEgress(w, opts, tier)

	if opts.isolation == string(sandbox.IsolationStrict) && tier != sandbox.TierNamespaces {
		return fmt.Errorf("--isolation=strict cannot start here: %s", s.Missing())
	}
	return nil
}

// printPythons lists the interpreters runs may use, the default first, and
// why any candidate was skipped, then where environments are cached. It
// returns the default interpreter, or why there is none.
func printPythons(ctx context.Context, w io.Writer, opts *doctorOptions) (pythonenv.Interpreter, error) {
	fmt.Fprintln(w, "\nPython interpreters")
	// Only --python paths are explicit: the default found on PATH is found
	// again by Discover's own search, which labels it [PATH].
	explicit := opts.pythons
	def, err := opts.interpreter()
	if err != nil {
		fmt.Fprintf(w, "  default: MISSING: %v\n", err)
	}
	var defInterp pythonenv.Interpreter
	if err == nil {
		defInterp, err = pythonenv.Inspect(ctx, def)
	}
	found, skipped := pythonenv.Discover(ctx, pythonenv.DiscoverOptions{Explicit: explicit})
	for _, in := range found {
		mark := " "
		if err == nil && in.Path == defInterp.Path {
			mark = "*"
		}
		pip := "pip " + in.PipVersion
		switch {
		case in.Pip == "":
			pip = "no pip: runs code, installs no requirements; " + in.NoPip
		case in.Pip != in.Path:
			pip += " (borrowed from " + in.Pip + ")"
		}
		fmt.Fprintf(w, "  %s %-8s %s  [%s; %s]\n", mark, in.Version, in.Path, in.Source, pip)
	}
	for _, sk := range skipped {
		fmt.Fprintf(w, "    skipped %s: %s\n", sk.Path, sk.Reason)
	}
	fmt.Fprintln(w, "  (* runs use this one unless run_code asks for a version)")
	dir := opts.cacheDir
	if dir == "" {
		var derr error
		if dir, derr = pythonenv.DefaultDir(); derr != nil {
			dir = "a temporary directory, deleted on exit (no $HOME or $XDG_CACHE_HOME; pass --cache-dir)"
		}
	}
	limit := "up to " + human.ExactBytes(opts.cacheMax)
	if opts.cacheMax < 0 {
		limit = "no size cap"
	}
	fmt.Fprintf(w, "  environments cached in %s, %s\n\n", dir, limit)
	return defInterp, err
}

// printWarm measures what one waiting sandbox costs: it runs a program in a
// scratch workspace with a pool of one and reads the idle sandbox's memory.
func printWarm(ctx context.Context, w io.Writer, opts *doctorOptions, python pythonenv.Interpreter, pythonErr error) {
	fmt.Fprintln(w, "Warm pool")
	if opts.warm <= 0 {
		fmt.Fprintln(w, "  off (--warm 0): every run starts its sandbox")
		return
	}
	if opts.zygote && opts.isolation != string(sandbox.IsolationOff) {
		fmt.Fprintf(w, "  a zygote per recently used interpreter and workspace forks each run's fresh interpreter (namespaces tier; elsewhere %d waiting sandbox(es)), stopped after %s unused\n", opts.warm, opts.warmIdle)
	} else {
		fmt.Fprintf(w, "  %d waiting sandbox(es) per recently used interpreter and workspace, stopped after %s unused\n", opts.warm, opts.warmIdle)
	}
	if len(opts.preload) > 0 {
		fmt.Fprintf(w, "  preloaded modules: %s\n", strings.Join(opts.preload, ", "))
	}
	if pythonErr != nil {
		fmt.Fprintf(w, "  memory of an idle sandbox: not measured: %v\n", pythonErr)
		return
	}
	idle, zygote, err := measureIdleSandbox(ctx, opts, python)
	if err != nil {
		fmt.Fprintf(w, "  memory of an idle sandbox: not measured: %v\n", err)
		return
	}
	if zygote {
		fmt.Fprintf(w, "  memory of an idle sandbox: %.1f MiB resident (init, zygote and the next run's first process, measured now; the forks share most pages, counted here once per process)\n", float64(idle)/(1<<20))
	} else {
		fmt.Fprintf(w, "  memory of an idle sandbox: %.1f MiB resident (init and interpreter, measured now)\n", float64(idle)/(1<<20))
	}
}

// measureIdleSandbox returns the resident memory of one idle sandbox, and
// whether it is a zygote's.
func measureIdleSandbox(ctx context.Context, opts *doctorOptions, python pythonenv.Interpreter) (int64, bool, error) {
	r, err := sandbox.New(sandbox.Config{Isolation: sandbox.Isolation(opts.isolation), Warm: 1, NoZygote: !opts.zygote, Preload: opts.preload, Limits: opts.limits})
	if err != nil {
		return 0, false, err
	}
	defer r.Close()
	// A run as a client's session makes it, so the sandbox left waiting
	// is the one a server would keep.
	sess, err := session.New(session.Config{Python: python.Path}, r).Open("", nil)
	if err != nil {
		return 0, false, err
	}
	defer sess.Close()
	if _, err := sess.Run(ctx, session.Request{Code: "pass"}); err != nil {
		return 0, false, err
	}
	// Give the replacement time to start and settle in its wait.
	deadline := time.Now().Add(10 * time.Second)
	for st := r.PoolStats(); st.Waiting+st.Zygotes == 0 && time.Now().Before(deadline); st = r.PoolStats() {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	st := r.PoolStats()
	if n := st.Waiting + st.Zygotes; n > 0 {
		return st.RSSBytes / int64(n), st.Zygotes > 0, nil
	}
	return 0, false, fmt.Errorf("no sandbox started")
}

// printEgress shows where the code and installs may connect.
func printEgress(w io.Writer, opts *doctorOptions, tier sandbox.Tier) {
	fmt.Fprintln(w, "\nNetwork")
	if _, err := egress.New(egress.Policy{Allow: opts.allowHosts}, nil); err != nil {
		fmt.Fprintf(w, "  MISSING: %v\n", err)
	}
	switch {
	case tier == sandbox.TierNone || opts.network:
		fmt.Fprintln(w, "  code: the host's whole network (--network, or no isolation)")
	case len(opts.allowHosts) > 0:
		fmt.Fprintf(w, "  code: through the egress proxy only, to %s\n", strings.Join(opts.allowHosts, ", "))
		if opts.allowPrivateFetch {
			fmt.Fprintln(w, "        (these may resolve to private addresses: --allow-private-fetch)")
		}
		if tier == sandbox.TierLandlock {
			fmt.Fprintln(w, "        landlock tier: TCP to the proxy's port only (on any address), no UDP or raw sockets")
		}
	default:
		fmt.Fprintln(w, "  code: none (add hosts with --allow-host, or everything with --network)")
	}
	switch {
	case opts.offline && len(opts.findLinks) == 0:
		fmt.Fprintln(w, "  installs: none (--offline)")
	case tier == sandbox.TierNone:
		fmt.Fprintln(w, "  installs: pip on the host, with the host's network")
	default:
		idx := opts.indexURL
		if idx == "" {
			idx = os.Getenv("PIP_INDEX_URL")
		}
		if idx == "" {
			idx = "PyPI (pypi.org, files.pythonhosted.org)"
		}
		fmt.Fprintf(w, "  installs: through the egress proxy only, to the index hosts: %s", idx)
		for _, u := range append(opts.extraIndexURLs, opts.findLinks...) {
			fmt.Fprintf(w, ", %s", u)
		}
		fmt.Fprintln(w)
	}
	if opts.allowPrivateFetch {
		fmt.Fprintln(w, "  mount_file, files, persist_artifact: any address (--allow-private-fetch)")
	} else {
		fmt.Fprintln(w, "  mount_file, files, persist_artifact: public addresses only")
	}
}
