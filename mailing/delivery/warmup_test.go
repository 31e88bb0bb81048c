package delivery_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

func TestWarmUpGroupCap(t *testing.T) {
	for _, tt := range []struct {
		name string
		g    mailing.WarmUpGroup
		want []int64 // days 0, 1, 2, …
	}{
		{"day by day, then no cap", mailing.WarmUpGroup{Daily: []int64{50, 100, 200}}, []int64{50, 100, 200, -1, -1}},
		{"day by day, then growth", mailing.WarmUpGroup{Daily: []int64{50, 100}, Growth: 2}, []int64{50, 100, 200, 400}},
		{"growth from the first day", mailing.WarmUpGroup{First: 1000, Growth: 1.5}, []int64{1000, 1500, 2250, 3375}},
		{"until max", mailing.WarmUpGroup{First: 1000, Growth: 2, Max: 5000}, []int64{1000, 2000, 4000, -1, -1}},
		{"the same every day", mailing.WarmUpGroup{First: 300}, []int64{300, 300, 300}},
		{"a closed day", mailing.WarmUpGroup{Daily: []int64{0, 10}}, []int64{0, 10, -1}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for day, want := range tt.want {
				if got := tt.g.Cap(day); got != want {
					t.Errorf("day %d: cap %d, want %d", day, got, want)
				}
			}
			if got := tt.g.Cap(-3); got != tt.want[0] {
				t.Errorf("before the plan: cap %d, want the first day's %d", got, tt.want[0])
			}
		})
	}
}

// A warm-up cap holds exactly across a restart of the engine: of 12 bulk
// recipients at a group capped at 5 today and 4 tomorrow, the first
// engine sends 3, a new one 2 more and holds the other 7 until midnight,
// unattempted; the next day 4 go. A transactional message past the cap
// still goes, and counts. Nothing is charged twice: the ledger was
// charged at acceptance, and no held recipient counts an attempt.
func TestWarmUpCapHoldsAcrossARestart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 1000}, mailing.Config{UnsignedDomains: []string{"servir.gob.pe"}})
		sink := mailtest.NewSink(t)
		ctx := context.Background()
		plan := &mailing.WarmUp{Start: start, Groups: map[string]mailing.WarmUpGroup{"example.com": {Daily: []int64{5, 4}}}}
		newEngine := func(batch int) *mailing.Engine {
			return engine(t, e, sink, mailing.EngineConfig{Workers: 2, Batch: batch, UnsignedDomains: []string{"servir.gob.pe"}, WarmUp: plan})
		}
		rs := make([]mailing.Recipient, 12)
		for i := range rs {
			rs[i] = mailing.Recipient{Address: fmt.Sprintf("p%02d@example.com", i)}
		}
		b, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "s", Text: "t", Recipients: mailing.List(rs...)})
		if err != nil {
			t.Fatal(err)
		}
		count := func() map[mailing.Status]int {
			t.Helper()
			got := map[mailing.Status]int{}
			list, err := e.M.Recipients(ctx, "", b.MessageID, -1, 0)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range list {
				got[r.Status]++
				switch {
				case r.Status == mailing.StatusSent && r.Attempts != 1:
					t.Fatalf("%s sent after %d attempts", r.Address, r.Attempts)
				case r.Status != mailing.StatusSent && (r.Attempts != 0 || r.Status != mailing.StatusDeferred && r.Status != mailing.StatusQueued):
					t.Fatalf("%s held as %+v, want waiting with no attempt", r.Address, r)
				case r.Status == mailing.StatusDeferred && (!r.DueAt.Equal(r.DueAt.Truncate(24*time.Hour)) || !r.DueAt.After(e.Clock.Now())):
					t.Fatalf("%s due at %v, want the next midnight", r.Address, r.DueAt)
				}
			}
			return got
		}
		if _, err := newEngine(3).RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if got := count(); got[mailing.StatusSent] != 3 {
			t.Fatalf("first engine: %v, want 3 sent", got)
		}
		// A new engine (a restart) knows the 3 from the database.
		eng := newEngine(100)
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if got := count(); got[mailing.StatusSent] != 5 || got[mailing.StatusDeferred] != 7 {
			t.Fatalf("after the restart: %v, want 5 sent and 7 held", got)
		}
		if st := eng.Stats().WarmUp["example.com"]; st.Cap != 5 || st.Sent != 5 || st.Held != 7 {
			t.Fatalf("warm-up stats %+v", st)
		}
		e.Clock.Add(time.Hour)
		if n, err := eng.RunOnce(ctx); err != nil || n != 0 {
			t.Fatalf("later the same day: %d handled (%v), want none due", n, err)
		}
		e.Clock.Add(6 * time.Hour) // midnight: the plan's second day
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if got := count(); got[mailing.StatusSent] != 9 || got[mailing.StatusDeferred] != 3 {
			t.Fatalf("the second day: %v, want 9 sent and 3 held", got)
		}
		urgent := basic()
		urgent.Account, urgent.To = "enap/eventos", []string{"urgente@example.com"}
		r, err := e.M.Send(ctx, urgent)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := e.M.Recipients(ctx, "", r.MessageID, -1, 0); len(got) != 1 || got[0].Status != mailing.StatusSent {
			t.Fatalf("transactional past the cap: %+v, want sent", got)
		}
		if n := len(sink.Messages()); n != 10 {
			t.Fatalf("the sink got %d messages, want 5 + 4 + 1", n)
		}
		var days []struct {
			PlanDay string
			Sent    int64
		}
		if err := db.NewRaw("SELECT plan_day, sent FROM mail_warmup WHERE provider_group = 'example.com' ORDER BY plan_day").Scan(ctx, &days); err != nil {
			t.Fatal(err)
		}
		if len(days) != 2 || days[0].PlanDay != "2026-11-26" || days[0].Sent != 5 || days[1].PlanDay != "2026-11-27" || days[1].Sent != 5 {
			t.Fatalf("warm-up counts %+v, want 5 on each day", days)
		}
		if used := e.Used(t, "enap/eventos"); used != 13 {
			t.Fatalf("used %d, want 13: each recipient charged once", used)
		}
		verify(t, e.M)
	})
}

