package relay_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/relay"
)

// step sends in (as written when it holds a line break, else as one
// command line) and expects a reply starting with want ("" expects no
// reply; "CLOSED" expects the server to have closed the connection).
type step struct{ in, want string }

const (
	mailFrom = "MAIL FROM:<avisos@servir.gob.pe>"
	rcptTo   = "RCPT TO:<ana@example.org>"
)

// smuggled is a second message hidden after a fake end of data: a server
// that took the fake end for the real one would reply to these commands.
const smuggled = "MAIL FROM:<avisos@servir.gob.pe>\r\nRCPT TO:<victima@example.org>\r\nDATA\r\n" +
	"From: avisos@servir.gob.pe\r\nTo: victima@example.org\r\n\r\nsmuggled\r\n"

func dataSteps(body string, want string) []step {
	return []step{{mailFrom, "250 "}, {rcptTo, "250 "}, {"DATA", "354 "}, {body + "\r\n.\r\n", want}}
}

// TestHostileDialogs: one row per hostile or broken client behaviour, with
// the exact reply, and the proof that nothing was stored or charged (or
// exactly what was).
func TestHostileDialogs(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 1000, relay.Limits{MaxRecipients: 5, MaxMessageSize: 20_000, MaxLineLength: 1000,
			MaxHeaders: 30, MaxHeaderBytes: 4000, AuthFailures: 100})
		big := message() + strings.Repeat(strings.Repeat("x", 76)+"\r\n", 300)
		var manyHeaders strings.Builder
		for i := range 40 {
			fmt.Fprintf(&manyHeaders, "X-Extra-%d: v\r\n", i)
		}
		cases := []struct {
			name   string
			pre    string // "connect", "ehlo", "tls" (EHLO, STARTTLS, EHLO) or "auth" (and AUTH PLAIN)
			steps  []step
			stored int // messages stored by the dialog
		}{
			{"auth before TLS", "ehlo", []step{{"AUTH PLAIN " + plain("", f.user, f.pass), "523 5.7.10"}}, 0},
			{"wrong password", "tls", []step{{"AUTH PLAIN " + plain("", f.user, "nope"), "535 5.7.8"}}, 0},
			{"unknown user", "tls", []step{{"AUTH PLAIN " + plain("", "nadie.abc123", f.pass), "535 5.7.8"}}, 0},
			{"authzid mismatch", "tls", []step{{"AUTH PLAIN " + plain("sjti/talento", f.user, f.pass), "535 5.7.8"}}, 0},
			{"authzid equal to the user", "tls", []step{{"AUTH PLAIN " + plain(f.user, f.user, f.pass), "235 2.0.0"}}, 0},
			{"malformed SASL base64", "tls", []step{{"AUTH PLAIN !!!notbase64", "501 5.5.2"}}, 0},
			{"malformed SASL base64 after a challenge", "tls", []step{{"AUTH LOGIN", "334 "}, {"!!!notbase64", "501 5.5.2"}}, 0},
			{"malformed PLAIN response", "tls", []step{{"AUTH PLAIN " + b64("no-nuls-here"), "501 5.5.2"}}, 0},
			{"LOGIN", "tls", []step{{"AUTH LOGIN", "334 VXNlcm5hbWU6"}, {b64(f.user), "334 UGFzc3dvcmQ6"}, {b64(f.pass), "235 2.0.0"}}, 0},
			{"LOGIN wrong password", "tls", []step{{"AUTH LOGIN " + b64(f.user), "334 UGFzc3dvcmQ6"}, {b64("nope"), "535 5.7.8"}}, 0},
			{"AUTH cancelled", "tls", []step{{"AUTH LOGIN", "334 "}, {"*", "501 5.0.0"}}, 0},
			{"unknown mechanism", "tls", []step{{"AUTH CRAM-MD5", "504 5.7.4"}}, 0},
			{"second AUTH", "auth", []step{{"AUTH PLAIN " + plain("", f.user, f.pass), "503 5.5.1"}}, 0},
			{"MAIL before EHLO", "connect", []step{{mailFrom, "502 5.5.1"}}, 0},
			{"MAIL without AUTH", "tls", []step{{mailFrom, "530 5.7.0"}}, 0},
			{"MAIL without TLS", "ehlo", []step{{mailFrom, "530 5.7.0"}}, 0},
			{"DATA before RCPT", "auth", []step{{mailFrom, "250 "}, {"DATA", "502 5.5.1"}}, 0},
			{"second STARTTLS", "tls", []step{{"STARTTLS", "502 5.5.1"}}, 0},
			{"STARTTLS with a parameter", "ehlo", []step{{"STARTTLS now", "501 5.5.4"}, {"MAIL FROM:<avisos@servir.gob.pe>", "530 5.7.0"}}, 0},
			{"STARTTLS run into another word", "ehlo", []step{{"STARTTLSX", "501 5.5.4"}, {"NOOP", "250 "}}, 0},
			{"unknown command", "ehlo", []step{{"XYZW", "500 5.5.2"}, {"NOOP", "250 "}}, 0},
			{"unparsable command line", "ehlo", []step{{"FOO bar", "500 5.5.2"}, {"NOOP", "250 "}}, 0},
			{"VRFY tells nothing", "auth", []step{{"VRFY root", "252 2.5.0"}}, 0},
			{"EXPN", "auth", []step{{"EXPN staff", "502 5.5.1"}}, 0},
			{"null sender", "auth", []step{{"MAIL FROM:<>", "553 5.7.1"}}, 0},
			{"null sender with a parameter", "auth", []step{{"MAIL FROM:<> SIZE=100", "553 5.7.1"}}, 0},
			{"envelope sender not allowed", "auth", []step{{"MAIL FROM:<jefe@otra.gob.pe>", "553 5.7.1"}}, 0},
			{"header From not allowed", "auth", dataSteps(strings.Replace(message(), "avisos@servir.gob.pe", "jefe@otra.gob.pe", 1), "553 5.7.1"), 0},
			{"Sender not allowed", "auth", dataSteps(message("Sender: jefe@otra.gob.pe"), "553 5.7.1"), 0},
			{"two From fields", "auth", dataSteps("From: avisos@servir.gob.pe\r\n"+message(), "550 5.6.0"), 0},
			// RFC 5321 paths (section 4.1.2), parsed by go-smtp (third_party/go-smtp patch 10):
			// what does not parse is 501 5.1.7 at MAIL and 501 5.1.3 at RCPT.
			{"MAIL path without angle brackets", "auth", []step{{"MAIL FROM:avisos@servir.gob.pe", "501 5.1.7"}}, 0},
			{"MAIL path without angle brackets after a space", "auth", []step{{"MAIL FROM: avisos@servir.gob.pe", "501 5.1.7"}}, 0},
			{"RCPT path without angle brackets", "auth", []step{{mailFrom, "250 "}, {"RCPT TO:ana@example.org", "501 5.1.3"}}, 0},
			{"MAIL local part without a domain", "auth", []step{{"MAIL FROM:<avisos>", "501 5.1.7"}}, 0},
			{"RCPT local part without a domain", "auth", []step{{mailFrom, "250 "}, {"RCPT TO:<pepe>", "501 5.1.3"}}, 0},
			{"MAIL quoted local part with a comment", "auth", []step{{`MAIL FROM:<"avisos"(comentario)@servir.gob.pe>`, "501 5.1.7"}}, 0},
			{"RCPT quoted local part with a comment", "auth", []step{{mailFrom, "250 "}, {`RCPT TO:<"ana"(comentario)@example.org>`, "501 5.1.3"}}, 0},
			{"RCPT comment before the local part", "auth", []step{{mailFrom, "250 "}, {"RCPT TO:<(comentario)ana@example.org>", "501 5.1.3"}}, 0},
			{"RCPT comment after the domain", "auth", []step{{mailFrom, "250 "}, {"RCPT TO:<ana@example.org(comentario)>", "501 5.1.3"}}, 0},
			{"RCPT display name hidden in a quoted local part", "auth", []step{{mailFrom, "250 "},
				{`RCPT TO:<"Jefe <jefe@otra.gob.pe> ("@example.org)>`, "501 5.1.3"}}, 0},
			// Valid RFC 5321 syntax, but not a mailbox the relay takes.
			{"RCPT quoted local part holding parentheses", "auth", []step{{mailFrom, "250 "}, {`RCPT TO:<"ana (comentario)"@example.org>`, "553 5.1.3"}}, 0},
			// A source route is accepted and ignored (RFC 5321 section 4.1.1.3):
			// the recipient stored is ana@example.org (checked below).
			{"source routes ignored", "auth", []step{{"MAIL FROM:<@a.example:avisos@servir.gob.pe>", "250 "},
				{"RCPT TO:<@a.example,@b.example:ana@example.org>", "250 "}, {"DATA", "354 "}, {message() + ".\r\n", "250 2.0.0"}}, 1},
			{"second MAIL in a transaction", "auth", []step{{mailFrom, "250 "}, {rcptTo, "250 "}, {"MAIL FROM:<talento@servir.gob.pe>", "503 5.5.1"},
				{"DATA", "354 "}, {message() + ".\r\n", "250 2.0.0"}}, 1},
			{"bad recipient address", "auth", []step{{mailFrom, "250 "}, {"RCPT TO:<ana@localhost>", "553 5.1.3"}}, 0},
			{"too many recipients", "auth", []step{{mailFrom, "250 "}, {"RCPT TO:<a1@example.org>", "250 "}, {"RCPT TO:<a2@example.org>", "250 "},
				{"RCPT TO:<a3@example.org>", "250 "}, {"RCPT TO:<a4@example.org>", "250 "}, {"RCPT TO:<a5@example.org>", "250 "},
				{"RCPT TO:<a6@example.org>", "452 4.5.3"}}, 0},
			{"oversize by SIZE", "auth", []step{{mailFrom + " SIZE=20001", "552 5.3.4"}}, 0},
			{"oversize by content", "auth", dataSteps(big, "552 5.3.4"), 0},
			{"too long line", "auth", append(dataSteps(message()+strings.Repeat("y", 1200), "500 5.4.0"), step{"", "CLOSED"}), 0},
			{"header too big", "auth", dataSteps(message("X-Long: "+strings.Repeat("z", 900)+"\r\n\t"+strings.Repeat("z", 900)+"\r\n\t"+
				strings.Repeat("z", 900)+"\r\n\t"+strings.Repeat("z", 900)+"\r\n\t"+strings.Repeat("z", 900)), "552 5.3.4"), 0},
			{"too many header fields", "auth", dataSteps(manyHeaders.String()+message(), "552 5.3.4"), 0},
			{"bare LF in a header", "auth", dataSteps("From: avisos@servir.gob.pe\nTo: ana@example.org\r\n\r\nHola.", "550 5.6.0"), 0},
			{"bare CR in the body", "auth", dataSteps(message()+"uno\rdos", "550 5.6.0"), 0},
			{"bare LF in the body", "auth", dataSteps(message()+"uno\ndos", "550 5.6.0"), 0},
			{"NUL in the body", "auth", dataSteps(message()+"uno\x00dos", "550 5.6.0"), 0},
			{"no From", "auth", dataSteps("To: ana@example.org\r\nSubject: x\r\n\r\nHola.", "550 5.6.0"), 0},
			{"X-Envios unknown directive", "auth", dataSteps(message("X-Envios-Foo: 1"), "550 5.6.0 Message refused: X-Envios-Foo"), 0},
			{"X-Envios-Send-At invalid", "auth", dataSteps(message("X-Envios-Send-At: mañana"), "550 5.6.0 Message refused: X-Envios-Send-At"), 0},
			{"X-Envios-Priority injection by folding", "auth", dataSteps(message("X-Envios-Priority: bulk\r\n Bcc: jefe@otra.gob.pe"), "550 5.6.0 Message refused: X-Envios-Priority"), 0},
			{"X-Envios-Tags invalid", "auth", dataSteps(message("X-Envios-Tags: ok, NOT OK"), "550 5.6.0 Message refused: X-Envios-Tags"), 0},
			{"X-Envios directive twice", "auth", dataSteps(message("X-Envios-Campaign: a", "X-Envios-Campaign: b"), "550 5.6.0"), 0},
			{"RSET leaves nothing", "auth", []step{{mailFrom, "250 "}, {rcptTo, "250 "}, {"RSET", "250 "}, {"DATA", "502 5.5.1"}}, 0},
			{"accepted after RSET", "auth", append([]step{{mailFrom, "250 "}, {rcptTo, "250 "}, {"RSET", "250 "}}, dataSteps(message(), "250 2.0.0")...), 1},
			{"QUIT before the final dot", "auth", []step{{mailFrom, "250 "}, {rcptTo, "250 "}, {"DATA", "354 "}, {message() + "QUIT\r\n", ""}}, 0},
		}
		for _, v := range []struct{ name, end string }{
			{"LF.LF", "\n.\n"}, {"LF.CRLF", "\n.\r\n"}, {"CRLF.LF", "\r\n.\n"}, {"CR.CR", "\r.\r"},
			{"CR.CRLF", "\r.\r\n"}, {"LF.CR", "\n.\r"}, {"CR.LF", "\r.\n"}, {"CRLF.CR.CR", "\r\n.\r\r"}, {"CRLF.CR", "\r\n.\r"},
		} {
			// One reply to the whole DATA, then NOOP is answered: no
			// reply was queued for a smuggled transaction.
			cases = append(cases, struct {
				name   string
				pre    string
				steps  []step
				stored int
			}{"smuggling " + v.name, "auth", append(dataSteps(message()+"Hola"+v.end+smuggled, "550 5.6.0"), step{"NOOP", "250 "}), 0})
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				msgs, used, rcpts := f.count(t, "mail_messages"), f.used(t), f.recipients(t)
				var d *dialog
				switch c.pre {
				case "connect":
					d = f.dial(t)
				case "ehlo":
					d = f.dial(t)
					d.send("EHLO client.test")
					if all := d.expect("250 "); strings.Contains(all, "AUTH") {
						t.Fatalf("AUTH advertised before TLS: %q", all)
					}
				case "tls":
					var all string
					if d, all = f.secure(t); !strings.Contains(all, "AUTH PLAIN LOGIN") {
						t.Fatalf("AUTH not advertised after TLS: %q", all)
					}
				case "auth":
					d = f.login(t)
				}
				for _, s := range c.steps {
					if s.in == "" {
						// only read
					} else if strings.ContainsAny(s.in, "\r\n") {
						d.raw(s.in)
					} else {
						d.send(s.in)
					}
					switch s.want {
					case "":
					case "CLOSED":
						d.closed()
					default:
						d.expect(s.want)
					}
				}
				// Once the server has closed the connection, the session is
				// over: what it stored is stored.
				d.hangUp()
				if got := f.count(t, "mail_messages") - msgs; got != c.stored {
					t.Errorf("%d messages stored, want %d", got, c.stored)
				}
				if got := f.used(t) - used; got != int64(c.stored) {
					t.Errorf("%d charged, want %d", got, c.stored)
				}
				// Every message a row stores is for ana@example.org, however
				// its RCPT named her.
				for addr, n := range f.recipients(t) {
					want := rcpts[addr]
					if addr == "ana@example.org" {
						want += c.stored
					}
					if n != want {
						t.Errorf("%d recipients %q stored, want %d", n-rcpts[addr], addr, want-rcpts[addr])
					}
				}
			})
		}
	})
}

