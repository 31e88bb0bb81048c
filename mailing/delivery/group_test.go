package delivery_test

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// runAll runs the engine until nothing is due and returns how many
// recipients it handled.
func runAll(t *testing.T, eng *mailing.Engine) int {
	t.Helper()
	total := 0
	for {
		n, err := eng.RunOnce(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return total
		}
		total += n
	}
}

// byLocal returns a message's recipients by the local part of their address.
func byLocal(t *testing.T, m *mailing.Mailer, messageID string) map[string]mailing.RecipientInfo {
	t.Helper()
	rs, err := m.Recipients(context.Background(), "", messageID, -1, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]mailing.RecipientInfo{}
	for _, r := range rs {
		out[strings.Split(r.Address, "@")[0]] = r
	}
	return out
}

// rcptCounts is how many recipients each transaction the sink took had, sorted.
func rcptCounts(msgs []mailtest.Message) []int {
	var n []int
	for _, m := range msgs {
		n = append(n, len(m.To))
	}
	slices.Sort(n)
	return n
}

// The recipients of one message at one domain share a transaction, and
// with it the bytes, the DKIM signatures and the return path of the first
// of them; each is recorded on its own.
func TestEngineGroupsRecipientsOfAMessageByDomain(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		records := addKeys(t, db, "servir.gob.pe")
		sink := mailtest.NewSink(t)
		eng := engine(t, e, sink, mailing.EngineConfig{})
		ctx := context.Background()
		msg := basic()
		msg.Account, msg.From = "enap/eventos", "ENAP <cursos@servir.gob.pe>"
		msg.To = []string{"Ana <ana@example.org>", "luis@example.net"}
		msg.Cc = []string{"eva@EXAMPLE.org"}
		msg.Bcc = []string{"oculto@example.org"}
		msg.HTML = "<p>Cuerpo</p>" // multipart: the boundaries must agree too
		r, err := e.M.Send(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if n := runAll(t, eng); n != 4 {
			t.Fatalf("handled %d recipients, want 4", n)
		}
		msgs := sink.Messages()
		if got := rcptCounts(msgs); !slices.Equal(got, []int{1, 3}) {
			t.Fatalf("transactions with %v recipients, want one of 3 (example.org) and one of 1 (example.net)", got)
		}
		s := byLocal(t, e.M, r.MessageID)
		for local, x := range s {
			if x.Status != mailing.StatusSent || x.Attempts != 1 || !strings.HasPrefix(x.Reply, "250") || x.FinalAt.IsZero() {
				t.Fatalf("%s: %+v", local, x)
			}
		}
		for _, m := range msgs {
			for _, v := range verifyDKIM(t, m.Data, records) {
				if v.Err != nil || v.Domain != "servir.gob.pe" {
					t.Fatalf("signature on the transaction to %v: %s %v", m.To, v.Domain, v.Err)
				}
			}
			if bytes.Contains(m.Data, []byte("oculto")) {
				t.Fatal("a Bcc recipient appears in the message")
			}
			// The return path names the first (lowest id) recipient.
			first := s["luis"]
			if len(m.To) == 3 {
				first = s["ana"]
				if !slices.Equal(m.To, []string{"ana@example.org", "eva@example.org", "oculto@example.org"}) {
					t.Fatalf("RCPTs %v", m.To)
				}
			}
			if want := eng.ReturnPath(first.ID); m.From != want {
				t.Fatalf("return path %q, want %q (the first recipient's)", m.From, want)
			}
			// Every recipient of the transaction is sent exactly what
			// Render says it is, after the signatures.
			for _, a := range m.To {
				raw, err := e.M.Render(ctx, s[strings.Split(a, "@")[0]].ID)
				if err != nil || !bytes.HasSuffix(m.Data, raw) {
					t.Fatalf("%s was not sent its rendered message: %v", a, err)
				}
			}
		}
		verify(t, e.M)
	})
}

