package mailing_test

import (
	"context"
	"database/sql"
	"sync"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// behindProxy is an env on a PostgreSQL database reached through a proxy
// that can play the server restarting.
func behindProxy(t *testing.T) (env, *bun.DB, *storetest.Proxy) {
	t.Helper()
	db, proxy := storetest.OpenBehindProxy(t, 4)
	return setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{}), db, proxy
}

func sendOne(t *testing.T, e env) mailing.Receipt {
	t.Helper()
	one := basic()
	one.Account = "enap/eventos"
	r, err := e.m.Send(context.Background(), one)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return r
}

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
	if used := e.used(t, "enap/eventos"); used != 12 {
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
	if used := e.used(t, "enap/eventos"); used != 1 {
		t.Fatalf("charged %d, want 1", used)
	}
}

// PostgreSQL restarting while messages are being delivered, just as the
// last reply is awaited, so that all that is left is recording the
// outcomes: the outcomes' transaction is seen through — run again when it
// met a dead connection or its COMMIT never arrived, found committed when
// only the COMMIT's reply was lost — so every recipient is recorded sent
// once, none left leased to be delivered a second time.
func TestEngineRecordsThroughARestart(t *testing.T) {
	tests := []struct {
		name    string
		restart func(*storetest.Proxy)
		cuts    int
	}{
		{"the pool died", func(p *storetest.Proxy) { p.Down(); p.Up() }, 0},
		{"the COMMIT lost on its way", func(p *storetest.Proxy) { p.CutBefore(storetest.IsCommit) }, 1},
		{"the COMMIT's reply lost", func(p *storetest.Proxy) { p.CutAfter(storetest.IsCommit) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e, db, proxy := behindProxy(t)
			for range 3 {
				sendOne(t, e)
			}
			sink := mailtest.NewSink(t)
			var mu sync.Mutex
			seen := 0
			sink.DataReply = func([]string) error {
				mu.Lock()
				defer mu.Unlock()
				if seen++; seen == 3 {
					tt.restart(proxy)
				}
				return nil
			}
			eng := engine(t, e, sink, mailing.EngineConfig{Workers: 1})
			if _, err := eng.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			var sent, other, events int
			if err := store.RetryConnLost(ctx, db, func() error { // the test's own read may meet a dead connection too
				return db.NewRaw("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status <> 'sent'), "+
					"(SELECT count(*) FROM mail_events WHERE type = 'sent') FROM mail_recipients").Scan(ctx, &sent, &other, &events)
			}); err != nil {
				t.Fatal(err)
			}
			if sent != 3 || other != 0 || events != 3 || len(sink.Messages()) != 3 {
				t.Fatalf("%d recipients sent and %d not, %d sent events, %d messages at the sink; want 3, 0, 3, 3",
					sent, other, events, len(sink.Messages()))
			}
			if proxy.Cuts() != tt.cuts {
				t.Fatalf("%d cuts made, want %d", proxy.Cuts(), tt.cuts)
			}
			if n := eng.Stats().Outcomes[mailing.StatusSent]; n != 3 {
				t.Fatalf("Stats count %d sent, want 3", n)
			}
		})
	}
}
