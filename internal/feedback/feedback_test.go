package feedback_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/feedback"
	"github.com/servir-pe/envios/internal/inbound"
	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/report"
)

const domain = "envios.servir.gob.pe"

// world is a mailer that delivered mail to a sink, and the MX its bounces
// come back to.
type world struct {
	env    mailingtest.Env
	keys   *rcpttoken.Keyring
	proc   *feedback.Processor
	mxAddr string
	sent   map[string]string // address → the token of its envelope sender
}

func newWorld(t *testing.T, db *bun.DB, to []string, withProcessor bool, prio mailing.Priority) *world {
	t.Helper()
	ctx := context.Background()
	e := mailingtest.Setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
	msg := mailingtest.Basic()
	msg.To, msg.Priority, msg.Campaign = to, prio, "boletin"
	if _, err := e.M.Send(ctx, msg); err != nil {
		t.Fatal(err)
	}
	sink := mailtest.NewSink(t)
	eng, err := e.M.NewEngine(ctx, mailing.EngineConfig{ReturnPathDomain: domain,
		Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := eng.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	w := &world{env: e, sent: map[string]string{}}
	for _, m := range sink.Messages() {
		local, _, _ := strings.Cut(m.From, "@")
		for _, rcpt := range m.To {
			w.sent[rcpt] = strings.TrimPrefix(local, "b+")
		}
	}
	if len(w.sent) != len(to) {
		t.Fatalf("sink got %v", w.sent)
	}
	if w.keys, err = rcpttoken.Load(ctx, db, nil, e.Clock.Now()); err != nil {
		t.Fatal(err)
	}
	w.proc = &feedback.Processor{DB: db, Tokens: w.keys, Now: e.Clock.Now, Logger: slog.New(slog.DiscardHandler)}
	var p inbound.Processor
	if withProcessor {
		p = w.proc
	}
	w.mxAddr = startMX(t, db, w.keys, p)
	return w
}

func startMX(t *testing.T, db *bun.DB, keys *rcpttoken.Keyring, p inbound.Processor) string {
	t.Helper()
	srv, err := inbound.New(inbound.Config{DB: db, Tokens: keys, Domain: domain, Processor: p, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
		if err := <-done; !errors.Is(err, inbound.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	return l.Addr().String()
}

// mail sends raw to rcpt on the MX with a null reverse-path, as a bounce
// arrives, and returns the id of the row it stored.
func (w *world) mail(t *testing.T, from, rcpt, raw string) int64 {
	t.Helper()
	c, err := smtp.Dial(w.mxAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("mx.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		t.Fatal(err)
	}
	wc, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := wc.Write([]byte(strings.ReplaceAll(raw, "\n", "\r\n"))); err != nil {
		t.Fatal(err)
	}
	if err := wc.Close(); err != nil {
		t.Fatal(err)
	}
	var id int64
	if err := w.env.DB.NewRaw("SELECT max(id) FROM mail_inbound").Scan(context.Background(), &id); err != nil {
		t.Fatal(err)
	}
	return id
}

// processed waits for row id to be processed and returns it.
func (w *world) processed(t *testing.T, id int64) mailstore.InboundRow {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var r mailstore.InboundRow
		if err := w.env.DB.NewSelect().Model(&r).Where("id = ?", id).Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		if r.Kind != "" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("inbound %d not processed in 10 s", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (w *world) status(t *testing.T, addr string) (mailing.Status, string) {
	t.Helper()
	var r struct {
		Status string
		Reply  string
	}
	if err := w.env.DB.NewRaw("SELECT status, reply FROM mail_recipients WHERE address = ? ORDER BY id LIMIT 1", addr).
		Scan(context.Background(), &r); err != nil {
		t.Fatal(err)
	}
	return mailing.Status(r.Status), r.Reply
}

func (w *world) verify(t *testing.T) {
	t.Helper()
	mailingtest.Verify(t, w.env.M)
	problems, err := report.New(w.env.DB, report.Config{}).Verify(context.Background())
	if err != nil || len(problems) > 0 {
		t.Fatalf("report verify: %v %v", problems, err)
	}
}

func dsn(tok, final, status, diag string) string {
	return "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>\nTo: b+" + tok + "@" + domain + "\n" +
		"Subject: Undelivered Mail Returned to Sender\nAuto-Submitted: auto-replied\nMIME-Version: 1.0\n" +
		"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n" +
		"--B\nContent-Type: text/plain\n\nI'm sorry to have to inform you that your message could not be delivered.\n\n" +
		"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.com\nArrival-Date: Thu, 26 Nov 2026 12:00:00 -0500\n\n" +
		"Final-Recipient: rfc822; " + final + "\nOriginal-Recipient: rfc822;" + final + "\nAction: failed\nStatus: " + status + "\n" +
		"Remote-MTA: dns; mailbox.example.com\nDiagnostic-Code: smtp; " + diag + "\n\n" +
		"--B\nContent-Type: text/rfc822-headers\n\nReturn-Path: <b+" + tok + "@" + domain + ">\nSubject: Hola\n\n--B--\n"
}

// A DSN for a delivered recipient bounces it and, for an unknown user,
// suppresses the address for all mail: the next message to it is
// suppressed, uncharged. The same DSN again changes nothing.
func TestDSNBouncesAndSuppresses(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		w := newWorld(t, db, []string{"ana@example.com", "luis@example.com"}, true, mailing.Bulk)
		ctx := context.Background()
		tok := w.sent["ana@example.com"]
		raw := dsn(tok, "ana@example.com", "5.1.1", "550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown")
		row := w.processed(t, w.mail(t, "", "b+"+tok+"@"+domain, raw))
		if row.Kind != "dsn" || !strings.Contains(row.Result, "suppressed (hard_bounce)") {
			t.Fatalf("row kind %q result %q", row.Kind, row.Result)
		}
		if st, reply := w.status(t, "ana@example.com"); st != mailing.StatusBounced || !strings.Contains(reply, "5.1.1") {
			t.Fatalf("ana %s %q", st, reply)
		}
		if st, _ := w.status(t, "luis@example.com"); st != mailing.StatusSent {
			t.Fatalf("luis %s: a DSN for ana touched another recipient", st)
		}
		used := w.env.Used(t, "sjti/talento")
		msg := mailingtest.Basic()
		r, err := w.env.M.Send(ctx, msg) // transactional, to ana: a hard bounce stops everything
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Suppressed) != 1 || r.Suppressed[0].Address != "ana@example.com" || w.env.Used(t, "sjti/talento") != used {
			t.Fatalf("next send: suppressed %+v, used %d → %d", r.Suppressed, used, w.env.Used(t, "sjti/talento"))
		}
		again := w.processed(t, w.mail(t, "", "b+"+tok+"@"+domain, raw))
		if !strings.Contains(again.Result, "recorded nothing") {
			t.Fatalf("second DSN: %q", again.Result)
		}
		later := func() time.Time { return w.env.Clock.Now().Add(time.Hour) }
		evs, _, err := report.New(db, report.Config{Now: later}).Events(ctx, report.EventsFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var bounced []report.Event
		for _, ev := range evs {
			if ev.Type == "bounced" {
				bounced = append(bounced, ev)
			}
		}
		if len(bounced) != 1 || bounced[0].Address != "ana@example.com" || bounced[0].Class != "hard" || bounced[0].Detail["source"] != "async" ||
			bounced[0].Detail["status"] != "5.1.1" || bounced[0].Detail["reporting_mta"] != "mx.example.com" {
			t.Fatalf("bounced events in the stream: %+v", bounced)
		}
		w.verify(t)
	})
}

// A policy DSN (DMARC) bounces the recipient and suppresses nothing; a
// delayed DSN is an event; an auto-reply is kept and ignored.
func TestDSNClasses(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		w := newWorld(t, db, []string{"ana@example.com", "luis@example.com", "eva@example.com"}, true, mailing.Bulk)
		ctx := context.Background()
		ana, luis, eva := w.sent["ana@example.com"], w.sent["luis@example.com"], w.sent["eva@example.com"]
		paused := make(chan string, 1)
		w.proc.OnPolicy = func(domain, host, reply string) { paused <- domain + " " + host + " " + reply }
		row := w.processed(t, w.mail(t, "", "b+"+ana+"@"+domain,
			dsn(ana, "ana@example.com", "5.7.26", "550 5.7.26 Unauthenticated email from servir.gob.pe is not accepted due to domain's DMARC policy")))
		if row.Kind != "dsn" || !strings.Contains(row.Result, "policy") {
			t.Fatalf("policy DSN: %q %q", row.Kind, row.Result)
		}
		if set, _ := suppress.Lookup(ctx, db, []string{"ana@example.com"}, w.env.Clock.Now()); len(set) != 0 {
			t.Fatalf("a DMARC bounce suppressed the recipient: %+v", set)
		}
		select {
		case got := <-paused:
			if !strings.HasPrefix(got, "example.com mailbox.example.com 5.7.26 ") {
				t.Fatalf("OnPolicy told %q", got)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("OnPolicy was not told of the DMARC bounce")
		}
		delayed := strings.Replace(dsn(luis, "luis@example.com", "4.4.7", "421 4.4.7 still trying"), "Action: failed", "Action: delayed\nWill-Retry-Until: Mon, 30 Nov 2026 12:00:00 -0500", 1)
		row = w.processed(t, w.mail(t, "", "b+"+luis+"@"+domain, delayed))
		if row.Kind != "delayed" {
			t.Fatalf("delayed DSN: %q %q", row.Kind, row.Result)
		}
		if st, _ := w.status(t, "luis@example.com"); st != mailing.StatusSent {
			t.Fatalf("luis %s after a delay report", st)
		}
		auto := "From: eva@example.com\nTo: b+" + eva + "@" + domain + "\nSubject: Fuera de la oficina\nAuto-Submitted: auto-replied\n\n" +
			"Estoy de vacaciones; su mensaje no será leído hasta el lunes. Mailbox unavailable.\n"
		row = w.processed(t, w.mail(t, "eva@example.com", "b+"+eva+"@"+domain, auto))
		if row.Kind != "auto-reply" {
			t.Fatalf("auto-reply: %q %q", row.Kind, row.Result)
		}
		if st, _ := w.status(t, "eva@example.com"); st != mailing.StatusSent {
			t.Fatalf("eva %s after an auto-reply", st)
		}
		var n int
		if err := db.NewRaw("SELECT count(*) FROM mail_events WHERE type = 'delayed'").Scan(ctx, &n); err != nil || n != 1 {
			t.Fatalf("delayed events %d, %v", n, err)
		}
		w.verify(t)
	})
}

// A complaint to fbl@ finds its recipient by the token in the returned
// message and stops bulk mail only; mail to u+TOKEN@ unsubscribes.
func TestComplaintAndMailtoUnsubscribe(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		w := newWorld(t, db, []string{"ana@example.com", "luis@example.com"}, true, mailing.Bulk)
		ctx := context.Background()
		ana, luis := w.sent["ana@example.com"], w.sent["luis@example.com"]
		arf := "From: fbl@isp.example\nTo: fbl@" + domain + "\nSubject: FW: Hola\nMIME-Version: 1.0\n" +
			"Content-Type: multipart/report; report-type=feedback-report; boundary=\"F\"\n\n" +
			"--F\nContent-Type: text/plain\n\nThis is an email abuse report.\n\n" +
			"--F\nContent-Type: message/feedback-report\n\nFeedback-Type: abuse\nUser-Agent: isp-fbl/1.0\nVersion: 1\n" +
			"Original-Mail-From: <b+" + ana + "@" + domain + ">\nOriginal-Rcpt-To: <redacted@isp.example>\nReporting-MTA: dns; fbl.isp.example\n\n" +
			"--F\nContent-Type: message/rfc822\n\nReturn-Path: <b+" + ana + "@" + domain + ">\nFrom: avisos@servir.gob.pe\n" +
			"List-Unsubscribe: <https://" + domain + "/u/" + ana + ">, <mailto:u+" + ana + "@" + domain + ">\nSubject: Hola\n\nCuerpo\n--F--\n"
		row := w.processed(t, w.mail(t, "fbl@isp.example", "fbl@"+domain, arf))
		if row.Kind != "complaint" || row.RecipientID != nil || !strings.Contains(row.Result, "suppressed for bulk mail") {
			t.Fatalf("complaint: %q %q", row.Kind, row.Result)
		}
		bulk, err := suppress.Check(ctx, db, suppress.Mail{Bulk: true}, []string{"ana@example.com"}, w.env.Clock.Now())
		if err != nil || bulk["ana@example.com"].Reason != suppress.ReasonComplaint {
			t.Fatalf("bulk check after a complaint: %+v %v", bulk, err)
		}
		tx, err := suppress.Check(ctx, db, suppress.Mail{}, []string{"ana@example.com"}, w.env.Clock.Now())
		if err != nil || len(tx) != 0 {
			t.Fatalf("a complaint stopped transactional mail: %+v %v", tx, err)
		}
		row = w.processed(t, w.mail(t, "luis@example.com", "u+"+luis+"@"+domain, "From: luis@example.com\nSubject: unsubscribe\n\n"))
		if row.Kind != "unsubscribe" || !strings.Contains(row.Result, "luis@example.com unsubscribed") {
			t.Fatalf("mailto unsubscribe: %q %q", row.Kind, row.Result)
		}
		var events int
		if err := db.NewRaw("SELECT count(*) FROM mail_events WHERE type IN ('complained', 'unsubscribed')").Scan(ctx, &events); err != nil || events != 2 {
			t.Fatalf("feedback events %d, %v; want 2", events, err)
		}
		w.verify(t)
	})
}

// What was stored while no processor ran is processed when one starts.
func TestPendingProcessedAtStart(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		w := newWorld(t, db, []string{"ana@example.com"}, false, mailing.Bulk)
		tok := w.sent["ana@example.com"]
		id := w.mail(t, "", "b+"+tok+"@"+domain, dsn(tok, "ana@example.com", "5.1.1", "550 5.1.1 user unknown"))
		time.Sleep(100 * time.Millisecond)
		var r mailstore.InboundRow
		if err := db.NewSelect().Model(&r).Where("id = ?", id).Scan(context.Background()); err != nil || r.Kind != "" {
			t.Fatalf("processed without a processor: %q %v", r.Kind, err)
		}
		w.mxAddr = startMX(t, db, w.keys, w.proc)
		if row := w.processed(t, id); row.Kind != "dsn" {
			t.Fatalf("pending row: %q %q", row.Kind, row.Result)
		}
		if st, _ := w.status(t, "ana@example.com"); st != mailing.StatusBounced {
			t.Fatalf("ana %s", st)
		}
	})
}

// Transactional mail to one domain goes in one transaction, with the
// first recipient's token in the envelope: a DSN about another recipient
// of it bounces that one, never the token's.
func TestDSNForAnotherRecipientOfTheTransaction(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		w := newWorld(t, db, []string{"ana@example.com", "luis@example.com"}, true, mailing.Transactional)
		tok := w.sent["ana@example.com"]
		if w.sent["luis@example.com"] != tok {
			t.Fatalf("tokens %v: want one transaction", w.sent)
		}
		row := w.processed(t, w.mail(t, "", "b+"+tok+"@"+domain, dsn(tok, "LUIS@example.com", "5.1.1", "550 5.1.1 no such user")))
		if !strings.Contains(row.Result, "luis@example.com bounced (hard)") {
			t.Fatalf("result %q", row.Result)
		}
		if st, _ := w.status(t, "ana@example.com"); st != mailing.StatusSent {
			t.Fatalf("ana %s: bounced for luis's DSN", st)
		}
		if st, _ := w.status(t, "luis@example.com"); st != mailing.StatusBounced {
			t.Fatalf("luis %s", st)
		}
		row = w.processed(t, w.mail(t, "", "b+"+tok+"@"+domain, dsn(tok, "forwarded@elsewhere.example", "5.1.1", "550 5.1.1 no such user")))
		if !strings.Contains(row.Result, "no recipient of the message is forwarded@elsewhere.example") {
			t.Fatalf("unmatched DSN of a shared transaction: %q", row.Result)
		}
		if st, _ := w.status(t, "ana@example.com"); st != mailing.StatusSent {
			t.Fatalf("ana %s after an unmatched DSN", st)
		}
		w.verify(t)
	})
}

