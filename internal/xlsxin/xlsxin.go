// Package xlsxin reads the contact lists that staff save from Excel as
// .xlsx workbooks, of any size, row by row, in the shape internal/csvin
// gives a CSV file: a header and data rows of strings, each with the
// number of the spreadsheet row it came from.
//
// An .xlsx file is a zip archive, which is read from its end, so
// NewReader first copies its input to a temporary file. It then opens that
// file with excelize, which unzips the worksheets and the shared strings
// table bigger than 1 MiB to temporary files too and holds the rest in
// memory (styles, the workbook, small sheets, pictures: at most 256 MiB
// unzipped, else ErrTooLarge), and reads the first visible worksheet with
// excelize's streaming row reader (Rows), so memory does not grow with the
// number of rows, only with the number of distinct texts in the shared
// strings table: excelize indexes each in memory (about 100 bytes a
// string). Measured on 1,000,000 rows × 4 columns: a peak RSS of 25 MB
// with inline strings, 200–240 MB with the address and the name of every
// row in the shared strings table, as Excel saves them. Disk use is about
// the file's size plus its sheets' and shared strings' unzipped sizes
// (10–13 times the file's size), all under one temporary directory that
// Close removes.
//
// The header is the first row with a non-blank cell, each name trimmed;
// rows with only blank cells are skipped, as csvin skips blank lines. A
// cell's value is the text Excel displays (the cached result for a
// formula cell; a text cell starting with "=" is text, never evaluated),
// with two exceptions: a number in the General format has no ".0" noise
// ("1234", "0.5"), and a date in the system short date formats (Excel's
// built-in formats 14 and 22, which Excel uses for a typed date) is
// YYYY-MM-DD (and hh:mm); a date in any other format is as displayed.
//
// Refused with an error naming the problem: an .xls (Excel 97-2003)
// file, a password-protected (encrypted) workbook, an OpenDocument
// spreadsheet, anything else that is not an .xlsx workbook, a workbook
// with no visible worksheet, and a worksheet with no header row.
package xlsxin

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"unicode"

	"github.com/xuri/excelize/v2"
)

// The errors of NewReader, for errors.Is; their text is for a person.
var (
	ErrXLS         = errors.New("xlsxin: an .xls (Excel 97-2003) file: save it as .xlsx or CSV")
	ErrEncrypted   = errors.New("xlsxin: the workbook is password-protected (encrypted): save a copy without a password, as .xlsx or CSV")
	ErrODS         = errors.New("xlsxin: an OpenDocument (.ods) spreadsheet: save it as .xlsx or CSV")
	ErrNotWorkbook = errors.New("xlsxin: not an .xlsx workbook")
	ErrTooLarge    = errors.New("xlsxin: the workbook is too large")
	ErrNoSheet     = errors.New("xlsxin: the workbook has no visible worksheet")
	ErrNoHeader    = errors.New("xlsxin: the worksheet has no header row")
)

// ErrDamaged is returned by Next when a worksheet ends before the last
// row its dimension names: its XML is cut or malformed (excelize's row
// reader stops there without saying so).
var ErrDamaged = errors.New("xlsxin: the worksheet is damaged")

// ErrClosed is returned by Next after Close.
var ErrClosed = errors.New("xlsxin: reader closed")

// inMemoryXML is the unzipped size up to which excelize keeps a worksheet
// or the shared strings table in memory; bigger ones go to TmpDir.
const inMemoryXML = 1 << 20

// maxRaw bounds Record.Raw and RowError.Raw.
const maxRaw = 1000

// Config says where a Reader keeps its temporary files and how big a
// workbook it takes. The zero Config is ready to use.
type Config struct {
	// TmpDir is the directory under which each Reader makes its own
	// temporary directory: default os.TempDir().
	TmpDir string
	// MaxUnzipped bounds both the file's size and the sum of the unzipped
	// sizes of its parts (so a zip bomb stops there): default 4 GiB.
	MaxUnzipped int64
}

func (c Config) maxUnzipped() int64 {
	if c.MaxUnzipped <= 0 {
		return 4 << 30
	}
	return c.MaxUnzipped
}

