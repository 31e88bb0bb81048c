package suppress_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func open(t *testing.T, db *bun.DB) {
	t.Helper()
	if _, err := store.Migrate(context.Background(), db); err != nil {
		t.Fatal(err)
	}
}

// Adding is idempotent while active; removal marks the row, which stays
// (a delete is refused); expiry is part of the lookup.
func TestInsertRemoveExpire(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		open(t, db)
		ctx := context.Background()
		a := suppress.Add{Address: " Ana@Example.com ", Scope: suppress.ScopeAll, Reason: suppress.ReasonHardBounce, Actor: "test", Now: t0}
		e, added, err := suppress.Insert(ctx, db, a)
		if err != nil || !added || e.Address != "ana@example.com" || e.ExpiresAt == nil || !e.ExpiresAt.Equal(t0.Add(365*24*time.Hour)) {
			t.Fatalf("Insert = %+v, %v, %v", e, added, err)
		}
		again, added, err := suppress.Insert(ctx, db, a)
		if err != nil || added || again.ID != e.ID {
			t.Fatalf("second Insert = %+v, %v, %v; want the first, not added", again, added, err)
		}
		stops := func(at time.Time, bulk bool) bool {
			t.Helper()
			got, err := suppress.Check(ctx, db, suppress.Mail{AccountID: 1, Bulk: bulk}, []string{"ANA@example.com"}, at)
			if err != nil {
				t.Fatal(err)
			}
			_, ok := got["ana@example.com"]
			return ok
		}
		if !stops(t0.Add(time.Hour), false) || stops(t0.Add(366*24*time.Hour), false) {
			t.Fatal("a hard bounce must stop mail for 365 days, then let one probe through")
		}
		if _, err := suppress.Remove(ctx, db, "ana@example.com", 0, "", "x", t0); !errors.Is(err, suppress.ErrInvalid) {
			t.Fatalf("removal without an actor: %v", err)
		}
		if n, err := suppress.Remove(ctx, db, "ana@example.com", 0, "cli:ops", "she wrote to us", t0.Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("Remove = %d, %v", n, err)
		}
		if stops(t0.Add(2*time.Hour), false) {
			t.Fatal("a removed suppression still stops mail")
		}
		if _, err := suppress.Remove(ctx, db, "ana@example.com", 0, "cli:ops", "again", t0); !errors.Is(err, suppress.ErrNotFound) {
			t.Fatalf("second removal: %v", err)
		}
		if _, err := db.NewRaw("DELETE FROM mail_suppressions").Exec(ctx); err == nil {
			t.Fatal("a suppression row was deleted")
		}
		all, err := suppress.List(ctx, db, suppress.Filter{Address: "ana@example.com"}, t0)
		if err != nil || len(all) != 1 || all[0].RemovedAt == nil || all[0].RemovedBy != "cli:ops" {
			t.Fatalf("List = %+v, %v", all, err)
		}
		var audits int
		if err := db.NewRaw("SELECT count(*) FROM audit_log WHERE action IN ('suppression.add', 'suppression.remove')").Scan(ctx, &audits); err != nil || audits != 2 {
			t.Fatalf("%d audit entries, %v; want 2", audits, err)
		}
	})
}

func TestInsertRefusesBadInput(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		open(t, db)
		for _, a := range []suppress.Add{
			{Address: "not an address", Scope: suppress.ScopeAll, Reason: suppress.ReasonManual, Actor: "t"},
			{Address: "a@b.pe", Scope: "everything", Reason: suppress.ReasonManual, Actor: "t"},
			{Address: "a@b.pe", Scope: suppress.ScopeAccount, Reason: suppress.ReasonUnsubscribe, Actor: "t"},
			{Address: "a@b.pe", Scope: suppress.ScopeAll, AccountID: 3, Reason: suppress.ReasonManual, Actor: "t"},
			{Address: "a@b.pe", Scope: suppress.ScopeBulk, Topic: "x", Reason: suppress.ReasonManual, Actor: "t"},
			{Address: "a@b.pe", Scope: suppress.ScopeAll, Reason: "because", Actor: "t"},
			{Address: "a@b.pe", Scope: suppress.ScopeAll, Reason: suppress.ReasonManual},
		} {
			a.Now = t0
			if _, _, err := suppress.Insert(context.Background(), db, a); !errors.Is(err, suppress.ErrInvalid) {
				t.Errorf("%+v: %v, want ErrInvalid", a, err)
			}
		}
	})
}

