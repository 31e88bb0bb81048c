package campaign_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
)

// contactsFile is a CSV of n contacts made as it is read.
type contactsFile struct {
	n, i int
	buf  []byte
}

func (g *contactsFile) Read(p []byte) (int, error) {
	for len(g.buf) < len(p) && g.i <= g.n {
		if g.i == 0 {
			g.buf = append(g.buf, "correo,nombre,region,cargo\n"...)
		} else {
			g.buf = fmt.Appendf(g.buf, "persona.%d@example.com.pe,Persona Número %d,Región %d,Especialista %d\n", g.i, g.i, g.i%25, g.i%7)
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

// BenchmarkStartCampaign starts a campaign of ENVIOS_BENCH_CONTACTS
// (default 100,000) contacts with personalised multipart/alternative
// content (text + HTML, about 2 KB rendered) and stores every recipient:
// the preflight and snapshot (start-s) and the materialisation through
// SendBatch (recipients/s).
func BenchmarkStartCampaign(b *testing.B) {
	n := 100_000
	if s := os.Getenv("ENVIOS_BENCH_CONTACTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	html := "<html><body><h1>Hola {{.name}}</h1>"
	for range 20 {
		html += "<p>La Escuela Nacional de Administración Pública invita a los servidores de {{.region}} al curso de gestión pública.</p>"
	}
	html += "<p>Cargo: {{.cargo}}</p></body></html>"
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		ctx := context.Background()
		e := mailingtest.Setup(b, db, map[string]int64{"enap/eventos": int64(n) * int64(b.N+1)}, mailing.Config{})
		cs := &contacts.Store{DB: db, Now: e.Clock.Now}
		if _, err := cs.CreateList(ctx, "enap/eventos", "boletin", "", "bench"); err != nil {
			b.Fatal(err)
		}
		if _, err := cs.Import(ctx, &contactsFile{n: n}, contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "bench"}); err != nil {
			b.Fatal(err)
		}
		s, err := campaign.New(campaign.Config{Mailer: e.M, Segments: cs, Now: e.Clock.Now, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		var start, store time.Duration
		for b.Loop() {
			c, err := s.Create(ctx, campaign.Spec{Account: "enap/eventos", Name: "bench", From: "avisos@servir.gob.pe", Subject: "Hola {{.name}}",
				Text: "Estimada/o {{.name}} de {{.region}}: le invitamos.", HTML: html, Lists: []string{"boletin"}}, "bench")
			if err != nil {
				b.Fatal(err)
			}
			t0 := time.Now()
			if _, _, err := s.Start(ctx, "enap/eventos", c.ID, "bench"); err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if done, err := s.Materialise(ctx, c.ID); err != nil || !done {
				b.Fatal(done, err)
			}
			start, store = start+t1.Sub(t0), store+time.Since(t1)
		}
		b.ReportMetric(start.Seconds()/float64(b.N), "start-s")
		b.ReportMetric(float64(n*b.N)/store.Seconds(), "recipients/s")
		b.ReportMetric(mailingtest.PeakRSS(), "peak-RSS-MB")
	})
}
