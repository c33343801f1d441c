package pythonenv

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidateRequirements(t *testing.T) {
	tests := []struct {
		name        string
		reqs        []string
		allowDirect bool
		want        []string
		wantErr     string // substring; "" means success
	}{
		{name: "names normalized sorted deduped",
			reqs: []string{"Requests", "numpy", "requests", "Foo.Bar_baz", "  pandas  "},
			want: []string{"foo-bar-baz", "numpy", "pandas", "requests"}},
		{name: "specifiers",
			reqs: []string{"NumPy >= 1.20 , <2", "pandas==2.*", "attrs~=23.1", "x (>=1,<2)", "y===1.0"},
			want: []string{"attrs~=23.1", "numpy<2,>=1.20", "pandas==2.*", "x<2,>=1", "y===1.0"}},
		{name: "extras",
			reqs: []string{"requests[Socks, security]>=2.31", "uvicorn[]"},
			want: []string{"requests[security,socks]>=2.31", "uvicorn"}},
		{name: "markers",
			reqs: []string{`tomli; python_version<"3.11"`, `pywin32 ; sys_platform == 'win32' and (platform_machine=="AMD64" or extra == "x")`, "a; 'linux' in sys_platform", "b; os_name not in 'nt'"},
			want: []string{`a; "linux" in sys_platform`, `b; os_name not in "nt"`, `pywin32; sys_platform == "win32" and (platform_machine == "AMD64" or extra == "x")`, `tomli; python_version < "3.11"`}},
		{name: "empty set", reqs: nil, want: []string{}},
		{name: "direct allowed", allowDirect: true,
			reqs: []string{"pkg @ https://example.com/pkg-1.0.tar.gz", "https://example.com/x-1.0-py3-none-any.whl", "/opt/wheels/y-1.0-py3-none-any.whl"},
			want: []string{"/opt/wheels/y-1.0-py3-none-any.whl", "https://example.com/x-1.0-py3-none-any.whl", "pkg @ https://example.com/pkg-1.0.tar.gz"}},

		{name: "requirements file", reqs: []string{"-r requirements.txt"}, wantErr: "pip options"},
		{name: "editable", reqs: []string{"-e ."}, wantErr: "pip options"},
		{name: "index url", reqs: []string{"--index-url=http://evil/simple", "numpy"}, wantErr: "pip options"},
		{name: "extra index", reqs: []string{"--extra-index-url", "http://evil"}, wantErr: "pip options"},
		{name: "relative path", reqs: []string{"./mypkg"}, wantErr: "local paths and direct URLs are not allowed"},
		{name: "absolute path", reqs: []string{"/etc/passwd"}, wantErr: "local paths and direct URLs are not allowed"},
		{name: "home path", reqs: []string{"~/pkg"}, wantErr: "local paths and direct URLs are not allowed"},
		{name: "bare wheel", reqs: []string{"foo-1.0-py3-none-any.whl"}, wantErr: "local paths and direct URLs are not allowed"},
		{name: "url", reqs: []string{"https://example.com/pkg.tar.gz"}, wantErr: "local paths and direct URLs are not allowed"},
		{name: "vcs", reqs: []string{"git+https://github.com/x/y"}, wantErr: "local paths and direct URLs are not allowed"},
		{name: "name at url", reqs: []string{"pkg @ https://example.com/pkg.tar.gz"}, wantErr: "direct URLs (name @ url) are not allowed"},
		{name: "relative path even when allowed", allowDirect: true, reqs: []string{"./mypkg"}, wantErr: "must be absolute"},
		{name: "empty", reqs: []string{" "}, wantErr: "empty requirement"},
		{name: "newline", reqs: []string{"numpy\n--index-url x"}, wantErr: "single line"},
		{name: "garbage after name", reqs: []string{"numpy pandas"}, wantErr: `unexpected "pandas"`},
		{name: "bad operator", reqs: []string{"numpy=1.0"}, wantErr: "expected a version operator"},
		{name: "wildcard with >=", reqs: []string{"numpy>=1.*"}, wantErr: "wildcard"},
		{name: "bad marker variable", reqs: []string{"numpy; python < '3'"}, wantErr: `unknown environment marker variable "python"`},
		{name: "unterminated marker string", reqs: []string{"numpy; python_version < '3"}, wantErr: "unterminated string"},
		{name: "empty marker", reqs: []string{"numpy;"}, wantErr: "empty environment marker"},
		{name: "unclosed extras", reqs: []string{"requests[socks"}, wantErr: "unclosed"},
		{name: "too many", reqs: manyReqs(MaxRequirements + 1), wantErr: "too many requirements (65)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ValidateRequirements(tt.reqs, tt.allowDirect)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ValidateRequirements(%q) error = %v, want it to contain %q", tt.reqs, err, tt.wantErr)
				}
				var re *RequirementError
				if !errors.As(err, &re) {
					t.Errorf("error %T is not a *RequirementError", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ValidateRequirements(%q) error = %v", tt.reqs, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ValidateRequirements(%q) (-want +got):\n%s", tt.reqs, diff)
			}
		})
	}
}

func TestValidateRequirementsIdempotent(t *testing.T) {
	in := []string{"NumPy >= 1.20 , <2", `tomli; python_version<"3.11"`, "requests[Socks]"}
	once, err := ValidateRequirements(in, false)
	if err != nil {
		t.Fatal(err)
	}
	twice, err := ValidateRequirements(once, false)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(once, twice); diff != "" {
		t.Errorf("normalizing twice changed the set (-once +twice):\n%s", diff)
	}
}

func manyReqs(n int) []string {
	var r []string
	for i := range n {
		r = append(r, fmt.Sprintf("pkg%d", i))
	}
	return r
}

func TestDistributionFor(t *testing.T) {
	tests := map[string]string{
		"cv2":                         "opencv-python",
		"sklearn":                     "scikit-learn",
		"sklearn.linear_model":        "scikit-learn",
		"PIL":                         "pillow",
		"PIL.Image":                   "pillow",
		"yaml":                        "pyyaml",
		"bs4":                         "beautifulsoup4",
		"dateutil":                    "python-dateutil",
		"google.protobuf":             "protobuf",
		"google.protobuf.json_format": "protobuf",
		"numpy":                       "numpy",
		"pandas.core":                 "pandas",
	}
	for module, want := range tests {
		if got := DistributionFor(module); got != want {
			t.Errorf("DistributionFor(%q) = %q, want %q", module, got, want)
		}
	}
}