// Two engines delivering at once count against one cap: exactly the cap
// is sent, whatever the interleaving.
func TestWarmUpCapIsSharedByEngines(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		const limit, n = 20, 60
		e := setup(t, db, map[string]int64{"enap/eventos": 1000}, mailing.Config{UnsignedDomains: []string{"servir.gob.pe"}})
		sink := mailtest.NewSink(t)
		ctx := context.Background()
		plan := &mailing.WarmUp{Start: start, Groups: map[string]mailing.WarmUpGroup{"*": {First: limit}}}
		queueFor := func() {
			rs := make([]mailing.Recipient, n)
			for i := range rs {
				rs[i] = mailing.Recipient{Address: fmt.Sprintf("p%02d@example.com", i)}
			}
			if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "s", Text: "t",
				Recipients: mailing.List(rs...)}); err != nil {
				t.Fatal(err)
			}
		}
		queueFor()
		var engines []*mailing.Engine
		for i := range 2 {
			engines = append(engines, engine(t, e, sink, mailing.EngineConfig{Workers: 4, Batch: 7, Owner: fmt.Sprint("warm-", i),
				UnsignedDomains: []string{"servir.gob.pe"}, WarmUp: plan}))
		}
		for _, eng := range engines {
			runUntilTheEnd(t, eng)
		}
		deadline := time.Now().Add(30 * time.Second)
		for countStatus(t, db, "sent")+countStatus(t, db, "deferred") < n {
			if time.Now().After(deadline) {
				t.Fatalf("%d sent, %d held after 30 s", countStatus(t, db, "sent"), countStatus(t, db, "deferred"))
			}
			time.Sleep(20 * time.Millisecond)
		}
		if sent, got := countStatus(t, db, "sent"), len(sink.Messages()); sent != limit || got != limit {
			t.Fatalf("%d recorded sent, %d at the sink; want exactly the cap, %d", sent, got, limit)
		}
	})
}
