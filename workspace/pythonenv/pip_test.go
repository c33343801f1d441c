package pythonenv

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Output of pip 23.0.1 against a closed port (--retries 1), kept here
// because a real run spends seconds in pip's retry back-off.
const unreachableOutput = `Looking in indexes: http://127.0.0.1:1/simple/
WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) after connection broken by 'NewConnectionError('<pip._vendor.urllib3.connection.HTTPConnection object at 0x7ff777835090>: Failed to establish a new connection: [Errno 111] Connection refused')': /simple/zzz/
ERROR: Could not find a version that satisfies the requirement zzz (from versions: none)
ERROR: No matching distribution found for zzz`

func TestClassifyUnreachable(t *testing.T) {
	ie := classify(strings.Split(unreachableOutput, "\n"), "3.11.2")
	if ie.Kind != "index_unreachable" {
		t.Fatalf("Kind = %s, want index_unreachable", ie.Kind)
	}
	if len(ie.PipLines) != 3 || !strings.HasPrefix(ie.PipLines[0], "WARNING: Retrying") {
		t.Errorf("PipLines = %q, want the first retry warning and the two errors", ie.PipLines)
	}
}

func TestProgressLine(t *testing.T) {
	tests := map[string]string{
		"Collecting app":                         "resolving app",
		"Collecting base-pkg>=1 (from app==2.0)": "resolving base-pkg>=1",
		"  Downloading http://127.0.0.1:41/files/base_pkg-1.0-py3-none-any.whl (970 bytes)": "downloading base_pkg-1.0 (970 bytes)",
		"  Downloading numpy-1.26.4-cp311-cp311-manylinux_2_17_x86_64.whl (18.3 MB)":        "downloading numpy-1.26.4 (18.3 MB)",
		"  Downloading broken-1.0.tar.gz (399 bytes)":                                       "downloading broken-1.0 (399 bytes)",
		"  Using cached app-2.0-py3-none-any.whl":                                           "cached app-2.0",
		"  Building wheel for foo (pyproject.toml): started":                                "building foo",
		"Installing collected packages: base-pkg, app":                                      "installing base-pkg, app",
		"Successfully installed app-2.0 base-pkg-1.0":                                       "installed app-2.0 base-pkg-1.0",
		"Looking in indexes: http://127.0.0.1:41/simple/":                                   "",
	}
	for line, want := range tests {
		if got := progressLine(line); got != want {
			t.Errorf("progressLine(%q) = %q, want %q", line, got, want)
		}
	}
}

func TestSanitize(t *testing.T) {
	in := []string{
		`  File "/usr/lib/python3/dist-packages/pip/_vendor/pyproject_hooks/_in_process/_in_process.py", line 353, in <module>`,
		`  File "/cache/tmp/build-1/tmp/pip-install-x/broken_1/backend.py", line 2, in _fail`,
		`Downloading http://127.0.0.1:41/files/app-2.0-py3-none-any.whl`,
	}
	want := []string{
		`  File "…/_in_process.py", line 353, in <module>`,
		`  File "…/tmp/pip-install-x/broken_1/backend.py", line 2, in _fail`,
		`Downloading http://127.0.0.1:41/files/app-2.0-py3-none-any.whl`,
	}
	if diff := cmp.Diff(want, sanitize(in, []string{"/cache/tmp/build-1"})); diff != "" {
		t.Errorf("sanitize (-want +got):\n%s", diff)
	}
}
