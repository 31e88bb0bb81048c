package delivery_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// dns serves the TXT records of the keys added, for the verifiers.
type txtRecords map[string]string

func addKeys(t *testing.T, db *bun.DB, domain string) txtRecords {
	t.Helper()
	records := txtRecords{}
	for _, alg := range []dkimkey.Algorithm{dkimkey.RSA2048, dkimkey.Ed25519} {
		k, err := dkimkey.Add(context.Background(), db, nil, domain, string(alg)+"-sel", alg, start)
		if err != nil {
			t.Fatal(err)
		}
		name, value := k.Record()
		records[name] = value
	}
	return records
}

func engine(t *testing.T, e env, sink *mailtest.Sink, cfg mailing.EngineConfig) *mailing.Engine {
	t.Helper()
	cfg.Transport = &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}
	cfg.ReturnPathDomain = "envios.servir.gob.pe"
	eng, err := e.M.NewEngine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

func verifyDKIM(t *testing.T, raw []byte, records txtRecords) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(raw), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		if v, ok := records[name]; ok {
			return []string{v}, nil
		}
		return nil, fmt.Errorf("no TXT for %s", name)
	}})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func TestEngineDeliversSignedMail(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		records := addKeys(t, db, "servir.gob.pe")
		sink := mailtest.NewSink(t)
		eng := engine(t, e, sink, mailing.EngineConfig{Workers: 1}) // one worker: delivery order is claim order
		ctx := context.Background()
		one := basic()
		one.Account = "enap/eventos"
		one.To = []string{"Ana <ana@example.com>"}
		if _, err := e.M.Send(ctx, one); err != nil {
			t.Fatal(err)
		}
		b, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "ENAP <cursos@servir.gob.pe>",
			Subject: "Hola {{.N}}", HTML: "<p>{{.N}}</p>", Recipients: mailing.List(
				mailing.Recipient{Address: "x@example.org", Data: map[string]string{"N": "X"}},
				mailing.Recipient{Address: "y@example.org", Data: map[string]string{"N": "Y"}})})
		if err != nil {
			t.Fatal(err)
		}
		n, err := eng.RunOnce(ctx)
		if err != nil || n != 3 {
			t.Fatalf("RunOnce = %d, %v", n, err)
		}
		msgs := sink.Messages()
		if len(msgs) != 3 {
			t.Fatalf("sink got %d messages", len(msgs))
		}
		// Transactional first.
		if msgs[0].To[0] != "ana@example.com" || !msgs[0].TLS {
			t.Fatalf("first delivery to %v (TLS %v), want the transactional message", msgs[0].To, msgs[0].TLS)
		}
		for _, m := range msgs {
			vs := verifyDKIM(t, m.Data, records)
			if len(vs) != 2 {
				t.Fatalf("%d signatures, want RSA and Ed25519", len(vs))
			}
			for _, v := range vs {
				if v.Err != nil || v.Domain != "servir.gob.pe" {
					t.Fatalf("signature %s: %v", v.Domain, v.Err)
				}
			}
			id, ok := eng.RecipientOfToken(strings.TrimSuffix(strings.TrimPrefix(m.From, "b+"), "@envios.servir.gob.pe"))
			if !ok || !strings.HasSuffix(m.From, "@envios.servir.gob.pe") {
				t.Fatalf("return path %q does not name a recipient", m.From)
			}
			raw, err := e.M.Render(ctx, id)
			if err != nil || !bytes.Contains(m.Data, raw[:bytes.Index(raw, []byte("\r\n"))]) {
				t.Fatalf("return path names recipient %d, which is not this message: %v", id, err)
			}
			bulk := bytes.Contains(m.Data, []byte("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"))
			if bulk != (m.To[0] != "ana@example.com") {
				t.Fatalf("List-Unsubscribe on %s: %v", m.To[0], bulk)
			}
			// Bulk mail carries Gmail's Feedback-ID, covered by the signatures.
			hasFID := bytes.Contains(m.Data, []byte("\r\nFeedback-ID: "))
			signsFID := bytes.Contains(m.Data, []byte("Feedback-ID:Feedback-ID")) || bytes.Contains(m.Data, []byte("Feedback-ID:\r\n"))
			if hasFID != bulk || (bulk && !signsFID) {
				t.Fatalf("Feedback-ID on %s: present %v, signed %v", m.To[0], hasFID, signsFID)
			}
			// A header added in transit breaks the signature (over-signing).
			forged := append([]byte("From: evil@example.net\r\n"), m.Data...)
			for _, v := range verifyDKIM(t, forged, records) {
				if v.Err == nil {
					t.Fatal("a second From header did not break the signature")
				}
			}
		}
		pythonVerify(t, msgs[1].Data, records)
		rs, _ := e.M.Recipients(ctx, "", b.MessageID, -1, 0)
		for _, r := range rs {
			if r.Status != mailing.StatusSent || r.Attempts != 1 || r.RemoteHost != "127.0.0.1" || !strings.HasPrefix(r.Reply, "250") || r.FinalAt.IsZero() {
				t.Fatalf("recipient row %+v", r)
			}
		}
		if n, _ := eng.RunOnce(ctx); n != 0 {
			t.Fatalf("a second round delivered %d again", n)
		}
		verify(t, e.M)
	})
}

