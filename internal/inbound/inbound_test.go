package inbound_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/inbound"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/tlscert"
)

const domain = "envios.servir.gob.pe"

// mx is an inbound server on a loopback port.
type mx struct {
	addr string
	srv  *inbound.Server
	keys *rcpttoken.Keyring
	db   *bun.DB
}

func startMX(t testing.TB, db *bun.DB, p inbound.Processor, maxSize int64) *mx {
	t.Helper()
	ctx := context.Background()
	keys, err := rcpttoken.Load(ctx, db, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cert, key, _, err := tlscert.SelfSigned(dir, "mx.test")
	if err != nil {
		t.Fatal(err)
	}
	holder, err := tlscert.Load(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := inbound.New(inbound.Config{DB: db, Tokens: keys, Domain: domain, Processor: p, TLS: holder.Config(),
		Hostname: "mx.test", MaxMessageSize: maxSize, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			t.Errorf("Shutdown: %v", err)
		}
		if err := <-done; !errors.Is(err, inbound.ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
	})
	return &mx{addr: l.Addr().String(), srv: srv, keys: keys, db: db}
}

// client is one SMTP connection speaking line by line.
type client struct {
	t  testing.TB
	c  net.Conn
	rd *bufio.Reader
}

func dial(t testing.TB, addr string) *client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	t.Cleanup(func() { c.Close() })
	cl := &client{t: t, c: c, rd: bufio.NewReader(c)}
	if got := cl.reply(); !strings.HasPrefix(got, "220 ") {
		t.Fatalf("greeting %q", got)
	}
	return cl
}

// reply reads one (possibly multi-line) reply, lines joined by "\n".
func (cl *client) reply() string {
	var lines []string
	for {
		l, err := cl.rd.ReadString('\n')
		if err != nil {
			return strings.Join(append(lines, "CLOSED"), "\n")
		}
		l = strings.TrimRight(l, "\r\n")
		lines = append(lines, l)
		if len(l) < 4 || l[3] != '-' {
			return strings.Join(lines, "\n")
		}
	}
}

// do sends in (a command, or data with its own line ends) and returns the reply.
func (cl *client) do(in string) string {
	if !strings.HasSuffix(in, "\r\n") {
		in += "\r\n"
	}
	if _, err := cl.c.Write([]byte(in)); err != nil {
		return "CLOSED"
	}
	return cl.reply()
}

func dsnFor(tok string) string {
	return "From: MAILER-DAEMON@mx.example.com\r\nTo: b+" + tok + "@" + domain + "\r\nSubject: Undelivered Mail Returned to Sender\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n" +
		"--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n\r\n" +
		"Final-Recipient: rfc822; ana@example.com\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
		"Diagnostic-Code: smtp; 550 5.1.1 <ana@example.com>: Recipient address rejected: User unknown\r\n" +
		"--b1--\r\n"
}

// The dialog: what the MX accepts and refuses, with the exact replies.
func TestDialog(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		m := startMX(t, db, nil, 0)
		good := m.keys.Token(42)
		forged := good[:len(good)-2] + "aa"
		if forged == good {
			forged = good[:len(good)-2] + "bb"
		}
		tests := []struct {
			name  string
			steps [][2]string // command, reply prefix
		}{
			{"ehlo offers STARTTLS and SIZE, no AUTH", [][2]string{{"EHLO client.example", "250-Hello client.example"}}},
			{"null sender, good bounce token", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<b+" + good + "@" + domain + ">", "250 "}}},
			{"token in upper case", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<B+" + strings.ToUpper(good) + "@ENVIOS.SERVIR.GOB.PE>", "250 "}}},
			{"unsubscribe token", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<ana@example.com>", "250 "},
				{"RCPT TO:<u+" + good + "@" + domain + ">", "250 "}}},
			{"forged token", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<b+" + forged + "@" + domain + ">", "550 5.1.1 "}}},
			{"garbage token", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<u+zz@" + domain + ">", "550 5.1.1 "}}},
			{"unknown local part", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<info@" + domain + ">", "550 5.1.1 "}}},
			{"open relay attempt", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<spammer@example.net>", "250 "},
				{"RCPT TO:<victim@gmail.com>", "550 5.7.1 "}}},
			{"a valid token of another domain", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<b+" + good + "@servir.gob.pe>", "550 5.7.1 "}}},
			{"postmaster, abuse, fbl", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<x@example.net>", "250 "},
				{"RCPT TO:<postmaster@" + domain + ">", "250 "}, {"RCPT TO:<Abuse@" + domain + ">", "250 "},
				{"RCPT TO:<fbl@" + domain + ">", "250 "}}},
			{"at most 5 recipients", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "},
				{"RCPT TO:<postmaster@" + domain + ">", "250 "}, {"RCPT TO:<postmaster@" + domain + ">", "250 "},
				{"RCPT TO:<postmaster@" + domain + ">", "250 "}, {"RCPT TO:<postmaster@" + domain + ">", "250 "},
				{"RCPT TO:<postmaster@" + domain + ">", "250 "}, {"RCPT TO:<abuse@" + domain + ">", "452 4.5.3 "}}},
			{"no AUTH", [][2]string{{"EHLO c", "250"}, {"AUTH PLAIN AGFkbWluAHNlY3JldA==", "523 5.7.10 "}}},
			{"DATA without recipients", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<>", "250 "}, {"DATA", "502 5.5.1 "}}},
			{"over the size", [][2]string{{"EHLO c", "250"}, {"MAIL FROM:<> SIZE=99999999", "552 5.3.4 "}}},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				cl := dial(t, m.addr)
				for _, s := range tt.steps {
					got := cl.do(s[0])
					if !strings.HasPrefix(got, s[1]) {
						t.Fatalf("%s: got %q, want %q…", s[0], got, s[1])
					}
					if strings.HasPrefix(s[0], "EHLO") {
						if !strings.Contains(got, "STARTTLS") || !strings.Contains(got, "SIZE 10485760") || strings.Contains(got, "AUTH") {
							t.Fatalf("EHLO reply %q: want STARTTLS and SIZE 10485760, no AUTH", got)
						}
					}
				}
			})
		}
		if st := m.srv.Stats(); st.Refused != 5 || st.Stored != 0 {
			t.Fatalf("stats %+v, want 5 recipients refused, none stored", st)
		}
	})
}

