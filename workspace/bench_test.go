package workspace

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkRunBookkeeping is what the server does to a workspace around
// every run (snapshot and changes of output/, what the mounts hold against
// the quota, the logs' budget), in a workspace with 100 outputs, 10 mounted
// files and 300 logs.
func BenchmarkRunBookkeeping(b *testing.B) {
	w, err := New("")
	if err != nil {
		b.Fatal(err)
	}
	defer w.Close()
	for i := range 100 {
		os.WriteFile(filepath.Join(w.Dir(), "output", fmt.Sprintf("f%03d.csv", i)), []byte("a,b\n1,2\n"), 0o644)
	}
	for i := range 10 {
		os.WriteFile(filepath.Join(w.state, MountsDir, fmt.Sprintf("in%d.csv", i)), []byte("a,b\n"), 0o644)
	}
	for i := range 100 {
		for _, k := range []string{"code.py", "stdout.txt", "stderr.txt"} {
			f, _, _ := w.CreateLog(fmt.Sprintf("%04d-%s", i, k))
			f.WriteString("x\n")
			f.Close()
		}
	}
	w.PruneLogs(1 << 30)
	for b.Loop() {
		w.PruneLogs(1 << 30)
		w.AddLogBytes(100)
		w.MountsUsage()
		s := w.Snapshot()
		w.Changes(s)
	}
}
