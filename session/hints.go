package session

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/sandbox"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// Patterns over the traceback that the bootstrap prints for the model's code,
// which it names after the run's copy in logs/ ("<code>" when there is none).
var (
	// The innermost frame in the model's own code: the last one printed.
	codeFrame = regexp.MustCompile(`File "(?:<code>|logs/\d+-code\.py)", line (\d+)`)
	// The exception line that ends a traceback.
	exceptionLine  = regexp.MustCompile(`(?m)^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt|Warning))(?::[ \t]*(.*))?$`)
	moduleNotFound = regexp.MustCompile(`No module named '([^']+)'`)
)

// hint suggests the next step after a run that did not succeed: which limit
// ended it, which package to declare, or which line of the code failed.
// python, the interpreter that ran the code, reads its imports. It returns
// "" for a successful or cancelled run.
//
// The limit comes from o.Limit, which the sandbox sets from what it saw
// fire (sandbox.Result.Limit): a signal name cannot tell the memory limit
// from the CPU-time limit or the workspace quota, which all end a run with
// SIGKILL.
func (s *Runtime) hint(ctx context.Context, o *Result, code, python string) string {
	if o.Cancelled {
		return ""
	}
	if h := s.limitHint(o, code); h != "" {
		return h
	}
	if h := signalHint(o.Signal); h != "" {
		return h
	}
	if o.ExitCode == 0 {
		return ""
	}
	// Python stops at the first missing module; the program's other
	// imports say what else it will need.
	needs := func() []string {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		reqs, err := inferRequirements(ctx, python, code)
		if err != nil {
			s.cfg.Logger.Debug("infer requirements for a hint", "err", err)
		}
		return reqs
	}
	return exceptionHint(o.Stderr.Text, code, needs)
}

// limitHint names the sandbox limit that ended or broke the run, with its
// value, and what to do about it; "" when no limit fired. How memory was
// bounded is the run's own (Result.Memory): a run whose cgroup could not be
// made was bounded per process.
func (s *Runtime) limitHint(o *Result, code string) string {
	var l sandbox.Limits
	mem := o.Memory
	if s.runner != nil {
		l = s.runner.Limits()
		if mem == "" {
			mem = s.runner.MemoryEnforcement()
		}
	}
	if mem == "" {
		mem = sandbox.MemoryPerProcess
	}
	timeout := o.Timeout
	of := func(what string, set bool) string {
		if set {
			return what + " "
		}
		return ""
	}
	switch o.Limit {
	case sandbox.LimitWallTime:
		h := fmt.Sprintf("the wall-clock limit of %s ended the run and the whole process tree was killed; output printed before that is above.", timeout)
		if timeout < s.cfg.MaxTimeout {
			return h + fmt.Sprintf(" Make the program faster, print progress as it goes, or pass a larger timeout_s (at most %g).", s.cfg.MaxTimeout.Seconds())
		}
		return h + " This is the server's maximum timeout: make the program faster, or split the work into several runs that save intermediate results under output/."
	case sandbox.LimitCPUTime:
		return fmt.Sprintf("the CPU-time limit %sended the run: the program used that much processor time and was killed. Make it do less work per run (a better algorithm, vectorized code), or save partial results under output/ and continue in the next run.", of(fmt.Sprintf("of %s per process", l.CPUTime), l.CPUTime > 0))
	case sandbox.LimitMemory:
		scope := "the run's processes together"
		if mem == sandbox.MemoryPerProcess {
			scope = "each process"
		}
		at := ""
		if where := tracebackLine(o.Stderr.Text, code); where != "" {
			at = " (MemoryError at " + where + ")"
		}
		return fmt.Sprintf("the memory limit %sended the run%s: it counts %s. Use less memory: process the data in chunks, use smaller data types, or start fewer processes.", of("of "+human.Bytes(l.Memory), l.Memory > 0), at, scope)
	case sandbox.LimitMaxProcs:
		return fmt.Sprintf("the limit %son processes and threads broke the run: the program started too many at once. Use a small fixed pool (for example multiprocessing.Pool(4)) and make sure finished processes are joined.", of(fmt.Sprintf("of %d", l.MaxProcs), l.MaxProcs > 0))
	case sandbox.LimitWorkspaceQuota:
		return fmt.Sprintf("the workspace quota %sended the run: the files in the workspace grew past it and the program was killed. Delete files you no longer need, write less, or compress the output.", of("of "+human.Bytes(l.WorkspaceQuota), l.WorkspaceQuota > 0))
	case sandbox.LimitMaxFileSize:
		return fmt.Sprintf("the file-size limit %sbroke the run: the program wrote a file larger than the sandbox allows. Write less, split the output into several files, or compress it.", of("of "+human.Bytes(l.MaxFileSize), l.MaxFileSize > 0))
	case sandbox.LimitMaxOpenFiles:
		return fmt.Sprintf("the limit %son open files broke the run: the program opened too many files at once. Close files when done with them (use `with open(...)`).", of(fmt.Sprintf("of %d", l.MaxOpenFiles), l.MaxOpenFiles > 0))
	}
	return ""
}

