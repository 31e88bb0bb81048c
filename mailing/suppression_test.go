package mailing_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/report"
)

// accountID is the id of an account of e.
func accountID(t *testing.T, db *bun.DB, name string) int64 {
	t.Helper()
	var id int64
	if err := db.NewRaw("SELECT id FROM quota_accounts WHERE name = ?", name).Scan(context.Background(), &id); err != nil {
		t.Fatal(err)
	}
	return id
}

// A suppressed recipient is stored as suppressed, with its reason, and
// not charged; the scopes decide what mail it stops: a hard bounce every
// message, a complaint all bulk mail, an unsubscribe the bulk mail of one
// account (of one topic, or all). Transactional mail is never stopped by a
// complaint or an unsubscribe.
func TestSendToSuppressedRecipients(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100, "enap/eventos": 100}, mailing.Config{})
		ctx := context.Background()
		talento := accountID(t, db, "sjti/talento")
		for _, a := range []suppress.Add{
			{Address: "Hard@Example.com", Scope: suppress.ScopeAll, Reason: suppress.ReasonHardBounce},
			{Address: "queja@example.com", Scope: suppress.ScopeBulk, Reason: suppress.ReasonComplaint},
			{Address: "baja@example.com", Scope: suppress.ScopeAccount, AccountID: talento, Reason: suppress.ReasonUnsubscribe},
			{Address: "tema@example.com", Scope: suppress.ScopeAccount, AccountID: talento, Topic: "boletin", Reason: suppress.ReasonUnsubscribe},
		} {
			a.Actor, a.Now = "test", start
			if _, _, err := suppress.Insert(ctx, db, a); err != nil {
				t.Fatal(err)
			}
		}
		tests := []struct {
			name       string
			account    string
			priority   mailing.Priority
			campaign   string
			to         string
			suppressed bool
		}{
			{"hard bounce stops transactional", "sjti/talento", mailing.Transactional, "", "hard@example.com", true},
			{"hard bounce stops bulk", "enap/eventos", mailing.Bulk, "", "hard@example.com", true},
			{"complaint lets transactional through", "sjti/talento", mailing.Transactional, "", "queja@example.com", false},
			{"complaint stops bulk of every account", "enap/eventos", mailing.Bulk, "", "queja@example.com", true},
			{"unsubscribe lets transactional through", "sjti/talento", mailing.Transactional, "", "baja@example.com", false},
			{"unsubscribe stops the account's bulk", "sjti/talento", mailing.Bulk, "boletin", "baja@example.com", true},
			{"unsubscribe is the account's only", "enap/eventos", mailing.Bulk, "", "baja@example.com", false},
			{"a topic stops its campaign", "sjti/talento", mailing.Bulk, "boletin", "tema@example.com", true},
			{"a topic lets another campaign through", "sjti/talento", mailing.Bulk, "otro", "tema@example.com", false},
			{"nobody else", "sjti/talento", mailing.Bulk, "", "ana@example.com", false},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				before := e.Used(t, tt.account)
				msg := basic()
				msg.Account, msg.Priority, msg.Campaign, msg.To = tt.account, tt.priority, tt.campaign, []string{tt.to}
				r, err := e.M.Send(ctx, msg)
				if err != nil {
					t.Fatal(err)
				}
				rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
				if err != nil || len(rs) != 1 {
					t.Fatal(rs, err)
				}
				charged := e.Used(t, tt.account) - before
				if tt.suppressed {
					if rs[0].Status != mailing.StatusSuppressed || r.Status != mailing.StatusSuppressed || len(r.Suppressed) != 1 || charged != 0 || rs[0].FinalAt.IsZero() {
						t.Fatalf("want suppressed and uncharged: receipt %+v, row %+v, charged %d", r, rs[0], charged)
					}
				} else if rs[0].Status != mailing.StatusQueued || len(r.Suppressed) != 0 || charged != 1 {
					t.Fatalf("want queued and charged: receipt %+v, row %+v, charged %d", r, rs[0], charged)
				}
			})
		}
		// Of a message to several, only the suppressed are not charged.
		msg := basic()
		msg.To = []string{"ana@example.com", "hard@example.com", "luis@example.com"}
		before := e.Used(t, "sjti/talento")
		r, err := e.M.Send(ctx, msg)
		if err != nil || r.Status != mailing.StatusQueued || len(r.Suppressed) != 1 || e.Used(t, "sjti/talento")-before != 2 {
			t.Fatalf("receipt %+v, %v, charged %d; want 2 charged, 1 suppressed", r, err, e.Used(t, "sjti/talento")-before)
		}
		verify(t, e.M)
		problems, err := report.New(db, report.Config{}).Verify(ctx)
		if err != nil || len(problems) > 0 {
			t.Fatalf("report verify: %v %v", problems, err)
		}
	})
}

// A batch stores its suppressed recipients as suppressed, uncharged, and
// counts them apart; resuming it with its key stores and charges nothing
// twice.
func TestBatchWithSuppressedRecipients(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{ChunkSize: 3})
		ctx := context.Background()
		for _, addr := range []string{"p1@example.com", "p4@example.com"} {
			if _, _, err := suppress.Insert(ctx, db, suppress.Add{Address: addr, Scope: suppress.ScopeBulk, Reason: suppress.ReasonComplaint,
				Actor: "test", Now: start}); err != nil {
				t.Fatal(err)
			}
		}
		var rs []mailing.Recipient
		for i := range 7 {
			rs = append(rs, mailing.Recipient{Address: "p" + string(rune('0'+i)) + "@example.com", Data: map[string]string{"N": "x"}})
		}
		b := mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "Hola {{.N}}", Text: "t",
			Recipients: mailing.List(rs...), IdempotencyKey: "boletin-1"}
		rec, err := e.M.SendBatch(ctx, b)
		if err != nil || rec.Accepted != 5 || rec.Suppressed != 2 {
			t.Fatalf("SendBatch = %+v, %v; want 5 accepted and 2 suppressed", rec, err)
		}
		if used := e.Used(t, "enap/eventos"); used != 5 {
			t.Fatalf("charged %d, want 5", used)
		}
		var suppressed, events int
		if err := db.NewRaw("SELECT (SELECT count(*) FROM mail_recipients WHERE status = 'suppressed' AND suppressed_by IS NOT NULL AND final_at IS NOT NULL), "+
			"(SELECT count(*) FROM mail_events WHERE type = 'suppressed')").Scan(ctx, &suppressed, &events); err != nil || suppressed != 2 || events != 2 {
			t.Fatalf("%d suppressed rows, %d events (%v); want 2, 2", suppressed, events, err)
		}
		again, err := e.M.SendBatch(ctx, b)
		if err != nil || again.Accepted != 0 || again.Suppressed != 0 || again.Resumed != 7 || e.Used(t, "enap/eventos") != 5 {
			t.Fatalf("resumed: %+v, %v, used %d", again, err, e.Used(t, "enap/eventos"))
		}
		verify(t, e.M)
		problems, err := report.New(db, report.Config{}).Verify(ctx)
		if err != nil || len(problems) > 0 {
			t.Fatalf("report verify: %v %v", problems, err)
		}
	})
}
