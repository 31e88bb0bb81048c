package relay_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/credential"
	"github.com/servir-pe/envios/internal/tlscert"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/relay"
)

// fixture is a relay on loopback over a real database, with one account
// (enap/eventos, allocation as given) that may send as @servir.gob.pe, and
// one credential for it.
type fixture struct {
	db         *bun.DB
	m          *mailing.Mailer
	srv        *relay.Server
	addr       string // STARTTLS
	tlsAddr    string // implicit TLS
	user, pass string
	roots      *x509.CertPool
	creds      *credential.Store
	cert       tls.Certificate
	opts       []func(*relay.Config)
}

func newFixture(t testing.TB, db *bun.DB, allocation int64, limits relay.Limits, opts ...func(*relay.Config)) *fixture {
	t.Helper()
	ctx := context.Background()
	m, err := mailing.New(mailing.Config{DB: db, MessageIDDomain: "envios.servir.gob.pe"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	now := time.Now()
	plan := quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 10_000_000, StartsAt: now.AddDate(0, -1, 0), EndsAt: now.AddDate(1, 0, 0)},
		Accounts: []quota.AccountSpec{{Name: "enap/eventos", Allocation: allocation}, {Name: "sjti/talento", Allocation: 1000}}}
	if _, err := m.Ledger().Init(ctx, plan, "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddSender(ctx, "enap/eventos", "@servir.gob.pe", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.AddSender(ctx, "sjti/talento", "talento@servir.gob.pe", "test"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := m.AddDomainKey(ctx, "servir.gob.pe", "ed25519"); err != nil {
		t.Fatal(err)
	}
	creds := credential.NewStore(db, nil)
	c, pass, err := creds.Add(ctx, "enap/eventos", "legacy app", "test")
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := tlscert.Generate("relay.test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	f := &fixture{db: db, m: m, user: c.Username, pass: pass, roots: roots, creds: creds, cert: cert}
	f.opts = opts
	f.start(t, limits)
	return f
}

// start runs a relay on the fixture's database, on new loopback ports.
func (f *fixture) start(t testing.TB, limits relay.Limits) {
	t.Helper()
	if limits.AuthDelay == 0 {
		limits.AuthDelay = 20 * time.Millisecond
	}
	cfg := relay.Config{Mailer: f.m, DB: f.db, TLS: &tls.Config{Certificates: []tls.Certificate{f.cert}},
		Hostname: "relay.test", Limits: limits, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, o := range f.opts {
		o(&cfg)
	}
	srv, err := relay.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.srv = srv
	for _, x := range []struct {
		addr  *string
		serve func(net.Listener) error
	}{{&f.addr, srv.Serve}, {&f.tlsAddr, srv.ServeTLS}} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		*x.addr = l.Addr().String()
		done := make(chan error, 1)
		go func() { done <- x.serve(l) }()
		t.Cleanup(func() {
			if err := <-done; err != relay.ErrServerClosed {
				t.Errorf("Serve returned %v", err)
			}
		})
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Error(err)
		}
	})
}

func (f *fixture) clientTLS() *tls.Config {
	return &tls.Config{RootCAs: f.roots, ServerName: "relay.test", MinVersion: tls.VersionTLS12}
}

// dialog scripts SMTP line by line.
type dialog struct {
	t    *testing.T
	conn net.Conn
	r    *bufio.Reader
}

