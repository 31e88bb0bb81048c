package contacts

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"

	"github.com/servir-pe/envios/internal/csvin"
	"github.com/servir-pe/envios/internal/xlsxin"
)

// csvFile is a contacts file being read: CSV (internal/csvin: encoding
// and delimiter detected) or an .xlsx workbook (internal/xlsxin: its first
// visible worksheet), both streamed in constant memory. (The name is from
// when there was only CSV.)
type csvFile struct {
	src       source
	encoding  string // csvin's, or "xlsx"
	delimiter string // "" for a workbook
	header    []string
}

// source is the reader a csvFile wraps.
type source interface {
	next() (record, error)
	bytesRead() int64
	close() error
}

// record is one data row.
type record struct {
	line   int
	fields []string
	raw    string
}

// rowError is a row that could not be read, with its text.
type rowError struct {
	line int
	raw  string
	err  error
}

func (e *rowError) Error() string { return e.err.Error() }

// The first bytes of a zip archive (an .xlsx workbook) and of an OLE
// compound file (an .xls workbook, or an encrypted .xlsx one).
var (
	zipMagic = []byte("PK\x03\x04")
	oleMagic = []byte{0xD0, 0xCF, 0x11, 0xE0}
)

// openCSV opens a contacts file, telling its format from its first bytes
// (without losing them): a zip archive is an .xlsx workbook, an OLE file
// is handed to xlsxin too (which refuses an .xls or an encrypted workbook,
// saying which), anything else is CSV.
func openCSV(in io.Reader) (*csvFile, error) {
	br := bufio.NewReader(in)
	magic, err := br.Peek(len(zipMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	if bytes.Equal(magic, zipMagic) || bytes.Equal(magic, oleMagic) {
		r, err := xlsxin.NewReader(br, xlsxin.Config{})
		if err != nil {
			return nil, err
		}
		return &csvFile{src: xlsxSource{r}, encoding: "xlsx", header: r.Header()}, nil
	}
	r, err := csvin.NewReader(br)
	if err != nil {
		return nil, err
	}
	return &csvFile{src: csvSource{r}, encoding: r.Encoding(), delimiter: string(r.Delimiter()), header: r.Header()}, nil
}

// next returns the next row (its fields the caller's), io.EOF at the end,
// or a *rowError for a malformed one (reading goes on after it).
func (f *csvFile) next() (record, error) { return f.src.next() }

// bytesRead is how much of the file has been consumed (for progress).
func (f *csvFile) bytesRead() int64 { return f.src.bytesRead() }

// close releases the file's reader: a workbook's temporary files. It may
// be called while next runs in another goroutine (it waits for it), and
// more than once.
func (f *csvFile) close() {
	// Nothing to do about a temporary file that could not be removed.
	_ = f.src.close()
}

// csvSource reads a CSV file.
type csvSource struct{ r *csvin.Reader }

func (s csvSource) next() (record, error) {
	rec, err := s.r.Next()
	var re *csvin.RowError
	if errors.As(err, &re) {
		return record{}, &rowError{line: re.Line, raw: re.Raw, err: re.Err}
	}
	if err != nil {
		return record{}, err
	}
	return record{line: rec.Line, fields: slices.Clone(rec.Fields), raw: rec.Raw}, nil
}

func (s csvSource) bytesRead() int64 { return s.r.Bytes() }
func (s csvSource) close() error     { return nil }

// xlsxSource reads a workbook.
type xlsxSource struct{ r *xlsxin.Reader }

func (s xlsxSource) next() (record, error) {
	rec, err := s.r.Next()
	var re *xlsxin.RowError
	if errors.As(err, &re) {
		return record{}, &rowError{line: re.Line, raw: re.Raw, err: re.Err}
	}
	if err != nil {
		return record{}, err
	}
	return record{line: rec.Line, fields: rec.Fields, raw: rec.Raw}, nil
}

func (s xlsxSource) bytesRead() int64 { return s.r.Bytes() }
func (s xlsxSource) close() error     { return s.r.Close() }

// mapping says which columns of a file hold what.
type mapping struct {
	address int
	name    int
	attrs   map[string]int
}

func mapColumns(header []string, spec string) (mapping, error) {
	m, err := csvin.Map(header, spec)
	if err != nil {
		return mapping{}, err
	}
	return mapping{address: m.Address, name: m.Name, attrs: m.Attrs}, nil
}
