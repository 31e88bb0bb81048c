package relay_test

import (
	"context"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/relay"
)

// PostgreSQL going away during AUTH, MAIL, RCPT and DATA is answered 454
// and 451 (never a permanent 5xx), and once it is back the client's retry
// gives exactly one message and one charge.
func TestDatabaseOutage(t *testing.T) {
	ctx := context.Background()
	db, proxy := storetest.OpenBehindProxy(t, 0)
	f := newFixture(t, db, 100, relay.Limits{})
	d, _ := f.secure(t)

	outage := func(cmd, want string) {
		t.Helper()
		proxy.Down()
		d.send(cmd)
		d.expect(want)
		proxy.Up()
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
	proxy.Down()
	d.raw(message() + ".\r\n")
	d.expect("451 4.3.0")
	proxy.Up()
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
