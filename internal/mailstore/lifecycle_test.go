package mailstore_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
)

// Every transition, tried from every status on both engines: a recipient
// moves to one of the transition's To exactly when its status is one of
// the transition's From, and any other status is left as it was. The
// statements are the only ones that change a recipient's status, so this
// table is the lifecycle.
func TestLifecycleTransitions(t *testing.T) {
	const owner = "engine-a"
	type run func(ctx context.Context, db *bun.DB, id int64, messageID string, now time.Time) error
	outcome := func(to mailstore.Status) run {
		return func(ctx context.Context, db *bun.DB, id int64, _ string, now time.Time) error {
			o := mailstore.Outcome{ID: id, Status: to, Attempts: 1, Last: &now, Due: now.Add(time.Minute), Host: "mx", Reply: "250 ok"}
			if to != mailstore.StatusDeferred {
				o.Final = &now
			}
			_, err := mailstore.RecordOutcomes(ctx, db, owner, []mailstore.Outcome{o})
			return err
		}
	}
	tests := []struct {
		name     string
		t        mailstore.Transition
		attempts int
		want     mailstore.Status // the status an allowed move ends in
		run      run
	}{
		{"promote", mailstore.Promote, 0, mailstore.StatusQueued, func(ctx context.Context, db *bun.DB, _ int64, _ string, now time.Time) error {
			_, err := mailstore.PromoteDue(ctx, db, now)
			return err
		}},
		{"claim", mailstore.Claim, 0, mailstore.StatusSending, func(ctx context.Context, db *bun.DB, _ int64, _ string, now time.Time) error {
			_, err := mailstore.ClaimDue(ctx, db, "engine-b", now, now.Add(time.Minute), 10)
			return err
		}},
		{"expire lease", mailstore.ExpireLease, 1, mailstore.StatusDeferred, func(ctx context.Context, db *bun.DB, _ int64, _ string, now time.Time) error {
			_, err := mailstore.ExpireLeases(ctx, db, now)
			return err
		}},
		{"take back", mailstore.TakeBack, 1, mailstore.StatusDeferred, func(ctx context.Context, db *bun.DB, _ int64, _ string, now time.Time) error {
			_, err := mailstore.ExpireOwner(ctx, db, owner, now)
			return err
		}},
		{"unclaim never attempted", mailstore.Unclaim, 0, mailstore.StatusQueued, func(ctx context.Context, db *bun.DB, id int64, _ string, _ time.Time) error {
			return mailstore.ReturnLeases(ctx, db, owner, []int64{id})
		}},
		{"unclaim attempted", mailstore.Unclaim, 2, mailstore.StatusDeferred, func(ctx context.Context, db *bun.DB, id int64, _ string, _ time.Time) error {
			return mailstore.ReturnLeases(ctx, db, owner, []int64{id})
		}},
		{"record sent", mailstore.Record, 0, mailstore.StatusSent, outcome(mailstore.StatusSent)},
		{"record bounced", mailstore.Record, 0, mailstore.StatusBounced, outcome(mailstore.StatusBounced)},
		{"record deferred", mailstore.Record, 0, mailstore.StatusDeferred, outcome(mailstore.StatusDeferred)},
		{"record failed", mailstore.Record, 0, mailstore.StatusFailed, outcome(mailstore.StatusFailed)},
		{"fail unbuilt", mailstore.FailUnbuilt, 0, mailstore.StatusFailed, func(ctx context.Context, db *bun.DB, id int64, _ string, now time.Time) error {
			_, err := mailstore.FailUnbuiltRecipient(ctx, db, owner, id, now, "could not be built")
			return err
		}},
		{"suppress", mailstore.Suppress, 0, mailstore.StatusSuppressed, func(ctx context.Context, db *bun.DB, id int64, _ string, now time.Time) error {
			_, err := mailstore.SuppressClaimed(ctx, db, owner, now, []int64{id}, []int64{1}, []string{"suppressed: test"})
			return err
		}},
		{"bounce later", mailstore.BounceLater, 1, mailstore.StatusBounced, func(ctx context.Context, db *bun.DB, id int64, _ string, now time.Time) error {
			_, err := mailstore.BounceAfterDelivery(ctx, db, id, now, "mx.example.com", "550 5.1.1 user unknown", "hard", "")
			return err
		}},
		{"cancel", mailstore.Cancel, 0, mailstore.StatusCancelled, func(ctx context.Context, db *bun.DB, _ int64, messageID string, now time.Time) error {
			_, err := mailstore.CancelRecipients(ctx, db, messageID, now)
			return err
		}},
	}
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := mailingtest.Setup(t, db, map[string]int64{"sjti/talento": 1000}, mailing.Config{})
		ctx := context.Background()
		now := e.Clock.Now()
		allowed, refused := 0, 0
		for _, tt := range tests {
			for _, from := range mailstore.Statuses {
				t.Run(fmt.Sprintf("%s from %s", tt.name, from), func(t *testing.T) {
					r, err := e.M.Send(ctx, mailingtest.Basic())
					if err != nil {
						t.Fatal(err)
					}
					if !slices.Contains(mailstore.Accept.To, r.Status) {
						t.Fatalf("accepted as %s, not one of %v", r.Status, mailstore.Accept.To)
					}
					// Only this recipient may be touched: every other is made final first.
					if _, err := db.NewRaw("UPDATE mail_recipients SET status = 'sent' WHERE message_id <> ?", r.MessageID).Exec(ctx); err != nil {
						t.Fatal(err)
					}
					var id int64
					if err := db.NewRaw("UPDATE mail_recipients SET status = ?, attempts = ?, due_at = ?, lease_owner = ?, lease_until = ?, final_at = ? "+
						"WHERE message_id = ? RETURNING id", from, tt.attempts, now.Add(-time.Hour), owner, now.Add(-time.Minute), now.Add(-time.Minute), r.MessageID).Scan(ctx, &id); err != nil {
						t.Fatal(err)
					}
					err = tt.run(ctx, db, id, r.MessageID, now)
					var got mailstore.Status
					if err := db.NewRaw("SELECT status FROM mail_recipients WHERE id = ?", id).Scan(ctx, &got); err != nil {
						t.Fatal(err)
					}
					if tt.t.Allows(from, tt.want) {
						allowed++
						if err != nil || got != tt.want {
							t.Fatalf("%s from %s: got %s (%v), want %s", tt.t.Name, from, got, err, tt.want)
						}
					} else {
						refused++
						if got != from {
							t.Fatalf("%s from %s is not allowed, but the recipient became %s", tt.t.Name, from, got)
						}
					}
				})
			}
		}
		if allowed < len(tests) || refused < len(tests)*5 {
			t.Fatalf("walked %d allowed and %d refused transitions: the table lost its cases", allowed, refused)
		}
	})
}

// A final status is never left — but for a sent recipient a DSN reports
// bounced later — and every non-final status has a way on.
func TestFinalStatuses(t *testing.T) {
	for _, s := range mailstore.Statuses {
		leaves := false
		for _, tr := range mailstore.Transitions {
			if tr.Name == mailstore.BounceLater.Name {
				continue
			}
			leaves = leaves || slices.Contains(tr.From, s)
		}
		if s.Final() == leaves {
			t.Errorf("%s: final %v, but a transition leaves it: %v", s, s.Final(), leaves)
		}
	}
}

// RecordOutcomes refuses a status that is not an outcome, and writes
// nothing.
func TestRecordRefusesNonOutcomes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		for _, s := range []mailstore.Status{mailstore.StatusQueued, mailstore.StatusCancelled, mailstore.StatusSending, "nonsense"} {
			if _, err := mailstore.RecordOutcomes(ctx, db, "x", []mailstore.Outcome{{ID: 1, Status: s}}); err == nil {
				t.Errorf("recorded %q as an outcome", s)
			}
		}
	})
}
