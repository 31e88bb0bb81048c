package csvin

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"unicode/utf16"
)

// row is what one Next call should return: a record, or (err set) a
// *RowError for line whose cause errors.Is err.
type row struct {
	line   int
	fields []string
	raw    string
	err    error
}

type readerCase struct {
	name   string
	in     string
	newErr error // what NewReader returns, errors.Is; nil for success
	enc    string
	delim  rune
	header []string
	rows   []row
}

// utf16Bytes encodes s as UTF-16 with a byte order mark.
func utf16Bytes(s string, bigEndian bool) string {
	var b []byte
	for _, u := range utf16.Encode([]rune("\uFEFF" + s)) {
		if bigEndian {
			b = append(b, byte(u>>8), byte(u))
		} else {
			b = append(b, byte(u), byte(u>>8))
		}
	}
	return string(b)
}

// readerCases are the table of TestReader and the seeds of FuzzReader.
func readerCases() []readerCase {
	hdr := []string{"correo", "nombre"}
	return []readerCase{
		{name: "utf-8 with BOM, CRLF", in: "\xEF\xBB\xBFcorreo,nombre\r\nana@x.pe,Ana Peña\r\n", enc: "utf-8-bom", delim: ',', header: hdr,
			rows: []row{{line: 2, fields: []string{"ana@x.pe", "Ana Peña"}, raw: "ana@x.pe,Ana Peña"}}},
		{name: "utf-8 without BOM, semicolon, LF", in: "correo;nombre\nluis@x.pe;Luis Núñez\nrosa@x.pe;Rosa\n", enc: "utf-8", delim: ';', header: hdr,
			rows: []row{{line: 2, fields: []string{"luis@x.pe", "Luis Núñez"}, raw: "luis@x.pe;Luis Núñez"},
				{line: 3, fields: []string{"rosa@x.pe", "Rosa"}, raw: "rosa@x.pe;Rosa"}}},
		{name: "windows-1252", in: "correo;nombre;apellido\r\nana@x.pe;Pe\xf1a;N\xfa\xf1ez\r\nluis@x.pe;Luis;\x80 \xc1vila\r\n", enc: "windows-1252", delim: ';',
			header: []string{"correo", "nombre", "apellido"},
			rows: []row{{line: 2, fields: []string{"ana@x.pe", "Peña", "Núñez"}, raw: "ana@x.pe;Peña;Núñez"},
				{line: 3, fields: []string{"luis@x.pe", "Luis", "€ Ávila"}, raw: "luis@x.pe;Luis;€ Ávila"}}},
		{name: "utf-16le with BOM, tab (Excel Unicode text)", in: utf16Bytes("correo\tnombre\r\nana@x.pe\tAna Peña\r\n\"b@x.pe\"\t\"Bea 𝄞\"\r\n", false),
			enc: "utf-16le", delim: '\t', header: hdr,
			rows: []row{{line: 2, fields: []string{"ana@x.pe", "Ana Peña"}, raw: "ana@x.pe\tAna Peña"},
				{line: 3, fields: []string{"b@x.pe", "Bea 𝄞"}, raw: "b@x.pe\tBea 𝄞"}}},
		{name: "utf-16be with BOM", in: utf16Bytes("correo,nombre\nana@x.pe,Ana Peña", true), enc: "utf-16be", delim: ',', header: hdr,
			rows: []row{{line: 2, fields: []string{"ana@x.pe", "Ana Peña"}, raw: "ana@x.pe,Ana Peña"}}},
		{name: "pipe", in: "correo|nombre|ciudad\na@x.pe|Ana|Lima\nb@x.pe|Bea|Cusco\n", enc: "utf-8", delim: '|', header: []string{"correo", "nombre", "ciudad"},
			rows: []row{{line: 2, fields: []string{"a@x.pe", "Ana", "Lima"}, raw: "a@x.pe|Ana|Lima"},
				{line: 3, fields: []string{"b@x.pe", "Bea", "Cusco"}, raw: "b@x.pe|Bea|Cusco"}}},
		{name: "quoted newlines, delimiters and quotes", in: "correo,nota\na@x.pe,\"línea 1\r\nlínea 2\nlínea 3\"\nb@x.pe,\"Quispe, \"\"Ana\"\"\"\nc@x.pe,fin\n",
			enc: "utf-8", delim: ',', header: []string{"correo", "nota"},
			rows: []row{{line: 2, fields: []string{"a@x.pe", "línea 1\nlínea 2\nlínea 3"}, raw: "a@x.pe,\"línea 1\nlínea 2\nlínea 3\""},
				{line: 5, fields: []string{"b@x.pe", `Quispe, "Ana"`}, raw: `b@x.pe,"Quispe, ""Ana"""`},
				{line: 6, fields: []string{"c@x.pe", "fin"}, raw: "c@x.pe,fin"}}},
		{name: "CR only (old Mac Excel)", in: "correo,nombre\ra@x.pe,Ana\r\"b@x.pe\",\"Bea\rBeatriz\"\rc@x.pe,Cy\r", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 2, fields: []string{"a@x.pe", "Ana"}, raw: "a@x.pe,Ana"},
				{line: 3, fields: []string{"b@x.pe", "Bea\nBeatriz"}, raw: "b@x.pe,\"Bea\nBeatriz\""},
				{line: 5, fields: []string{"c@x.pe", "Cy"}, raw: "c@x.pe,Cy"}}},
		{name: "blank lines and lines of delimiters skipped", in: "\n\ncorreo,nombre\n\n,,\n  , \n\"\",\" \"\na@x.pe,Ana\n\r\n,\r\n", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 8, fields: []string{"a@x.pe", "Ana"}, raw: "a@x.pe,Ana"}}},
		{name: "trailing delimiter, no final newline", in: "correo,nombre,\na@x.pe,Ana,", enc: "utf-8", delim: ',', header: []string{"correo", "nombre", ""},
			rows: []row{{line: 2, fields: []string{"a@x.pe", "Ana", ""}, raw: "a@x.pe,Ana,"}}},
		{name: "more and fewer fields than the header", in: "correo,nombre,ciudad\na@x.pe\nb@x.pe,Bea,Lima,extra,\"más\"\n", enc: "utf-8", delim: ',',
			header: []string{"correo", "nombre", "ciudad"},
			rows: []row{{line: 2, fields: []string{"a@x.pe"}, raw: "a@x.pe"},
				{line: 3, fields: []string{"b@x.pe", "Bea", "Lima", "extra", "más"}, raw: "b@x.pe,Bea,Lima,extra,más"}}},
		{name: "formula read as is", in: "correo,nombre\na@x.pe,\"=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"\n", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 2, fields: []string{"a@x.pe", `=HYPERLINK("http://x","y")`}, raw: `a@x.pe,"=HYPERLINK(""http://x"",""y"")"`}}},
		{name: "bare quote, then the next row", in: "correo,nombre\na@x.pe,Ana \"la jefa\" Q\nb@x.pe,Bea\n", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 2, raw: `a@x.pe,Ana "la jefa" Q`, err: csv.ErrBareQuote},
				{line: 3, fields: []string{"b@x.pe", "Bea"}, raw: "b@x.pe,Bea"}}},
		{name: "text after a closing quote", in: "correo,nombre\na@x.pe,\"Ana\" Q\nb@x.pe,Bea\n", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 2, raw: `a@x.pe,"Ana" Q`, err: csv.ErrQuote},
				{line: 3, fields: []string{"b@x.pe", "Bea"}, raw: "b@x.pe,Bea"}}},
		{name: "unterminated quote at EOF, lines after it read again", in: "correo,nombre\na@x.pe,\"Ana\nb@x.pe,Bea\nc@x.pe,Cy", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 2, raw: `a@x.pe,"Ana`, err: errUnterminated},
				{line: 3, fields: []string{"b@x.pe", "Bea"}, raw: "b@x.pe,Bea"},
				{line: 4, fields: []string{"c@x.pe", "Cy"}, raw: "c@x.pe,Cy"}}},
		{name: "stray quote swallowing lines up to a later quote", in: "correo,nombre\na@x.pe,\"Ana\nb@x.pe,Bea\nc@x.pe,\"Cy\"\n", enc: "utf-8", delim: ',', header: hdr,
			rows: []row{{line: 2, raw: `a@x.pe,"Ana`, err: csv.ErrQuote},
				{line: 3, fields: []string{"b@x.pe", "Bea"}, raw: "b@x.pe,Bea"},
				{line: 4, fields: []string{"c@x.pe", "Cy"}, raw: "c@x.pe,Cy"}}},
		{name: "header trimmed of spaces and a leftover BOM", in: "\xEF\xBB\xBF\xEF\xBB\xBF Correo ,\u00a0Nombre \t\na@x.pe, Ana \n", enc: "utf-8-bom", delim: ',',
			header: []string{"Correo", "Nombre"},
			rows:   []row{{line: 2, fields: []string{"a@x.pe", " Ana "}, raw: "a@x.pe, Ana "}}},
		{name: "semicolon with unquoted commas in names", in: "correo;nombre\na@x.pe;Quispe, Ana\nb@x.pe;Mamani, Luis\n", enc: "utf-8", delim: ';', header: hdr,
			rows: []row{{line: 2, fields: []string{"a@x.pe", "Quispe, Ana"}, raw: "a@x.pe;Quispe, Ana"},
				{line: 3, fields: []string{"b@x.pe", "Mamani, Luis"}, raw: "b@x.pe;Mamani, Luis"}}},
		{name: "quoted comma in a semicolon file", in: "correo;nombre\na@x.pe;\"Quispe; Ana\"\n", enc: "utf-8", delim: ';', header: hdr,
			rows: []row{{line: 2, fields: []string{"a@x.pe", "Quispe; Ana"}, raw: `a@x.pe;"Quispe; Ana"`}}},
		{name: "single column", in: "correo\na@x.pe\nb@x.pe\n", enc: "utf-8", delim: ',', header: []string{"correo"},
			rows: []row{{line: 2, fields: []string{"a@x.pe"}, raw: "a@x.pe"}, {line: 3, fields: []string{"b@x.pe"}, raw: "b@x.pe"}}},
		{name: "only a header", in: "correo,nombre\r\n", enc: "utf-8", delim: ',', header: hdr},
		{name: "empty file", in: "", newErr: ErrNoHeader},
		{name: "only blank lines", in: "\r\n,,\n \n", newErr: ErrNoHeader},
		{name: "only a BOM", in: "\xEF\xBB\xBF", newErr: ErrNoHeader},
		{name: "malformed header", in: "correo,\"nombre\n", newErr: csv.ErrQuote},
	}
}

