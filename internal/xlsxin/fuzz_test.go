package xlsxin

import (
	"archive/zip"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/xuri/excelize/v2"
)

var update = flag.Bool("update", false, "rewrite the seed corpus in testdata/fuzz")

// seeds are the workbooks of the checked-in seed corpus
// (testdata/fuzz/FuzzReader), made with excelize: go test -run
// TestSeedCorpus -update rewrites them.
func seeds(t testing.TB) map[string][]byte {
	return map[string][]byte{
		"shared-strings": book(t, func(f *excelize.File) error {
			return cells(f, "A1", "Correo", "B1", "Nombre", "C1", "DNI", "A2", "pena@example.pe", "B2", "Peña", "C2", 12345678,
				"A4", "nunez@example.pe", "B4", "Núñez, Luis", "D4", "extra")
		}),
		"inline-strings": book(t, func(f *excelize.File) error {
			sw, err := f.NewStreamWriter("Sheet1")
			if err != nil {
				return err
			}
			for i, r := range [][]any{{"email", "name", "alta"}, {"a@example.pe", "Ana", time.Date(2026, 1, 15, 0, 0, 0, 0, time.UTC)}, {nil, "sin correo"}} {
				if err := sw.SetRow("A"+strconv.Itoa(i+1), r); err != nil {
					return err
				}
			}
			return sw.Flush()
		}),
		"formulas": book(t, func(f *excelize.File) error {
			if err := cells(f, "A1", "email", "B1", "n", "A2", "f@example.pe", "B2", 42, "A3", `=HYPERLINK("http://x","y")`); err != nil {
				return err
			}
			return f.SetCellFormula("Sheet1", "B2", "40+2")
		}),
		"dates": book(t, func(f *excelize.File) error {
			if err := cells(f, "A1", "fecha", "B1", "propia"); err != nil {
				return err
			}
			if err := styled(f, "A2", time.Date(2026, 1, 15, 8, 30, 0, 0, time.UTC), 22, ""); err != nil {
				return err
			}
			return styled(f, "B2", 46037.5, 0, "dd/mm/yyyy")
		}),
		"hidden-first": book(t, func(f *excelize.File) error {
			if _, err := f.NewSheet("Datos"); err != nil {
				return err
			}
			if err := f.SetSheetRow("Datos", "B3", &[]any{"correo", "x@example.pe"}); err != nil {
				return err
			}
			f.SetActiveSheet(1)
			return f.SetSheetVisible("Sheet1", false)
		}),
		"empty": book(t, func(*excelize.File) error { return nil }),
	}
}

func TestSeedCorpus(t *testing.T) {
	if !*update {
		t.Skip("-update rewrites the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzReader")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, b := range seeds(t) {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(string(b)))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// stored is a copy of a zip archive whose parts are stored uncompressed
// with no CRC (which archive/zip then does not check), so that the
// fuzzer's changes reach the XML.
func stored(t testing.TB, in []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(in), int64(len(in)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		w, err := zw.CreateRaw(&zip.FileHeader{Name: f.Name, Method: zip.Store, CompressedSize64: uint64(len(b)), UncompressedSize64: uint64(len(b))})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// FuzzReader: NewReader and Next never panic and always end, leaving no
// temporary file after Close; their errors are this package's (or a
// *RowError); rows come in order, at least as wide as the header, with a
// bounded Raw and valid UTF-8.
func FuzzReader(f *testing.F) {
	for _, s := range [][]byte{nil, []byte("PK\x03\x04"), oleMagic, []byte("email\na@b.pe\n"), zipOf(f, "mimetype", "application/vnd.oasis.opendocument.spreadsheet")} {
		f.Add(s)
	}
	for _, b := range seeds(f) {
		f.Add(stored(f, b))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		dir := t.TempDir()
		r, err := NewReader(bytes.NewReader(in), Config{TmpDir: dir, MaxUnzipped: 64 << 20})
		if err != nil {
			known := false
			for _, e := range []error{ErrXLS, ErrEncrypted, ErrODS, ErrNotWorkbook, ErrTooLarge, ErrNoSheet, ErrNoHeader} {
				known = known || errors.Is(err, e)
			}
			if !known && !errors.As(err, new(*RowError)) {
				t.Fatalf("NewReader: unexpected error %v", err)
			}
			noFilesLeft(t, dir)
			return
		}
		defer func() {
			if err := r.Close(); err != nil {
				t.Fatal(err)
			}
			noFilesLeft(t, dir)
		}()
		last := 0
		for calls := 0; ; calls++ {
			if calls > excelize.TotalRows+1 {
				t.Fatalf("more than %d rows", calls)
			}
			rec, err := r.Next()
			if err == io.EOF {
				return
			}
			line, raw := rec.Line, rec.Raw
			var re *RowError
			switch {
			case errors.As(err, &re):
				line, raw = re.Line, re.Raw
			case err != nil:
				if _, again := r.Next(); again == nil {
					t.Fatalf("Next after %v read a row", err)
				}
				return
			case len(rec.Fields) < len(r.Header()):
				t.Fatalf("row %d: %d fields, header %d", line, len(rec.Fields), len(r.Header()))
			}
			if line <= last || len(raw) > maxRaw || !utf8.ValidString(raw) {
				t.Fatalf("row %d after %d, raw %q", line, last, raw)
			}
			last = line
		}
	})
}