// Reader reads the first visible worksheet of an .xlsx workbook as
// records. Next, Bytes and Close may be called from different goroutines:
// each waits for the call in progress.
type Reader struct {
	mu      sync.Mutex
	dir     string // the temporary directory, removed by Close
	f       *excelize.File
	rows    *excelize.Rows // nil once closed
	sheet   string
	header  []string
	line    int   // the spreadsheet row read last
	lastRow int   // the last row of the sheet's dimension, 0 if unknown
	size    int64 // the file's size
	done    error // io.EOF or the error every later Next returns
}

// Record is one data row.
type Record struct {
	Line   int      // the spreadsheet row number (1-based)
	Fields []string // cell values, at least as many as the header (padded with ""); the caller's to keep
	Raw    string   // the fields joined with ",", quoted where needed (RFC 4180), at most 1,000 bytes, for a reject report
}

// RowError is a row that could not be read (a bad cell reference or a
// shared string index out of range); reading can go on with Next.
type RowError struct {
	Line int    // the spreadsheet row number
	Raw  string // the cells read before the error, as in Record.Raw
	Err  error
}

// Error says where and why.
func (e *RowError) Error() string { return fmt.Sprintf("row %d: %v", e.Line, e.Err) }

// Unwrap returns the cause.
func (e *RowError) Unwrap() error { return e.Err }

// NewReader copies r to a temporary file, opens it as a workbook, picks
// the first visible worksheet (chart and dialog sheets do not count) and
// reads its header row. The errors wrap the Err variables of this package
// where one applies. The caller must Close the Reader.
func NewReader(r io.Reader, c Config) (_ *Reader, err error) {
	dir, err := os.MkdirTemp(c.TmpDir, "xlsxin-")
	if err != nil {
		return nil, fmt.Errorf("xlsxin: %w", err)
	}
	rd := &Reader{dir: dir}
	defer func() {
		if err != nil {
			_ = rd.Close()
		}
	}()
	path, magic, err := rd.spool(r, c.maxUnzipped())
	if err != nil {
		return nil, err
	}
	if err := sniff(path, magic); err != nil {
		return nil, err
	}
	sh, err := firstSheet(path)
	if err != nil {
		return nil, err
	}
	rd.sheet, rd.lastRow = sh.name, sh.lastRow
	rd.f, err = excelize.OpenFile(path, excelize.Options{UnzipSizeLimit: c.maxUnzipped(), UnzipXMLSizeLimit: min(inMemoryXML, c.maxUnzipped()),
		TmpDir: dir, ShortDatePattern: "yyyy-mm-dd"})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotWorkbook, err)
	}
	// Everything excelize needs of the file is in memory or unzipped now.
	if err := os.Remove(path); err != nil {
		return nil, fmt.Errorf("xlsxin: %w", err)
	}
	if rd.rows, err = rd.f.Rows(rd.sheet); err != nil {
		return nil, fmt.Errorf("%w: sheet %q: %v", ErrNotWorkbook, rd.sheet, err)
	}
	if err := rd.readHeader(); err != nil {
		return nil, err
	}
	return rd, nil
}

// spool copies r to a file in the temporary directory, returning its path
// and its first 8 bytes.
func (r *Reader) spool(in io.Reader, limit int64) (path string, magic []byte, err error) {
	f, err := os.CreateTemp(r.dir, "workbook-*.xlsx")
	if err != nil {
		return "", nil, fmt.Errorf("xlsxin: %w", err)
	}
	defer f.Close()
	n, err := io.Copy(f, io.LimitReader(in, limit+1))
	if err != nil {
		return "", nil, fmt.Errorf("xlsxin: reading the file: %w", err)
	}
	if n > limit {
		return "", nil, fmt.Errorf("%w: more than %d bytes", ErrTooLarge, limit)
	}
	r.size = n
	magic = make([]byte, 8)
	k, _ := f.ReadAt(magic, 0)
	if err := f.Close(); err != nil {
		return "", nil, fmt.Errorf("xlsxin: %w", err)
	}
	return f.Name(), magic[:k], nil
}

// readHeader reads rows up to the first non-blank one, the header.
func (r *Reader) readHeader() error {
	for {
		cells, err := r.nextRow()
		var re *RowError
		switch {
		case err == io.EOF:
			return fmt.Errorf("%w: sheet %q is empty", ErrNoHeader, r.sheet)
		case errors.As(err, &re):
			return fmt.Errorf("xlsxin: reading the header: %w", err)
		case err != nil:
			return err
		case blank(cells):
			continue
		}
		r.header = make([]string, len(cells))
		for i, c := range cells {
			r.header[i] = strings.TrimFunc(c, func(r rune) bool { return unicode.IsSpace(r) || r == '\uFEFF' })
		}
		return nil
	}
}

