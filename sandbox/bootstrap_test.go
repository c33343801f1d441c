package sandbox

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prims-mcp/prims/internal/testpython"
)

// TestProgramEndings: how a program ends is what the bootstrap's quick exit
// must not change: exit statuses, atexit functions, non-daemon threads,
// __del__ of objects in cycles, files left open by __main__ or by a module
// of the workspace, and output written by C code (through ctypes).
func TestProgramEndings(t *testing.T) {
	py := testpython.Path(t)
	tests := []struct {
		name, code   string
		exit         int
		stdout       string
		stderrHas    string
		file, toHold string // a file under the workspace and what it must hold
	}{
		{name: "falls off the end", code: "print(1)", stdout: "1\n"},
		{name: "sys.exit(3)", code: "import sys\nprint('x')\nsys.exit(3)", exit: 3, stdout: "x\n"},
		{name: "sys.exit(None)", code: "import sys\nsys.exit()", exit: 0},
		{name: "sys.exit with a message", code: "import sys\nsys.exit('bye now')", exit: 1, stderrHas: "bye now"},
		{name: "exception", code: "print('before')\nraise ValueError('boom')", exit: 1, stdout: "before\n", stderrHas: "ValueError: boom"},
		{name: "syntax error", code: "print((1)", exit: 1, stderrHas: "SyntaxError"},
		{name: "atexit and a non-daemon thread", code: `import atexit, threading, time
atexit.register(lambda: print("atexit"))
threading.Thread(target=lambda: (time.sleep(0.2), print("thread"))).start()
print("main")`, stdout: "main\nthread\natexit\n"},
		{name: "__del__ in a cycle", code: `class C:
    def __del__(self): print("collected")
a, b = C(), C()
a.other, b.other = b, a
print("end")`, stdout: "end\ncollected\ncollected\n"},
		{name: "file left open by __main__", code: "f = open('output/main.txt', 'w')\nf.write('from main')", file: "output/main.txt", toHold: "from main"},
		{name: "file left open by a workspace module", code: "import helper\nhelper.f.write('from helper')", file: "output/helper.txt", toHold: "from helper"},
		{name: "output written by C code", code: "import ctypes\nctypes.CDLL(None).printf(b'from C\\n')", stdout: "from C\n"},
	}
	for _, tier := range []Tier{TierNone, TierNamespaces} {
		r, err := New(Config{Tier: tier})
		if err != nil {
			continue
		}
		for _, tt := range tests {
			t.Run(string(tier)+"/"+tt.name, func(t *testing.T) {
				ws := mkWorkspace(t)
				os.WriteFile(filepath.Join(ws, "helper.py"), []byte("f = open('output/helper.txt', 'w')\n"), 0o644)
				var out, errOut lockedBuffer
				res, err := r.Run(context.Background(), Job{Python: py, Code: tt.code, Dir: ws, Stdout: &out, Stderr: &errOut})
				if err != nil {
					t.Fatal(err)
				}
				if res.ExitCode != tt.exit || out.String() != tt.stdout || !strings.Contains(errOut.String(), tt.stderrHas) {
					t.Errorf("exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr holding %q", res.ExitCode, out.String(), errOut.String(), tt.exit, tt.stdout, tt.stderrHas)
				}
				if tt.file != "" {
					if b, _ := os.ReadFile(filepath.Join(ws, tt.file)); string(b) != tt.toHold {
						t.Errorf("%s holds %q, want %q", tt.file, b, tt.toHold)
					}
				}
			})
		}
	}
}