// pythonVerify checks the signatures with an independent implementation,
// Debian's python3-dkim (dkimpy), fed the DNS records directly.
func pythonVerify(t *testing.T, raw []byte, records txtRecords) {
	t.Helper()
	python := ""
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if exec.Command(p, "-c", "import dkim").Run() == nil {
			python = p
			break
		}
	}
	if python == "" {
		if os.Getenv("ENVIOS_TEST_DKIMPY") == "required" {
			t.Fatal("python3-dkim is required (ENVIOS_TEST_DKIMPY=required) but not installed")
		}
		t.Log("independent DKIM check skipped: install python3-dkim (.ci/run does)")
		return
	}
	var recs []string
	for k, v := range records {
		recs = append(recs, fmt.Sprintf("%q: %q", k+".", v))
	}
	script := `import sys, dkim
recs = {` + strings.Join(recs, ", ") + `}
msg = sys.stdin.buffer.read()
d = dkim.DKIM(msg)
n = 0
for i in range(2):
    ok = d.verify(idx=i, dnsfunc=lambda name, timeout=5: recs.get(name.decode(), "").encode())
    print("sig", i, ok)
    if not ok: sys.exit(1)
`
	cmd := exec.Command(python, "-c", script)
	cmd.Stdin = bytes.NewReader(raw)
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("sig 0 True")) || !bytes.Contains(out, []byte("sig 1 True")) {
		t.Fatalf("dkimpy does not verify: %v\n%s\n%s", err, out, raw)
	}
}