// Two processors (two relayd on one database) racing for the same row
// apply it once: a delay report (an event, no status change to guard it)
// is recorded once.
func TestConcurrentProcessorsApplyOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		w := newWorld(t, db, []string{"ana@example.com"}, false, mailing.Bulk)
		tok := w.sent["ana@example.com"]
		delayed := strings.Replace(dsn(tok, "ana@example.com", "4.2.2", "452 4.2.2 mailbox full"), "Action: failed", "Action: delayed", 1)
		id := w.mail(t, "", "b+"+tok+"@"+domain, delayed)
		other := &feedback.Processor{DB: db, Tokens: w.keys, Now: w.env.Clock.Now, Logger: slog.New(slog.DiscardHandler)}
		errs := make(chan error, 2)
		for _, p := range []*feedback.Processor{w.proc, other} {
			go func() { errs <- p.Process(context.Background(), id) }()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
		var n int
		if err := db.NewRaw("SELECT count(*) FROM mail_events WHERE type = 'delayed'").Scan(context.Background(), &n); err != nil {
			t.Fatal(err)
		}
		if n != 1 || w.proc.Stats().Delayed+other.Stats().Delayed != 1 {
			t.Fatalf("delayed events %d, counted %d + %d; want 1", n, w.proc.Stats().Delayed, other.Stats().Delayed)
		}
		w.verify(t)
	})
}
