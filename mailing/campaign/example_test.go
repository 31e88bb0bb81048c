package campaign_test

import (
	"context"
	"fmt"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/quota"
)

// A campaign to a list: import the contacts, create the campaign, start
// it (preflight, snapshot), store its recipients, follow its progress.
func Example() {
	dir, err := os.MkdirTemp("", "campaign-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	now := func() time.Time { return time.Date(2026, 12, 4, 15, 0, 0, 0, time.UTC) }
	m, err := mailing.Open(ctx, filepath.Join(dir, "envios.db"), mailing.Config{Now: now, MessageIDDomain: "envios.servir.gob.pe"})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	if _, err := m.Ledger().Init(ctx, quota.Plan{
		Pool:     quota.PoolSpec{Name: "servir-2026", Total: 8_306_727, StartsAt: now().AddDate(0, -1, 0), EndsAt: now().AddDate(1, 0, 0)},
		Accounts: []quota.AccountSpec{{Name: "enap/eventos", Origin: "platform", Allocation: 2_000_000}},
	}, "example"); err != nil {
		log.Fatal(err)
	}
	if _, err := m.AddSender(ctx, "enap/eventos", "@servir.gob.pe", "example"); err != nil {
		log.Fatal(err)
	}
	if _, _, err := m.AddDomainKey(ctx, "servir.gob.pe", "ed25519"); err != nil {
		log.Fatal(err)
	}

	people := &contacts.Store{DB: m.DB(), Now: now}
	if _, err := people.CreateList(ctx, "enap/eventos", "boletin", "Boletín mensual", "example"); err != nil {
		log.Fatal(err)
	}
	csv := "correo,nombre,region\nana@example.org,Ana,Lima\nluis@example.org,Luis,Cusco\n"
	if _, err := people.Import(ctx, strings.NewReader(csv), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "example"}); err != nil {
		log.Fatal(err)
	}

	s, err := campaign.New(campaign.Config{Mailer: m, Segments: people, Now: now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		log.Fatal(err)
	}
	c, err := s.Create(ctx, campaign.Spec{Account: "enap/eventos", Name: "Boletín diciembre", From: "eventos@servir.gob.pe",
		Subject: "Hola {{.name}}", Text: "Novedades para {{.region}}.", Lists: []string{"boletin"}}, "ana.staff")
	if err != nil {
		log.Fatal(err)
	}
	preview, err := s.Preview(ctx, "enap/eventos", c.ID, "luis@example.org")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(preview.Subject, "/", preview.Text)
	_, p, err := s.Start(ctx, "enap/eventos", c.ID, "ana.staff")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("preflight: %d recipients, cost %d of %d remaining\n", p.Recipients, p.Cost, p.Remaining)
	if _, err := s.Materialise(ctx, c.ID); err != nil { // relayd serve does this in Run
		log.Fatal(err)
	}
	pr, err := s.Progress(ctx, "enap/eventos", c.ID)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(pr.Campaign.Status, pr.Stored, "stored,", pr.Counts[mailing.StatusQueued], "queued")
	// Output:
	// Hola Luis / Novedades para Cusco.
	// preflight: 2 recipients, cost 2 of 2000000 remaining
	// running 2 stored, 2 queued
}
