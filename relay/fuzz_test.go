package relay_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/relay"
)

// FuzzSession speaks a whole SMTP session to one relay (started once, on
// SQLite). The first byte of the input chooses how far the client gets
// before the fuzzed bytes: 0 greeting only, 1 EHLO, 2 EHLO STARTTLS EHLO,
// 3 and AUTH PLAIN. The rest is written as it is, with {plain}, {user64}
// and {pass64} replaced by the credential's base64 forms, then the client
// half-closes and reads until the server closes.
//
// Invariants: the server keeps serving and never logs a panic or an
// internal error; every reply line is a code from 200 to 599 followed by
// a space or a hyphen, and a multi-line reply keeps its code; the ledger
// verifies; the account is charged exactly the recipients stored; and
// every message stored was answered "queued as" its id.
func FuzzSession(f *testing.F) {
	for _, s := range []string{
		"\x03" + send(message()) + "QUIT\r\n",
		"\x03" + send(message("Bcc: oculto@example.org", "X-Envios-Priority: bulk", "X-Envios-Tags: a,b")) + send(message()) + "QUIT\r\n",
		"\x03MAIL FROM:<avisos@servir.gob.pe>\r\nRCPT TO:<a1@example.org>\r\nRCPT TO:<a2@example.org>\r\nRCPT TO:<a3@example.org>\r\nDATA\r\n" +
			message() + ".\r\nQUIT\r\n",
		"\x03" + send(message("X-Envios-Idempotency-Key: k1")) + send(message("X-Envios-Idempotency-Key: k1")) + "QUIT\r\n",
		// Smuggling: a fake end of data, then a second transaction.
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + "Hola\n.\n" + smuggled + ".\r\nNOOP\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + "Hola\r\n.\n" + smuggled + ".\r\nNOOP\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + "Hola\r.\r" + smuggled + ".\r\nNOOP\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + "Hola\r\n.\r" + smuggled + ".\r\nNOOP\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + "Hola\n.\r\n" + smuggled + ".\r\nNOOP\r\n",
		// AUTH LOGIN, a wrong password, AUTH before TLS, AUTH twice.
		"\x02AUTH LOGIN\r\n{user64}\r\n{pass64}\r\n" + send(message()) + "QUIT\r\n",
		"\x02AUTH LOGIN {user64}\r\nbm9wZQ==\r\n" + mailFrom + "\r\n",
		"\x02AUTH PLAIN\r\n{plain}\r\nAUTH PLAIN {plain}\r\n" + send(message()),
		"\x02AUTH LOGIN\r\n*\r\nAUTH CRAM-MD5\r\nAUTH PLAIN !!!\r\n",
		"\x01AUTH PLAIN {plain}\r\n" + mailFrom + "\r\n",
		// RSET, pipelined commands, broken transactions.
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nRSET\r\nDATA\r\n" + send(message()) + "NOOP\r\nQUIT\r\n",
		"\x03NOOP\r\nEHLO again.test\r\n" + mailFrom + "\r\nRCPT TO:<ana@localhost>\r\nRCPT TO:<no-domain>\r\nMAIL FROM:<>\r\nDATA\r\nHELP\r\nVRFY a\r\nEXPN b\r\nQUIT\r\n",
		"\x03" + mailFrom + " SIZE=999999999\r\n" + mailFrom + "\r\nRCPT TO:<a1@example.org>\r\nRCPT TO:<a2@example.org>\r\nRCPT TO:<a3@example.org>\r\n" +
			"RCPT TO:<a4@example.org>\r\nRCPT TO:<a5@example.org>\r\nRCPT TO:<a6@example.org>\r\nDATA\r\n" + message() + ".\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + "sin final",
		"\x03" + send("From: jefe@otra.gob.pe\r\n\r\nx\r\n") + send("To: a@example.org\r\n\r\nx\r\n") + send(message("X-Envios-Foo: 1")) +
			send("From: avisos@servir.gob.pe\nTo: a@example.org\r\n\r\nx\r\n") + send(message()+"uno\x00dos\r\n"),
		"\x03NOOP " + strings.Repeat("x", 1200) + "\r\n" + send(message()),
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + message() + strings.Repeat("y", 1200) + "\r\n.\r\n" + send(message()),
		// CHUNKING: one chunk, two chunks with a bare LF, a chunk cut short.
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\n" + fmt.Sprintf("BDAT %d LAST\r\n", len(message())) + message() + "QUIT\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nBDAT 10\r\nFrom: avis" + fmt.Sprintf("BDAT %d LAST\r\n", len(bareLF)) + bareLF + "NOOP\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nBDAT 5000 LAST\r\n" + message(),
		// A message given up after a chunk: by RSET, by hanging up; and a
		// BDAT after an aborted one (go-smtp v0.25.1 raced on
		// Conn.dataResult there: third_party/go-smtp patches it).
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nBDAT 10\r\nFrom: avisRSET\r\nNOOP\r\n" + send(message()) + "QUIT\r\n",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nBDAT 10\r\nFrom: avisRSET\r\n" + mailFrom + "\r\n" + rcptTo + "\r\nBDAT 10\r\nFrom: avis",
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nBDAT 10\r\nFrom: avis",
		// MAIL inside a transaction; paths RFC 5321 refuses, and a source
		// route, which it ignores.
		"\x03" + mailFrom + "\r\n" + rcptTo + "\r\nMAIL FROM:<talento@servir.gob.pe>\r\nDATA\r\n" + message() + ".\r\n",
		"\x03MAIL FROM:avisos@servir.gob.pe\r\nMAIL FROM:<avisos>\r\nMAIL FROM:<@a.example:avisos@servir.gob.pe>\r\nRCPT TO:ana@example.org\r\n" +
			"RCPT TO:<pepe>\r\nRCPT TO:<\"ana\"(c)@example.org>\r\nRCPT TO:<\"Jefe <jefe@otra.gob.pe> (\"@example.org)>\r\n" +
			"RCPT TO:<ana@example.org(c)>\r\nRCPT TO:<@a.example,@b.example:ana@example.org>\r\nDATA\r\n" + message() + ".\r\n",
		// Parameters and odd SASL responses.
		"\x03" + mailFrom + " BODY=8BITMIME SMTPUTF8 AUTH=<>\r\n" + rcptTo + " NOTIFY=SUCCESS ORCPT=rfc822;x@y.pe\r\nDATA\r\n" + message() + ".\r\n",
		"\x02AUTH PLAIN =\r\nAUTH LOGIN =\r\n=\r\n",
		// Before TLS: plaintext STARTTLS with injected commands, junk.
		"\x01STARTTLS\r\n" + mailFrom + "\r\n",
		"\x00HELO x\r\n" + mailFrom + "\r\n\x00\xff\r\n\r\n",
		"\x00",
		"\x02\x16\x03\x01\x00\x05hello\r\nQUIT\r\nNOOP\r\n",
	} {
		f.Add([]byte(s))
	}
	fx, trap := newFuzzFixture(f)
	replace := strings.NewReplacer("{plain}", plain("", fx.user, fx.pass), "{user64}", b64(fx.user), "{pass64}", b64(fx.pass))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		ctx := context.Background()
		mode := byte(0)
		if len(in) > 0 {
			mode, in = in[0]%4, in[1:]
		}
		input := replace.Replace(string(in))
		before := snapshot(t, fx)

		var d *dialog
		switch mode {
		case 0:
			d = fx.dial(t)
		case 1, 2:
			d = fx.dial(t)
			d.send("EHLO client.test")
			d.expect("250 ")
			if mode == 2 {
				d.startTLS(fx.clientTLS())
				d.send("EHLO client.test")
				d.expect("250 ")
			}
		case 3:
			d = fx.login(t)
		}
		wrote := make(chan struct{})
		go func() {
			defer close(wrote)
			_ = d.conn.SetWriteDeadline(time.Now().Add(2 * time.Second))
			if _, err := io.WriteString(d.conn, input); err == nil {
				if cw, ok := d.conn.(interface{ CloseWrite() error }); ok {
					_ = cw.CloseWrite()
				}
			}
		}()
		queued, complete := readReplies(t, d)
		d.conn.Close()
		<-wrote

		for _, rec := range trap.take() {
			t.Errorf("server logged: %s", rec)
		}
		// Still serving.
		d2 := fx.dial(t)
		d2.send("QUIT")
		d2.expect("221 ")

		if problems, err := fx.m.Ledger().Verify(ctx); err != nil || len(problems) > 0 {
			t.Fatalf("ledger: %v %v", problems, err)
		}
		// A DATA cut short may still be committing: the charge and the
		// rows commit together, so wait for a consistent reading.
		var after state
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			after = snapshot(t, fx)
			if after.used-before.used == int64(after.recipients-before.recipients) || time.Now().After(deadline) {
				break
			}
		}
		if charged, stored := after.used-before.used, after.recipients-before.recipients; charged != int64(stored) {
			t.Fatalf("charged %d, stored %d recipients", charged, stored)
		}
		var fresh []string
		for id := range after.messages {
			if !before.messages[id] {
				fresh = append(fresh, id)
				if complete && !queued[id] {
					t.Errorf("message %s stored but never answered queued", id)
				}
			}
		}
		for id := range queued {
			if !after.messages[id] {
				t.Errorf("answered queued as %s, which is not stored", id)
			}
		}
		if complete && len(fresh) > len(queued) {
			t.Errorf("%d messages stored, %d answered queued", len(fresh), len(queued))
		}
	})
}

