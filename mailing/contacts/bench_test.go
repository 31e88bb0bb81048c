package contacts_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing/contacts"
)

// genFile is a contacts CSV of n rows made as it is read (constant
// memory): correo, nombre and three attributes, about 90 bytes a row.
type genFile struct {
	n, i int
	buf  []byte
}

func (g *genFile) Read(p []byte) (int, error) {
	for len(g.buf) < len(p) && g.i <= g.n {
		if g.i == 0 {
			g.buf = append(g.buf, "correo,nombre,ciudad,dependencia,fecha\n"...)
		} else {
			g.buf = fmt.Appendf(g.buf, "persona.%d@example.com.pe,Persona Número %d,Lima,Dirección %d,2026-0%d-15\n", g.i, g.i, g.i%40, 1+g.i%9)
		}
		g.i++
	}
	if len(g.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, g.buf)
	g.buf = g.buf[:copy(g.buf, g.buf[n:])]
	return n, nil
}

// BenchmarkImport imports a file of ENVIOS_BENCH_ROWS (default 100,000)
// new contacts into an empty list and reports rows/s and peak RSS.
func BenchmarkImport(b *testing.B) {
	n := 100_000
	if s := os.Getenv("ENVIOS_BENCH_ROWS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	// The file is on disk before the clock starts, as a user's file is.
	path := filepath.Join(b.TempDir(), "contactos.csv")
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(f, &genFile{n: n}); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
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

// An import of more rows than one staging batch, their addresses out of
// order and one of them twice, gives every new contact its membership of
// the list; importing the file again changes nothing, and importing it
// into another list subscribes the existing contacts to it.
func TestImportGenerated(t *testing.T) {
	const n = 5000
	var file strings.Builder
	file.WriteString("correo,nombre\n")
	for i := range n {
		fmt.Fprintf(&file, "p%d@example.org,P %d\n", i*7919%n, i) // 7919 is prime: every number below n once
	}
	file.WriteString("P5@EXAMPLE.ORG,otra vez\n")
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		ctx := context.Background()
		if _, err := s.CreateList(ctx, "enap/eventos", "otra", "", "test"); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct{ list, want string }{{"boletin", "5000/0/0/1"}, {"boletin", "0/0/5000/1"}, {"otra", "0/5000/0/1"}} {
			im, err := s.Import(ctx, strings.NewReader(file.String()), contacts.ImportOptions{Account: "enap/eventos", List: tt.list, Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%d/%d/%d/%d", im.Added, im.Updated, im.Unchanged, im.Rejected); got != tt.want || im.Read != n+1 {
				t.Fatalf("import into %s: %s of %d rows, want %s of %d", tt.list, got, im.Read, tt.want, n+1)
			}
			if r := im.Rejects; len(r) != 1 || r[0].Line != n+2 || r[0].Reason != "duplicate in the file: first on line 3397" {
				t.Fatalf("rejects %+v", r)
			}
		}
		for _, list := range []string{"boletin", "otra"} {
			var members, distinct int
			if err := db.NewRaw(`SELECT count(*), count(DISTINCT c.id) FROM contact_memberships AS m JOIN contacts AS c ON c.id = m.contact_id
				JOIN contact_lists AS l ON l.id = m.list_id AND l.account_id = c.account_id
				WHERE l.name = ? AND m.status = 'subscribed' AND c.address LIKE 'p%@example.org'`, list).Scan(ctx, &members, &distinct); err != nil {
				t.Fatal(err)
			}
			if members != n || distinct != n {
				t.Fatalf("%s: %d memberships of %d contacts, want %d", list, members, distinct, n)
			}
		}
	})
}
