package csvin

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"testing"
)

// benchRows is how many data rows each benchmark file has.
const benchRows = 1_000_000

// benchFile makes a contact list of benchRows rows like
// "ana.quispe123@example.com.pe,Ana Quispe 123,Lima,2026-01-01,activo";
// cp1252 puts Windows-1252 accents in every tenth row; quoted quotes every
// field, as some legacy systems do.
func benchFile(cp1252, quoted bool) []byte {
	cities := []string{"Lima", "Cusco", "Arequipa", "Piura"}
	accented := "Ca\xf1ete" // "Cañete"
	b := make([]byte, 0, 70*benchRows)
	b = append(b, "correo,nombre,ciudad,fecha,estado\r\n"...)
	for i := range benchRows {
		n := strconv.Itoa(i)
		city := cities[i%len(cities)]
		if cp1252 && i%10 == 0 {
			city = accented
		}
		if quoted {
			b = append(b, `"ana.quispe`+n+`@example.com.pe","Ana Quispe `+n+`","`+city+`","2026-01-01","activo"`+"\r\n"...)
		} else {
			b = append(b, "ana.quispe"+n+"@example.com.pe,Ana Quispe "+n+","+city+",2026-01-01,activo\r\n"...)
		}
	}
	return b
}

// BenchmarkReader reads a million rows per iteration.
func BenchmarkReader(b *testing.B) {
	for _, tc := range []struct {
		name   string
		cp1252 bool
		quoted bool
		enc    string
	}{{"utf-8", false, false, "utf-8"}, {"windows-1252", true, false, "windows-1252"}, {"quoted", false, true, "utf-8"}} {
		in := benchFile(tc.cp1252, tc.quoted)
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(in)))
			for b.Loop() {
				if err := readAll(bytes.NewReader(in), tc.enc); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(benchRows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(benchRows)/float64(b.N), "ns/row")
		})
	}
}

// readAll reads every row and checks the count and the encoding.
func readAll(in io.Reader, enc string) error {
	r, err := NewReader(in)
	if err != nil {
		return err
	}
	if r.Encoding() != enc {
		return fmt.Errorf("encoding %s, want %s", r.Encoding(), enc)
	}
	n := 0
	for {
		rec, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if len(rec.Fields) != 5 {
			return fmt.Errorf("line %d: %q", rec.Line, rec.Fields)
		}
		n++
	}
	if n != benchRows {
		return fmt.Errorf("%d rows, want %d", n, benchRows)
	}
	return nil
}