func TestQuotaExhaustedMidTransaction(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 3, relay.Limits{})
		d := f.login(t)
		d.send(mailFrom)
		d.expect("250 ")
		for i := range 3 {
			d.send(fmt.Sprintf("RCPT TO:<a%d@example.org>", i))
			d.expect("250 ")
		}
		d.send("RCPT TO:<a3@example.org>")
		last := d.expect("452 4.7.1")
		if !strings.Contains(last, "account enap/eventos has 3 messages left, 4 needed") {
			t.Errorf("reply %q does not name the account and what is left", last)
		}
		d.send("DATA")
		d.expect("354 ")
		d.raw(message() + ".\r\n")
		d.expect("250 ")
		if f.used(t) != 3 {
			t.Fatalf("used %d, want 3", f.used(t))
		}
		// Spent: the next transaction is refused at its first RCPT.
		d.send(mailFrom)
		d.expect("250 ")
		d.send(rcptTo)
		d.expect("452 4.7.1")
	})
}

func TestPipelinedPlaintextAfterSTARTTLSIsIgnored(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{})
		d := f.dial(t)
		d.send("EHLO client.test")
		d.expect("250 ")
		// The injected command rides in the same packet as STARTTLS.
		d.raw("STARTTLS\r\nMAIL FROM:<avisos@servir.gob.pe>\r\n")
		d.expect("220 ")
		d.handshake(f.clientTLS())
		d.send("EHLO client.test")
		all := d.expect("250 ")
		if !strings.HasPrefix(all, "250-") || !strings.Contains(all, "AUTH PLAIN LOGIN") {
			t.Fatalf("first reply after the handshake is %q, want the EHLO reply", all)
		}
		d.send("NOOP")
		d.expect("250 ")
	})
}

