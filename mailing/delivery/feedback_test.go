package delivery_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/delivery"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/report"
)

// The replies of a delivery feed the suppression list through the one
// classifier: an unknown user is suppressed at once; a policy refusal
// (DMARC) suppresses nobody, raises the alarm and pauses bulk mail to the
// domain while transactional mail goes on; a full mailbox starts a soft
// streak that the next delivery ends.
func TestDeliveryRepliesFeedTheSuppressionList(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		ctx := context.Background()
		sink := mailtest.NewSink(t)
		full := true
		sink.Reply = func(rcpt string) error {
			switch {
			case strings.HasPrefix(rcpt, "nadie@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "The email account that you tried to reach does not exist"}
			case rcpt == "x@dmarc.example":
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 26}, Message: "Unauthenticated email is not accepted: DMARC policy"}
			case strings.HasPrefix(rcpt, "llena@") && full:
				return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 2, 2}, Message: "Mailbox full"}
			}
			return nil
		}
		send := func(to string, prio mailing.Priority) string {
			t.Helper()
			msg := basic()
			msg.To, msg.Priority = []string{to}, prio
			r, err := e.M.Send(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			return r.MessageID
		}
		status := func(id string) mailing.RecipientInfo {
			t.Helper()
			rs, err := e.M.Recipients(ctx, "", id, -1, 0)
			if err != nil || len(rs) != 1 {
				t.Fatalf("Recipients: %v %v", rs, err)
			}
			return rs[0]
		}
		suppressed := func(addr string) map[string]suppress.Entry {
			t.Helper()
			set, err := suppress.Check(ctx, db, suppress.Mail{Bulk: true}, []string{addr}, e.Clock.Now())
			if err != nil {
				t.Fatal(err)
			}
			return set
		}
		hard := send("nadie@example.com", mailing.Transactional)
		dmarc := send("x@dmarc.example", mailing.Bulk)
		soft := send("llena@example.org", mailing.Transactional)
		eng := engine(t, e, sink, mailing.EngineConfig{})
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if s := status(hard); s.Status != mailing.StatusBounced {
			t.Fatalf("5.1.1: %+v", s)
		}
		if set := suppressed("nadie@example.com"); set["nadie@example.com"].Reason != suppress.ReasonHardBounce {
			t.Fatalf("5.1.1 did not suppress: %+v", set)
		}
		if s := status(dmarc); s.Status != mailing.StatusBounced {
			t.Fatalf("5.7.26: %+v", s)
		}
		if set := suppressed("x@dmarc.example"); len(set) != 0 {
			t.Fatalf("a DMARC refusal suppressed the recipient: %+v", set)
		}
		if got := eng.Stats().PolicyRefusals["dmarc.example"]; got != 1 {
			t.Fatalf("PolicyRefusals = %v", eng.Stats().PolicyRefusals)
		}
		if s := status(soft); s.Status != mailing.StatusDeferred {
			t.Fatalf("4.2.2: %+v", s)
		}
		if set := suppressed("llena@example.org"); len(set) != 0 {
			t.Fatalf("one full-mailbox reply suppressed: %+v", set)
		}
		var streak int
		if err := db.NewRaw("SELECT count(*) FROM mail_failure_streaks WHERE address = 'llena@example.org'").Scan(ctx, &streak); err != nil || streak != 1 {
			t.Fatalf("streak rows %d, %v; want 1", streak, err)
		}

		// Bulk mail to the domain that refused for policy waits; transactional goes.
		before := len(sink.Messages())
		bulk := send("y@dmarc.example", mailing.Bulk)
		tx := send("z@dmarc.example", mailing.Transactional)
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if s := status(tx); s.Status != mailing.StatusSent {
			t.Fatalf("transactional after a policy refusal: %+v", s)
		}
		if s := status(bulk); s.Status != mailing.StatusDeferred || s.Attempts != 0 || !strings.Contains(s.Reply, "paused") {
			t.Fatalf("bulk after a policy refusal: %+v", s)
		}
		if n := len(sink.Messages()) - before; n != 1 {
			t.Fatalf("sink got %d messages, want 1 (the transactional one)", n)
		}

		// The pause ends; the full mailbox has room: both go, the streak ends.
		full = false
		e.Clock.Add(delivery.PolicyPause + time.Hour)
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if s := status(bulk); s.Status != mailing.StatusSent {
			t.Fatalf("bulk after the pause: %+v", s)
		}
		if s := status(soft); s.Status != mailing.StatusSent {
			t.Fatalf("full mailbox later: %+v", s)
		}
		if err := db.NewRaw("SELECT count(*) FROM mail_failure_streaks").Scan(ctx, &streak); err != nil || streak != 0 {
			t.Fatalf("streak rows %d, %v after a delivery; want 0", streak, err)
		}
		verify(t, e.M)
		problems, err := report.New(db, report.Config{}).Verify(ctx)
		if err != nil || len(problems) > 0 {
			t.Fatalf("report verify: %v %v", problems, err)
		}
	})
}