func TestEngineOutcomes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{})
		addKeys(t, db, "servir.gob.pe")
		sink := mailtest.NewSink(t)
		sink.Reply = func(rcpt string) error {
			switch {
			case strings.HasPrefix(rcpt, "nobody@"):
				return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
			case strings.HasPrefix(rcpt, "later@"):
				return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "try again later"}
			}
			return nil
		}
		eng := engine(t, e, sink, mailing.EngineConfig{MaxAge: 3 * time.Hour})
		ctx := context.Background()
		msg := basic()
		msg.To = []string{"ok@example.com", "nobody@example.com", "later@example.com"}
		r, err := e.M.Send(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := eng.RunOnce(ctx); err != nil || n != 3 {
			t.Fatalf("RunOnce %d %v", n, err)
		}
		status := func() map[string]mailing.RecipientInfo {
			rs, _ := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
			out := map[string]mailing.RecipientInfo{}
			for _, x := range rs {
				out[strings.Split(x.Address, "@")[0]] = x
			}
			return out
		}
		s := status()
		if s["ok"].Status != mailing.StatusSent || s["nobody"].Status != mailing.StatusBounced || s["later"].Status != mailing.StatusDeferred {
			t.Fatalf("statuses %+v", s)
		}
		if s["nobody"].Reply != "550 5.1.1 no such user" || s["later"].Reply != "451 4.7.1 try again later" {
			t.Fatalf("replies %q %q", s["nobody"].Reply, s["later"].Reply)
		}
		if d := s["later"].DueAt.Sub(start); d < 48*time.Second || d > 72*time.Second {
			t.Fatalf("first retry in %v, want about a minute", d)
		}
		// Not due yet: nothing happens.
		if n, _ := eng.RunOnce(ctx); n != 0 {
			t.Fatalf("retried early: %d", n)
		}
		// Retries back off; past MaxAge the recipient fails, still charged.
		for range 6 {
			e.Clock.Add(time.Hour)
			if _, err := eng.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
		}
		s = status()
		if s["later"].Status != mailing.StatusFailed || s["later"].Attempts < 3 || s["later"].FinalAt.IsZero() {
			t.Fatalf("later: %+v", s["later"])
		}
		if u := e.Used(t, "sjti/talento"); u != 3 {
			t.Fatalf("used %d: bounced and failed-after-attempts stay charged", u)
		}
		// Every attempt is kept, with its time and reply; the row keeps the last.
		later := s["later"]
		as, err := e.M.Attempts(ctx, "", "", later.ID)
		if err != nil || len(as) != later.Attempts {
			t.Fatalf("%d attempts kept, the row counts %d (%v)", len(as), later.Attempts, err)
		}
		for i, a := range as {
			if a.Reply != "451 4.7.1 try again later" || a.RemoteHost == "" || (i > 0 && !a.At.After(as[i-1].At)) {
				t.Fatalf("attempt %d: %+v", i, a)
			}
			want := mailing.StatusDeferred
			if i == len(as)-1 {
				want = mailing.StatusFailed
			}
			if a.Status != want {
				t.Fatalf("attempt %d status %s, want %s", i, a.Status, want)
			}
		}
		if !as[len(as)-1].At.Equal(later.LastAttemptAt) {
			t.Fatalf("last attempt at %v, row says %v", as[len(as)-1].At, later.LastAttemptAt)
		}
		if as, err := e.M.Attempts(ctx, "sjti/talento", r.MessageID, s["ok"].ID); err != nil || len(as) != 1 || as[0].Status != mailing.StatusSent {
			t.Fatalf("ok's attempts %+v %v", as, err)
		}
		if _, err := e.M.Attempts(ctx, "enap/eventos", "", s["ok"].ID); !errors.Is(err, mailing.ErrNotFound) {
			t.Fatalf("another account's recipient: %v", err)
		}
		if _, err := e.M.Attempts(ctx, "", "another-message", s["ok"].ID); !errors.Is(err, mailing.ErrNotFound) {
			t.Fatalf("a recipient under another message's id: %v", err)
		}
		verify(t, e.M)
	})
}

// A message accepted for a domain allowed to be unsigned at acceptance
// (or whose key was retired since) is still not sent unsigned unless the
// engine too allows it.
func TestEngineRefusesToSendUnsigned(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 100}, mailing.Config{UnsignedDomains: []string{"servir.gob.pe"}})
		sink := mailtest.NewSink(t)
		eng := engine(t, e, sink, mailing.EngineConfig{})
		ctx := context.Background()
		r, err := e.M.Send(ctx, basic())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		rs, _ := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if len(sink.Messages()) != 0 || rs[0].Status != mailing.StatusDeferred || !strings.Contains(rs[0].Reply, "no DKIM key for servir.gob.pe") || rs[0].Attempts != 0 {
			t.Fatalf("sent unsigned, or wrong record: %+v", rs[0])
		}
		// Allowed explicitly: sent without a signature.
		e.Clock.Add(2 * time.Minute)
		eng2 := engine(t, e, sink, mailing.EngineConfig{UnsignedDomains: []string{"servir.gob.pe"}})
		if n, err := eng2.RunOnce(ctx); err != nil || n != 1 || len(sink.Messages()) != 1 {
			t.Fatalf("unsigned allowed: %d %v, %d messages", n, err, len(sink.Messages()))
		}
	})
}

