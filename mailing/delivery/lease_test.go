package delivery_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/smtpout"
	"github.com/servir-pe/envios/quota"
)

type nopTransport struct {
	mu   sync.Mutex
	sent []string
}

func (t *nopTransport) Deliver(_ context.Context, _ string, to []string, _ []byte) []smtpout.Result {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sent = append(t.sent, to...)
	out := make([]smtpout.Result, len(to))
	for i := range out {
		out[i] = smtpout.Result{Host: "next.hop", Code: 250, Text: "ok"}
	}
	return out
}

// An engine that claims recipients and dies (never records, never returns
// its leases) loses nothing: when the lease runs out another engine
// delivers them; before that, nobody does.
func TestExpiredLeasesAreTakenOver(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
		clock := func() time.Time { return now }
		m, err := mailing.New(mailing.Config{DB: db, Now: clock, UnsignedDomains: []string{"servir.gob.pe"}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Ledger().Init(ctx, quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 10, StartsAt: now.Add(-time.Hour), EndsAt: now.Add(24 * time.Hour)},
			Accounts: []quota.AccountSpec{{Name: "a/b", Allocation: 10}}}, "t"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.AddSender(ctx, "a/b", "@servir.gob.pe", "t"); err != nil {
			t.Fatal(err)
		}
		if _, err := m.Send(ctx, mailing.Message{Account: "a/b", From: "x@servir.gob.pe", To: []string{"p@example.com", "q@example.com"}, Subject: "s", Text: "t"}); err != nil {
			t.Fatal(err)
		}
		cfg := mailing.EngineConfig{ReturnPathDomain: "envios.servir.gob.pe", UnsignedDomains: []string{"servir.gob.pe"}, Lease: 10 * time.Minute}
		dead := &nopTransport{}
		cfg.Transport, cfg.Owner = dead, "dead"
		a, err := m.NewEngine(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		items, err := a.Claim(ctx) // a claims, then "dies"
		if err != nil || len(items) != 2 {
			t.Fatalf("claim: %v %v", items, err)
		}
		live := &nopTransport{}
		cfg.Transport, cfg.Owner = live, "live"
		b, err := m.NewEngine(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := b.RunOnce(ctx); err != nil || n != 0 {
			t.Fatalf("took leased rows early: %d %v", n, err)
		}
		now = now.Add(11 * time.Minute)
		if n, err := b.RunOnce(ctx); err != nil || n != 2 || len(live.sent) != 2 {
			t.Fatalf("after the lease: %d %v %v", n, err, live.sent)
		}
		var sent int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM mail_recipients WHERE status = 'sent'").Scan(&sent); err != nil || sent != 2 {
			t.Fatalf("sent rows %d %v", sent, err)
		}
		// The dead engine's late outcome (if it woke up) is not recorded over the new one.
		a.RecordLate(ctx, items[0], smtpout.Result{Code: 550, Text: "late"})
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM mail_recipients WHERE status = 'sent'").Scan(&sent); err != nil || sent != 2 {
			t.Fatalf("a stale engine overwrote an outcome: %d sent", sent)
		}
	})
}
