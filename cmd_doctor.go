package main

import (
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"

	"github.com/prims-mcp/prims/sandbox"
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
		RunE: func(cmd *cobra.Command, _ []string) error { return runDoctor(os.Stdout, opts) },
	}
	opts.addFlags(cmd.Flags())
	return cmd
}

func runDoctor(w io.Writer, opts *doctorOptions) error {
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
		fmt.Fprintln(w, "  Fix for full isolation: allow unprivileged user namespaces (see above).")
	default:
		fmt.Fprintln(w, "  NO ISOLATION: the code can read and write everything this user can, and reach")
		fmt.Fprintln(w, "  the network. Runs still get timeouts, a scrubbed environment and process-group kill.")
	}
	fmt.Fprintf(w, "  Limits per run: memory %s, CPU %s, %d processes, files up to %s, %d open files, workspace %s\n",
		humanSize(opts.limits.Memory), opts.limits.CPUTime, opts.limits.MaxProcs, humanSize(opts.limits.MaxFileSize), opts.limits.MaxOpenFiles, humanSize(opts.limits.WorkspaceQuota))

	// --- Python interpreter section (the lead adds it here): the
	// interpreter that would run, its version, and whether the sandbox
	// user can reach it. ---

	if opts.isolation == string(sandbox.IsolationStrict) && tier != sandbox.TierNamespaces {
		return fmt.Errorf("--isolation=strict cannot start here: %s", s.Missing())
	}
	return nil
}
