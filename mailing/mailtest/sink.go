// Package mailtest is an SMTP sink for tests, like net/http/httptest: a
// real go-smtp server on 127.0.0.1 that offers STARTTLS with a throwaway
// certificate, records every message it accepts, and answers each
// recipient, and each message, as the test decides (2xx, 4xx, 5xx).
package mailtest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"io"
	"math/big"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Message is one message the sink accepted.
type Message struct {
	From  string
	To    []string
	Data  []byte
	TLS   bool
	User  string // the AUTH identity, if any
	Hello string // the name the client gave in EHLO

	// The DSN parameters (RFC 3461) of MAIL and of each RCPT the sink
	// accepted; the sink offers DSN, as Postfix does.
	Return     smtp.DSNReturn
	EnvelopeID string
	Notify     [][]smtp.DSNNotify
	ORCPT      []string
}

// Sink is a running SMTP server.
type Sink struct {
	Addr string // host:port to deliver to

	// Reply decides the answer to RCPT TO for each recipient: nil accepts.
	// Return an *smtp.SMTPError to refuse. Set it before mail arrives.
	Reply func(rcpt string) error

	// DataReply decides the answer at the end of DATA, given the
	// recipients RCPT accepted: nil accepts (and records) the message.
	// Return an *smtp.SMTPError to refuse it. Set it before mail arrives.
	DataReply func(to []string) error

	// DiscardData keeps only envelopes, not message bodies (for benchmarks
	// that send many messages). Set it before mail arrives.
	DiscardData bool

	// DropAfterData, when it returns true for a message's first recipient,
	// makes the sink read the whole message and then close the connection
	// without answering: the sender cannot know whether it was taken.
	DropAfterData func(rcpt string) bool

	// Username and Password, when set, make the sink require AUTH PLAIN
	// (over TLS) before MAIL, like a submission smarthost.
	Username, Password string

	srv   *smtp.Server
	certs *x509.CertPool
	cert  []byte // DER
	mu    sync.Mutex
	msgs  []Message
	conns []*smtp.Conn
}

// DropConnections closes every connection the sink has open, as a server
// that times out idle clients would; new ones are accepted as before.
func (s *Sink) DropConnections() {
	s.mu.Lock()
	conns := s.conns
	s.conns = nil
	s.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// NewSink starts a sink and stops it when the test ends.
func NewSink(t testing.TB) *Sink {
	t.Helper()
	cert, pool, err := selfSigned()
	if err != nil {
		t.Fatal(err)
	}
	s := &Sink{certs: pool, cert: cert.Certificate[0]}
	s.srv = smtp.NewServer(backend{s})
	s.srv.Domain = "sink.test"
	s.srv.EnableDSN = true
	s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.srv.ReadTimeout, s.srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = l.Addr().String()
	go func() { _ = s.srv.Serve(l) }()
	t.Cleanup(func() { s.srv.Close() })
	return s
}

// ClientTLS is a TLS configuration that trusts the sink's certificate.
func (s *Sink) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.certs, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// Messages returns what the sink accepted so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

type backend struct{ s *Sink }

func (b backend) NewSession(c *smtp.Conn) (smtp.Session, error) {
	b.s.mu.Lock()
	b.s.conns = append(b.s.conns, c)
	b.s.mu.Unlock()
	_, isTLS := c.TLSConnectionState()
	return &session{s: b.s, tls: isTLS, conn: c}, nil
}

type session struct {
	conn *smtp.Conn
	s    *Sink
	tls  bool
	user string
	from string
	to   []string

	ret    smtp.DSNReturn
	envid  string
	notify [][]smtp.DSNNotify
	orcpt  []string
}

var _ smtp.AuthSession = (*session)(nil)

func (x *session) AuthMechanisms() []string {
	if x.s.Username == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (x *session) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != x.s.Username || pass != x.s.Password || (identity != "" && identity != user) {
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "authentication failed"}
		}
		x.user = user
		return nil
	}), nil
}

func (x *session) Mail(from string, opts *smtp.MailOptions) error {
	if x.s.Username != "" && x.user == "" {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "authentication required"}
	}
	x.from = from
	x.ret, x.envid = "", ""
	if opts != nil {
		x.ret, x.envid = opts.Return, opts.EnvelopeID
	}
	return nil
}

func (x *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if x.s.Reply != nil {
		if err := x.s.Reply(to); err != nil {
			return err
		}
	}
	x.to = append(x.to, to)
	var notify []smtp.DSNNotify
	orcpt := ""
	if opts != nil {
		notify, orcpt = opts.Notify, opts.OriginalRecipient
	}
	x.notify, x.orcpt = append(x.notify, notify), append(x.orcpt, orcpt)
	return nil
}

func (x *session) Data(r io.Reader) error {
	var b bytes.Buffer
	if _, err := b.ReadFrom(r); err != nil {
		return err
	}
	if len(x.to) == 0 {
		return errors.New("no recipients")
	}
	if f := x.s.DropAfterData; f != nil && len(x.to) > 0 && f(x.to[0]) {
		_ = x.conn.Conn().Close()
		return errors.New("dropped")
	}
	if f := x.s.DataReply; f != nil {
		if err := f(x.to); err != nil {
			return err
		}
	}
	data := b.Bytes()
	if x.s.DiscardData {
		data = nil
	}
	x.s.mu.Lock()
	x.s.msgs = append(x.s.msgs, Message{From: x.from, To: x.to, Data: data, TLS: x.tls, User: x.user, Hello: x.conn.Hostname(),
		Return: x.ret, EnvelopeID: x.envid, Notify: x.notify, ORCPT: x.orcpt})
	x.s.mu.Unlock()
	return nil
}

func (x *session) Reset() {
	x.from, x.to, x.ret, x.envid, x.notify, x.orcpt = "", nil, "", "", nil, nil
}
func (x *session) Logout() error { return nil }

func selfSigned() (tls.Certificate, *x509.CertPool, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sink.test"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"sink.test", "mx.sink.test"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool, nil
}

// CertPEM is the sink's certificate, for clients configured by file.
func (s *Sink) CertPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.cert})
}
