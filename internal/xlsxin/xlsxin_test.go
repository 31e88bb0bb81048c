package xlsxin

import (
	"archive/zip"
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
)

// book builds a workbook: fill gets a new file whose only sheet is
// "Sheet1", and what it writes is saved as .xlsx.
func book(t testing.TB, fill func(f *excelize.File) error) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	if err := fill(f); err != nil {
		t.Fatal(err)
	}
	b, err := f.WriteToBuffer()
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// cells sets cells of Sheet1: "A1", value, "B3", value, …
func cells(f *excelize.File, kv ...any) error {
	for i := 0; i < len(kv); i += 2 {
		if err := f.SetCellValue("Sheet1", kv[i].(string), kv[i+1]); err != nil {
			return err
		}
	}
	return nil
}

// styled sets a cell's value and its number format (a built-in ID, or a
// custom format code).
func styled(f *excelize.File, cell string, v any, numFmt int, custom string) error {
	st := &excelize.Style{NumFmt: numFmt}
	if custom != "" {
		st.CustomNumFmt = &custom
	}
	id, err := f.NewStyle(st)
	if err != nil {
		return err
	}
	if err := f.SetCellValue("Sheet1", cell, v); err != nil {
		return err
	}
	return f.SetCellStyle("Sheet1", cell, cell, id)
}

type row struct {
	line   int
	fields []string
}

// readerCase is a workbook and what a Reader reads of it.
type readerCase struct {
	name   string
	fill   func(f *excelize.File) error
	edit   func(t testing.TB, xlsx []byte) []byte // changes the saved file, if set
	header []string
	rows   []row
	raws   []string // the rows' Raw, where checked
}

