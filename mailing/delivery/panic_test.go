package delivery_test

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/smtpout"
	"github.com/servir-pe/envios/quota"
)

type panicTransport struct{ calls int }

func (t *panicTransport) Deliver(context.Context, string, []string, []byte) []smtpout.Result {
	t.calls++
	panic("transport bug")
}

// A panic while delivering a transaction of several recipients defers
// every one of them: none is lost, none stays leased.
func TestPanicDefersTheWholeGroup(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		now := time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)
		m, err := mailing.New(mailing.Config{DB: db, Now: func() time.Time { return now }, UnsignedDomains: []string{"servir.gob.pe"}})
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
		if _, err := m.Send(ctx, mailing.Message{Account: "a/b", From: "x@servir.gob.pe", To: []string{"p@example.com", "q@example.com", "r@example.com"}, Subject: "s", Text: "t"}); err != nil {
			t.Fatal(err)
		}
		tr := &panicTransport{}
		eng, err := m.NewEngine(ctx, mailing.EngineConfig{Transport: tr, ReturnPathDomain: "envios.servir.gob.pe", UnsignedDomains: []string{"servir.gob.pe"}})
		if err != nil {
			t.Fatal(err)
		}
		if n, err := eng.RunOnce(ctx); err != nil || n != 3 || tr.calls != 1 {
			t.Fatalf("RunOnce = %d, %v; %d transactions, want 1", n, err, tr.calls)
		}
		var deferred int
		if err := db.QueryRowContext(ctx, "SELECT count(*) FROM mail_recipients WHERE status = 'deferred' AND lease_owner = '' AND reply LIKE 'internal error: transport bug%'").Scan(&deferred); err != nil || deferred != 3 {
			t.Fatalf("%d recipients deferred after the panic, want 3 (%v)", deferred, err)
		}
	})
}
