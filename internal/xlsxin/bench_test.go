package xlsxin

import (
	"archive/zip"
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/xuri/excelize/v2"
)

var itoa = strconv.Itoa

var cities = []string{"Lima", "Cusco", "Arequipa", "Piura"}

// benchRow is data row i (1-based) of the generated workbooks: four
// columns, an address, a name, a city and a number.
func benchRow(i int) (email, name, city string, n int) {
	return "persona." + itoa(i) + "@example.com.pe", "Persona Número " + itoa(i), cities[i%len(cities)], 1000 + i
}

// streamBook writes a workbook of n data rows with excelize's
// StreamWriter (inline strings, no dimension) to path.
func streamBook(path string, n int) error {
	f := excelize.NewFile()
	defer f.Close()
	sw, err := f.NewStreamWriter("Sheet1")
	if err != nil {
		return err
	}
	if err := sw.SetRow("A1", []any{"correo", "nombre", "ciudad", "codigo"}); err != nil {
		return err
	}
	for i := 1; i <= n; i++ {
		email, name, city, code := benchRow(i)
		if err := sw.SetRow("A"+itoa(i+1), []any{email, name, city, code}); err != nil {
			return err
		}
	}
	if err := sw.Flush(); err != nil {
		return err
	}
	return f.SaveAs(path)
}

