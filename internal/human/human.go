// Package human formats quantities for people and models to read. Kept by
// hand: a few lines, where go-humanize would be a dependency for the same.
package human

import (
	"fmt"
	"strings"
)

// Bytes is n bytes with a binary unit and one decimal: "512 B", "1.5 KiB",
// "64.0 MiB", "2.0 GiB".
func Bytes(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	case n < 1<<30:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
	return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
}

// Tail is the end of s in at most n bytes, from the start of a line when
// one begins there, marked "[...]" when s was cut; invalid UTF-8 is dropped.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return "[...]\n" + strings.ToValidUTF8(s, "")
}