func TestRevokedCredentialRefusesTheNextCommand(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{})
		d := f.login(t)
		d.send(mailFrom)
		d.expect("250 ")
		if ok, err := f.creds.Revoke(context.Background(), f.user, "test"); err != nil || !ok {
			t.Fatal(ok, err)
		}
		d.send(rcptTo)
		d.expect("530 5.7.0")
		// A new transaction (MAIL in the open one would be a 503).
		d.send("RSET")
		d.expect("250 ")
		d.send(mailFrom)
		d.expect("530 5.7.0")
		// And a new login with it fails.
		d2, _ := f.secure(t)
		d2.send("AUTH PLAIN " + plain("", f.user, f.pass))
		d2.expect("535 5.7.8")
	})
}

func TestBruteForceIsThrottledAcrossRestarts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{AuthFailures: 3, AuthDelay: 50 * time.Millisecond})
		try := func(pass, want string) *dialog {
			d, _ := f.secure(t)
			start := time.Now()
			d.send("AUTH PLAIN " + plain("", f.user, pass))
			d.expect(want)
			if want == "535 5.7.8" && time.Since(start) < 50*time.Millisecond {
				t.Errorf("failure answered after %s, before the fixed delay", time.Since(start))
			}
			return d
		}
		for range 3 {
			try("wrong", "535 5.7.8")
		}
		// Even the right password is refused now, and the connection closed.
		d := try(f.pass, "421 4.7.0")
		d.closed()
		// A new relay on the same database (a restart) still refuses.
		if err := f.srv.Close(); err != nil {
			t.Fatal(err)
		}
		f.start(t, relay.Limits{AuthFailures: 3, AuthDelay: 50 * time.Millisecond})
		d = try(f.pass, "421 4.7.0")
		d.closed()
	})
}

