package delivery_test

import (
	"context"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// A recipient deferred by its destination's rate limit was never
// attempted: cancelling its message releases its charge (it used to stay
// charged, as Cancel released only queued and scheduled recipients), and
// the ledger still verifies.
func TestCancelReleasesARecipientDeferredByTheRateLimit(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 10}, mailing.Config{})
		ctx := context.Background()
		sink := mailtest.NewSink(t)
		// One message per 1,000 s to example.com: the first goes, the second
		// waits for the limit, unattempted.
		eng := engine(t, e, sink, mailing.EngineConfig{Workers: 1, Limits: map[string]mailing.Limits{"example.com": {Concurrency: 1, PerSecond: 0.001}}})
		first, err := e.M.Send(ctx, basic())
		if err != nil {
			t.Fatal(err)
		}
		msg := basic()
		msg.To = []string{"luis@example.com"}
		second, err := e.M.Send(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		rs, err := e.M.Recipients(ctx, "", second.MessageID, -1, 0)
		if err != nil || len(rs) != 1 || rs[0].Status != mailing.StatusDeferred || rs[0].Attempts != 0 {
			t.Fatalf("second recipient %+v (%v), want deferred with no attempt", rs, err)
		}
		if got := len(sink.Messages()); got != 1 {
			t.Fatalf("%d messages at the sink, want 1 (%s)", got, first.MessageID)
		}
		if used := e.Used(t, "sjti/talento"); used != 2 {
			t.Fatalf("used %d before cancelling, want 2", used)
		}
		res, err := e.M.Cancel(ctx, "", second.MessageID, "test")
		if err != nil || res.Cancelled != 1 || res.Released != 1 {
			t.Fatalf("Cancel = %+v, %v; want 1 cancelled and 1 released", res, err)
		}
		if used := e.Used(t, "sjti/talento"); used != 1 {
			t.Fatalf("used %d after cancelling, want 1: the unattempted recipient stayed charged", used)
		}
		verify(t, e.M)
	})
}

// A recipient whose engine died holding it may have been sent before the
// engine died: once its lease expires it counts as attempted, so
// cancelling its message keeps its charge (it is not released as if it
// had never been tried).
func TestCancelAfterAnExpiredLeaseKeepsTheCharge(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 10}, mailing.Config{})
		ctx := context.Background()
		r, err := e.M.Send(ctx, basic())
		if err != nil {
			t.Fatal(err)
		}
		dead := engine(t, e, mailtest.NewSink(t), mailing.EngineConfig{Owner: "dead", Lease: time.Minute})
		if items, err := dead.Claim(ctx); err != nil || len(items) != 1 {
			t.Fatalf("claim: %v %v", items, err)
		}
		e.Clock.Add(2 * time.Minute) // the lease runs out; the next round expires it
		if _, err := mailstore.ExpireLeases(ctx, db, e.Clock.Now()); err != nil {
			t.Fatal(err)
		}
		rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if err != nil || len(rs) != 1 || rs[0].Status != mailing.StatusDeferred || rs[0].Attempts != 1 {
			t.Fatalf("after the lease: %+v (%v), want deferred with one (possible) attempt", rs, err)
		}
		res, err := e.M.Cancel(ctx, "", r.MessageID, "test")
		if err != nil || res.Cancelled != 1 || res.Released != 0 {
			t.Fatalf("Cancel = %+v, %v; want 1 cancelled, none released", res, err)
		}
		if used := e.Used(t, "sjti/talento"); used != 1 {
			t.Fatalf("used %d, want 1", used)
		}
		verify(t, e.M)
	})
}
