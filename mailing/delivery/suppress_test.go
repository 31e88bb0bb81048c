package delivery_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/report"
)

// An address suppressed after its message was accepted is checked again
// at claim: the recipient ends suppressed, unsent, its charge released;
// the others of the message are delivered.
func TestClaimRechecksTheSuppressionList(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 10}, mailing.Config{})
		ctx := context.Background()
		msg := basic()
		msg.To = []string{"ana@example.com", "luis@example.com"}
		r, err := e.M.Send(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := suppress.Insert(ctx, db, suppress.Add{Address: "luis@example.com", Scope: suppress.ScopeAll,
			Reason: suppress.ReasonHardBounce, Actor: "test", Now: e.Clock.Now()}); err != nil {
			t.Fatal(err)
		}
		sink := mailtest.NewSink(t)
		if n, err := engine(t, e, sink, mailing.EngineConfig{}).RunOnce(ctx); err != nil || n != 2 {
			t.Fatalf("RunOnce = %d, %v; want 2 handled", n, err)
		}
		got := map[string]mailing.Status{}
		rs, err := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range rs {
			got[x.Address] = x.Status
		}
		if got["ana@example.com"] != mailing.StatusSent || got["luis@example.com"] != mailing.StatusSuppressed {
			t.Fatalf("statuses %v", got)
		}
		ms := sink.Messages()
		if len(ms) != 1 || len(ms[0].To) != 1 || ms[0].To[0] != "ana@example.com" {
			t.Fatalf("sink got %+v, want one message to ana only", ms)
		}
		if used := e.Used(t, "sjti/talento"); used != 1 {
			t.Fatalf("used %d, want 1: the suppressed recipient's charge released", used)
		}
		verify(t, e.M)
		problems, err := report.New(db, report.Config{}).Verify(ctx)
		if err != nil || len(problems) > 0 {
			t.Fatalf("report verify: %v %v", problems, err)
		}
	})
}
