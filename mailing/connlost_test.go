package mailing_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
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
