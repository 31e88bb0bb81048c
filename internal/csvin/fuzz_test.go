package csvin

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzReader: NewReader and Next never panic and always end; rows come in
// line order, fit their bounds, are valid UTF-8, and a Raw that was not cut
// parses back (by encoding/csv) to the same fields; Bytes reaches the size.
func FuzzReader(f *testing.F) {
	for _, tc := range readerCases() {
		f.Add([]byte(tc.in))
	}
	for _, s := range []string{"\xFF\xFE", "\xFE\xFF\x00", "a\r", "\"", "a,\"\"\"", "a\n\"\n\"\"\n\"", "a;b\rc;\"d\r\"\"\r\"", "\xEF\xBB\xBF\"\xEF\xBB\xBF\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := NewReader(bytes.NewReader(in))
		if err != nil {
			if !errors.Is(err, ErrNoHeader) && !errors.As(err, new(*RowError)) {
				t.Fatalf("NewReader: unexpected error %v", err)
			}
			return
		}
		for _, h := range r.Header() {
			if !utf8.ValidString(h) || h != trimName(h) {
				t.Fatalf("header name %q", h)
			}
		}
		delim := r.Delimiter()
		last, bytesSeen, lines := 0, r.Bytes(), r.Lines()
		for calls := 0; ; calls++ {
			if calls > len(in)+2 {
				t.Fatalf("more than %d rows from %d bytes", calls, len(in))
			}
			rec, err := r.Next()
			if r.Bytes() < bytesSeen || r.Bytes() > int64(len(in)) || r.Lines() < lines {
				t.Fatalf("progress went from %d bytes, %d lines to %d, %d (size %d)", bytesSeen, lines, r.Bytes(), r.Lines(), len(in))
			}
			bytesSeen, lines = r.Bytes(), r.Lines()
			if err == io.EOF {
				break
			}
			line, raw := rec.Line, rec.Raw
			var re *RowError
			if errors.As(err, &re) {
				line, raw = re.Line, re.Raw
			} else if err != nil {
				t.Fatalf("Next: unexpected error %v", err)
			}
			if line < 1 || line <= last || line > r.Lines() {
				t.Fatalf("row at line %d after line %d (%d lines read)", line, last, r.Lines())
			}
			last = line
			if len(raw) > maxRaw || !utf8.ValidString(raw) {
				t.Fatalf("Raw %q", raw)
			}
			if err == nil {
				checkFields(t, rec, delim)
			}
		}
		if r.Bytes() != int64(len(in)) {
			t.Fatalf("Bytes() = %d at the end of %d", r.Bytes(), len(in))
		}
	})
}

// checkFields checks one record's fields, and that its Raw (when not cut)
// is CSV for them.
func checkFields(t *testing.T, rec Record, delim rune) {
	t.Helper()
	blank := true
	for _, f := range rec.Fields {
		if !utf8.ValidString(f) || strings.ContainsRune(f, '\r') {
			t.Fatalf("field %q", f)
		}
		blank = blank && strings.Trim(f, " \t") == ""
	}
	if blank {
		t.Fatalf("blank record %q", rec.Fields)
	}
	if len(rec.Raw) >= maxRaw-utf8.UTFMax {
		return
	}
	cr := csv.NewReader(strings.NewReader(rec.Raw))
	cr.Comma, cr.FieldsPerRecord = delim, -1
	back, err := cr.Read()
	if err != nil || !slices.Equal(back, rec.Fields) {
		t.Fatalf("Raw %q reads back as %q, %v; want %q", rec.Raw, back, err, rec.Fields)
	}
}
