package smtpload

import "testing"

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