// Inside one transaction each recipient keeps its own reply: a refused
// RCPT its refusal, the accepted ones the reply to the message.
func TestEngineGroupPartialSuccess(t *testing.T) {
	refuse := func(rcpt string) error {
		switch {
		case strings.HasPrefix(rcpt, "nobody@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(rcpt, "full@"):
			return &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "mailbox busy"}
		case strings.HasPrefix(rcpt, "closing@"):
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "shutting down"}
		case strings.HasPrefix(rcpt, "latin1@"):
			// A server answering in Latin-1, as some do: not UTF-8.
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "buz\xf3n inexistente"}
		}
		return nil
	}
	type want struct {
		status mailing.Status
		reply  string // prefix
	}
	sent, bounced := want{mailing.StatusSent, "250"}, want{mailing.StatusBounced, "550 5.1.1 no such user"}
	busy := want{mailing.StatusDeferred, "450 4.2.1 mailbox busy"}
	closing := want{mailing.StatusDeferred, "421 4.3.2 shutting down"}
	tests := []struct {
		name      string
		to        []string
		dataReply error
		want      map[string]want
		delivered []string // the RCPTs of the message the sink took, if any
	}{
		{name: "refused RCPTs", to: []string{"ok1", "nobody", "full", "ok2"},
			want:      map[string]want{"ok1": sent, "nobody": bounced, "full": busy, "ok2": sent},
			delivered: []string{"ok1@example.org", "ok2@example.org"}},
		{name: "message refused", to: []string{"ok1", "nobody", "ok2"},
			dataReply: &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 6, 0}, Message: "content rejected"},
			want: map[string]want{"ok1": {mailing.StatusBounced, "554 5.6.0 content rejected"}, "nobody": bounced,
				"ok2": {mailing.StatusBounced, "554 5.6.0 content rejected"}}},
		{name: "message deferred", to: []string{"ok1", "full", "nobody"},
			dataReply: &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"},
			want:      map[string]want{"ok1": {mailing.StatusDeferred, "451 4.3.0 try later"}, "full": busy, "nobody": bounced}},
		// 421 closes the session (RFC 5321 §3.8): no DATA; the recipients
		// accepted and those not yet tried are deferred with it.
		// What a server says is kept as valid UTF-8 text (an octet that is
		// not becomes U+FFFD), which both databases store.
		{name: "a reply that is not UTF-8", to: []string{"ok1", "latin1", "ok2"},
			want:      map[string]want{"ok1": sent, "latin1": {mailing.StatusBounced, "550 5.1.1 buz\ufffdn inexistente"}, "ok2": sent},
			delivered: []string{"ok1@example.org", "ok2@example.org"}},
		{name: "421 at RCPT", to: []string{"ok1", "nobody", "closing", "ok2"},
			want: map[string]want{"ok1": closing, "nobody": bounced, "closing": closing, "ok2": closing}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			storetest.Each(t, func(t *testing.T, db *bun.DB) {
				e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
				sink := mailtest.NewSink(t)
				sink.Reply = refuse
				sink.DataReply = func([]string) error { return tc.dataReply }
				eng := engine(t, e, sink, mailing.EngineConfig{})
				ctx := context.Background()
				msg := basic()
				msg.To = nil
				for _, l := range tc.to {
					msg.To = append(msg.To, l+"@example.org")
				}
				r, err := e.M.Send(ctx, msg)
				if err != nil {
					t.Fatal(err)
				}
				if n, err := eng.RunOnce(ctx); err != nil || n != len(tc.to) {
					t.Fatalf("RunOnce = %d, %v", n, err)
				}
				msgs := sink.Messages()
				switch {
				case tc.delivered == nil && len(msgs) != 0:
					t.Fatalf("the sink took %d messages, want none", len(msgs))
				case tc.delivered != nil && (len(msgs) != 1 || !slices.Equal(msgs[0].To, tc.delivered)):
					t.Fatalf("the sink took %+v, want one message to %v", msgs, tc.delivered)
				}
				s := byLocal(t, e.M, r.MessageID)
				for local, w := range tc.want {
					if x := s[local]; x.Status != w.status || !strings.HasPrefix(x.Reply, w.reply) || x.Attempts != 1 || !utf8.ValidString(x.Reply) || len(x.Reply) > 2000 {
						t.Errorf("%s: %s %q (attempts %d), want %s %q", local, x.Status, x.Reply, x.Attempts, w.status, w.reply)
					}
				}
				verify(t, e.M)
			})
		})
	}
}

