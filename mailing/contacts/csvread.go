package contacts

import (
	"errors"
	"io"
	"slices"

	"github.com/servir-pe/envios/internal/csvin"
)

// csvFile reads a contacts file with internal/csvin (encoding and
// delimiter detected, streamed in constant memory).
type csvFile struct {
	r         *csvin.Reader
	encoding  string
	delimiter rune
	header    []string
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

func openCSV(in io.Reader) (*csvFile, error) {
	r, err := csvin.NewReader(in)
	if err != nil {
		return nil, err
	}
	return &csvFile{r: r, encoding: r.Encoding(), delimiter: r.Delimiter(), header: r.Header()}, nil
}

// next returns the next row (its fields copied), io.EOF at the end, or a
// *rowError for a malformed one (reading goes on after it).
func (f *csvFile) next() (record, error) {
	rec, err := f.r.Next()
	var re *csvin.RowError
	if errors.As(err, &re) {
		return record{}, &rowError{line: re.Line, raw: re.Raw, err: re.Err}
	}
	if err != nil {
		return record{}, err
	}
	return record{line: rec.Line, fields: slices.Clone(rec.Fields), raw: rec.Raw}, nil
}

func (e *rowError) Error() string { return e.err.Error() }

// bytesRead is how much of the file has been consumed (for progress).
func (f *csvFile) bytesRead() int64 { return f.r.Bytes() }

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
