package human

import "testing"

func TestBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 1023: "1023 B", 1536: "1.5 KiB", 64 << 20: "64.0 MiB", 3 << 30: "3.0 GiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestExactBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0", 1000: "1000", 1024: "1KiB", 1536: "1536", 512 << 20: "512MiB", 5 << 30: "5GiB", 2 << 40: "2TiB"} {
		if got := ExactBytes(n); got != want {
			t.Errorf("ExactBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestTail(t *testing.T) {
	if got := Tail("short", 10); got != "short" {
		t.Errorf("Tail of a short string = %q", got)
	}
	if got := Tail("line one\nline two\nline three\n", 14); got != "[...]\nline three\n" {
		t.Errorf("Tail = %q, want it cut at a line start", got)
	}
}
