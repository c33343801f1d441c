package artifactstore_test

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/johannesboyne/gofakes3"
	"github.com/johannesboyne/gofakes3/backend/s3mem"
)

// The buckets every fake S3 server has. "denied" answers every request with
// 403 AccessDenied, as a bucket whose policy refuses the server's
// credentials does.
const (
	bucket       = "results"
	deniedBucket = "denied"
)

// s3Handler is gofakes3, a real S3 protocol server, behind the one gate a
// bucket policy would add: anonymous requests (no Authorization header, no
// presigned query) and every request for deniedBucket get AccessDenied.
// Without the gate gofakes3 would serve anyone, and the test of the signed
// URL could not fail.
func s3Handler() http.Handler {
	be := s3mem.New()
	for _, b := range []string{bucket, deniedBucket} {
		if err := be.CreateBucket(b); err != nil {
			panic(err)
		}
	}
	fake := gofakes3.New(be).Server()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		signed := r.Header.Get("Authorization") != "" || r.URL.Query().Get("X-Amz-Signature") != ""
		if !signed || strings.HasPrefix(r.URL.Path, "/"+deniedBucket) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
			return
		}
		fake.ServeHTTP(w, r)
	})
}

// startS3 serves s3Handler on loopback in this process.
func startS3(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(s3Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// startS3Child serves s3Handler from a child process (this test binary
// re-run), so that what it keeps of a large upload does not count in the
// memory this process measures.
func startS3Child(t *testing.T) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "PRIMS_TEST_S3_CHILD=1")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		t.Fatalf("S3 child: %v", err)
	}
	return strings.TrimSpace(line)
}

// serveS3Child is the child's side of startS3Child.
func serveS3Child() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	panic(http.Serve(ln, s3Handler()))
}

func s3URL(endpoint, bucket string) string {
	return fmt.Sprintf("s3://%s?region=us-east-1&endpoint=%s&use_path_style=true", bucket, endpoint)
}

func TestMain(m *testing.M) {
	if os.Getenv("PRIMS_TEST_S3_CHILD") == "1" {
		serveS3Child()
	}
	// The AWS SDK reads credentials from the standard environment, as the
	// server does in production. Nothing here may reach a real account.
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID":           "AKIAPRIMSTEST",
		"AWS_SECRET_ACCESS_KEY":       "prims-test-secret",
		"AWS_REGION":                  "us-east-1",
		"AWS_EC2_METADATA_DISABLED":   "true",
		"AWS_CONFIG_FILE":             os.DevNull,
		"AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		"GORACE":                      "atexit_sleep_ms=0",
	} {
		os.Setenv(k, v)
	}
	os.Exit(m.Run())
}
