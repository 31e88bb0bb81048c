package mailing_test

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// PostgreSQL restarting while the pool's connections sit idle: the next
// sends' group commits take dead connections, fail before their COMMIT,
// and are run again on fresh ones, so every send succeeds on its first
// call, each message stored and charged once.
func TestSendAfterThePoolDied(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(storetest.DSN(t, store.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewProxy(t, u.Host)
	u.Host = proxy.Addr
	db, err := store.Open(ctx, store.Config{DSN: u.String(), MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
	for round := range 3 {
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
		for i := range 4 {
			one := basic()
			one.Account = "enap/eventos"
			if _, err := e.m.Send(ctx, one); err != nil {
				t.Fatalf("round %d, send %d: %v", round, i, err)
			}
		}
	}
	if used := e.used(t, "enap/eventos"); used != 12 {
		t.Fatalf("charged %d, want 12", used)
	}
	var n int
	if err := db.NewRaw("SELECT count(*) FROM mail_messages").Scan(ctx, &n); err != nil || n != 12 {
		t.Fatalf("%d messages stored, %v; want 12", n, err)
	}
}

// PostgreSQL restarting while messages are being delivered: the outcomes'
// transaction meets a dead connection before its COMMIT and is run again,
// so every recipient is recorded sent, none left leased to be delivered a
// second time.
func TestEngineRecordsAfterThePoolDied(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(storetest.DSN(t, store.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewProxy(t, u.Host)
	u.Host = proxy.Addr
	db, err := store.Open(ctx, store.Config{DSN: u.String(), MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
	for range 3 {
		one := basic()
		one.Account = "enap/eventos"
		if _, err := e.m.Send(ctx, one); err != nil {
			t.Fatal(err)
		}
	}
	sink := mailtest.NewSink(t)
	var mu sync.Mutex
	seen := 0
	sink.DataReply = func([]string) error {
		mu.Lock()
		defer mu.Unlock()
		if seen++; seen == 3 {
			// The restart, while the engine waits for the last reply:
			// everything left to do is recording.
			proxy.Down()
			proxy.Up()
		}
		return nil
	}
	eng := engine(t, e, sink, mailing.EngineConfig{Workers: 1})
	if _, err := eng.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var sent, other int
	if err := store.RetryConnLost(ctx, db, func() error { // the test's own read may meet a dead connection too
		return db.NewRaw("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status <> 'sent') FROM mail_recipients").
			Scan(ctx, &sent, &other)
	}); err != nil {
		t.Fatal(err)
	}
	if sent != 3 || other != 0 || len(sink.Messages()) != 3 {
		t.Fatalf("%d recipients sent and %d not, %d messages at the sink; want 3, 0, 3", sent, other, len(sink.Messages()))
	}
}

// PostgreSQL going away after a group's COMMIT reached it but before its
// reply came back: the group is stored, and Send says so (a read on a
// fresh connection finds its messages), rather than an error that would
// make the caller send, and be charged for, the message again.
func TestSendWhenTheCommitReplyIsLost(t *testing.T) {
	ctx := context.Background()
	u, err := url.Parse(storetest.DSN(t, store.Postgres))
	if err != nil {
		t.Fatal(err)
	}
	proxy := storetest.NewProxy(t, u.Host)
	u.Host = proxy.Addr
	db, err := store.Open(ctx, store.Config{DSN: u.String(), MaxOpenConns: 4})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
	proxy.CutAfter(func(b []byte) bool { return bytes.Contains(bytes.ToLower(b), []byte("commit\x00")) })
	one := basic()
	one.Account = "enap/eventos"
	r, err := e.m.Send(ctx, one)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	if proxy.Cuts() != 1 {
		t.Fatal("the COMMIT was not cut")
	}
	var n int
	if err := store.RetryConnLost(ctx, db, func() error {
		return db.NewRaw("SELECT count(*) FROM mail_messages WHERE id = ?", r.MessageID).Scan(ctx, &n)
	}); err != nil || n != 1 {
		t.Fatalf("message %s stored %d times, %v", r.MessageID, n, err)
	}
	if used := e.used(t, "enap/eventos"); used != 1 {
		t.Fatalf("charged %d, want 1", used)
	}
}

// The COMMIT of delivery outcomes lost on its way (the database crashing):
// the outcomes are not stored, the rows still leased say so, and the batch
// is written again — else the leases would expire and the recipients be
// delivered twice. And the COMMIT taken but its reply lost: nothing is
// written twice.
func TestEngineRecordsWhenTheCommitIsLost(t *testing.T) {
	for _, reached := range []bool{false, true} {
		t.Run(fmt.Sprintf("reached=%v", reached), func(t *testing.T) {
			ctx := context.Background()
			u, err := url.Parse(storetest.DSN(t, store.Postgres))
			if err != nil {
				t.Fatal(err)
			}
			proxy := storetest.NewProxy(t, u.Host)
			u.Host = proxy.Addr
			db, err := store.Open(ctx, store.Config{DSN: u.String(), MaxOpenConns: 4})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if _, err := store.Migrate(ctx, db); err != nil {
				t.Fatal(err)
			}
			e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
			for range 3 {
				one := basic()
				one.Account = "enap/eventos"
				if _, err := e.m.Send(ctx, one); err != nil {
					t.Fatal(err)
				}
			}
			sink := mailtest.NewSink(t)
			var mu sync.Mutex
			seen := 0
			commit := func(b []byte) bool { return bytes.Contains(bytes.ToLower(b), []byte("commit\x00")) }
			sink.DataReply = func([]string) error {
				mu.Lock()
				defer mu.Unlock()
				if seen++; seen == 3 { // the next COMMIT is the one recording the outcomes
					if reached {
						proxy.CutAfter(commit)
					} else {
						proxy.CutBefore(commit)
					}
				}
				return nil
			}
			eng := engine(t, e, sink, mailing.EngineConfig{Workers: 1})
			if _, err := eng.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			var sent, other, events int
			if err := store.RetryConnLost(ctx, db, func() error {
				return db.NewRaw("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status <> 'sent'), "+
					"(SELECT count(*) FROM mail_events WHERE type = 'sent') FROM mail_recipients").Scan(ctx, &sent, &other, &events)
			}); err != nil {
				t.Fatal(err)
			}
			if sent != 3 || other != 0 || events != 3 || len(sink.Messages()) != 3 {
				t.Fatalf("%d recipients sent and %d not, %d sent events, %d messages at the sink; want 3, 0, 3, 3",
					sent, other, events, len(sink.Messages()))
			}
			if proxy.Cuts() != 1 {
				t.Fatal("the COMMIT was not cut")
			}
			if n := eng.Stats().Outcomes[mailing.StatusSent]; n != 3 {
				t.Fatalf("Stats count %d sent, want 3", n)
			}
		})
	}
}