func (f *fixture) dial(t *testing.T) *dialog {
	t.Helper()
	c, err := net.DialTimeout("tcp", f.addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	d := &dialog{t: t, conn: c, r: bufio.NewReader(c)}
	d.expect("220 ")
	return d
}

func (d *dialog) send(lines ...string) {
	d.t.Helper()
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(d.conn, strings.Join(lines, "\r\n")+"\r\n"); err != nil {
		d.t.Fatalf("send %q: %v", lines, err)
	}
}

func (d *dialog) raw(s string) {
	d.t.Helper()
	_ = d.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(d.conn, s); err != nil {
		d.t.Fatalf("send %q: %v", s, err)
	}
}

// reply reads one whole (possibly multi-line) reply and returns its last
// line and all of it.
func (d *dialog) reply() (string, string) {
	d.t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var all strings.Builder
	for {
		line, err := d.r.ReadString('\n')
		if err != nil {
			d.t.Fatalf("reading a reply: %v (so far %q)", err, all.String())
		}
		all.WriteString(line)
		if len(line) < 4 || line[3] != '-' {
			return strings.TrimRight(line, "\r\n"), all.String()
		}
	}
}

// expect reads a reply and checks that its last line starts with prefix.
func (d *dialog) expect(prefix string) string {
	d.t.Helper()
	last, all := d.reply()
	if !strings.HasPrefix(last, prefix) {
		d.t.Fatalf("got %q, want a reply starting %q", all, prefix)
	}
	return all
}

// closed checks that the server closed the connection.
func (d *dialog) closed() {
	d.t.Helper()
	_ = d.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if line, err := d.r.ReadString('\n'); err == nil {
		d.t.Fatalf("connection still open; read %q", line)
	}
}

// hangUp ends the client's half of the connection (a TCP or TLS
// half-close) and returns what the server still writes until it closes
// its own. The server closes a connection only after the session's Data
// has returned (for BDAT too: third_party/go-smtp patch 2), so once hangUp
// returns, whatever the dialog was to store is stored.
func (d *dialog) hangUp() string {
	d.t.Helper()
	if cw, ok := d.conn.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = d.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	var rest strings.Builder
	for {
		line, err := d.r.ReadString('\n')
		rest.WriteString(line)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			d.t.Fatalf("the server never closed the connection; read %q", rest.String())
		}
		if err != nil { // EOF, or a reset: closed
			return rest.String()
		}
	}
}

func (d *dialog) startTLS(cfg *tls.Config) {
	d.t.Helper()
	d.send("STARTTLS")
	d.expect("220 ")
	d.handshake(cfg)
}

func (d *dialog) handshake(cfg *tls.Config) {
	d.t.Helper()
	tc := tls.Client(d.conn, cfg)
	if err := tc.Handshake(); err != nil {
		d.t.Fatal(err)
	}
	d.conn, d.r = tc, bufio.NewReader(tc)
}

// secure runs EHLO, STARTTLS and EHLO again, and returns the EHLO reply.
func (f *fixture) secure(t *testing.T) (*dialog, string) {
	t.Helper()
	d := f.dial(t)
	d.send("EHLO client.test")
	d.expect("250 ")
	d.startTLS(f.clientTLS())
	d.send("EHLO client.test")
	return d, d.expect("250 ")
}

// login runs EHLO, STARTTLS, EHLO and AUTH PLAIN.
func (f *fixture) login(t *testing.T) *dialog {
	t.Helper()
	d, _ := f.secure(t)
	d.send("AUTH PLAIN " + plain("", f.user, f.pass))
	d.expect("235 2.0.0")
	return d
}

func plain(identity, user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte(identity + "\x00" + user + "\x00" + pass))
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// message is a small valid message from avisos@servir.gob.pe.
func message(extra ...string) string {
	h := "From: Avisos <avisos@servir.gob.pe>\r\nTo: ana@example.org\r\nSubject: Prueba\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h + "\r\nHola.\r\n"
}

func (f *fixture) count(t *testing.T, table string) int {
	t.Helper()
	n, err := f.db.NewSelect().TableExpr(table).Count(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return int(n)
}

// recipients counts the stored recipients by address.
func (f *fixture) recipients(t *testing.T) map[string]int {
	t.Helper()
	var addrs []string
	if err := f.db.NewRaw("SELECT address FROM mail_recipients").Scan(context.Background(), &addrs); err != nil {
		t.Fatal(err)
	}
	n := map[string]int{}
	for _, a := range addrs {
		n[a]++
	}
	return n
}

func (f *fixture) used(t *testing.T) int64 {
	t.Helper()
	a, err := f.m.Ledger().Account(context.Background(), "enap/eventos")
	if err != nil {
		t.Fatal(err)
	}
	return a.Used
}