// A message is stored once per accepted recipient before 250, whatever it
// holds; the first 256 KiB are kept, the size and hash are of all of it.
func TestStoresBeforeReplying(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		m := startMX(t, db, nil, 1<<20)
		tok := m.keys.Token(7)
		cl := dial(t, m.addr)
		for _, s := range [][2]string{{"EHLO bounce.example.com", "250"}, {"STARTTLS", "220 "}} {
			if got := cl.do(s[0]); !strings.HasPrefix(got, s[1]) {
				t.Fatalf("%s: %q", s[0], got)
			}
		}
		tc := tls.Client(cl.c, &tls.Config{InsecureSkipVerify: true})
		cl.c, cl.rd = tc, bufio.NewReader(tc)
		big := strings.Repeat("x", 76) + "\r\n"
		body := dsnFor(tok) + strings.Repeat(big, 4000) // ~312 KiB: over what is kept
		for _, s := range [][2]string{{"EHLO bounce.example.com", "250"}, {"AUTH PLAIN AGFkbWluAHNlY3JldA==", "504 5.7.4 "}, {"MAIL FROM:<>", "250 "},
			{"RCPT TO:<b+" + tok + "@" + domain + ">", "250 "}, {"RCPT TO:<postmaster@" + domain + ">", "250 "},
			{"DATA", "354 "}, {body + ".\r\n", "250 "}, {"QUIT", "221 "}} {
			if got := cl.do(s[0]); !strings.HasPrefix(got, s[1]) {
				t.Fatalf("%.40q: %q", s[0], got)
			}
		}
		var rows []mailstore.InboundRow
		if err := db.NewSelect().Model(&rows).Order("id").Scan(context.Background()); err != nil {
			t.Fatal(err)
		}
		if len(rows) != 2 {
			t.Fatalf("%d rows, want 2", len(rows))
		}
		b, p := rows[0], rows[1]
		if b.Mailbox != "bounce" || b.RecipientID == nil || *b.RecipientID != 7 || p.Mailbox != "postmaster" || p.RecipientID != nil {
			t.Fatalf("rows %+v / %+v", b, p)
		}
		if b.Size != int64(len(body)) || !b.Truncated || len(b.Raw) != inbound.KeepBytes || b.Helo != "bounce.example.com" ||
			b.MailFrom != "" || b.RemoteAddr != "127.0.0.1" || len(b.SHA256) != 64 || b.SHA256 != p.SHA256 || b.Kind != "" {
			t.Fatalf("row size %d truncated %v kept %d helo %q from %q remote %q sha %q kind %q", b.Size, b.Truncated, len(b.Raw),
				b.Helo, b.MailFrom, b.RemoteAddr, b.SHA256, b.Kind)
		}
		if !strings.HasPrefix(string(b.Raw), "From: MAILER-DAEMON") {
			t.Fatalf("raw starts %.40q", b.Raw)
		}
	})
}