// MaxRecipientsPerTransaction splits a domain's recipients.
func TestEngineMaxRecipientsPerTransaction(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		sink := mailtest.NewSink(t)
		eng := engine(t, e, sink, mailing.EngineConfig{MaxRecipientsPerTransaction: 2})
		msg := basic()
		msg.To = nil
		for i := range 5 {
			msg.To = append(msg.To, fmt.Sprintf("p%d@example.org", i))
		}
		r, err := e.M.Send(context.Background(), msg)
		if err != nil {
			t.Fatal(err)
		}
		if n := runAll(t, eng); n != 5 {
			t.Fatalf("handled %d, want 5", n)
		}
		if got := rcptCounts(sink.Messages()); !slices.Equal(got, []int{1, 2, 2}) {
			t.Fatalf("transactions with %v recipients, want 2, 2 and 1", got)
		}
		for local, x := range byLocal(t, e.M, r.MessageID) {
			if x.Status != mailing.StatusSent {
				t.Fatalf("%s: %+v", local, x)
			}
		}
	})
}

// Bulk mail (a List-Unsubscribe token per recipient) and batch recipients
// (each its own rendering) are never grouped.
func TestEngineBulkAndBatchGoOnePerTransaction(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		sink := mailtest.NewSink(t)
		eng := engine(t, e, sink, mailing.EngineConfig{})
		ctx := context.Background()
		bulk := basic()
		bulk.Account, bulk.Priority = "enap/eventos", mailing.Bulk
		bulk.To = []string{"b1@example.org", "b2@example.org", "b3@example.org"}
		if _, err := e.M.Send(ctx, bulk); err != nil {
			t.Fatal(err)
		}
		for _, p := range []mailing.Priority{mailing.Transactional, mailing.Bulk} {
			if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Priority: p,
				Subject: "Hola {{.N}}", Text: "{{.N}}", Recipients: mailing.List(
					mailing.Recipient{Address: string(p) + "1@example.org", Data: map[string]string{"N": "1"}},
					mailing.Recipient{Address: string(p) + "2@example.org", Data: map[string]string{"N": "2"}})}); err != nil {
				t.Fatal(err)
			}
		}
		if n := runAll(t, eng); n != 7 {
			t.Fatalf("handled %d, want 7", n)
		}
		msgs := sink.Messages()
		if got := rcptCounts(msgs); !slices.Equal(got, []int{1, 1, 1, 1, 1, 1, 1}) {
			t.Fatalf("transactions with %v recipients, want 7 of one", got)
		}
		unsubscribe := map[string]bool{}
		for _, m := range msgs {
			to := m.To[0]
			at := strings.IndexByte(to, '@')
			if strings.HasPrefix(to, "transactional") && !bytes.Contains(m.Data, []byte("Subject: Hola "+to[at-1:at]+"\r\n")) {
				t.Fatalf("%s was not sent its own rendering:\n%s", to, m.Data)
			}
			if i := bytes.Index(m.Data, []byte("List-Unsubscribe: ")); i >= 0 {
				unsubscribe[string(m.Data[i:i+bytes.IndexByte(m.Data[i:], '\n')])] = true
			}
		}
		if len(unsubscribe) != 5 {
			t.Fatalf("%d distinct List-Unsubscribe headers, want one for each of the 5 bulk recipients", len(unsubscribe))
		}
	})
}
