package report

import (
	"bytes"
	"encoding/csv"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEscapeCell: an escaped cell never starts with a character that
// makes a spreadsheet evaluate it, differs from its input only by the
// leading quote when it had to, and survives an RFC 4180 round trip.
// Seeds: testdata/fuzz/FuzzEscapeCell.
func FuzzEscapeCell(f *testing.F) {
	for _, s := range []string{"", "plain", "=1+2", "+1", "-1", "@SUM(A1)", "\tx", "\rx", "'=already", " =space", "ok, \"quoted\"\nline"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out := escapeCell(in)
		dangerous := in != "" && strings.ContainsRune("=+-@\t\r", rune(in[0]))
		switch {
		case dangerous && out != "'"+in:
			t.Fatalf("escapeCell(%q) = %q, want a leading quote", in, out)
		case !dangerous && out != in:
			t.Fatalf("escapeCell(%q) = %q, want it unchanged", in, out)
		case out != "" && strings.ContainsRune("=+-@\t\r", rune(out[0])):
			t.Fatalf("escapeCell(%q) = %q starts a formula", in, out)
		}
		if !utf8.ValidString(in) || strings.ContainsRune(in, '\r') {
			return // encoding/csv reads CR LF in a field back as LF, and needs UTF-8
		}
		var b bytes.Buffer
		w := csv.NewWriter(&b)
		if err := w.Write([]string{out, "end"}); err != nil {
			t.Fatal(err)
		}
		w.Flush()
		rec, err := csv.NewReader(&b).Read()
		if err != nil || len(rec) != 2 || rec[0] != out {
			t.Fatalf("%q does not read back: %q %v", out, rec, err)
		}
	})
}