// signalHint explains a signal that no sandbox limit sent: a crash, or a
// kill from elsewhere.
func signalHint(sig string) string {
	switch sig {
	case "":
		return ""
	case "segmentation fault", "aborted", "bus error":
		return fmt.Sprintf("the interpreter crashed (%s) inside native code, usually a C extension. Check the package versions and the data passed to it.", sig)
	case "killed":
		return "the process was killed (SIGKILL), not by one of the sandbox's limits: the program (or the host) killed it."
	}
	return fmt.Sprintf("the process was ended by a signal (%s).", sig)
}

// tracebackLine is where in the model's code the last traceback points:
// "line N (`code`)", or "".
func tracebackLine(stderr, code string) string {
	fs := codeFrame.FindAllStringSubmatch(stderr, -1)
	if fs == nil {
		return ""
	}
	n, _ := strconv.Atoi(fs[len(fs)-1][1])
	where := fmt.Sprintf("line %d", n)
	if line := codeLine(code, n); line != "" {
		where += fmt.Sprintf(" (`%s`)", line)
	}
	return where
}

// exceptionHint reads the end of a Python traceback. needs, if not nil,
// lists the distributions the code's imports need.
func exceptionHint(stderr, code string, needs func() []string) string {
	ms := exceptionLine.FindAllStringSubmatch(stderr, -1)
	if ms == nil {
		return ""
	}
	exc, msg := ms[len(ms)-1][1], strings.TrimSpace(ms[len(ms)-1][2])
	where := tracebackLine(stderr, code)
	at := func(what string) string {
		if where == "" {
			return what
		}
		return what + " at " + where
	}
	switch exc {
	case "ModuleNotFoundError", "ImportError":
		if m := moduleNotFound.FindStringSubmatch(msg); m != nil {
			mod := strings.SplitN(m[1], ".", 2)[0]
			dist := pythonenv.DistributionFor(mod)
			reqs := []string{dist}
			if needs != nil {
				if all := needs(); slices.Contains(all, dist) {
					reqs = all
				}
			}
			quoted, _ := json.Marshal(reqs)
			h := fmt.Sprintf("module %q is not installed. Add %q to run_code's requirements and run again", mod, dist)
			if len(reqs) > 1 {
				h += fmt.Sprintf("; this program's imports need requirements: %s", quoted)
			} else {
				h += fmt.Sprintf(" (requirements: %s)", quoted)
			}
			h += "."
			return h
		}
		if exc == "ImportError" {
			return at("ImportError") + ": " + msg + ". The installed version of the package may not have this name: check the spelling, or pin a version in requirements (for example \"package==1.2\")."
		}
	case "SyntaxError", "IndentationError", "TabError":
		return at(exc) + ": " + msg + ". Nothing ran: fix the code and run it again."
	case "NameError", "UnboundLocalError":
		return at(exc) + ": " + msg + ". Each run is a fresh Python process: variables, functions and imports from earlier runs do not exist. Define or import everything in this program, or save state to a file in an earlier run and load it here."
	case "FileNotFoundError":
		return at(exc) + ": " + msg + ". Paths are relative to the workspace root: inputs are under mounts/, files from earlier runs under output/. Call list_dir to see what exists."
	case "PermissionError", "OSError":
		if strings.Contains(msg, "Read-only file system") || strings.Contains(msg, "mounts/") {
			return at(exc) + ": " + msg + ". mounts/ is read-only: write results under output/."
		}
		if strings.Contains(msg, "No space left") || strings.Contains(msg, "Disk quota") {
			return at(exc) + ": " + msg + ". The workspace ran out of space: delete files you no longer need or write less."
		}
	case "MemoryError":
		return at("MemoryError") + ": the program hit the memory limit. Process the data in chunks, or use smaller data types."
	case "RecursionError":
		return at("RecursionError") + ": " + msg + ". Rewrite the recursion as a loop, or check its base case."
	case "KeyboardInterrupt", "SystemExit":
		return ""
	}
	if where == "" {
		return ""
	}
	if msg != "" {
		return at(exc) + ": " + msg + "."
	}
	return at(exc) + "."
}

// codeLine returns line n (1-based) of code, trimmed and shortened for a
// one-line hint.
func codeLine(code string, n int) string {
	lines := strings.Split(code, "\n")
	if n < 1 || n > len(lines) {
		return ""
	}
	l := strings.TrimSpace(lines[n-1])
	if r := []rune(l); len(r) > 120 {
		l = string(r[:117]) + "..."
	}
	return strings.ReplaceAll(l, "`", "'")
}
