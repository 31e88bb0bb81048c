package smtpload

import (
	"context"
	"net/smtp"
	"testing"
)

func TestStuff(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"a\r\nb\r\n", "a\r\nb\r\n"},
		{".a\r\n", "..a\r\n"},
		{"a\r\n.\r\n..b\r\n", "a\r\n..\r\n...b\r\n"},
		{"sin final", "sin final\r\n"},
		{"", "\r\n"},
	} {
		if got := string(stuff([]byte(tc.in))); got != tc.want {
			t.Errorf("stuff(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// The ceiling: a run of every shape against the sink is accepted whole
// and the sink read every message.
func TestRunCeiling(t *testing.T) {
	for _, shape := range Shapes {
		t.Run(string(shape), func(t *testing.T) {
			s, err := StartSink("u", "p")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			res, err := Run(context.Background(), Config{Addr: s.Addr, TLS: s.ClientTLS(), Username: "u", Password: "p",
				From: "avisos@servir.gob.pe", To: "dest%d@example.org", Conns: 4, Messages: 40, Shape: shape})
			if err != nil || res.Sent != 40 || len(res.Failed) != 0 || s.Messages() != 40 || res.Bytes < 40*4900 {
				t.Fatalf("%v %v; sink read %d", res, err, s.Messages())
			}
		})
	}
	res, err := RunCeiling(context.Background(), Config{From: "a@servir.gob.pe", To: "b@example.org", Conns: 2, Messages: 5})
	if err != nil || res.Sent != 5 {
		t.Fatalf("RunCeiling: %v %v", res, err)
	}
}

// The sink asks what a submission server asks: TLS before AUTH, the
// right credential, AUTH before MAIL.
func TestSinkRefuses(t *testing.T) {
	s, err := StartSink("u", "p")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := Run(context.Background(), Config{Addr: s.Addr, TLS: s.ClientTLS(), Username: "u", Password: "wrong",
		From: "a@b.pe", To: "c@d.pe", Conns: 1, Messages: 1}); err == nil {
		t.Fatal("a wrong password was accepted")
	}
	c, err := smtp.Dial(s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if ok, _ := c.Extension("AUTH"); ok {
		t.Fatal("AUTH offered before TLS")
	}
	if err := c.StartTLS(s.ClientTLS()); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("a@b.pe"); err == nil {
		t.Fatal("MAIL accepted without AUTH")
	}
}
