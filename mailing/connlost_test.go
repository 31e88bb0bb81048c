package mailing_test

import (
	"context"
	"database/sql"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
)

var (
	behindProxy = mailingtest.BehindProxy
	sendOne     = mailingtest.SendOne
)

// PostgreSQL restarting while the pool's connections sit idle: the next
// sends' group commits take dead connections, fail before their COMMIT,
// and are run again on fresh ones, so every send succeeds on its first
// call, each message stored and charged once.
func TestSendAfterThePoolDied(t *testing.T) {
	ctx := context.Background()
	e, db, proxy := behindProxy(t)
	for range 3 {
		var conns []*sql.Conn
		for range 4 {
			c, err := db.DB.Conn(ctx)
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		for _, c := range conns {
			c.Close()
		}
		proxy.Down()
		proxy.Up()
		for range 4 {
			sendOne(t, e)
		}
	}
	if used := e.Used(t, "enap/eventos"); used != 12 {
		t.Fatalf("charged %d, want 12", used)
	}
	var n int
	if err := db.NewRaw("SELECT count(*) FROM mail_messages").Scan(ctx, &n); err != nil || n != 12 {
		t.Fatalf("%d messages stored, %v; want 12", n, err)
	}
}

// PostgreSQL going away after a group's COMMIT reached it but before its
// reply came back: the group is stored, and Send says so (PostgreSQL,
// asked on a fresh connection, says the transaction committed), rather
// than an error that would make the caller send, and be charged for, the
// message again.
func TestSendWhenTheCommitReplyIsLost(t *testing.T) {
	ctx := context.Background()
	e, db, proxy := behindProxy(t)
	proxy.CutAfter(storetest.IsCommit)
	r := sendOne(t, e)
	if proxy.Cuts() != 1 {
		t.Fatal("the COMMIT was not cut")
	}
	var n int
	if err := store.RetryConnLost(ctx, db, func() error {
		return db.NewRaw("SELECT count(*) FROM mail_messages WHERE id = ?", r.MessageID).Scan(ctx, &n)
	}); err != nil || n != 1 {
		t.Fatalf("message %s stored %d times, %v", r.MessageID, n, err)
	}
	if used := e.Used(t, "enap/eventos"); used != 1 {
		t.Fatalf("charged %d, want 1", used)
	}
}

// Every write of the library goes through one transaction policy: a batch
// chunk and a Cancel whose COMMIT is lost on its way (run again) or whose
// COMMIT's reply is lost (PostgreSQL asked, found committed) end exactly
// as without the cut — the batch stored and charged once, the
// cancellation done and released once — and the ledger verifies.
func TestBatchAndCancelThroughALostCommit(t *testing.T) {
	cuts := []struct {
		name string
		arm  func(*storetest.Proxy)
	}{
		{"COMMIT lost", func(p *storetest.Proxy) { p.CutBefore(storetest.IsCommit) }},
		{"COMMIT's reply lost", func(p *storetest.Proxy) { p.CutAfter(storetest.IsCommit) }},
	}
	for _, cut := range cuts {
		t.Run("batch/"+cut.name, func(t *testing.T) {
			ctx := context.Background()
			e, db, proxy := behindProxy(t)
			rs := []mailing.Recipient{{Address: "a@example.com"}, {Address: "b@example.com"}, {Address: "c@example.com"}}
			cut.arm(proxy)
			rec, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "s", Text: "t",
				Recipients: mailing.List(rs...)})
			if err != nil || rec.Accepted != 3 {
				t.Fatalf("SendBatch = %+v, %v; want 3 accepted", rec, err)
			}
			if proxy.Cuts() != 1 {
				t.Fatal("the COMMIT was not cut")
			}
			var n int
			if err := store.RetryConnLost(ctx, db, func() error {
				return db.NewRaw("SELECT count(*) FROM mail_recipients WHERE message_id = ?", rec.MessageID).Scan(ctx, &n)
			}); err != nil || n != 3 {
				t.Fatalf("%d recipients stored, %v; want 3", n, err)
			}
			if used := e.Used(t, "enap/eventos"); used != 3 {
				t.Fatalf("charged %d, want 3", used)
			}
			verify(t, e.M)
		})
		t.Run("cancel/"+cut.name, func(t *testing.T) {
			ctx := context.Background()
			e, db, proxy := behindProxy(t)
			msg := basic()
			msg.Account, msg.To = "enap/eventos", []string{"a@example.com", "b@example.com"}
			msg.SendAt = start.Add(time.Hour)
			r, err := e.M.Send(ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			cut.arm(proxy)
			res, err := e.M.Cancel(ctx, "", r.MessageID, "test")
			if err != nil || res.Cancelled != 2 || res.Released != 2 {
				t.Fatalf("Cancel = %+v, %v; want 2 cancelled and released", res, err)
			}
			if proxy.Cuts() != 1 {
				t.Fatal("the COMMIT was not cut")
			}
			var cancelled, events int
			if err := store.RetryConnLost(ctx, db, func() error {
				return db.NewRaw("SELECT (SELECT count(*) FROM mail_recipients WHERE status = 'cancelled'), "+
					"(SELECT count(*) FROM mail_events WHERE type = 'cancelled')").Scan(ctx, &cancelled, &events)
			}); err != nil || cancelled != 2 || events != 2 {
				t.Fatalf("%d cancelled, %d events, %v; want 2 and 2", cancelled, events, err)
			}
			if used := e.Used(t, "enap/eventos"); used != 0 {
				t.Fatalf("used %d after cancelling, want 0", used)
			}
			verify(t, e.M)
		})
	}
}