// Two engines share one queue: every recipient is delivered exactly once.
func TestTwoEnginesDeliverEachRecipientOnce(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 10_000}, mailing.Config{})
		addKeys(t, db, "servir.gob.pe")
		sink := mailtest.NewSink(t)
		ctx := context.Background()
		var rs []mailing.Recipient
		// The figure, 10,000, on PostgreSQL (several nodes share
		// one PostgreSQL); 1,000 on SQLite, where one process claims.
		n := 1000
		if isPostgres(db) {
			n = 10_000
		}
		for i := range n {
			rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i), Data: map[string]string{"N": fmt.Sprint(i)}})
		}
		if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "{{.N}}", Text: "x",
			Recipients: mailing.List(rs...)}); err != nil {
			t.Fatal(err)
		}
		// Each engine runs as relayd serve runs it (Run: claim rounds that
		// overlap the deliveries in flight) until every recipient is sent.
		runCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		var engines []*mailing.Engine
		for i := range 2 {
			eng := engine(t, e, sink, mailing.EngineConfig{Batch: 50, Workers: 8, Owner: fmt.Sprint("engine-", i),
				Limits: map[string]mailing.Limits{"example.com": {Concurrency: 16, PerSecond: 1e6}}})
			engines = append(engines, eng)
			wg.Go(func() {
				if err := eng.Run(runCtx); err != nil {
					t.Error(err)
				}
			})
		}
		deadline := time.Now().Add(2 * time.Minute)
		for countStatus(t, db, "sent") < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		stop()
		wg.Wait()
		// Each engine's Stats count what it committed: together, every
		// recipient once.
		if a, b := engines[0].Stats().Outcomes[mailing.StatusSent], engines[1].Stats().Outcomes[mailing.StatusSent]; a+b != int64(n) || a == 0 || b == 0 {
			t.Fatalf("engines recorded %d + %d sent, want %d, shared", a, b, n)
		}
		seen := map[string]int{}
		for _, m := range sink.Messages() {
			seen[m.To[0]]++
		}
		if len(seen) != n {
			t.Fatalf("%d distinct recipients delivered, want %d", len(seen), n)
		}
		for addr, n := range seen {
			if n != 1 {
				t.Fatalf("%s delivered %d times", addr, n)
			}
		}
	})
}

// A destination's concurrency limit holds at the receiving server, and a
// throttling reply (421 / 4.7.x) slows the destination down.
func TestDestinationLimits(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 1000}, mailing.Config{UnsignedDomains: []string{"servir.gob.pe"}})
		sink := mailtest.NewSink(t)
		var mu sync.Mutex
		inFlight, most := 0, 0
		sink.Reply = func(rcpt string) error {
			mu.Lock()
			inFlight++
			most = max(most, inFlight)
			mu.Unlock()
			time.Sleep(20 * time.Millisecond) // hold the slot so overlaps would show
			mu.Lock()
			inFlight--
			mu.Unlock()
			if strings.HasPrefix(rcpt, "slow") {
				return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "rate limited"}
			}
			return nil
		}
		eng := engine(t, e, sink, mailing.EngineConfig{Workers: 16, UnsignedDomains: []string{"servir.gob.pe"},
			Limits: map[string]mailing.Limits{"example.com": {Concurrency: 2, PerSecond: 1000}, "example.org": {Concurrency: 8, PerSecond: 40}}})
		ctx := context.Background()
		var rs []mailing.Recipient
		for i := range 20 {
			rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i)})
		}
		if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "s", Text: "t", Recipients: mailing.List(rs...)}); err != nil {
			t.Fatal(err)
		}
		for done, rounds := 0, 0; done < 20; rounds++ {
			if rounds > 100 {
				t.Fatalf("only %d of 20 delivered after 100 rounds", done)
			}
			n, err := eng.RunOnce(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if n == 0 {
				e.Clock.Add(5 * time.Second) // recipients deferred for the local limit come due
				continue
			}
			done = len(sink.Messages())
		}
		if most > 2 {
			t.Fatalf("%d deliveries at once to a destination limited to 2", most)
		}
		before := eng.DestinationRate("example.org")
		msg := basic()
		msg.Account, msg.To = "enap/eventos", []string{"slow@example.org"}
		if _, err := e.M.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		if after := eng.DestinationRate("example.org"); before != 40 || after != 20 {
			t.Fatalf("rate %v → %v after a 421 4.7.28, want 40 → 20", before, after)
		}
	})
}

