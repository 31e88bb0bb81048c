package smtpout_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/mailing/smtpout"
)

func TestDirectMX(t *testing.T) {
	sink := mailtest.NewSink(t)
	_, port, _ := net.SplitHostPort(sink.Addr)
	addr := mailtest.NewDNS(t, mailtest.Zone{MX: map[string][]mailtest.MX{
		"example.test.":  {{Pref: 20, Host: "mx2.example.test."}, {Pref: 10, Host: "dead.example.test."}},
		"nullmx.test.":   {{Pref: 0, Host: "."}},
		"verified.test.": {{Pref: 10, Host: "mx.sink.test."}},
	}, A: map[string]string{
		"mx.sink.test.":      "127.0.0.1", // the name the sink's certificate carries
		"mx2.example.test.":  "127.0.0.1",
		"dead.example.test.": "127.0.0.2", // nothing listens there: the next MX is tried
		"amx.test.":          "127.0.0.1", // no MX: its address is used
	}})
	x := &smtpout.DirectMX{Resolver: smtpout.NewResolver(addr), Port: port, HelloName: "mta.envios.servir.gob.pe"}
	ctx := context.Background()
	msg := []byte("From: a@servir.gob.pe\r\nTo: b@example.test\r\nSubject: x\r\n\r\nhola\r\n")
	tests := []struct {
		rcpt      string
		delivered bool
		permanent bool
		text      string
	}{
		{"b@example.test", true, false, "TLS unverified"},
		{"b@amx.test", true, false, "TLS unverified"},
		{"b@nullmx.test", false, true, "null MX"},
		{"b@nowhere.test", false, true, "no mail server"},
		{"b@servfail.test", false, false, "DNS lookup"},
	}
	for _, tt := range tests {
		t.Run(tt.rcpt, func(t *testing.T) {
			r := x.Deliver(ctx, "bounce@envios.servir.gob.pe", []string{tt.rcpt}, msg)[0]
			if r.Delivered() != tt.delivered || r.Permanent() != tt.permanent || !strings.Contains(r.Reply(), tt.text) {
				t.Fatalf("%s: %+v (reply %q)", tt.rcpt, r, r.Reply())
			}
		})
	}
	ms := sink.Messages()
	if len(ms) != 2 {
		t.Fatalf("sink got %d messages, want 2", len(ms))
	}
	if ms[0].Hello != "mta.envios.servir.gob.pe" || !ms[0].TLS {
		t.Fatalf("EHLO %q, TLS %v", ms[0].Hello, ms[0].TLS)
	}
	// With the sink's certificate trusted and an MX named in it, TLS is verified.
	x.RootCAs = sink.ClientTLS().RootCAs
	if r := x.Deliver(ctx, "bounce@envios.servir.gob.pe", []string{"c@verified.test"}, msg)[0]; !r.Delivered() || !strings.Contains(r.Reply(), "TLS verified") {
		t.Fatalf("reply %q", r.Reply())
	}
}

func TestSmarthostAuth(t *testing.T) {
	sink := mailtest.NewSink(t)
	sink.Username, sink.Password = "envios", "s3cret"
	msg := []byte("From: a@servir.gob.pe\r\nSubject: x\r\n\r\nhola\r\n")
	ctx := context.Background()
	for _, tt := range []struct {
		user, pass string
		delivered  bool
		reply      string
	}{
		{"envios", "s3cret", true, "250"},
		{"envios", "wrong", false, "454 4.7.0 smarthost refused our credentials: 535 5.7.8"},
		{"", "", false, "530 5.7.0 authentication required"},
	} {
		sh := &smtpout.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Username: tt.user, Password: tt.pass}
		r := sh.Deliver(ctx, "b@envios.servir.gob.pe", []string{"c@example.com"}, msg)[0]
		if r.Delivered() != tt.delivered || !strings.HasPrefix(r.Reply(), tt.reply) || r.Permanent() && tt.user != "" {
			t.Errorf("user %q: %q", tt.user, r.Reply())
		}
		sh.Close()
	}
	if ms := sink.Messages(); len(ms) != 1 || ms[0].User != "envios" || !ms[0].TLS {
		t.Fatalf("sink got %+v", ms)
	}
	// A smarthost whose certificate does not verify gets no credentials:
	// the delivery is deferred, not bounced.
	sh := &smtpout.Smarthost{Addr: sink.Addr, TLS: &tls.Config{ServerName: "nope.invalid", RootCAs: sink.ClientTLS().RootCAs, MinVersion: tls.VersionTLS12},
		Username: "envios", Password: "s3cret"}
	if r := sh.Deliver(ctx, "b@x.pe", []string{"c@example.com"}, msg)[0]; r.Delivered() || r.Permanent() {
		t.Fatalf("bad certificate: %q", r.Reply())
	}
}