// The streak rules: hard now; "account disabled" on the second time 7
// days after the first; transient after 3 failures spanning 14 days with
// no delivery between (a delivery starts over); message-level and policy
// never.
func TestFailStreaks(t *testing.T) {
	day := 24 * time.Hour
	tests := []struct {
		name      string
		class     string
		at        []time.Duration // failures, from t0
		delivered time.Duration   // a delivery at t0 + this (0: none), before the last failure
		want      suppress.Reason // "" none
	}{
		{"hard at once", "hard", []time.Duration{0}, 0, suppress.ReasonHardBounce},
		{"disabled once", "disabled", []time.Duration{0}, 0, ""},
		{"disabled twice within 7 days", "disabled", []time.Duration{0, 6 * day}, 0, ""},
		{"disabled twice 7 days apart", "disabled", []time.Duration{0, 7 * day}, 0, suppress.ReasonHardBounce},
		{"transient 3 in a day", "transient", []time.Duration{0, time.Hour, 2 * time.Hour}, 0, ""},
		{"transient 2 over 14 days", "transient", []time.Duration{0, 14 * day}, 0, ""},
		{"transient 3 over 14 days", "transient", []time.Duration{0, 7 * day, 14 * day}, 0, suppress.ReasonSoftStreak},
		{"undetermined counts as transient", "undetermined", []time.Duration{0, 7 * day, 15 * day}, 0, suppress.ReasonSoftStreak},
		{"a delivery starts over", "transient", []time.Duration{0, 7 * day, 14 * day}, 10 * day, ""},
		{"message-level never", "message", []time.Duration{0, 7 * day, 14 * day, 30 * day}, 0, ""},
		{"policy never", "policy", []time.Duration{0, 7 * day, 14 * day, 30 * day}, 0, ""},
	}
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		open(t, db)
		ctx := context.Background()
		for i, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				addr := string(rune('a'+i)) + "@example.com"
				var got *suppress.Entry
				for _, d := range tt.at {
					if tt.delivered != 0 && d > tt.delivered {
						if err := suppress.Delivered(ctx, db, []string{addr}); err != nil {
							t.Fatal(err)
						}
						tt.delivered = 0
					}
					e, err := suppress.Fail(ctx, db, suppress.Failure{Address: addr, Class: tt.class, Actor: "test", Now: t0.Add(d)})
					if err != nil {
						t.Fatal(err)
					}
					if e != nil {
						got = e
					}
				}
				switch {
				case tt.want == "" && got != nil:
					t.Fatalf("suppressed %+v", got)
				case tt.want != "" && (got == nil || got.Reason != tt.want || got.Scope != suppress.ScopeAll):
					t.Fatalf("got %+v, want %s", got, tt.want)
				case tt.want == suppress.ReasonSoftStreak && !got.ExpiresAt.Equal(got.CreatedAt.Add(30*day)):
					t.Fatalf("a soft streak lasts 30 days: %+v", got)
				}
			})
		}
	})
}

// Concurrent inserts of one suppression, each in its own transaction (a
// one-click POST sent twice at once), add it once.
func TestConcurrentInsertsAddOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		open(t, db)
		ctx := context.Background()
		const n = 8
		added := make(chan bool, n)
		errs := make(chan error, n)
		for range n {
			go func() {
				errs <- store.RunInTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
					_, ok, err := suppress.Insert(ctx, tx, suppress.Add{Address: "ana@example.com", Scope: suppress.ScopeBulk,
						Reason: suppress.ReasonComplaint, Actor: "test", Now: t0})
					added <- ok && err == nil
					return err
				})
			}()
		}
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		close(added)
		first := 0
		for ok := range added {
			if ok {
				first++
			}
		}
		var rows int
		if err := db.NewRaw("SELECT count(*) FROM mail_suppressions").Scan(ctx, &rows); err != nil {
			t.Fatal(err)
		}
		if rows != 1 || first != 1 {
			t.Fatalf("%d rows, %d inserts said added, after %d concurrent inserts; want 1 and 1", rows, first, n)
		}
	})
}
