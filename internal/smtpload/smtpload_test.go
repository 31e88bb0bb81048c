package smtpload

import (
	"strings"
	"testing"
)

func TestStuff(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{".a\r\n", "..a\r\n"},
		{"a\r\n.\r\n..b\r\n", "a\r\n..\r\n...b\r\n"},
		{"sin final", "sin final\r\n"},
		{"", "\r\n"},
	} {
		if got := string(stuff([]byte(tc.in))); got != tc.want {
			t.Errorf("stuff(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBody(t *testing.T) {
	for _, size := range []int{0, 300, 5120, 64 << 10} {
		b := string(Body("a@servir.gob.pe", "b@example.org", 7, size))
		if !strings.HasPrefix(b, "From: <a@servir.gob.pe>\r\nTo: <b@example.org>\r\nSubject: carga 7\r\n") || !strings.HasSuffix(b, "\r\n") {
			t.Fatalf("size %d: %q", size, b)
		}
		if min := size - 60; len(b) < min || (len(b) > size && strings.Contains(b, "Lorem")) {
			t.Errorf("size %d: body of %d bytes", size, len(b))
		}
	}
}