// bareLF ends a message split across BDAT chunks with a bare LF.
const bareLF = "os@servir.gob.pe\nTo: ana@example.org\r\n\r\nHola.\r\n"

// send is one transaction from avisos@servir.gob.pe to ana@example.org.
func send(msg string) string {
	return mailFrom + "\r\n" + rcptTo + "\r\nDATA\r\n" + msg + ".\r\n"
}

var (
	replyLine = regexp.MustCompile(`^([2-5][0-9][0-9])([ -])[^\r\n]*\r\n$`)
	queuedAs  = regexp.MustCompile(`^250 2\.0\.0 Ok: queued as (\S+)\r\n$`)
)

// readReplies reads until the server closes the connection or 2 seconds
// pass, checking every reply line. It returns the ids answered "queued
// as", and whether it saw the whole of the server's side: the server
// closed cleanly, not with a reset or a TLS handshake (220 to STARTTLS)
// after which the bytes are no longer lines.
func readReplies(t *testing.T, d *dialog) (queued map[string]bool, complete bool) {
	t.Helper()
	queued = map[string]bool{}
	_ = d.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	cont := "" // the code of an unfinished multi-line reply
	for {
		line, err := d.r.ReadString('\n')
		if err != nil {
			if line != "" && !errors.Is(err, io.EOF) {
				return queued, false // cut short by a reset or the deadline
			}
			if line != "" {
				t.Fatalf("reply line without CRLF at the end: %q", line)
			}
			if cont != "" {
				t.Fatalf("multi-line reply %s never finished", cont)
			}
			return queued, errors.Is(err, io.EOF)
		}
		m := replyLine.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("malformed reply line %q", line)
		}
		if cont != "" && m[1] != cont {
			t.Fatalf("multi-line reply %s continued by %q", cont, line)
		}
		if cont = ""; m[2] == "-" {
			cont = m[1]
		}
		if q := queuedAs.FindStringSubmatch(line); q != nil {
			queued[q[1]] = true
		}
		if m[1] == "220" {
			return queued, false // STARTTLS accepted: a handshake follows
		}
	}
}

