// Package human formats quantities for people and models to read. Kept by
// hand: a few lines, where go-humanize would be a dependency for the same.
package human

import (
	"fmt"
	"strconv"
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

// ExactBytes is n in the largest binary unit that divides it, without a
// space ("512MiB", "3GiB"), else in bytes ("1000"): the form the size flags
// parse back, so a flag's default shows as what one would type.
func ExactBytes(n int64) string {
	for _, u := range []struct {
		s string
		m int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.m && n%u.m == 0 {
			return fmt.Sprintf("%d%s", n/u.m, u.s)
		}
	}
	return strconv.FormatInt(n, 10)
}
