package sandbox

import (
	"strings"
	"testing"
)

func TestCapture(t *testing.T) {
	tests := []struct {
		name      string
		budget    int
		writes    []string
		want      string
		truncated bool
	}{
		{name: "fits", budget: 10, writes: []string{"abc", "def"}, want: "abcdef"},
		{name: "exact", budget: 6, writes: []string{"abcdef"}, want: "abcdef"},
		{name: "head and tail", budget: 6, writes: []string{"abcdefghij"}, want: "abc\n[... 4 bytes omitted ...]\nhij", truncated: true},
		{name: "many small writes", budget: 4, writes: []string{"a", "b", "c", "d", "e", "f", "g"}, want: "ab\n[... 3 bytes omitted ...]\nfg", truncated: true},
		{name: "tail wraps", budget: 6, writes: []string{"abc", "1234", "56", "7"}, want: "abc\n[... 4 bytes omitted ...]\n567", truncated: true},
		{name: "invalid utf-8 is replaced", budget: 100, writes: []string{"ok \xff\xfe end"}, want: "ok \uFFFD end"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCapture(tt.budget)
			var total int
			for _, w := range tt.writes {
				if n, err := c.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				total += len(w)
			}
			if got := c.String(); got != tt.want {
				t.Errorf("String() = %q, want %q", got, tt.want)
			}
			if c.Truncated() != tt.truncated || c.Total() != int64(total) {
				t.Errorf("Truncated() = %v, Total() = %d; want %v, %d", c.Truncated(), c.Total(), tt.truncated, total)
			}
		})
	}
}

func TestCaptureLargeStreamStaysBounded(t *testing.T) {
	c := NewCapture(1024)
	chunk := []byte(strings.Repeat("x", 4096))
	for range 1000 {
		c.Write(chunk)
	}
	c.Write([]byte("THE END"))
	s := c.String()
	if len(s) > 1100 || !strings.HasSuffix(s, "THE END") || !strings.HasPrefix(s, "xxx") {
		t.Errorf("len %d, suffix %q", len(s), s[len(s)-10:])
	}
}