func readerCases() []readerCase {
	date := time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)
	return []readerCase{
		{name: "header is the first non-blank row, trimmed", fill: func(f *excelize.File) error {
			return cells(f, "A1", "   ", "A3", "  Correo ", "B3", "Nombre\u00a0", "A4", "ana@example.pe", "B4", "Ana")
		}, header: []string{"Correo", "Nombre"}, rows: []row{{4, []string{"ana@example.pe", "Ana"}}}},
		{name: "short rows padded, long rows kept", fill: func(f *excelize.File) error {
			return cells(f, "A1", "correo", "B1", "nombre", "C1", "cargo", "A2", "ana@example.pe", "A3", "luis@example.pe", "D3", "extra", "B4", "Sin correo")
		}, header: []string{"correo", "nombre", "cargo"}, rows: []row{
			{2, []string{"ana@example.pe", "", ""}}, {3, []string{"luis@example.pe", "", "", "extra"}}, {4, []string{"", "Sin correo", ""}}},
			raws: []string{"ana@example.pe,,", "luis@example.pe,,,extra", ",Sin correo,"}},
		{name: "blank rows skipped, row numbers kept", fill: func(f *excelize.File) error {
			return cells(f, "A1", "correo", "A2", "a@example.pe", "A3", "", "B4", "  ", "A9", "b@example.pe")
		}, header: []string{"correo"}, rows: []row{{2, []string{"a@example.pe"}}, {9, []string{"b@example.pe"}}}},
		{name: "numbers without .0 noise", fill: func(f *excelize.File) error {
			return cells(f, "A1", "n", "B1", "dni", "C1", "x", "D1", "ok",
				"A2", 1234.0, "B2", 12345678, "C2", 0.1+0.2, "D2", true,
				"A3", 0.5, "B3", int64(987654321012), "C3", -3.25, "D3", false)
		}, header: []string{"n", "dni", "x", "ok"}, rows: []row{
			{2, []string{"1234", "12345678", "0.3", "TRUE"}}, {3, []string{"0.5", "987654321012", "-3.25", "FALSE"}}}},
		{name: "dates", fill: func(f *excelize.File) error {
			if err := cells(f, "A1", "corta", "B1", "con hora", "C1", "propia", "D1", "texto", "D2", "15/01/2026"); err != nil {
				return err
			}
			if err := styled(f, "A2", date, 14, ""); err != nil {
				return err
			}
			if err := styled(f, "B2", date.Add(90*time.Minute), 22, ""); err != nil {
				return err
			}
			return styled(f, "C2", date, 0, "dd/mm/yyyy")
		}, header: []string{"corta", "con hora", "propia", "texto"}, rows: []row{{2, []string{"2026-01-15", "2026-01-15 01:30", "15/01/2026", "15/01/2026"}}}},
		{name: "accents", fill: func(f *excelize.File) error {
			return cells(f, "A1", "Correo electrónico", "B1", "Apellidos", "A2", "pena@example.pe", "B2", "Peña", "A3", "nunez@example.pe", "B3", "Núñez")
		}, header: []string{"Correo electrónico", "Apellidos"}, rows: []row{{2, []string{"pena@example.pe", "Peña"}}, {3, []string{"nunez@example.pe", "Núñez"}}}},
		{name: "formula cells give their cached value", fill: func(f *excelize.File) error {
			if err := cells(f, "A1", "a", "B1", "b", "C1", "suma", "A2", 40, "B2", 2, "C2", 42); err != nil {
				return err
			}
			return f.SetCellFormula("Sheet1", "C2", "A2+B2")
		}, header: []string{"a", "b", "suma"}, rows: []row{{2, []string{"40", "2", "42"}}}},
		{name: "formula-like text is text", fill: func(f *excelize.File) error {
			return cells(f, "A1", "correo", "B1", "nombre", "A2", "f@example.pe", "B2", `=HYPERLINK("http://x","y")`)
		}, header: []string{"correo", "nombre"}, rows: []row{{2, []string{"f@example.pe", `=HYPERLINK("http://x","y")`}}},
			raws: []string{`f@example.pe,"=HYPERLINK(""http://x"",""y"")"`}},
		{name: "first visible sheet", fill: func(f *excelize.File) error {
			if _, err := f.NewSheet("Visible"); err != nil {
				return err
			}
			if err := f.SetCellValue("Visible", "A1", "email"); err != nil {
				return err
			}
			if err := f.SetCellValue("Visible", "A2", "v@example.pe"); err != nil {
				return err
			}
			if err := cells(f, "A1", "oculta"); err != nil {
				return err
			}
			f.SetActiveSheet(1)
			return f.SetSheetVisible("Sheet1", false)
		}, header: []string{"email"}, rows: []row{{2, []string{"v@example.pe"}}}},
		{name: "chart sheets do not count", fill: func(f *excelize.File) error {
			if err := cells(f, "A1", "n", "A2", 1, "A3", 2); err != nil {
				return err
			}
			if err := f.AddChartSheet("Grafico", &excelize.Chart{Type: excelize.Col,
				Series: []excelize.ChartSeries{{Name: "Sheet1!$A$1", Values: "Sheet1!$A$2:$A$3"}}}); err != nil {
				return err
			}
			return nil
		}, edit: chartFirst, header: []string{"n"}, rows: []row{{2, []string{"1"}}, {3, []string{"2"}}}},
	}
}

func TestReader(t *testing.T) {
	for _, tc := range readerCases() {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			in := book(t, tc.fill)
			if tc.edit != nil {
				in = tc.edit(t, in)
			}
			r, err := NewReader(bytes.NewReader(in), Config{TmpDir: dir})
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.Header(), tc.header) {
				t.Errorf("header %q, want %q", r.Header(), tc.header)
			}
			var got []row
			var raws []string
			for {
				rec, err := r.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, row{rec.Line, rec.Fields})
				raws = append(raws, rec.Raw)
			}
			if !slices.EqualFunc(got, tc.rows, func(a, b row) bool { return a.line == b.line && slices.Equal(a.fields, b.fields) }) {
				t.Errorf("rows\n got %+v\nwant %+v", got, tc.rows)
			}
			if tc.raws != nil && !slices.Equal(raws, tc.raws) {
				t.Errorf("raws %q, want %q", raws, tc.raws)
			}
			if r.Bytes() <= 0 {
				t.Errorf("Bytes %d at the end", r.Bytes())
			}
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := r.Next(); !errors.Is(err, ErrClosed) {
				t.Errorf("Next after Close: %v", err)
			}
			noFilesLeft(t, dir)
		})
	}
}