// A connection lost after the message was sent is deferred and logged as a
// possible duplicate, never marked sent.
func TestLostAfterDataIsDeferred(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"sjti/talento": 10}, mailing.Config{})
		sink := mailtest.NewSink(t)
		var drop atomic.Bool
		drop.Store(true)
		sink.DropAfterData = func(string) bool { return drop.Load() }
		eng := engine(t, e, sink, mailing.EngineConfig{})
		ctx := context.Background()
		r, err := e.M.Send(ctx, basic())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		rs, _ := e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if rs[0].Status != mailing.StatusDeferred || !strings.Contains(rs[0].Reply, "possible duplicate") || rs[0].Attempts != 1 {
			t.Fatalf("after a dropped connection: %+v", rs[0])
		}
		drop.Store(false)
		e.Clock.Add(2 * time.Minute)
		if _, err := eng.RunOnce(ctx); err != nil {
			t.Fatal(err)
		}
		rs, _ = e.M.Recipients(ctx, "", r.MessageID, -1, 0)
		if rs[0].Status != mailing.StatusSent || rs[0].Attempts != 2 {
			t.Fatalf("retry: %+v", rs[0])
		}
	})
}

// countStatus counts the recipient rows in status.
func countStatus(t *testing.T, db *bun.DB, status string) int {
	t.Helper()
	var n int
	if err := db.NewRaw("SELECT count(*) FROM mail_recipients WHERE status = ?", status).Scan(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Run stopped mid-delivery finishes what it started and records it,
// returns the leases of the rest, and leaves nothing in 'sending': what the
// sink took is exactly what is recorded sent, once each, and everything
// else is queued again, never attempted.
func TestRunDrainsOnShutdown(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 10_000}, mailing.Config{})
		addKeys(t, db, "servir.gob.pe")
		sink := mailtest.NewSink(t)
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		const n = 1500
		var taken atomic.Int64
		sink.DataReply = func([]string) error {
			time.Sleep(2 * time.Millisecond)
			if taken.Add(1) == 300 {
				stop()
			}
			return nil
		}
		var rs []mailing.Recipient
		for i := range n {
			rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i), Data: map[string]string{"N": fmt.Sprint(i)}})
		}
		if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "{{.N}}", Text: "x",
			Recipients: mailing.List(rs...)}); err != nil {
			t.Fatal(err)
		}
		eng := engine(t, e, sink, mailing.EngineConfig{Batch: 100, Workers: 8,
			Limits: map[string]mailing.Limits{"example.com": {Concurrency: 16, PerSecond: 1e6}}})
		if err := eng.Run(ctx); err != nil {
			t.Fatal(err)
		}
		got := len(sink.Messages())
		sent, queued := countStatus(t, db, "sent"), countStatus(t, db, "queued")
		var untouched, events int
		if err := db.NewRaw("SELECT count(*) FROM mail_recipients WHERE status = 'queued' AND attempts = 0 AND lease_owner = ''").Scan(context.Background(), &untouched); err != nil {
			t.Fatal(err)
		}
		if err := db.NewRaw("SELECT count(*) FROM mail_events WHERE type = 'sent'").Scan(context.Background(), &events); err != nil {
			t.Fatal(err)
		}
		if got < 300 || got == n || sent != got || queued != n-got || untouched != queued || events != sent ||
			eng.Stats().Outcomes[mailing.StatusSent] != int64(sent) {
			var by []struct {
				Status string
				N      int
			}
			_ = db.NewRaw("SELECT status, count(*) AS n FROM mail_recipients GROUP BY status").Scan(context.Background(), &by)
			t.Fatalf("sink took %d of %d; rows: %d sent, %d queued (%d never attempted, unleased), %d sent events, Stats %v; by status %v",
				got, n, sent, queued, untouched, events, eng.Stats().Outcomes, by)
		}
		seen := map[string]bool{}
		for _, m := range sink.Messages() {
			if seen[m.To[0]] {
				t.Fatalf("%s delivered twice", m.To[0])
			}
			seen[m.To[0]] = true
		}
	})
}

func isPostgres(db *bun.DB) bool { return db.Dialect().Name().String() == "pg" }

