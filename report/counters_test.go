package report_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// After randomized histories — sends, batches, scheduled mail, cancels,
// deliveries answered 250, 450 or 550 at random, hours passing — the
// counters always equal a full recount, the activity totals agree with
// the rows, and the event stream read in small pages gives every event
// exactly once.
func TestCountersEqualRecountAfterRandomHistories(t *testing.T) {
	for seed := range uint64(3) {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			storetest.Each(t, func(t *testing.T, db *bun.DB) {
				f := setup(t, db, 10_000)
				ctx := context.Background()
				rng := rand.New(rand.NewPCG(seed, 42))
				sink := mailtest.NewSink(t)
				sink.Reply = func(rcpt string) error {
					switch {
					case strings.HasPrefix(rcpt, "b"):
						return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
					case strings.HasPrefix(rcpt, "d"):
						return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "later"}
					}
					return nil
				}
				eng, err := f.m.NewEngine(ctx, mailing.EngineConfig{Workers: 2, ReturnPathDomain: "envios.servir.gob.pe", MaxAge: 3 * time.Hour,
					Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}})
				if err != nil {
					t.Fatal(err)
				}
				addr := func() string { return fmt.Sprintf("%c%d@example.org", "abcd"[rng.IntN(4)], rng.IntN(1000)) }
				var ids []string
				var seen []report.Event
				var cur report.Cursor
				read := func() { // the stream, in pages of 7, as a slow consumer would
					for {
						evs, next, err := f.rep.Events(ctx, report.EventsFilter{After: cur, Limit: 7, Lag: -1})
						if err != nil {
							t.Fatal(err)
						}
						if len(evs) == 0 {
							return
						}
						seen, cur = append(seen, evs...), next
					}
				}
				for round := range 12 {
					for range 1 + rng.IntN(4) {
						acct := accounts[rng.IntN(len(accounts))]
						msg := mailing.Message{Account: acct, From: "avisos@servir.gob.pe", To: []string{addr()}, Subject: "s", Text: "t"}
						if rng.IntN(3) == 0 {
							msg.Cc = []string{addr()}
						}
						if rng.IntN(5) == 0 {
							msg.SendAt = f.clock.Now().Add(time.Duration(rng.IntN(3)) * time.Hour)
						}
						r, err := f.m.Send(ctx, msg)
						if err != nil {
							t.Fatal(err)
						}
						ids = append(ids, r.MessageID)
					}
					if rng.IntN(3) == 0 {
						var rs []mailing.Recipient
						for range 1 + rng.IntN(5) {
							rs = append(rs, mailing.Recipient{Address: addr(), Data: map[string]string{"n": "x"}})
						}
						b, err := f.m.SendBatch(ctx, mailing.Batch{Account: accounts[rng.IntN(len(accounts))], From: "avisos@servir.gob.pe",
							Subject: "b {{.n}}", Text: "b", Origin: quota.OriginCampaign, Recipients: mailing.List(rs...)})
						if err != nil {
							t.Fatal(err)
						}
						ids = append(ids, b.MessageID)
					}
					if rng.IntN(3) == 0 && len(ids) > 0 {
						if _, err := f.m.Cancel(ctx, "", ids[rng.IntN(len(ids))], "test"); err != nil {
							t.Fatal(err)
						}
					}
					if _, err := eng.RunOnce(ctx); err != nil {
						t.Fatal(err)
					}
					if round%3 == 0 {
						read()
					}
					f.clock.Set(f.clock.Now().Add(time.Duration(10+rng.IntN(80)) * time.Minute))
				}
				read()
				problems, err := f.rep.Verify(ctx)
				if err != nil || len(problems) > 0 {
					t.Fatalf("counters differ from the recount (%v):\n%s", err, strings.Join(problems, "\n"))
				}
				// Periods summed by the database equal the hours summed here,
				// in a whole-hour zone (arithmetic), a half-hour one (hours
				// summed in Go), and for months and years (CASE buckets).
				var raw []struct {
					AccountID int64
					Hour      int64
					Kind      string
					N         int64
				}
				if err := db.NewRaw("SELECT account_id, hour, kind, n FROM mail_counters").Scan(ctx, &raw); err != nil {
					t.Fatal(err)
				}
				for _, loc := range []*time.Location{lima, mustLoad("Asia/Kolkata"), time.UTC} {
					for _, by := range []report.Period{report.Day, report.Month, report.Year} {
						want := map[string]int64{}
						for _, x := range raw {
							tt := time.Unix(x.Hour*3600, 0).In(loc)
							p := map[report.Period]string{report.Day: tt.Format("2006-01-02"), report.Month: tt.Format("2006-01"), report.Year: tt.Format("2006")}[by]
							want[p+" "+x.Kind] += x.N
						}
						acts, err := report.New(db, report.Config{Location: loc}).Activity(ctx, report.ActivityFilter{By: by})
						if err != nil {
							t.Fatal(err)
						}
						got := map[string]int64{}
						layout := map[report.Period]string{report.Day: "2006-01-02", report.Month: "2006-01", report.Year: "2006"}[by]
						for _, a := range acts {
							p := a.Period.Format(layout)
							for k, n := range map[string]int64{"accepted": a.Accepted, "sent": a.Sent, "deferred": a.Deferred, "bounced": a.Bounced,
								"failed": a.Failed, "cancelled": a.Cancelled, "suppressed": a.Suppressed, "delayed": a.Delayed,
								"complained": a.Complained, "unsubscribed": a.Unsubscribed} {
								if n != 0 {
									got[p+" "+k] += n
								}
							}
						}
						if fmt.Sprint(got) != fmt.Sprint(want) {
							t.Fatalf("%s by %s:\n got %v\nwant %v", loc, by, got, want)
						}
					}
				}
				// The activity totals agree with the rows.
				acts, err := f.rep.Activity(ctx, report.ActivityFilter{By: "account"})
				if err != nil {
					t.Fatal(err)
				}
				var accepted, sent int64
				for _, a := range acts {
					accepted, sent = accepted+a.Accepted, sent+a.Sent
				}
				var rows, sentRows int
				if err := db.NewRaw("SELECT count(*) FROM mail_recipients").Scan(ctx, &rows); err != nil {
					t.Fatal(err)
				}
				if err := db.NewRaw("SELECT count(*) FROM mail_recipients WHERE status = 'sent'").Scan(ctx, &sentRows); err != nil {
					t.Fatal(err)
				}
				if accepted != int64(rows) || sent != int64(sentRows) || sent == 0 {
					t.Fatalf("activity accepted %d sent %d; rows %d sent %d", accepted, sent, rows, sentRows)
				}
				// Every event once: one acceptance per recipient, one event
				// per mail_events row, ids increasing.
				var nEvents, nChanges int
				if err := db.NewRaw("SELECT count(*) FROM mail_events").Scan(ctx, &nEvents); err != nil {
					t.Fatal(err)
				}
				if err := db.NewRaw("SELECT count(*) FROM audit_log WHERE action LIKE 'suppression.%'").Scan(ctx, &nChanges); err != nil {
					t.Fatal(err)
				}
				kinds := map[string]int{}
				dup := map[string]bool{}
				for _, e := range seen {
					k := fmt.Sprint(e.Type, e.RecipientID, e.ID)
					if dup[k] {
						t.Fatalf("event seen twice: %+v", e)
					}
					dup[k] = true
					kinds[e.Type]++
				}
				changes := kinds["suppression.added"] + kinds["suppression.removed"]
				if kinds["accepted"] != rows || len(seen)-kinds["accepted"]-changes != nEvents || kinds["sent"] != sentRows || changes != nChanges {
					t.Fatalf("stream: %v; rows %d, events %d, sent %d, suppression changes %d", kinds, rows, nEvents, sentRows, nChanges)
				}
			})
		})
	}
}

// A counter changed behind the ledger's back is reported by Verify.
func TestVerifyFindsADriftedCounter(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		history(t, f)
		ctx := context.Background()
		if p, err := f.rep.Verify(ctx); err != nil || len(p) > 0 {
			t.Fatalf("clean history: %v %v", p, err)
		}
		if _, err := db.ExecContext(ctx, "UPDATE mail_counters SET n = n + 1 WHERE kind = 'sent'"); err != nil {
			t.Fatal(err)
		}
		p, err := f.rep.Verify(ctx)
		if err != nil || len(p) == 0 || !strings.Contains(p[0], "sent: counter") {
			t.Fatalf("drift not found: %v %v", p, err)
		}
	})
}