func TestReader(t *testing.T) {
	readers := map[string]func(string) io.Reader{
		"whole":    func(s string) io.Reader { return strings.NewReader(s) },
		"one byte": func(s string) io.Reader { return iotest.OneByteReader(strings.NewReader(s)) },
		"half":     func(s string) io.Reader { return iotest.HalfReader(strings.NewReader(s)) },
	}
	for _, tc := range readerCases() {
		for how, open := range readers {
			t.Run(tc.name+"/"+how, func(t *testing.T) {
				r, err := NewReader(open(tc.in))
				if tc.newErr != nil || err != nil {
					if !errors.Is(err, tc.newErr) || tc.newErr == nil {
						t.Fatalf("NewReader: %v, want %v", err, tc.newErr)
					}
					return
				}
				if r.Encoding() != tc.enc || r.Delimiter() != tc.delim || !slices.Equal(r.Header(), tc.header) {
					t.Fatalf("got %s %q %q, want %s %q %q", r.Encoding(), r.Delimiter(), r.Header(), tc.enc, tc.delim, tc.header)
				}
				for i, want := range tc.rows {
					rec, err := r.Next()
					checkRow(t, i, rec, err, want)
				}
				if rec, err := r.Next(); err != io.EOF {
					t.Fatalf("after the rows: %+v, %v; want io.EOF", rec, err)
				}
				if _, err := r.Next(); err != io.EOF {
					t.Fatalf("second Next at the end: %v", err)
				}
				if r.Bytes() != int64(len(tc.in)) {
					t.Errorf("Bytes() = %d at the end, want %d", r.Bytes(), len(tc.in))
				}
			})
		}
	}
}

