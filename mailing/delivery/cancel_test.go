package delivery_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun"

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
