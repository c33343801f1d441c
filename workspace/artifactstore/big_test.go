package artifactstore_test

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"gocloud.dev/blob"

	"github.com/prims-mcp/prims/internal/testenv"
	"github.com/prims-mcp/prims/workspace/artifactstore/s3test"
)

var bigArtifact = flag.Bool("bigartifact", false, "run TestBigArtifact: store a 1 GiB file in S3 and file:// and measure this process's memory")

// TestBigArtifact stores a 1 GiB file (sparse, so the disk barely notices)
// and samples this process's resident set and Go heap all along: they stay
// flat, about a few parts of the upload, whatever the file's size. The S3
// server runs in a child process, so what it keeps does not count here.
func TestBigArtifact(t *testing.T) {
	if !*bigArtifact {
		t.Skip("pass -bigartifact to store a 1 GiB file (about a minute)")
	}
	if _, err := os.Stat("/proc/self/status"); err != nil {
		testenv.Skip(t, testenv.Proc, "reads this process's resident set from /proc: %v", err)
	}
	const size = 1 << 30
	for name, rawURL := range map[string]string{
		"s3":   s3test.URL(s3test.StartChild(t), s3test.Bucket),
		"file": "file://" + t.TempDir(),
	} {
		t.Run(name, func(t *testing.T) {
			ws := newWorkspace(t)
			p := filepath.Join(ws.Dir(), "output", "big.bin")
			f, err := os.Create(p)
			if err != nil {
				t.Fatal(err)
			}
			// A marker at each end, so a short upload shows in the size
			// and the bytes read back.
			f.Write([]byte("head"))
			f.WriteAt([]byte("tail"), size-4)
			f.Close()
			st := open(t, rawURL)

			runtime.GC()
			rss0, heap0 := rssBytes(t), heapBytes()
			var peakRSS, peakHeap uint64
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Go(func() {
				tick := time.NewTicker(10 * time.Millisecond)
				defer tick.Stop()
				for {
					peakRSS, peakHeap = max(peakRSS, rssBytes(t)), max(peakHeap, heapBytes())
					select {
					case <-stop:
						return
					case <-tick.C:
					}
				}
			})
			start := time.Now()
			a, err := st.Put(context.Background(), ws, "output/big.bin", "sessions/big")
			elapsed := time.Since(start)
			close(stop)
			wg.Wait()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: stored %d bytes in %s; resident set %d MiB before, peak %d MiB (+%d MiB); Go heap in use %d MiB before, peak %d MiB",
				name, a.Size, elapsed.Round(time.Millisecond), rss0>>20, peakRSS>>20, (peakRSS-rss0)>>20, heap0>>20, peakHeap>>20)
			if a.Size != size {
				t.Errorf("stored %d bytes, want %d", a.Size, size)
			}
			// A tenth of the file is far above a few 8 MiB parts and far
			// below a file held in memory.
			if grew := peakRSS - rss0; grew > size/10 {
				t.Errorf("resident set grew by %d MiB while storing a %d MiB file", grew>>20, size>>20)
			}

			b, err := blob.OpenBucket(context.Background(), rawURL)
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			attrs, err := b.Attributes(context.Background(), a.Key)
			if err != nil || attrs.Size != size || attrs.Metadata["sha256"] != a.SHA256 {
				t.Fatalf("stored object: %+v, %v", attrs, err)
			}
			r, err := b.NewRangeReader(context.Background(), a.Key, size-4, 4, nil)
			if err != nil {
				t.Fatal(err)
			}
			var tail bytes.Buffer
			tail.ReadFrom(r)
			r.Close()
			if tail.String() != "tail" {
				t.Errorf("last bytes %q, want %q", tail.String(), "tail")
			}
		})
	}
}

func rssBytes(t *testing.T) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Error(err)
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

func heapBytes() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}