// chartFirst moves a workbook's last sheet, a chart sheet, to the front
// (excelize's MoveSheet panics on chart sheets).
func chartFirst(t testing.TB, in []byte) []byte {
	return editPart(t, in, "xl/workbook.xml", func(s string) string {
		first := s[strings.Index(s, "<sheet "):]
		first = first[:strings.Index(first, "</sheet>")+len("</sheet>")]
		s = strings.Replace(s, first, "", 1)
		return strings.Replace(s, "</sheets>", first+"</sheets>", 1)
	})
}

// editPart changes one part of a zip archive.
func editPart(t testing.TB, in []byte, name string, edit func(string) string) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(in), int64(len(in)))
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		if f.Name == name {
			b = []byte(edit(string(b)))
		}
		files = append(files, f.Name, string(b))
	}
	return zipOf(t, files...)
}

// noFilesLeft fails if dir is not empty.
func noFilesLeft(t *testing.T, dir string) {
	t.Helper()
	if left, _ := os.ReadDir(dir); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// zipOf is a zip archive of the named files.
func zipOf(t testing.TB, files ...string) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for i := 0; i < len(files); i += 2 {
		w, err := zw.Create(files[i])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(w, files[i+1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// zeros is a zip archive of one part of n zero bytes.
func zeros(t testing.TB, name string, n int64) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.CopyN(w, zeroReader{}, n); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

func TestRefused(t *testing.T) {
	plain := book(t, func(f *excelize.File) error { return cells(f, "A1", "email", "A2", "a@example.pe") })
	var encrypted bytes.Buffer
	f := excelize.NewFile()
	if err := f.SetCellValue("Sheet1", "A1", "email"); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(&encrypted, excelize.Options{Password: "clave"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	xls := append(slices.Clone(oleMagic), make([]byte, 1024)...) // OLE magic, not a valid compound file: taken as .xls
	hidden := zipOf(t, "xl/workbook.xml", `<workbook><sheets><sheet name="Oculta" sheetId="1" r:id="rId1" state="hidden"/></sheets></workbook>`,
		"xl/_rels/workbook.xml.rels", `<Relationships><Relationship Id="rId1" Type="http://x/worksheet" Target="worksheets/sheet1.xml"/></Relationships>`)
	for _, tc := range []struct {
		name string
		in   []byte
		c    Config
		want error
		text string
	}{
		{"encrypted", encrypted.Bytes(), Config{}, ErrEncrypted, "password-protected"},
		{"xls", xls, Config{}, ErrXLS, "an .xls (Excel 97-2003) file: save it as .xlsx or CSV"},
		{"csv", []byte("email\na@example.pe\n"), Config{}, ErrNotWorkbook, "not a zip archive"},
		{"empty", nil, Config{}, ErrNotWorkbook, "not a zip archive"},
		{"zip of something else", zipOf(t, "notas.txt", "hola"), Config{}, ErrNotWorkbook, "no part xl/workbook.xml"},
		{"ods", zipOf(t, "mimetype", "application/vnd.oasis.opendocument.spreadsheet"), Config{}, ErrODS, ".ods"},
		{"truncated", plain[:len(plain)/2], Config{}, ErrNotWorkbook, "not a valid zip"},
		{"no visible worksheet", hidden, Config{}, ErrNoSheet, `sheets "Oculta": hidden, or charts`},
		{"no sheet", zipOf(t, "xl/workbook.xml", "<workbook><sheets/></workbook>", "xl/_rels/workbook.xml.rels", "<Relationships/>"), Config{}, ErrNoSheet, "no sheet"},
		{"empty sheet", book(t, func(*excelize.File) error { return nil }), Config{}, ErrNoHeader, `sheet "Sheet1" is empty`},
		{"blank sheet", book(t, func(f *excelize.File) error { return cells(f, "B2", " ", "C7", "") }), Config{}, ErrNoHeader, "empty"},
		{"too large", plain, Config{MaxUnzipped: 1000}, ErrTooLarge, "more than 1000 bytes"},
		{"zip bomb", plain, Config{MaxUnzipped: int64(len(plain))}, ErrNotWorkbook, "unzip size exceeds"},
		{"zip bomb in memory", zeros(t, "xl/media/image1.png", maxInMemory+1), Config{}, ErrTooLarge, "unzip to 256 MiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.c.TmpDir = dir
			r, err := NewReader(bytes.NewReader(tc.in), tc.c)
			if err == nil {
				r.Close()
			}
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Errorf("%v, want %v with %q", err, tc.want, tc.text)
			}
			noFilesLeft(t, dir)
		})
	}
}

// A sheet bigger than the in-memory limit is read from a temporary file,
// as are its shared strings; Bytes follows the rows when the sheet has a
// dimension; Close may come while another goroutine reads.
func TestBigSheet(t *testing.T) {
	const n = 20000
	dir := t.TempDir()
	in := sharedStringsBook(t, n)
	r, err := NewReader(bytes.NewReader(in), Config{TmpDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if tmp, _ := os.ReadDir(mustOne(t, dir)); len(tmp) < 2 {
		t.Errorf("temporary files %v, want the sheet and the shared strings", tmp)
	}
	var last int64
	for i := 1; i <= n/2; i++ {
		rec, err := r.Next()
		if err != nil || rec.Line != i+1 || rec.Fields[0] != "persona."+itoa(i)+"@example.com.pe" {
			t.Fatalf("row %d: %+v %v", i, rec, err)
		}
		if b := r.Bytes(); b < last || b > int64(len(in)) {
			t.Fatalf("Bytes went from %d to %d (size %d)", last, b, len(in))
		} else {
			last = b
		}
	}
	if last < int64(len(in))/3 {
		t.Errorf("Bytes %d half way through %d bytes", last, len(in))
	}
	done := make(chan error)
	go func() {
		for {
			if _, err := r.Next(); err != nil {
				done <- err
				return
			}
		}
	}()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != io.EOF && !errors.Is(err, ErrClosed) {
		t.Fatalf("reading while closed: %v", err)
	}
	noFilesLeft(t, dir)
}

// A sheet whose XML breaks off is an error, not a short sheet.
func TestDamagedSheet(t *testing.T) {
	in := editPart(t, sharedStringsBook(t, 10), "xl/worksheets/sheet1.xml", func(s string) string {
		return strings.Replace(s, `<row r="5">`, `<row r="5"<`, 1)
	})
	r, err := NewReader(bytes.NewReader(in), Config{TmpDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for line := 2; ; line++ {
		rec, err := r.Next()
		if err != nil {
			if !errors.Is(err, ErrDamaged) || line != 5 || !strings.Contains(err.Error(), "ends at row 4, but its dimension goes to row 11") {
				t.Fatalf("row %d: %v, want ErrDamaged at row 5", line, err)
			}
			return
		}
		if rec.Line != line {
			t.Fatalf("row %d, want %d", rec.Line, line)
		}
	}
}

func mustOne(t *testing.T, dir string) string {
	t.Helper()
	d, err := os.ReadDir(dir)
	if err != nil || len(d) != 1 {
		t.Fatalf("%s holds %v %v, want one directory", dir, d, err)
	}
	return dir + "/" + d[0].Name()
}
