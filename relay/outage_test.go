package relay_test

import (
	"context"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/relay"
)

// dbProxy stands between the relay and PostgreSQL. down() is PostgreSQL
// stopping as seen from relayd: every open connection is dropped and new
// ones are refused, until up(). (The real server is shared with the other
// tests running in parallel, so it is not stopped itself.)
type dbProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	isDown bool
	conns  map[net.Conn]bool
}

func newDBProxy(t *testing.T, target string) *dbProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &dbProxy{l: l, target: target, conns: map[net.Conn]bool{}}
	t.Cleanup(func() { l.Close(); p.down() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			if p.isDown {
				p.mu.Unlock()
				c.Close()
				continue
			}
			up, err := net.Dial("tcp", target)
			if err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns[c], p.conns[up] = true, true
			p.mu.Unlock()
			go func() { _, _ = io.Copy(up, c); up.Close() }()
			go func() { _, _ = io.Copy(c, up); c.Close() }()
		}
	}()
	return p
}

func (p *dbProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.isDown = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

func (p *dbProxy) up() {
	p.mu.Lock()
	p.isDown = false
	p.mu.Unlock()
}

// PostgreSQL going away during AUTH, MAIL, RCPT and DATA is answered 454
// and 451 (never a permanent 5xx), and once it is back the client's retry
// gives exactly one message and one charge.
func TestDatabaseOutage(t *testing.T) {
	dsn := storetest.DSN(t, store.Postgres)
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatal(err)
	}
	proxy := newDBProxy(t, u.Host)
	u.Host = proxy.l.Addr().String()
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DSN: u.String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, db, 100, relay.Limits{})
	d, _ := f.secure(t)

	outage := func(cmd, want string) {
		t.Helper()
		proxy.down()
		d.send(cmd)
		d.expect(want)
		proxy.up()
	}
	outage("AUTH PLAIN "+plain("", f.user, f.pass), "454 4.7.0")
	d.send("AUTH PLAIN " + plain("", f.user, f.pass))
	d.expect("235 ")
	outage(mailFrom, "451 4.3.0")
	d.send(mailFrom)
	d.expect("250 ")
	outage(rcptTo, "451 4.3.0")
	d.send(rcptTo)
	d.expect("250 ")
	d.send("DATA")
	d.expect("354 ")
	proxy.down()
	d.raw(message() + ".\r\n")
	d.expect("451 4.3.0")
	proxy.up()
	// The client retries the transaction.
	for _, s := range dataSteps(message(), "250 2.0.0") {
		if s.in == "DATA" || s.in == mailFrom || s.in == rcptTo {
			d.send(s.in)
		} else {
			d.raw(s.in)
		}
		d.expect(s.want)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.count(t, "mail_messages") != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n, used := f.count(t, "mail_messages"), f.used(t); n != 1 || used != 1 {
		t.Fatalf("%d messages and %d charged after the outage and the retry, want 1 and 1", n, used)
	}
	if problems, err := f.m.Ledger().Verify(ctx); err != nil || len(problems) > 0 {
		t.Fatalf("ledger: %v %v", problems, err)
	}
}