// A connection reused without an RSET (idle for less than trustIdle) that
// the server closed meanwhile costs one retry on a new connection, not a
// deferral; nothing is sent twice.
func TestSmarthostRecoversADroppedIdleConnection(t *testing.T) {
	sink := mailtest.NewSink(t)
	sh := &smtpout.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}
	defer sh.Close()
	msg := []byte("From: a@servir.gob.pe\r\nTo: b@example.org\r\nSubject: x\r\n\r\nhola\r\n")
	ctx := context.Background()
	for i := range 3 {
		if i == 2 {
			sink.DropConnections()
			time.Sleep(50 * time.Millisecond) // the close reaches the client's side
		}
		r := sh.Deliver(ctx, "b+x@envios.servir.gob.pe", []string{fmt.Sprintf("b%d@example.org", i)}, msg)
		if len(r) != 1 || !r[0].Delivered() {
			t.Fatalf("delivery %d: %+v", i, r)
		}
	}
	if n := len(sink.Messages()); n != 3 {
		t.Fatalf("sink got %d messages, want 3", n)
	}
}

// A smarthost that offers PIPELINING gets MAIL, the RCPTs and DATA in
// one write (RFC 2920); one that does not gets one command at a time. A
// plain-text loopback server notes, for each command, whether more was
// already waiting behind it.
func TestSmarthostPipelining(t *testing.T) {
	for _, offer := range []bool{true, false} {
		t.Run(fmt.Sprint("offered=", offer), func(t *testing.T) { testPipelining(t, offer) })
	}
}

func testPipelining(t *testing.T, offer bool) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		var log []string
		say := func(s string) { fmt.Fprintf(c, "%s\r\n", s) }
		say("220 plain.test ESMTP")
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				got <- strings.Join(log, "|")
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if r.Buffered() > 0 && !strings.HasPrefix(line, "DATA") {
				log = append(log, "PIPELINED")
			}
			log = append(log, strings.Fields(line + " x")[0])
			switch {
			case strings.HasPrefix(line, "EHLO"):
				say("250-plain.test")
				if offer {
					say("250-PIPELINING")
				}
				say("250 8BITMIME")
			case strings.HasPrefix(line, "RCPT TO:<nobody@"):
				say("550 5.1.1 no such user")
			case strings.HasPrefix(line, "DATA"):
				say("354 go ahead")
				for {
					l, err := r.ReadString('\n')
					if err != nil || l == ".\r\n" {
						break
					}
				}
				say("250 2.0.0 queued")
			case strings.HasPrefix(line, "QUIT"):
				say("221 bye")
				got <- strings.Join(log, "|")
				return
			default:
				say("250 ok")
			}
		}
	}()
	sh := &smtpout.Smarthost{Addr: l.Addr().String(), AllowPlaintext: true, Timeout: 5 * time.Second}
	res := sh.Deliver(context.Background(), "b+x@envios.servir.gob.pe", []string{"ana@example.org", "nobody@example.org"},
		[]byte("From: a@servir.gob.pe\r\nSubject: x\r\n\r\nhola\r\n"))
	sh.Close()
	if len(res) != 2 || !res[0].Delivered() || !res[1].Permanent() || res[1].Reply() != "550 5.1.1 no such user" {
		t.Fatalf("results %+v", res)
	}
	log := <-got
	want := "MAIL|RCPT|RCPT|DATA"
	if offer {
		want = "PIPELINED|MAIL|PIPELINED|RCPT|PIPELINED|RCPT|DATA"
	}
	if !strings.Contains(log, want) || (!offer && strings.Contains(log, "PIPELINED")) {
		t.Fatalf("the server saw %s, want %s", log, want)
	}
}

// Where the next hop offers DSN (RFC 3461), a delivery asks for a report
// of failures only (NOTIFY=FAILURE), with the headers (RET=HDRS), naming
// the envelope's token (ENVID) and each recipient (ORCPT): a DSN then says
// which of our recipients it is about, whatever forwarding happened.
func TestDeliveryAsksForDSNs(t *testing.T) {
	sink := mailtest.NewSink(t)
	s := &smtpout.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}
	defer s.Close()
	msg := []byte("From: a@servir.gob.pe\r\nTo: b@example.test\r\nSubject: x\r\n\r\nhola\r\n")
	res := s.Deliver(context.Background(), "b+9ix-abcdefghijklmnop@envios.servir.gob.pe", []string{"ana@example.test", "luis@example.test"}, msg)
	if !res[0].Delivered() || !res[1].Delivered() {
		t.Fatalf("results %+v", res)
	}
	ms := sink.Messages()
	if len(ms) != 1 {
		t.Fatalf("%d messages", len(ms))
	}
	m := ms[0]
	if m.Return != smtp.DSNReturnHeaders || m.EnvelopeID != "9ix-abcdefghijklmnop" {
		t.Fatalf("RET %q ENVID %q", m.Return, m.EnvelopeID)
	}
	for i, want := range []string{"ana@example.test", "luis@example.test"} {
		if len(m.Notify[i]) != 1 || m.Notify[i][0] != smtp.DSNNotifyFailure || m.ORCPT[i] != want {
			t.Fatalf("RCPT %d: NOTIFY %v ORCPT %q", i, m.Notify[i], m.ORCPT[i])
		}
	}
}
