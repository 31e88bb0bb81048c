package mailing_test

import (
	"context"
	"database/sql"
	"net/url"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
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