type state struct {
	used       int64
	recipients int
	messages   map[string]bool
}

func snapshot(t *testing.T, f *fixture) state {
	t.Helper()
	s := state{used: f.used(t), recipients: f.count(t, "mail_recipients"), messages: map[string]bool{}}
	var ids []string
	if err := f.db.NewRaw("SELECT id FROM mail_messages").Scan(context.Background(), &ids); err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		s.messages[id] = true
	}
	return s
}

// newFuzzFixture is newFixture for a fuzz target: one relay on SQLite for
// every input, with limits small enough to reach and failed logins never
// throttled (inputs would otherwise lock each other out). Its logger
// records panics and internal errors for the target to report.
func newFuzzFixture(tb testing.TB) (*fixture, *logTrap) {
	tb.Helper()
	trap := &logTrap{}
	f := newFixture(tb, storetest.Open(tb, store.SQLite), 5_000_000,
		relay.Limits{MaxRecipients: 5, MaxMessageSize: 20_000, MaxLineLength: 1000, MaxHeaders: 30, MaxHeaderBytes: 4000,
			ReadTimeout: 5 * time.Second, AuthDelay: 5 * time.Millisecond, AuthFailures: 1 << 30},
		func(c *relay.Config) { c.Logger = slog.New(trap) })
	return f, trap
}

// logTrap is a slog.Handler that keeps the records a fuzz input must not
// cause: errors, and go-smtp's recovered panics (which it logs as debug).
type logTrap struct {
	mu  sync.Mutex
	bad []string
}

func (h *logTrap) Enabled(context.Context, slog.Level) bool { return true }

func (h *logTrap) Handle(_ context.Context, r slog.Record) error {
	if r.Level < slog.LevelError && !strings.Contains(r.Message, "panic") {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", r.Level, r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	h.mu.Lock()
	h.bad = append(h.bad, b.String())
	h.mu.Unlock()
	return nil
}

func (h *logTrap) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *logTrap) WithGroup(string) slog.Handler      { return h }

func (h *logTrap) take() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	bad := h.bad
	h.bad = nil
	return bad
}

var _ slog.Handler = (*logTrap)(nil)
