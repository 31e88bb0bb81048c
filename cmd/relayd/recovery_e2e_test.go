package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// recoveryBound is the correctness bound of crash recovery, measured by
// these tests: a killed node's claims are delivered within seconds (a
// restart takes its own back at once; another node within a liveness
// check, 10 s), not when their 10-minute lease ends. Generous, so that a
// loaded machine does not fail it; the design's figure is ~10–30 s.
const recoveryBound = 45 * time.Second

// slowSink answers each RCPT slowly while slow is set, so that deliveries
// are in flight when a node is killed.
func slowSink(t *testing.T, dir string) (*mailtest.Sink, *atomic.Bool, string) {
	t.Helper()
	sink := mailtest.NewSink(t)
	slow := &atomic.Bool{}
	slow.Store(true)
	sink.Reply = func(string) error {
		if slow.Load() {
			time.Sleep(300 * time.Millisecond)
		}
		return nil
	}
	ca := filepath.Join(dir, "sink.pem")
	if err := os.WriteFile(ca, sink.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	// The default lease (10 minutes): no delivery.lease.
	conf := filepath.Join(dir, "relayd.yaml")
	if err := os.WriteFile(conf, []byte("sending_domain: envios.servir.gob.pe\ndelivery:\n  mode: smarthost\n  smarthost:\n    addr: "+sink.Addr+
		"\n    ca_file: "+ca+"\n  workers: 4\n  batch: 10\n  limits:\n    example.com: {concurrency: 4, per_second: 1000}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return sink, slow, conf
}

// openDB is the test's own handle on relayd's database.
func openDB(t *testing.T, dsn string) *bun.DB {
	t.Helper()
	db, err := store.Open(context.Background(), store.Config{DSN: dsn})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// claimedBy lists the ids of the recipients being sent by owner ("": by
// anyone), with the earliest lease among them.
func claimedBy(t *testing.T, db *bun.DB, owner string) ([]int64, time.Time) {
	t.Helper()
	var rows []struct {
		ID         int64
		LeaseUntil time.Time
	}
	if err := db.NewRaw("SELECT id, lease_until FROM mail_recipients WHERE status = 'sending' AND (lease_owner = ? OR ? = '') ORDER BY id",
		owner, owner).Scan(context.Background(), &rows); err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, len(rows))
	var earliest time.Time
	for i, r := range rows {
		ids[i] = r.ID
		if i == 0 || r.LeaseUntil.Before(earliest) {
			earliest = r.LeaseUntil
		}
	}
	return ids, earliest
}

// waitSent waits until every id is sent (none: every recipient), at most
// until deadline, and returns when that was.
func waitSent(t *testing.T, db *bun.DB, ids []int64, want int, deadline time.Time) time.Time {
	t.Helper()
	q := db.NewRaw("SELECT count(*) FROM mail_recipients WHERE status = 'sent'")
	if ids != nil {
		q = db.NewRaw("SELECT count(*) FROM mail_recipients WHERE status = 'sent' AND id IN (?)", bun.List(ids))
	}
	for {
		var n int
		if err := q.Scan(context.Background(), &n); err != nil {
			t.Fatal(err)
		}
		if n == want {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d sent by the deadline", n, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// takenBack checks that each id counts the attempt its killed node may
// have made: a deferred attempt with the "lease expired" reply naming it.
func takenBack(t *testing.T, db *bun.DB, ids []int64, node string) {
	t.Helper()
	var n int
	if err := db.NewRaw("SELECT count(DISTINCT recipient_id) FROM mail_events WHERE type = 'deferred' AND attempt AND reply LIKE ? AND recipient_id IN (?)",
		"lease expired: its engine ("+node+")%", bun.List(ids)).Scan(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
	if n != len(ids) {
		t.Fatalf("%d of the %d recipients node %s left claimed have its 'lease expired' attempt in their history", n, len(ids), node)
	}
}

// everyoneOnce checks that the sink saw each of n recipients.
func everyoneOnce(t *testing.T, sink *mailtest.Sink, n int) {
	t.Helper()
	got := map[string]bool{}
	for _, m := range sink.Messages() {
		for _, to := range m.To {
			got[to] = true
		}
	}
	if len(got) != n {
		t.Fatalf("the sink saw %d distinct recipients of %d", len(got), n)
	}
}

func sendMany(t *testing.T, m *mailing.Mailer, n int) {
	t.Helper()
	var rs []mailing.Recipient
	for i := range n {
		rs = append(rs, mailing.Recipient{Address: fmt.Sprintf("p%d@example.com", i)})
	}
	b, err := m.SendBatch(context.Background(), mailing.Batch{Account: "sjti/talento", From: "avisos@servir.gob.pe", Subject: "s", Text: "t",
		Recipients: mailing.List(rs...)})
	if err != nil || b.Accepted != n {
		t.Fatalf("%+v %v", b, err)
	}
}

// kill -9 of relayd on SQLite with deliveries in flight and the default
// 10-minute lease: restarted, it takes back what it had claimed at once
// and every recipient is delivered within seconds. While it runs, a second
// relayd on the same file is refused, with the same node name or another.
func TestRecoveryAfterKillOnSQLite(t *testing.T) {
	dir, env, m := setUpAdmin(t, 1000, "ed25519")
	db := openDB(t, filepath.Join(dir, "relayd.db"))
	const n = 40
	sendMany(t, m, n)
	sink, slow, conf := slowSink(t, dir)
	first := startServe(t, dir, env, "--config", conf)
	for deadline := time.Now().Add(30 * time.Second); len(sink.Messages()) < 5; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("nothing delivered; relayd logged:\n%s", first.logged())
		}
	}
	if err := first.cmd.Process.Kill(); err != nil { // SIGKILL: no drain, claims left behind
		t.Fatal(err)
	}
	_ = first.cmd.Wait()
	left, lease := claimedBy(t, db, "")
	if len(left) == 0 {
		t.Fatal("the killed relayd left nothing claimed: the test proves nothing")
	}
	if time.Until(lease) < 5*time.Minute {
		t.Fatalf("a claim's lease ends at %v: the default 10-minute lease is not in force", lease)
	}
	slow.Store(false)
	restarted := time.Now()
	second := startServe(t, dir, env, "--config", conf)
	done := waitSent(t, db, nil, n, restarted.Add(recoveryBound))
	t.Logf("%d recipients left claimed by the killed relayd; all %d sent %v after the restart (lease: 10 minutes)",
		len(left), n, done.Sub(restarted).Round(10*time.Millisecond))
	takenBack(t, db, left, hostname(t))
	everyoneOnce(t, sink, n)

	out, code := relayd(t, dir, env, "serve", "--config", conf)
	if want := fmt.Sprintf("node %q is already running (another relayd with the same --node / delivery.node?)", hostname(t)); code != 1 || !strings.Contains(out, want) {
		t.Fatalf("a second relayd with the same node: exit %d, want 1 with %q; output:\n%s", code, want, out)
	}
	out, code = relayd(t, dir, env, "serve", "--config", conf, "--node", "other")
	if want := "another engine is already delivering from this SQLite database"; code != 1 || !strings.Contains(out, want) {
		t.Fatalf("a second relayd on the file: exit %d, want 1 with %q; output:\n%s", code, want, out)
	}
	second.stop(t)
}

func hostname(t *testing.T) string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		t.Fatalf("host name: %q %v", h, err)
	}
	return h
}

// Two relayd nodes, a and b, on one PostgreSQL database with the default
// lease: a is killed with deliveries in flight, and b, which goes on
// running, delivers what a had claimed within a liveness check or so.
func TestRecoveryOfAKilledNodeOnPostgres(t *testing.T) {
	dsn := storetest.DSN(t, store.Postgres)
	dir := t.TempDir()
	env := []string{"RELAYD_DB=" + dsn, "RELAYD_SMTP=127.0.0.1:0", "RELAYD_SMTPS=127.0.0.1:0", "RELAYD_HTTPS=127.0.0.1:0"}
	pool := filepath.Join(dir, "pool.yaml")
	if err := os.WriteFile(pool, []byte(fmt.Sprintf("pool:\n  name: e2e\n  total: 1000\n  starts: %s\n  days: 2\n  timezone: UTC\n"+
		"accounts:\n  - name: sjti/talento\n    origin: system\n    allocation: 1000\n", time.Now().UTC().Format("2006-01-02"))), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"db", "migrate"}, {"quota", "init", "--from", pool},
		{"sender", "add", "sjti/talento", "avisos@servir.gob.pe"}, {"domain", "add", "servir.gob.pe", "--key", "ed25519"}} {
		if out, code := relayd(t, dir, env, args...); code != 0 {
			t.Fatalf("relayd %v: exit %d\n%s", args, code, out)
		}
	}
	m, err := mailing.Open(context.Background(), dsn, mailing.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	db := openDB(t, dsn)
	const n = 80
	sendMany(t, m, n)
	sink, slow, conf := slowSink(t, dir)
	// Each node has its own directory (its data directory, ./data).
	a := startServe(t, t.TempDir(), env, "--config", conf, "--node", "a")
	b := startServe(t, t.TempDir(), env, "--config", conf, "--node", "b")
	var before []int64
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if before, _ = claimedBy(t, db, "a"); len(before) > 0 && len(sink.Messages()) >= 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a never had deliveries in flight; it logged:\n%s", a.logged())
		}
	}
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	_ = a.cmd.Wait()
	left, lease := claimedBy(t, db, "a")
	if len(left) == 0 {
		t.Fatalf("a had %d recipients claimed just before the kill, none after: the test proves nothing", len(before))
	}
	if time.Until(lease) < 5*time.Minute {
		t.Fatalf("a claim's lease ends at %v: the default 10-minute lease is not in force", lease)
	}
	slow.Store(false)
	done := waitSent(t, db, left, len(left), killed.Add(recoveryBound))
	t.Logf("b delivered the %d recipients killed a had claimed %v after the kill (lease: 10 minutes)", len(left), done.Sub(killed).Round(10*time.Millisecond))
	takenBack(t, db, left, "a")
	waitSent(t, db, nil, n, time.Now().Add(recoveryBound))
	everyoneOnce(t, sink, n)
	if !strings.Contains(b.logged(), "took back the claims of a stopped engine") || !strings.Contains(b.logged(), "node=a ") {
		t.Fatalf("b did not say it took a's claims back; it logged:\n%s", b.logged())
	}
	b.stop(t)
}