// A transactional message accepted while Run is delivering a large bulk
// campaign goes out with the next claim: at most one claim of bulk mail
// (and what the workers hold) is delivered between its acceptance and its
// delivery, and it does not wait for the campaign to end.
func TestTransactionalOvertakesABulkCampaign(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 10_000, "sjti/talento": 10}, mailing.Config{})
		addKeys(t, db, "servir.gob.pe")
		sink := mailtest.NewSink(t)
		sink.DataReply = func([]string) error {
			time.Sleep(time.Millisecond) // a campaign that takes a while
			return nil
		}
		ctx, stop := context.WithCancel(context.Background())
		defer stop()
		const n, batch, workers = 2000, 100, 8
		var rs []mailing.Recipient
		for i := range n {
			rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("c%d@example.com", i), Data: map[string]string{"N": fmt.Sprint(i)}})
		}
		if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Priority: mailing.Bulk,
			Subject: "{{.N}}", Text: "x", Recipients: mailing.List(rs...)}); err != nil {
			t.Fatal(err)
		}
		eng := engine(t, e, sink, mailing.EngineConfig{Batch: batch, Workers: workers,
			Limits: map[string]mailing.Limits{"example.com": {Concurrency: 16, PerSecond: 1e6}}})
		ran := make(chan error, 1)
		go func() { ran <- eng.Run(ctx) }()
		for len(sink.Messages()) < 300 {
			time.Sleep(time.Millisecond)
		}
		reset := basic()
		reset.To, reset.Subject = []string{"reset@example.com"}, "Restablecer contraseña"
		if _, err := e.M.Send(ctx, reset); err != nil {
			t.Fatal(err)
		}
		before := len(sink.Messages())
		var at int
		for at == 0 {
			msgs := sink.Messages()
			for i, m := range msgs[before:] {
				if m.To[0] == "reset@example.com" {
					at = before + i
				}
			}
			if len(msgs) >= n+1 {
				break
			}
			time.Sleep(time.Millisecond)
		}
		stop()
		if err := <-ran; err != nil {
			t.Fatal(err)
		}
		if at == 0 || at-before > batch+workers {
			t.Fatalf("the transactional message went out after %d bulk messages delivered since it was accepted (position %d), want at most %d",
				at-before, at, batch+workers)
		}
	})
}

// With Config.DKIMKeyFile the DKIM keys and the token secret are stored
// sealed, and the engine opens them: mail goes out signed and its return
// path token verifies. A Mailer without the key file cannot start an
// engine on that database.
func TestSealedKeysSignAndMakeTokens(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		keyFile := filepath.Join(t.TempDir(), "dkim.key")
		if err := dkimkey.GenerateKeyFile(keyFile); err != nil {
			t.Fatal(err)
		}
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{DKIMKeyFile: keyFile}) // adds an Ed25519 key
		sink := mailtest.NewSink(t)
		eng := engine(t, e, sink, mailing.EngineConfig{})
		one := basic()
		one.Account = "enap/eventos"
		if _, err := e.M.Send(ctx, one); err != nil {
			t.Fatal(err)
		}
		if n := runAll(t, eng); n != 1 {
			t.Fatalf("delivered %d", n)
		}
		var stored []string
		if err := db.NewRaw("SELECT private_key FROM dkim_keys UNION ALL SELECT value FROM envios_secrets").Scan(ctx, &stored); err != nil {
			t.Fatal(err)
		}
		for _, v := range stored {
			if !dkimkey.IsSealed(v) {
				t.Fatalf("stored in clear: %.40q", v)
			}
		}
		keys, err := dkimkey.List(ctx, db)
		if err != nil {
			t.Fatal(err)
		}
		records := txtRecords{}
		for _, k := range keys {
			name, value := k.Record()
			records[name] = value
		}
		msgs := sink.Messages()
		vs := verifyDKIM(t, msgs[0].Data, records)
		if len(vs) != 1 || vs[0].Err != nil {
			t.Fatalf("DKIM: %+v", vs)
		}
		local, _, _ := strings.Cut(msgs[0].From, "@")
		if id, ok := eng.RecipientOfToken(strings.TrimPrefix(local, "b+")); !ok || id == 0 {
			t.Fatalf("return path %s: token does not verify", msgs[0].From)
		}
		m2, err := mailing.New(mailing.Config{DB: db})
		if err != nil {
			t.Fatal(err)
		}
		defer m2.Close()
		if _, err := m2.NewEngine(ctx, mailing.EngineConfig{Transport: &mailing.Smarthost{Addr: sink.Addr}, ReturnPathDomain: "envios.servir.gob.pe"}); !errors.Is(err, dkimkey.ErrSealed) {
			t.Fatalf("an engine without the key file: %v, want ErrSealed", err)
		}
	})
}