// Sheet is the name of the worksheet being read.
func (r *Reader) Sheet() string { return r.sheet }

// Header is the header row, each name trimmed of spaces. The caller must
// not modify it.
func (r *Reader) Header() []string { return r.header }

// Next returns the next data row, skipping rows whose cells are all blank;
// io.EOF at the end. A row that cannot be read is a *RowError, and Next
// can be called again after it; any other error ends the reading, such as
// ErrDamaged for a sheet whose XML is cut short.
func (r *Reader) Next() (Record, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		cells, err := r.nextRow()
		if err != nil {
			return Record{}, err
		}
		if blank(cells) {
			continue
		}
		for len(cells) < len(r.header) {
			cells = append(cells, "")
		}
		return Record{Line: r.line, Fields: cells, Raw: joinRaw(cells)}, nil
	}
}

// nextRow returns the cells of the next spreadsheet row (trailing blank
// cells may be missing). r.mu is held, or r is not shared yet.
func (r *Reader) nextRow() ([]string, error) {
	if r.rows == nil {
		return nil, ErrClosed
	}
	if r.done != nil {
		return nil, r.done
	}
	if !r.rows.Next() {
		switch err := r.rows.Error(); {
		case err != nil:
			r.done = fmt.Errorf("xlsxin: sheet %q after row %d: %w", r.sheet, r.line, err)
		case r.line < r.lastRow:
			r.done = fmt.Errorf("%w: sheet %q ends at row %d, but its dimension goes to row %d: save it again from Excel", ErrDamaged, r.sheet, r.line, r.lastRow)
		default:
			r.done = io.EOF
		}
		return nil, r.done
	}
	// excelize's Next steps through the rows missing from the sheet too,
	// so counting the calls gives the row number.
	r.line++
	cells, err := r.rows.Columns()
	if err != nil {
		return nil, &RowError{Line: r.line, Raw: joinRaw(cells), Err: err}
	}
	return cells, nil
}

// Bytes estimates how much of the file has been read (for a progress bar
// against the file's size): the share of the sheet's rows read, when the
// sheet states its dimension as Excel does, else 0; the size at the end.
func (r *Reader) Bytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.done == io.EOF:
		return r.size
	case r.lastRow <= 0:
		return 0
	}
	return r.size * int64(min(r.line, r.lastRow)) / int64(r.lastRow)
}

// Close releases the workbook and removes the temporary files. It waits
// for a Next in progress; Next returns ErrClosed after it.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var errs []error
	if r.rows != nil {
		_ = r.rows.Close() // a temporary file open for reading (its error is Rows.Error's, reported by Next)
		r.rows = nil
	}
	if r.f != nil {
		errs = append(errs, r.f.Close())
		r.f = nil
	}
	if r.dir != "" {
		errs = append(errs, os.RemoveAll(r.dir))
		r.dir = ""
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("xlsxin: close: %w", err)
	}
	return nil
}

// blank reports whether every cell is empty or spaces.
func blank(cells []string) bool {
	for _, c := range cells {
		if strings.TrimSpace(c) != "" {
			return false
		}
	}
	return true
}

// joinRaw joins cells with ",", quoting those that need it, cut to maxRaw
// bytes on a rune boundary.
func joinRaw(cells []string) string {
	var b strings.Builder
	for i, c := range cells {
		if i > 0 {
			b.WriteByte(',')
		}
		if c == "" || !strings.ContainsAny(c, ",\"\r\n") && c[0] != ' ' && c[len(c)-1] != ' ' {
			b.WriteString(c)
		} else {
			b.WriteByte('"')
			b.WriteString(strings.ReplaceAll(c, `"`, `""`))
			b.WriteByte('"')
		}
		if b.Len() > maxRaw {
			break
		}
	}
	return strings.ToValidUTF8(clip(b.String()), "")
}

// clip cuts s to at most maxRaw bytes on a rune boundary.
func clip(s string) string {
	if len(s) <= maxRaw {
		return s
	}
	n := maxRaw
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
