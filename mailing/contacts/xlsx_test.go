package contacts_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/uptrace/bun"
	"github.com/xuri/excelize/v2"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing/contacts"
)

// workbook is an .xlsx file of the rows given, row 1 first (nil for a
// blank row), as excelize writes it (shared strings, as Excel does).
func workbook(t testing.TB, rows ...[]any) []byte {
	t.Helper()
	f := excelize.NewFile()
	defer f.Close()
	for i, r := range rows {
		cell, err := excelize.CoordinatesToCellName(1, i+1)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.SetSheetRow("Sheet1", cell, &r); err != nil {
			t.Fatal(err)
		}
	}
	b, err := f.WriteToBuffer()
	if err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// An .xlsx file imports as its CSV export would: column mapping, rejects
// with the spreadsheet's row numbers, formula-like text kept as text; and
// leaves no temporary file behind, whether the import works or not.
func TestImportXLSX(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	file := workbook(t,
		[]any{"Correo electrónico", "Nombres", "Apellidos", "DNI"},
		[]any{"pena@example.org", "María", "Peña", 12345678},
		[]any{"nunez@example.org", "Luis", "Núñez"},
		[]any{"no-es-correo", "X"},
		nil,
		[]any{"f@example.org", `=HYPERLINK("http://x","y")`},
		[]any{"", "Sin correo"},
	)
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		ctx := context.Background()
		im, err := s.Import(ctx, bytes.NewReader(file), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", FileName: "personal.xlsx", Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if im.Encoding != "xlsx" || im.Delimiter != "" || im.Read != 5 || im.Added != 3 || im.Rejected != 2 || len(im.Rejects) != 2 {
			t.Fatalf("import %+v", im)
		}
		if r := im.Rejects[0]; r.Line != 4 || !strings.HasPrefix(r.Reason, `invalid address: "no-es-correo"`) || r.Raw != "no-es-correo,X,," {
			t.Errorf("reject %+v, want row 4's invalid address", r)
		}
		if r := im.Rejects[1]; r.Line != 7 || r.Reason != "no address" {
			t.Errorf("reject %+v, want row 7's missing address", r)
		}
		var name, attrs string
		if err := db.NewRaw("SELECT name, attrs FROM contacts WHERE address = 'pena@example.org'").Scan(ctx, &name, &attrs); err != nil ||
			name != "María" || !strings.Contains(attrs, "Peña") || !strings.Contains(attrs, `"12345678"`) {
			t.Errorf("contact %q %q %v", name, attrs, err)
		}
		if err := db.NewRaw("SELECT name FROM contacts WHERE address = 'f@example.org'").Scan(ctx, &name); err != nil || name != `=HYPERLINK("http://x","y")` {
			t.Errorf("formula-like name %q %v", name, err)
		}
		// The mapping applies as to CSV, and its errors too.
		again, err := s.Import(ctx, bytes.NewReader(file), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Mode: contacts.ModeUpdate,
			Map: "email=correo electronico,name=apellidos", Actor: "test"})
		if err != nil || again.Updated != 3 {
			t.Fatalf("update with a mapping: %+v %v", again, err)
		}
		if err := db.NewRaw("SELECT name FROM contacts WHERE address = 'nunez@example.org'").Scan(ctx, &name); err != nil || name != "Núñez" {
			t.Errorf("mapped name %q %v", name, err)
		}
		_, err = s.Import(ctx, bytes.NewReader(file), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Map: "email=Correo", Actor: "test"})
		if !errors.Is(err, contacts.ErrInvalid) || !strings.Contains(err.Error(), "Correo") {
			t.Errorf("a mapping naming no column: %v", err)
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "xlsxin-*")); len(left) > 0 {
			t.Errorf("temporary files left: %v", left)
		}
	})
}

// Workbooks that cannot be read are refused, saying why.
func TestImportXLSXRefused(t *testing.T) {
	var encrypted bytes.Buffer
	f := excelize.NewFile()
	if err := f.SetCellValue("Sheet1", "A1", "email"); err != nil {
		t.Fatal(err)
	}
	if err := f.Write(&encrypted, excelize.Options{Password: "clave"}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		for _, tc := range []struct {
			name string
			in   []byte
			want string
		}{
			{"xls", append([]byte{0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1}, make([]byte, 512)...), "an .xls (Excel 97-2003) file: save it as .xlsx or CSV"},
			{"encrypted", encrypted.Bytes(), "password-protected"},
			{"no header", workbook(t), "no header row"},
			{"no address column", workbook(t, []any{"Nombre", "DNI"}, []any{"Ana", 1}), "no column holds the e-mail address"},
		} {
			_, err := s.Import(context.Background(), bytes.NewReader(tc.in), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
			if !errors.Is(err, contacts.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
			}
		}
	})
}

// BenchmarkImportXLSX is BenchmarkImport with the same rows in an .xlsx
// file (written by excelize's StreamWriter, in a child process so that it
// does not count in the peak RSS): ENVIOS_BENCH_ROWS (default 100,000).
func BenchmarkImportXLSX(b *testing.B) {
	n := 100_000
	if s := os.Getenv("ENVIOS_BENCH_ROWS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	path := filepath.Join(b.TempDir(), "contactos.xlsx")
	cmd := exec.Command(os.Args[0], "-test.run=^TestWriteXLSXBenchFile$")
	cmd.Env = append(os.Environ(), "CONTACTS_XLSX_BENCH_FILE="+path, fmt.Sprintf("ENVIOS_BENCH_ROWS=%d", n))
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("writing the file: %v\n%s", err, out)
	}
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		s := store(b, db)
		ctx := context.Background()
		i := 0
		for b.Loop() {
			i++
			list := fmt.Sprintf("lista-%d", i)
			if _, err := s.CreateList(ctx, "sjti/talento", list, "", "bench"); err != nil {
				b.Fatal(err)
			}
			file, err := os.Open(path)
			if err != nil {
				b.Fatal(err)
			}
			im, err := s.Import(ctx, file, contacts.ImportOptions{Account: "sjti/talento", List: list, Mode: contacts.ModeAdd, Actor: "bench"})
			file.Close()
			if err != nil {
				b.Fatal(err)
			}
			if im.Read != int64(n) || im.Added+im.Unchanged+im.Updated != int64(n) {
				b.Fatalf("import %+v", im)
			}
		}
		b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(mailingtest.PeakRSS(), "peak-RSS-MB")
	})
}

// TestWriteXLSXBenchFile writes BenchmarkImportXLSX's file, in the child
// process it starts: BenchmarkImport's rows, as a workbook.
func TestWriteXLSXBenchFile(t *testing.T) {
	path := os.Getenv("CONTACTS_XLSX_BENCH_FILE")
	if path == "" {
		t.Skip("run by BenchmarkImportXLSX")
	}
	n, _ := strconv.Atoi(os.Getenv("ENVIOS_BENCH_ROWS"))
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sw.SetRow("A1", []any{"correo", "nombre", "ciudad", "dependencia", "fecha"}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		row := []any{fmt.Sprintf("persona.%d@example.com.pe", i), fmt.Sprintf("Persona Número %d", i), "Lima", fmt.Sprintf("Dirección %d", i%40),
			fmt.Sprintf("2026-0%d-15", 1+i%9)}
		if err := sw.SetRow("A"+strconv.Itoa(i+1), row); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.SaveAs(path); err != nil {
		t.Fatal(err)
	}
}
