// Package s3test serves a real S3 protocol server (gofakes3) on loopback for
// the tests of the artifact store and of prims itself, so they talk to S3
// over HTTP through the AWS SDK as production does, not to a mock client.
//
//	endpoint := s3test.Start(t)
//	url := s3test.URL(endpoint, s3test.Bucket) // for --artifact-store
//	cmd.Env = append(cmd.Env, s3test.Env...)  // the credentials it expects
package s3test

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

// The buckets every server has. DeniedBucket answers every request with
// 403 AccessDenied, as a bucket whose policy refuses the caller does.
const (
	Bucket       = "results"
	DeniedBucket = "denied"
)

// Env is the standard AWS environment of a process that talks to the
// server: made-up credentials, no shared config, no instance metadata, so
// that nothing can reach a real account.
var Env = []string{
	"AWS_ACCESS_KEY_ID=AKIAPRIMSTEST",
	"AWS_SECRET_ACCESS_KEY=prims-test-secret",
	"AWS_REGION=us-east-1",
	"AWS_EC2_METADATA_DISABLED=true",
	"AWS_CONFIG_FILE=" + os.DevNull,
	"AWS_SHARED_CREDENTIALS_FILE=" + os.DevNull,
}

// SetEnv puts Env into this process's environment, for tests that open
// stores in process (call it from TestMain, before any test runs).
func SetEnv() {
	for _, kv := range Env {
		k, v, _ := strings.Cut(kv, "=")
		os.Setenv(k, v)
	}
}

// URL is the --artifact-store URL of bucket on the server at endpoint.
func URL(endpoint, bucket string) string {
	return fmt.Sprintf("s3://%s?region=us-east-1&endpoint=%s&use_path_style=true", bucket, endpoint)
}

// Handler is gofakes3 behind the one gate a bucket policy would add:
// anonymous requests (no Authorization header, no presigned query) and
// every request for DeniedBucket get AccessDenied. Without the gate gofakes3
// would serve anyone, and a test of a signed URL could not fail.
func Handler() http.Handler {
	be := s3mem.New()
	for _, b := range []string{Bucket, DeniedBucket} {
		if err := be.CreateBucket(b); err != nil {
			panic(err)
		}
	}
	fake := gofakes3.New(be).Server()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		signed := r.Header.Get("Authorization") != "" || r.URL.Query().Get("X-Amz-Signature") != ""
		if !signed || strings.HasPrefix(r.URL.Path, "/"+DeniedBucket) {
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>`)
			return
		}
		fake.ServeHTTP(w, r)
	})
}

// Start serves Handler on loopback in this process and returns its
// endpoint (http://127.0.0.1:N).
func Start(t testing.TB) string {
	t.Helper()
	srv := httptest.NewServer(Handler())
	t.Cleanup(srv.Close)
	return srv.URL
}

// childVar asks this test binary to serve S3 instead of running tests.
const childVar = "PRIMS_TEST_S3_CHILD"

// StartChild serves Handler from a child process (this test binary run
// again, which must call MaybeServeChild first in TestMain), so that what
// the server keeps of a large upload does not count in the memory of the
// process under test.
func StartChild(t testing.TB) string {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), childVar+"=1")
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

// MaybeServeChild serves S3 forever when this process is StartChild's
// child, and returns otherwise.
func MaybeServeChild() {
	if os.Getenv(childVar) != "1" {
		return
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println("http://" + ln.Addr().String())
	panic(http.Serve(ln, Handler()))
}
