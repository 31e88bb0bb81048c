package contacts

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// errNoHeader is a file with no header row.
var errNoHeader = errors.New("the file has no header row")

// sniffSize is how much of a file decides its encoding and delimiter.
const sniffSize = 64 << 10

// csvFile reads a contacts file: its encoding (UTF-8 with or without
// BOM, UTF-16 with BOM, else Windows-1252) and delimiter (, ; tab |)
// detected from its first 64 KiB, then records one at a time.
type csvFile struct {
	r         *csv.Reader
	count     *countingReader
	encoding  string
	delimiter rune
	header    []string
}

// record is one data row.
type record struct {
	line   int
	fields []string
	raw    string // the row re-joined with the delimiter, at most 1,000 bytes
}

// rowError is a row that could not be read.
type rowError struct {
	line int
	err  error
}

func (e *rowError) Error() string { return fmt.Sprintf("line %d: %v", e.line, e.err) }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func openCSV(in io.Reader) (*csvFile, error) {
	cr := &countingReader{r: in}
	br := bufio.NewReaderSize(cr, sniffSize)
	head, err := br.Peek(sniffSize)
	if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, bufio.ErrBufferFull) {
		return nil, fmt.Errorf("read the file: %w", err)
	}
	f := &csvFile{count: cr}
	var src io.Reader = br
	switch {
	case bytes.HasPrefix(head, []byte("\xef\xbb\xbf")):
		f.encoding = "utf-8-bom"
		_, _ = br.Discard(3)
		head = head[3:]
	case bytes.HasPrefix(head, []byte("\xff\xfe")):
		f.encoding = "utf-16le"
		src = transform.NewReader(br, unicode.UTF16(unicode.LittleEndian, unicode.ExpectBOM).NewDecoder())
	case bytes.HasPrefix(head, []byte("\xfe\xff")):
		f.encoding = "utf-16be"
		src = transform.NewReader(br, unicode.UTF16(unicode.BigEndian, unicode.ExpectBOM).NewDecoder())
	case validUTF8Prefix(head):
		f.encoding = "utf-8"
	default:
		f.encoding = "windows-1252"
		src = transform.NewReader(br, charmap.Windows1252.NewDecoder())
	}
	if strings.HasPrefix(f.encoding, "utf-16") {
		order := unicode.LittleEndian
		if f.encoding == "utf-16be" {
			order = unicode.BigEndian
		}
		head, _, _ = transform.Bytes(unicode.UTF16(order, unicode.ExpectBOM).NewDecoder(), head[:len(head)&^1])
	}
	f.delimiter = sniffDelimiter(head)
	f.r = csv.NewReader(&crReader{r: bufio.NewReader(src)})
	f.r.Comma = f.delimiter
	f.r.FieldsPerRecord = -1
	f.r.ReuseRecord = true
	rec, err := f.next() // the first non-blank row
	if errors.Is(err, io.EOF) {
		return nil, errNoHeader
	}
	var re *rowError
	if errors.As(err, &re) {
		return nil, fmt.Errorf("the header row: %w", err)
	}
	if err != nil {
		return nil, err
	}
	f.header = make([]string, len(rec.fields))
	for i, h := range rec.fields {
		f.header[i] = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
	}
	return f, nil
}

// validUTF8Prefix reports whether b is UTF-8; when b is the first
// sniffSize bytes of a longer file, a multi-byte sequence cut at its end
// is allowed.
func validUTF8Prefix(b []byte) bool {
	if utf8.Valid(b) {
		return true
	}
	if len(b) < sniffSize {
		return false
	}
	for i := 1; i <= 3 && i <= len(b); i++ {
		if tail := b[len(b)-i:]; utf8.RuneStart(tail[0]) {
			return !utf8.FullRune(tail) && utf8.Valid(b[:len(b)-i])
		}
	}
	return false
}

// sniffDelimiter picks the delimiter that splits the first lines (outside
// quotes) into the same number of fields, more than one, most often.
func sniffDelimiter(head []byte) rune {
	best, bestScore := ',', 0
	for _, d := range []rune{',', ';', '\t', '|'} {
		counts := map[int]int{}
		lines := 0
		n, quoted := 0, false
		for _, c := range string(head) {
			switch {
			case c == '"':
				quoted = !quoted
			case c == d && !quoted:
				n++
			case (c == '\n' || c == '\r') && !quoted:
				if n > 0 {
					counts[n+1]++
					lines++
				}
				n = 0
			}
			if lines >= 20 {
				break
			}
		}
		score := 0
		for _, v := range counts {
			score = max(score, v)
		}
		if score > bestScore {
			best, bestScore = d, score
		}
	}
	return best
}

// next returns the next non-blank row; io.EOF at the end; a *rowError for
// a malformed one (reading goes on after it).
func (f *csvFile) next() (record, error) {
	for {
		fields, err := f.r.Read()
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			return record{line: pe.StartLine}, &rowError{line: pe.StartLine, err: pe.Err}
		}
		if err != nil {
			return record{}, err
		}
		blank := true
		for i, x := range fields {
			if !utf8.ValidString(x) { // a UTF-8 file with stray bytes past what was sniffed
				fields[i] = strings.ToValidUTF8(x, "\uFFFD")
			}
			if blank && strings.TrimSpace(x) != "" {
				blank = false
			}
		}
		if blank {
			continue
		}
		line, _ := f.r.FieldPos(0)
		return record{line: line, fields: fields, raw: f.join(fields)}, nil
	}
}

// join re-joins fields as a CSV row, quoting where needed, cut to 1,000
// bytes.
func (f *csvFile) join(fields []string) string {
	var b strings.Builder
	for i, x := range fields {
		if i > 0 {
			b.WriteRune(f.delimiter)
		}
		if strings.ContainsAny(x, "\"\r\n") || strings.ContainsRune(x, f.delimiter) {
			b.WriteByte('"')
			b.WriteString(strings.ReplaceAll(x, `"`, `""`))
			b.WriteByte('"')
		} else {
			b.WriteString(x)
		}
		if b.Len() > 1000 {
			break
		}
	}
	return truncate(b.String(), 1000)
}

// crReader turns a lone CR (old Mac line ends) into LF; CRLF stays.
type crReader struct{ r *bufio.Reader }

func (c *crReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	for i := 0; i < n; i++ {
		if p[i] != '\r' {
			continue
		}
		if i+1 < n {
			if p[i+1] != '\n' {
				p[i] = '\n'
			}
		} else if nb, perr := c.r.Peek(1); perr != nil || nb[0] != '\n' {
			p[i] = '\n'
		}
	}
	return n, err
}