func TestBDAT(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{})
		msg := message()
		d := f.login(t)
		d.send(mailFrom)
		d.expect("250 ")
		d.send(rcptTo)
		d.expect("250 ")
		d.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg), msg))
		d.expect("250 2.0.0")
		if f.count(t, "mail_messages") != 1 || f.used(t) != 1 {
			t.Fatalf("whole BDAT: %d stored, %d charged", f.count(t, "mail_messages"), f.used(t))
		}
		d = f.login(t)
		d.send(mailFrom)
		d.expect("250 ")
		d.send(rcptTo)
		d.expect("250 ")
		d.raw(fmt.Sprintf("BDAT %d LAST\r\n%s", len(msg)+500, msg))
		// 500 bytes short, the client hangs up: the server closes without a
		// reply, once the session's Data has returned.
		if rest := d.hangUp(); rest != "" {
			t.Fatalf("a cut-short BDAT was answered %q", rest)
		}
		if f.count(t, "mail_messages") != 1 || f.used(t) != 1 {
			t.Fatalf("a cut-short BDAT was stored: %d stored, %d charged", f.count(t, "mail_messages"), f.used(t))
		}
	})
}

// Connections are bounded per IP address and in all, and a session ends at
// its deadline however active it is.
func TestConnectionLimitsAndSessionDeadline(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{MaxConnsPerIP: 2, SessionTimeout: 700 * time.Millisecond})
		a, b := f.dial(t), f.dial(t)
		c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		third := &dialog{t: t, conn: c, r: bufio.NewReader(c)}
		third.expect("421 4.7.0")
		third.closed()
		// The first two still work; when one ends its slot is free again.
		a.send("NOOP")
		a.expect("250 ")
		a.send("QUIT")
		a.expect("221 ")
		deadline := time.Now().Add(2 * time.Second)
		for {
			c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			d := &dialog{t: t, conn: c, r: bufio.NewReader(c)}
			if last, _ := d.reply(); strings.HasPrefix(last, "220 ") {
				c.Close()
				break
			}
			c.Close()
			if time.Now().After(deadline) {
				t.Fatal("a freed slot was never reused")
			}
			time.Sleep(20 * time.Millisecond)
		}
		// b keeps talking, and is cut off at the session deadline anyway.
		start := time.Now()
		for time.Since(start) < 2*time.Second {
			if _, err := io.WriteString(b.conn, "NOOP\r\n"); err != nil {
				break
			}
			_ = b.conn.SetReadDeadline(time.Now().Add(time.Second))
			if _, err := b.r.ReadString('\n'); err != nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
		if d := time.Since(start); d > 1500*time.Millisecond {
			t.Fatalf("the session outlived its 700 ms deadline (%s)", d)
		}
	})
}

