package session

import (
	"slices"
	"testing"

	"github.com/prims-mcp/prims/internal/testpython"
)

// TestInferredNamesArePlain: with "auto" the program picks what is
// installed, so only the fixed map's distributions and plain ASCII module
// names may come out: here a non-ASCII identifier is dropped, a
// fullwidth one is what Python makes of it (NFKC: numpy), and a dotted
// import names its top-level module.
func TestInferredNamesArePlain(t *testing.T) {
	code := "import ñumpy\nimport ｎｕｍｐｙ\nimport sklearn.svm\nimport tiny_pkg.sub\n"
	got, err := inferRequirements(t.Context(), testpython.Path(t), code)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"numpy", "scikit-learn", "tiny_pkg"}; !slices.Equal(got, want) {
		t.Errorf("inferRequirements = %q, want %q", got, want)
	}
}
