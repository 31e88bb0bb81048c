// Package csvin reads the contact lists that staff import: delimited text
// exported from Excel, Google Sheets or legacy systems, of any size.
//
// A Reader streams the file in constant memory (a 64 KiB buffer and at most
// 1 MiB for one row). NewReader detects the encoding (UTF-8 with or without
// a BOM, UTF-16 with a BOM, else Windows-1252) and the delimiter (',', ';',
// tab or '|') from the first 64 KiB and reads the header row; Next then
// returns the data rows one by one, as RFC 4180 fields decoded to UTF-8.
// Line ends may be CRLF, LF or a lone CR (old Mac Excel); a line end inside
// a quoted field becomes "\n". A malformed row is reported as a *RowError
// naming its line, and reading goes on at the next line, so a caller can
// write a reject report and import the rest.
//
// Map decides which columns hold the address, the name and the other
// attributes, from the header and an optional "--map email=COLUMN" spec.
package csvin

import (
	"bytes"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"

	xunicode "golang.org/x/text/encoding/unicode"
	"golang.org/x/text/transform"
)

// ErrNoHeader is returned by NewReader for a file without a non-blank row.
var ErrNoHeader = errors.New("csvin: the file has no header row")

// The causes of a RowError besides csv.ErrBareQuote and csv.ErrQuote.
var (
	errUnterminated = fmt.Errorf("%w (not closed before the end of the file)", csv.ErrQuote)
	errLineTooLong  = errors.New("line longer than 1 MiB")
	errRowTooLong   = errors.New("row longer than 1 MiB (a quote that is never closed?)")
)

// Reader reads a delimited text file of contacts as records, detecting its
// encoding and delimiter from its first bytes.
type Reader struct {
	lr     *lineReader
	dec    decoder
	utf16  *countingReader // the raw input of a UTF-16 file, for Bytes
	seen   int64           // the last figure Bytes gave for a UTF-16 file
	enc    string
	delim  byte
	header []string
	done   error // io.EOF or the read error every later Next returns

	fields []string // reused by every Record
	rec    []byte   // the unquoted text of a quoted record's fields
	ends   []int    // where each of its fields ends in rec
	raw    []byte   // a quoted record's Raw, being built

	// The lines of the quoted record being read, kept so that after a
	// malformed one the reader can go back to the line after its first.
	lines []byte
	spans []span

	// Lines already read that are to be read again, before the input.
	pend, spare           []byte
	pendSpans, spareSpans []span
	pendHead              int
}

// span is one line kept in Reader.lines or Reader.pend.
type span struct {
	start, end int  // its text
	line       int  // its line number
	cut        bool // it was longer than maxLine; only its start is kept
}

// NewReader sniffs the first 64 KiB of r (without losing them): a UTF-8 BOM
// is dropped; UTF-16 BOMs (FF FE / FE FF) are decoded too; otherwise the
// bytes are UTF-8 if the sniffed prefix is valid UTF-8 (an incomplete
// multi-byte sequence cut at the 64 KiB boundary is fine), else
// Windows-1252. In a file taken as UTF-8, a later byte that is not valid
// UTF-8 is read as Windows-1252 too, so every field is valid UTF-8.
//
// The delimiter is the one of ',', ';', '\t', '|' that splits the first
// non-empty lines (up to 20, outside quotes) into the same number (>1) of
// fields most consistently; ties prefer ',' then ';' then '\t' then '|'; a
// file with a single column gets ','.
//
// It then reads the header record (the first non-empty record):
// ErrNoHeader if there is none, a *RowError (wrapped) if it is malformed.
func NewReader(r io.Reader) (*Reader, error) {
	src := &countingReader{r: r}
	lr := newLineReader(src)
	prefix, atEOF := lr.prefix()
	if lr.err != nil {
		return nil, fmt.Errorf("csvin: %w", lr.err)
	}
	enc, bom := sniffEncoding(prefix, atEOF)
	rd := &Reader{lr: lr, enc: enc}
	switch enc {
	case encUTF16LE, encUTF16BE:
		order := xunicode.LittleEndian
		if enc == encUTF16BE {
			order = xunicode.BigEndian
		}
		rest := bytes.NewReader(bytes.Clone(prefix[bom:]))
		dec := xunicode.UTF16(order, xunicode.IgnoreBOM).NewDecoder()
		rd.lr = newLineReader(transform.NewReader(io.MultiReader(rest, src), dec))
		rd.utf16 = src
		if prefix, atEOF = rd.lr.prefix(); rd.lr.err != nil {
			return nil, fmt.Errorf("csvin: %w", rd.lr.err)
		}
	default:
		lr.skip(bom)
		prefix = prefix[bom:]
		rd.dec.cp1252 = enc == enc1252
	}
	rd.delim = sniffDelimiter(prefix, atEOF)
	rec, err := rd.Next()
	switch {
	case err == io.EOF:
		return nil, ErrNoHeader
	case err != nil:
		return nil, fmt.Errorf("csvin: reading the header: %w", err)
	}
	rd.header = make([]string, len(rec.Fields))
	for i, f := range rec.Fields {
		rd.header[i] = trimName(f)
	}
	return rd, nil
}

// trimName trims spaces and byte order marks from both ends of a name.
func trimName(s string) string {
	return strings.TrimFunc(s, func(r rune) bool { return unicode.IsSpace(r) || r == '\uFEFF' })
}

// Encoding is what NewReader detected: "utf-8", "utf-8-bom", "utf-16le",
// "utf-16be" or "windows-1252".
func (r *Reader) Encoding() string { return r.enc }

// Delimiter is the detected delimiter.
func (r *Reader) Delimiter() rune { return rune(r.delim) }

// Header is the header record: each name trimmed of spaces and of a
// leftover BOM. The caller must not modify it.
func (r *Reader) Header() []string { return r.header }

// Lines is how many physical lines have been read so far (for progress).
func (r *Reader) Lines() int { return r.lr.lines }

// Bytes is how many input bytes have been consumed so far (for a progress
// bar against the file size). It is exact for UTF-8 and Windows-1252
// files; for UTF-16 it is an estimate until the end, where it is exact.
func (r *Reader) Bytes() int64 {
	if r.utf16 == nil {
		return r.lr.consumed
	}
	n := r.utf16.n
	if r.done == nil {
		n -= 2 * int64(r.lr.w-r.lr.r)
	}
	r.seen = max(r.seen, n)
	return r.seen
}

// Record is one data row.
type Record struct {
	Line   int      // the physical line (1-based, the header is usually line 1) the row starts on
	Fields []string // decoded to UTF-8, not trimmed; fewer or more than the header is allowed
	Raw    string   // the row as text (fields re-joined with the delimiter, quoted where needed), at most 1,000 bytes, for a reject report
}

// RowError is a row that could not be read.
type RowError struct {
	Line int    // the physical line the row starts on
	Raw  string // the text of that line, at most 1,000 bytes
	Err  error  // why: csv.ErrBareQuote, csv.ErrQuote (wrapped for an unclosed quote), or a row too long
}

// Error says where and why, as in `line 12: bare " in non-quoted-field`.
func (e *RowError) Error() string { return fmt.Sprintf("line %d: %v", e.Line, e.Err) }

// Unwrap returns the cause, for errors.Is(err, csv.ErrBareQuote) and the like.
func (e *RowError) Unwrap() error { return e.Err }

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