// writeSharedStringsBook writes a workbook of n data rows as Excel saves
// one: every text in the shared strings table, a dimension, no styles.
func writeSharedStringsBook(w io.Writer, n int) error {
	const (
		main = `xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"`
		rel  = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
		ct   = "application/vnd.openxmlformats-officedocument.spreadsheetml."
	)
	zw := zip.NewWriter(w)
	parts := []struct{ name, body string }{
		{"[Content_Types].xml", `<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">` +
			`<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/><Default Extension="xml" ContentType="application/xml"/>` +
			`<Override PartName="/xl/workbook.xml" ContentType="` + ct + `sheet.main+xml"/>` +
			`<Override PartName="/xl/worksheets/sheet1.xml" ContentType="` + ct + `worksheet+xml"/>` +
			`<Override PartName="/xl/sharedStrings.xml" ContentType="` + ct + `sharedStrings+xml"/></Types>`},
		{"_rels/.rels", `<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` +
			`<Relationship Id="rId1" Type="` + rel + `/officeDocument" Target="xl/workbook.xml"/></Relationships>`},
		{"xl/workbook.xml", `<workbook ` + main + ` xmlns:r="` + rel + `"><sheets><sheet name="Hoja1" sheetId="1" r:id="rId1"/></sheets></workbook>`},
		{"xl/_rels/workbook.xml.rels", `<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">` +
			`<Relationship Id="rId1" Type="` + rel + `/worksheet" Target="worksheets/sheet1.xml"/>` +
			`<Relationship Id="rId2" Type="` + rel + `/sharedStrings" Target="sharedStrings.xml"/></Relationships>`},
	}
	for _, p := range parts {
		pw, err := zw.Create(p.name)
		if err != nil {
			return err
		}
		if _, err := io.WriteString(pw, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>`+"\n"+p.body); err != nil {
			return err
		}
	}
	// Shared strings: the 4 header names, the 4 cities, then each row's
	// address and name.
	pw, err := zw.Create("xl/worksheets/sheet1.xml")
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(pw)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>`+"\n"+`<worksheet %s><dimension ref="A1:D%d"/><sheetData>`, main, n+1)
	bw.WriteString(`<row r="1"><c r="A1" t="s"><v>0</v></c><c r="B1" t="s"><v>1</v></c><c r="C1" t="s"><v>2</v></c><c r="D1" t="s"><v>3</v></c></row>`)
	for i := 1; i <= n; i++ {
		_, _, _, code := benchRow(i)
		r := itoa(i + 1)
		fmt.Fprintf(bw, `<row r="%s"><c r="A%s" t="s"><v>%d</v></c><c r="B%s" t="s"><v>%d</v></c><c r="C%s" t="s"><v>%d</v></c><c r="D%s"><v>%d</v></c></row>`,
			r, r, 8+2*(i-1), r, 9+2*(i-1), r, 4+i%len(cities), r, code)
	}
	bw.WriteString(`</sheetData></worksheet>`)
	if err := bw.Flush(); err != nil {
		return err
	}
	if pw, err = zw.Create("xl/sharedStrings.xml"); err != nil {
		return err
	}
	bw = bufio.NewWriter(pw)
	fmt.Fprintf(bw, `<?xml version="1.0" encoding="UTF-8" standalone="yes"?>`+"\n"+`<sst %s count="%d" uniqueCount="%d">`, main, 4+3*n, 8+2*n)
	for _, s := range append([]string{"correo", "nombre", "ciudad", "codigo"}, cities...) {
		fmt.Fprintf(bw, "<si><t>%s</t></si>", s)
	}
	for i := 1; i <= n; i++ {
		email, name, _, _ := benchRow(i)
		fmt.Fprintf(bw, "<si><t>%s</t></si><si><t>%s</t></si>", email, name)
	}
	bw.WriteString("</sst>")
	if err := bw.Flush(); err != nil {
		return err
	}
	return zw.Close()
}

// sharedStringsBook is writeSharedStringsBook's workbook in memory.
func sharedStringsBook(t testing.TB, n int) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := writeSharedStringsBook(&b, n); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// BenchmarkReadXLSX reads a workbook of ENVIOS_BENCH_ROWS (default
// 1,000,000) rows of 4 columns, written by excelize's StreamWriter
// (inline strings) or as Excel writes one (shared strings), and reports
// rows/s and the peak RSS of the reading alone: the file is written
// beforehand by a child process (TestWriteBenchFile), and the process's
// high-water mark is reset before the clock starts.
func BenchmarkReadXLSX(b *testing.B) {
	n := benchRows()
	for _, kind := range []string{"inline-strings", "shared-strings"} {
		b.Run(kind, func(b *testing.B) {
			path := filepath.Join(b.TempDir(), "contactos.xlsx")
			cmd := exec.Command(os.Args[0], "-test.run=^TestWriteBenchFile$")
			cmd.Env = append(os.Environ(), "XLSXIN_BENCH_FILE="+path, "XLSXIN_BENCH_KIND="+kind)
			if out, err := cmd.CombinedOutput(); err != nil {
				b.Fatalf("writing the file: %v\n%s", err, out)
			}
			fi, err := os.Stat(path)
			if err != nil {
				b.Fatal(err)
			}
			resetPeakRSS()
			cpu0 := cpuTime()
			for b.Loop() {
				if err := readFile(path, b.TempDir(), n); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(n*b.N)/(cpuTime()-cpu0).Seconds(), "rows/cpu-s")
			b.ReportMetric(peakRSS(), "peak-RSS-MB")
			b.ReportMetric(float64(fi.Size())/(1<<20), "file-MB")
		})
	}
}

func benchRows() int {
	if n, err := strconv.Atoi(os.Getenv("ENVIOS_BENCH_ROWS")); err == nil && n > 0 {
		return n
	}
	return 1_000_000
}

// TestWriteBenchFile writes BenchmarkReadXLSX's workbook, in the child
// process it starts.
func TestWriteBenchFile(t *testing.T) {
	path := os.Getenv("XLSXIN_BENCH_FILE")
	if path == "" {
		t.Skip("run by BenchmarkReadXLSX")
	}
	if os.Getenv("XLSXIN_BENCH_KIND") == "inline-strings" {
		if err := streamBook(path, benchRows()); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeSharedStringsBook(f, benchRows()); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// readFile reads every row of the workbook at path and checks them.
func readFile(path, tmp string, n int) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	r, err := NewReader(in, Config{TmpDir: tmp})
	if err != nil {
		return err
	}
	defer r.Close()
	rows := 0
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		rows++
		if len(rec.Fields) != 4 || rec.Line != rows+1 || !strings.HasPrefix(rec.Fields[0], "persona.") {
			return fmt.Errorf("row %d: %+v", rows, rec)
		}
	}
	if rows != n {
		return fmt.Errorf("%d rows, want %d", rows, n)
	}
	return r.Close()
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// resetPeakRSS resets the process's resident set high-water mark (Linux).
func resetPeakRSS() { _ = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) }

// peakRSS is the process's resident set high-water mark (VmHWM), in MB.
func peakRSS() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}
