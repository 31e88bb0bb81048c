package address

import (
	"strings"
	"testing"
)

// FuzzParseAddress: an accepted address has no CR, LF or NUL anywhere, an
// ASCII lowercase domain with a dot, fits RFC 5321's limits, and parses
// again to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"a@example.com", "Ana <ana@example.com>", "luis@münchen.de", `"x y"@example.com`,
		"a@example.com\r\nBcc: b@evil.com", "=?utf-8?q?a=0D=0Ab?= <a@b.pe>", "a@[127.0.0.1]", "@", "a@b", "añ@b.pe", "a@xn--mnchen-3ya.de."} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		a, err := Parse(in)
		if err != nil {
			if strings.ContainsAny(err.Error(), "\n") && !strings.ContainsAny(in, "\n") {
				t.Fatalf("error gained a line break: %q", err)
			}
			return
		}
		if strings.ContainsAny(a.Addr+a.Name, "\r\n\x00") {
			t.Fatalf("accepted %q with CR/LF/NUL: %+v", in, a)
		}
		d := a.Domain()
		if d != strings.ToLower(d) || !strings.Contains(d, ".") || len(a.Addr) > 254 {
			t.Fatalf("accepted %q as %+v", in, a)
		}
		for i := 0; i < len(d); i++ {
			if d[i] >= 0x80 {
				t.Fatalf("non-ASCII domain %q", d)
			}
		}
		b, err := Parse(a.String())
		if err != nil || b.Addr != a.Addr {
			t.Fatalf("%q → %+v → %q → %+v, %v", in, a, a.String(), b, err)
		}
	})
}
