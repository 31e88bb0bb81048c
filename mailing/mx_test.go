package mailing_test

import (
	"context"
	"net"
	"strings"
	"testing"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
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
	x := &mailing.DirectMX{Resolver: mailing.NewResolver(addr), Port: port}
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
	if n := len(sink.Messages()); n != 2 {
		t.Fatalf("sink got %d messages, want 2", n)
	}
	// With the sink's certificate trusted and an MX named in it, TLS is verified.
	x.RootCAs = sink.ClientTLS().RootCAs
	if r := x.Deliver(ctx, "bounce@envios.servir.gob.pe", []string{"c@verified.test"}, msg)[0]; !r.Delivered() || !strings.Contains(r.Reply(), "TLS verified") {
		t.Fatalf("reply %q", r.Reply())
	}
}