func checkRow(t *testing.T, i int, rec Record, err error, want row) {
	t.Helper()
	if want.err != nil {
		var re *RowError
		if !errors.As(err, &re) || !errors.Is(err, want.err) || re.Line != want.line || re.Raw != want.raw {
			t.Fatalf("row %d: %+v, %v; want a RowError at line %d (%v) with Raw %q", i, rec, err, want.line, want.err, want.raw)
		}
		return
	}
	if err != nil || rec.Line != want.line || !slices.Equal(rec.Fields, want.fields) || rec.Raw != want.raw {
		t.Fatalf("row %d: %d %q %q, %v; want %d %q %q", i, rec.Line, rec.Fields, rec.Raw, err, want.line, want.fields, want.raw)
	}
}

func TestRowErrorMessage(t *testing.T) {
	r, err := NewReader(strings.NewReader("correo,nombre\na@x.pe,ok\na@x.pe,5\" disk\n"))
	if err != nil {
		t.Fatal(err)
	}
	r.Next()
	_, err = r.Next()
	if got, want := err.Error(), `line 3: bare " in non-quoted-field`; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

// TestSniffBoundary covers the 64 KiB that NewReader looks at.
func TestSniffBoundary(t *testing.T) {
	// ascii fills the file with ASCII rows up to n bytes.
	ascii := func(n int) []byte {
		b := []byte("correo,nombre\n")
		for len(b) < n {
			b = append(b, "ana.quispe@example.com.pe,Ana Quispe\n"...)
		}
		return b[:n]
	}
	// A row whose "ñ" has its first byte at 65535 and its second at 65536.
	lead := "\nx@x.pe,Muñoz Pe"
	straddle := append(ascii(bufSize-1-len(lead)), lead+"\xc3\xb1"...)
	if straddle[bufSize-1] != 0xc3 {
		t.Fatal("the straddling test file is not laid out right")
	}
	tests := []struct {
		name   string
		in     []byte
		enc    string
		last   string // the second field of the last row
		rowLen int    // how many rows
	}{
		{"accents after the prefix", append(ascii(bufSize+100), "\nx@x.pe,Peña Núñez\n"...), "utf-8", "Peña Núñez", 0},
		{"a character across the boundary", append(straddle, "a\n"...), "utf-8", "Muñoz Peña", 0},
		{"windows-1252 after an ASCII prefix", append(ascii(bufSize+100), "\nx@x.pe,Pe\xf1a N\xfa\xf1ez\n"...), "utf-8", "Peña Núñez", 0},
		{"windows-1252 inside the prefix", append(ascii(bufSize-100), "\nx@x.pe,Pe\xf1a\n"...), "windows-1252", "Peña", 0},
		{"cut sequence at the very end", []byte("correo,nombre\nx@x.pe,Pe\xc3"), "windows-1252", "PeÃ", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(bytes.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if r.Encoding() != tc.enc {
				t.Errorf("Encoding() = %s, want %s", r.Encoding(), tc.enc)
			}
			var last Record
			for {
				rec, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				last = rec
			}
			if got := last.Fields[len(last.Fields)-1]; got != tc.last {
				t.Errorf("last field %q, want %q", got, tc.last)
			}
		})
	}
}

func TestSniffDelimiter(t *testing.T) {
	tests := []struct {
		in    string
		atEOF bool
		want  byte
	}{
		{"a,b\nc,d\n", true, ','},
		{"a;b\nc;d\n", true, ';'},
		{"a\tb\nc\td\n", true, '\t'},
		{"a|b\nc|d\n", true, '|'},
		{"a\nb\n", true, ','},
		{"a,b;c\nd,e;f\n", true, ','}, // a tie goes to ','
		{"a;b|c\nd;e|f\n", true, ';'},
		{"nombre;correo\n\"Quispe, Ana\";a@x.pe\n\"Mamani, Luis\";b@x.pe\n", true, ';'},
		{"nombre|nota\nAna|\"a\nb,c,d,e\"\nLuis|x\n", true, '|'}, // the quoted line end hides its commas
		{"a;b\nc;d\ne,f,g,h,i", false, ';'},                      // a cut last line does not count
		{"a,b,c,d", false, ','},                                  // unless it is the only one
		{"", true, ','},
	}
	for _, tc := range tests {
		if got := sniffDelimiter([]byte(tc.in), tc.atEOF); got != tc.want {
			t.Errorf("sniffDelimiter(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// TestLongRows checks the 1 MiB bounds: an overlong line and an unclosed
// quote are rejected and the rows after them still read.
func TestLongRows(t *testing.T) {
	long := strings.Repeat("x", maxLine+10)
	many := strings.Repeat("b@x.pe,Bea\n", maxRecord/10)
	tests := []struct {
		name  string
		in    string
		first error
		rows  int // rows read fine after the error
		errs  int // and RowErrors
	}{
		{"overlong line", "correo,nombre\na@x.pe," + long + "\nb@x.pe,Bea\n", errLineTooLong, 1, 0},
		{"overlong CR-terminated line", "correo,nombre\ra@x.pe," + long + "\rb@x.pe,Bea\r", errLineTooLong, 1, 0},
		{"unclosed quote", "correo,nombre\na@x.pe,\"Ana\n" + many, errRowTooLong, maxRecord / 10, 0},
		// The quoted row is too long; the long line is then rejected on its own.
		{"overlong line inside a quote", "correo,nombre\na@x.pe,\"Ana\n" + long + "\nb@x.pe,Bea\n", errRowTooLong, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewReader(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			_, err = r.Next()
			var re *RowError
			if !errors.As(err, &re) || !errors.Is(err, tc.first) || re.Line != 2 || len(re.Raw) > maxRaw {
				t.Fatalf("first Next: %v, want a RowError at line 2: %v", err, tc.first)
			}
			rows, errs := 0, 0
			for {
				_, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					errs++
					continue
				}
				rows++
			}
			if rows != tc.rows || errs != tc.errs {
				t.Errorf("%d rows and %d errors after it, want %d and %d", rows, errs, tc.rows, tc.errs)
			}
			if r.Bytes() != int64(len(tc.in)) {
				t.Errorf("Bytes() = %d, want %d", r.Bytes(), len(tc.in))
			}
		})
	}
}

func TestReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	in := io.MultiReader(strings.NewReader("correo,nombre\na@x.pe,Ana\nb@x.pe,\"Be"), iotest.ErrReader(boom))
	if _, err := NewReader(in); !errors.Is(err, boom) {
		t.Fatalf("NewReader: %v, want %v", err, boom)
	}
	// An error after the sniffed prefix comes from Next, and stays.
	big := "correo,nombre\n" + strings.Repeat("a@x.pe,Ana\n", bufSize/10)
	r, err := NewReader(io.MultiReader(strings.NewReader(big), iotest.ErrReader(boom)))
	if err != nil {
		t.Fatal(err)
	}
	for {
		_, err = r.Next()
		if err != nil {
			break
		}
	}
	if !errors.Is(err, boom) || errors.As(err, new(*RowError)) {
		t.Fatalf("Next: %v, want %v", err, boom)
	}
	if _, err := r.Next(); !errors.Is(err, boom) {
		t.Fatalf("Next after the error: %v", err)
	}
}

func TestProgress(t *testing.T) {
	in := "correo,nombre\r\na@x.pe,Ana\r\n\r\nb@x.pe,Bea\r\n"
	for _, enc := range []string{"utf-8", "utf-16le"} {
		t.Run(enc, func(t *testing.T) {
			src := in
			if enc == "utf-16le" {
				src = utf16Bytes(in, false)
			}
			r, err := NewReader(strings.NewReader(src))
			if err != nil {
				t.Fatal(err)
			}
			if r.Lines() != 1 {
				t.Errorf("Lines() = %d after the header", r.Lines())
			}
			if enc == "utf-8" && r.Bytes() != int64(len("correo,nombre\r\n")) {
				t.Errorf("Bytes() = %d after the header", r.Bytes())
			}
			for prev := r.Bytes(); ; {
				_, err := r.Next()
				if r.Bytes() < prev {
					t.Fatalf("Bytes() went back from %d to %d", prev, r.Bytes())
				}
				prev = r.Bytes()
				if err != nil {
					break
				}
			}
			if r.Lines() != 4 || r.Bytes() != int64(len(src)) {
				t.Errorf("at the end Lines() = %d, Bytes() = %d; want 4, %d", r.Lines(), r.Bytes(), len(src))
			}
		})
	}
}

// rowSource generates a contact list of n rows without holding it.
type rowSource struct {
	n, i int
	head string // sent first
	buf  []byte
}

func (s *rowSource) Read(p []byte) (int, error) {
	for len(s.buf) == 0 {
		switch {
		case s.head != "":
			s.buf, s.head = []byte(s.head), ""
		case s.i < s.n:
			s.buf = fmt.Appendf(s.buf[:0], "ana.quispe%d@example.com.pe,Ana Quispe %d,Lima\n", s.i, s.i)
			s.i++
		default:
			return 0, io.EOF
		}
	}
	n := copy(p, s.buf)
	s.buf = s.buf[n:]
	return n, nil
}

// TestConstantMemory reads 20 MB streams and checks that the heap stays
// small, also when an unclosed quote near the top runs over everything.
func TestConstantMemory(t *testing.T) {
	const rows = 300_000
	for _, head := range []string{"correo,nombre,ciudad\n", "correo,nombre,ciudad\na@x.pe,\"Ana\n"} {
		r, err := NewReader(&rowSource{n: rows, head: head})
		if err != nil {
			t.Fatal(err)
		}
		var peak uint64
		var ms runtime.MemStats
		read := 0
		for i := 0; ; i++ {
			_, err := r.Next()
			if err == io.EOF {
				break
			}
			if err == nil {
				read++
			}
			if i%20_000 == 0 {
				runtime.GC() // the live heap, not garbage the collector has not reached yet (-race, busy machines)
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		}
		t.Logf("head %q: heap peak %d KiB", head, peak>>10)
		if read != rows || peak > 16<<20 {
			t.Errorf("head %q: %d rows read with a heap of up to %d bytes; want %d under 16 MiB", head, read, peak, rows)
		}
	}
}