func TestMaxConnsInAll(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{MaxConns: 1})
		f.dial(t)
		c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		d := &dialog{t: t, conn: c, r: bufio.NewReader(c)}
		d.expect("421 4.7.0 Too many connections")
		d.closed()
	})
}

// A client that drops the connection in the middle of DATA leaves nothing
// stored or charged.
func TestDroppedDuringDATA(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{})
		d := f.login(t)
		for _, s := range []step{{mailFrom, "250 "}, {rcptTo, "250 "}, {"DATA", "354 "}} {
			d.send(s.in)
			d.expect(s.want)
		}
		d.raw(message()[:40])
		// The server answers the cut-short DATA (451) and closes, after
		// the session's Data has returned.
		if rest := d.hangUp(); !strings.HasPrefix(rest, "4") {
			t.Fatalf("a cut-short DATA was answered %q, want a temporary failure", rest)
		}
		if f.count(t, "mail_messages") != 0 || f.used(t) != 0 {
			t.Fatalf("%d stored, %d charged after a drop in DATA", f.count(t, "mail_messages"), f.used(t))
		}
	})
}

// Messages being received share a memory budget: over it a message is
// refused with 452 4.3.1 (and nothing stored), and the budget comes back.
func TestDataMemoryBudget(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{DataMemory: 2000})
		d := f.login(t)
		big := message() + strings.Repeat(strings.Repeat("x", 70)+"\r\n", 50)
		for _, s := range dataSteps(big, "452 4.3.1") {
			if strings.ContainsAny(s.in, "\r\n") {
				d.raw(s.in)
			} else {
				d.send(s.in)
			}
			d.expect(s.want)
		}
		for range 3 { // the budget was given back each time
			for _, s := range dataSteps(message(), "250 2.0.0") {
				if strings.ContainsAny(s.in, "\r\n") {
					d.raw(s.in)
				} else {
					d.send(s.in)
				}
				d.expect(s.want)
			}
		}
		if f.count(t, "mail_messages") != 3 || f.used(t) != 3 {
			t.Fatalf("%d stored, %d charged", f.count(t, "mail_messages"), f.used(t))
		}
	})
}

