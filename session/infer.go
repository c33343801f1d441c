package session

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/prims-mcp/prims/internal/human"
	"github.com/prims-mcp/prims/workspace"
	"github.com/prims-mcp/prims/workspace/pythonenv"
)

// autoRequirement in run_code's requirements asks PRIMS to infer packages
// from the code's imports.
const autoRequirement = "auto"

// importScan lists the top-level modules a program imports absolutely,
// minus the standard library. It only parses the code (ast), never runs
// it, and is written for every Python from 2.7 on. Code that does not parse
// yields no modules: the run itself will report the syntax error.
const importScan = `
import ast, json, os, sys
src = getattr(sys.stdin, "buffer", sys.stdin).read().decode("utf-8", "replace")
names = set()
try:
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Import):
            for a in node.names:
                names.add(a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            names.add(node.module.split(".")[0])
except Exception:
    names = set()
std = set(getattr(sys, "stdlib_module_names", ())) | set(sys.builtin_module_names)
std.add("__future__")
# Run with -S: sys.path is the standard library only, so what is found on it
# is stdlib. Needed before 3.10, where stdlib_module_names does not exist.
sys.path[:] = [p for p in sys.path if p and os.path.isabs(p)]
def in_stdlib(n):
    if n in std:
        return True
    if getattr(sys, "stdlib_module_names", None):
        return False
    try:
        import importlib.util
        return importlib.util.find_spec(n) is not None
    except ImportError:
        import imp
        try:
            imp.find_module(n)
            return True
        except ImportError:
            return False
    except Exception:
        return False
sys.stdout.write(json.dumps(sorted(n for n in names if not in_stdlib(n))))
`

// inferRequirements returns the pip distributions a program needs, from its
// imports: top-level modules outside python's standard library, mapped to
// their distribution names (cv2 becomes opencv-python), sorted. The given
// interpreter parses the code, so its grammar and its standard library are
// the ones the run will use.
//
// The program chooses what gets installed here, so every name is either
// the fixed import-to-distribution map's or a plain ASCII module name used
// as is (no version, URL, path, extra or option can come out of an import
// statement); and whatever is installed builds in the install sandbox.
func inferRequirements(ctx context.Context, python, code string) ([]string, error) {
	modules, err := scanImports(ctx, python, code)
	if err != nil {
		return nil, err
	}
	return distributions(modules), nil
}

// scanImports returns the top-level modules outside python's standard
// library that code imports, sorted.
func scanImports(ctx context.Context, python, code string) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, python, "-E", "-s", "-S", "-c", importScan)
	cmd.Dir = "/"
	cmd.Env = []string{"LANG=C.UTF-8", "PYTHONIOENCODING=utf-8"}
	cmd.Stdin = strings.NewReader(code)
	cmd.WaitDelay = time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("scan imports with %s: %w: %s", python, err, strings.TrimSpace(human.Tail(stderr.String(), 400)))
	}
	var modules []string
	if err := json.Unmarshal(stdout.Bytes(), &modules); err != nil {
		return nil, fmt.Errorf("scan imports with %s: unexpected output %q", python, human.Tail(stdout.String(), 200))
	}
	return modules, nil
}

// distributions maps modules to the distributions that provide them,
// sorted and without duplicates.
func distributions(modules []string) []string {
	var dists []string
	for _, m := range modules {
		if !plainModule.MatchString(m) {
			continue // a non-ASCII identifier names no package we would pick
		}
		if d := pythonenv.DistributionFor(m); !slices.Contains(dists, d) {
			dists = append(dists, d)
		}
	}
	slices.Sort(dists)
	return dists
}

// plainModule is a top-level module name that may become a requirement.
var plainModule = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,99}$`)

// expandRequirements replaces "auto" in a run's requirements with the
// inferred ones, leaving out modules that the workspace itself provides (a
// helper.py or package written by an earlier run, looked up by the name the
// code imports: yaml.py, not pyyaml) and anything declared explicitly.
// Requirements without "auto" come back unchanged.
func expandRequirements(ctx context.Context, python, code string, reqs []string, ws *workspace.Workspace) ([]string, error) {
	i := slices.Index(reqs, autoRequirement)
	if i < 0 {
		return reqs, nil
	}
	modules, err := scanImports(ctx, python, code)
	if err != nil {
		return nil, err
	}
	if ws != nil {
		modules = slices.DeleteFunc(modules, func(m string) bool { return localModule(ws, m) })
	}
	out := slices.Concat(reqs[:i:i], reqs[i+1:])
	declared := map[string]bool{}
	for _, r := range out {
		declared[requirementName(r)] = true
	}
	for _, d := range distributions(modules) {
		if !declared[requirementName(d)] {
			out = append(out, d)
		}
	}
	return out, nil
}

// requirementName is the normalized project name of a requirement
// ("Pillow>=10" is "pillow"), per PEP 503.
func requirementName(req string) string {
	end := strings.IndexAny(req, "<>=!~;[@ ")
	if end >= 0 {
		req = req[:end]
	}
	return pythonenv.NormalizeName(strings.TrimSpace(req))
}

// localModule reports whether the workspace root holds module m as a file
// or a package, where the code's imports find it first.
func localModule(ws *workspace.Workspace, m string) bool {
	for _, p := range []string{m + ".py", m} {
		if _, err := ws.Root().Lstat(p); err == nil {
			return true
		}
	}
	return false
}