// Logins with the same credential that arrive together share one argon2id
// verification (the cache of recent logins is off here), and a wrong
// password among them shares nothing: it fails alone.
func TestConcurrentLoginsShareOneVerification(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{AuthCache: -1, AuthFailures: 100})
		const n = 8
		var ds []*dialog
		for range n + 1 {
			d, _ := f.secure(t)
			ds = append(ds, d)
		}
		// Every AUTH is written before any reply is read.
		for i, d := range ds {
			pass := f.pass
			if i == n {
				pass = "wrong-" + f.pass
			}
			d.send("AUTH PLAIN " + plain("", f.user, pass))
		}
		for _, d := range ds[:n] {
			d.expect("235 2.0.0")
		}
		ds[n].expect("535 5.7.8")
		st := f.srv.Stats()
		// The wrong password is verified on its own, so at least two; n
		// logins that all overlapped need one between them.
		if st.PasswordChecks < 2 || st.PasswordChecks > n/2 || st.AuthFailures != 1 {
			t.Fatalf("%d logins and a wrong password ran %d verifications (%d failures), want 2..%d",
				n, st.PasswordChecks, st.AuthFailures, n/2)
		}
	})
}

// Sessions busy at once share their credential checks (stateReader), yet
// every command written after a revocation committed is refused: a check
// never reuses a query that was already running when the command came.
func TestRevocationReachesEveryBusySession(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 10, relay.Limits{})
		const sessions = 8
		var ds []*dialog
		for range sessions {
			ds = append(ds, f.login(t))
		}
		type answer struct {
			sent time.Time
			code string
		}
		var revokedAt atomic.Int64 // unix nanoseconds once Revoke has returned
		results := make([][]answer, sessions)
		errs := make(chan error, sessions)
		var wg sync.WaitGroup
		for i, d := range ds {
			wg.Go(func() {
				for {
					sent := time.Now()
					if _, err := io.WriteString(d.conn, mailFrom+"\r\n"); err != nil {
						errs <- err
						return
					}
					_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
					line, err := d.r.ReadString('\n')
					if err != nil {
						errs <- err
						return
					}
					results[i] = append(results[i], answer{sent, line[:3]})
					if line[:3] != "250" {
						return // revoked: the session is logged out
					}
					if _, err := io.WriteString(d.conn, "RSET\r\n"); err != nil {
						errs <- err
						return
					}
					if _, err := d.r.ReadString('\n'); err != nil {
						errs <- err
						return
					}
				}
			})
		}
		time.Sleep(200 * time.Millisecond)
		if ok, err := f.creds.Revoke(context.Background(), f.user, "test"); err != nil || !ok {
			t.Fatal(ok, err)
		}
		revokedAt.Store(time.Now().UnixNano())
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		before := 0
		for i, rs := range results {
			last := rs[len(rs)-1]
			if last.code != "530" {
				t.Fatalf("session %d: last reply %s, want 530", i, last.code)
			}
			for _, a := range rs {
				if a.sent.UnixNano() > revokedAt.Load() && a.code != "530" {
					t.Fatalf("session %d: a MAIL sent after the revocation got %s", i, a.code)
				}
				if a.code == "250" {
					before++
				}
			}
		}
		if before < sessions {
			t.Fatalf("only %d MAIL commands accepted before the revocation", before)
		}
	})
}

// TestReceivedField: each message gets a Received field on top naming the
// client's EHLO name and address, the relay, ESMTPSA, the TLS version and
// cipher, and the message's id in reports (RFC 5321 §4.4, RFC 3848);
// HideClientAddress leaves the address out.
func TestReceivedField(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		hide := false
		f := newFixture(t, db, 1000, relay.Limits{}, func(c *relay.Config) { c.HideClientAddress = hide })
		for _, h := range []bool{false, true} {
			t.Run(fmt.Sprintf("hide=%v", h), func(t *testing.T) {
				if h != hide {
					hide = h
					f.start(t, relay.Limits{}) // a relay with the new setting, on new ports
				}
				d := f.login(t)
				d.send(mailFrom)
				d.expect("250 ")
				d.send(rcptTo)
				d.expect("250 ")
				d.send("DATA")
				d.expect("354 ")
				d.raw("Received: from earlier.example (earlier [192.0.2.1])\r\n" + message() + ".\r\n")
				id := strings.TrimSpace(strings.TrimPrefix(d.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as "))
				var raw []byte
				if err := db.NewRaw("SELECT raw FROM mail_messages WHERE id = ?", id).Scan(context.Background(), &raw); err != nil {
					t.Fatal(err)
				}
				from := "client.test ([127.0.0.1])"
				if hide {
					from = "client.test"
				}
				want := regexp.MustCompile(`^Received: from ` + regexp.QuoteMeta(from) + `\r\n` +
					`\tby relay\.test \(envios\) with ESMTPSA id ` + regexp.QuoteMeta(id) + `\r\n` +
					`\t\(version=TLS1\.3 cipher=TLS_[A-Z0-9_]+\);\r\n` +
					`\t[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} \+0000\r\n` +
					`Received: from earlier\.example \(earlier \[192\.0\.2\.1\]\)\r\nFrom: `)
				if !want.Match(raw) {
					t.Fatalf("stored message begins\n%q", raw[:min(len(raw), 300)])
				}
				if hide && bytes.Contains(raw, []byte("127.0.0.1")) {
					t.Fatal("the client's address is in the message")
				}
			})
		}
	})
}
