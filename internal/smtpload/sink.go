package smtpload

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/servir-pe/envios/internal/tlscert"
)

// Sink is the ceiling a submission server is measured against: a bare
// go-smtp server on loopback with STARTTLS (a self-signed ECDSA P-256
// certificate, as relayd makes by default) and AUTH PLAIN, that reads
// every message whole and discards it. Whatever a server does beyond
// that — checking, storing, charging — is the difference between its rate
// and the sink's under the same load.
type Sink struct {
	// Addr is the address it listens on (127.0.0.1, a free port).
	Addr string
	// Username and Password are the one credential it accepts.
	Username, Password string

	srv      *smtp.Server
	roots    *x509.CertPool
	done     chan error
	messages atomic.Int64
}

// StartSink listens on 127.0.0.1:0 and serves until Close.
func StartSink(username, password string) (*Sink, error) {
	certPEM, keyPEM, err := tlscert.Generate("sink.smtpload.invalid", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(certPEM)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &Sink{Addr: ln.Addr().String(), Username: username, Password: password, roots: roots, done: make(chan error, 1)}
	s.srv = smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s}, nil }))
	s.srv.Domain = "sink.smtpload.invalid"
	s.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	s.srv.MaxMessageBytes = 25 << 20 // relayd's default
	s.srv.MaxLineLength = 2000
	s.srv.ReadTimeout, s.srv.WriteTimeout = 5*time.Minute, time.Minute
	go func() { s.done <- s.srv.Serve(ln) }()
	return s, nil
}

// ClientTLS is a client configuration that verifies the sink's
// certificate.
func (s *Sink) ClientTLS() *tls.Config {
	return &tls.Config{RootCAs: s.roots, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
}

// Messages is how many messages the sink has read whole.
func (s *Sink) Messages() int64 { return s.messages.Load() }

// Close stops the sink and waits for it.
func (s *Sink) Close() error {
	err := s.srv.Close()
	if serr := <-s.done; !errors.Is(serr, smtp.ErrServerClosed) && serr != nil && err == nil {
		err = serr
	}
	return err
}

// RunCeiling runs cfg against a Sink started for the run (cfg's Addr,
// TLS and credential are replaced by the sink's) and stops it.
func RunCeiling(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Username == "" {
		cfg.Username, cfg.Password = "smtpload", "smtpload"
	}
	s, err := StartSink(cfg.Username, cfg.Password)
	if err != nil {
		return Result{}, err
	}
	defer s.Close()
	cfg.Addr, cfg.TLS, cfg.ImplicitTLS = s.Addr, s.ClientTLS(), false
	return Run(ctx, cfg)
}

// sinkSession is one connection to the sink.
type sinkSession struct {
	sink   *Sink
	authed bool // go-smtp calls a session's methods one at a time
}

var _ smtp.AuthSession = (*sinkSession)(nil)

func (ss *sinkSession) AuthMechanisms() []string { return []string{sasl.Plain} }

func (ss *sinkSession) Auth(mech string) (sasl.Server, error) {
	if mech != sasl.Plain {
		return nil, smtp.ErrAuthUnknownMechanism
	}
	return sasl.NewPlainServer(func(identity, username, password string) error {
		ok := subtle.ConstantTimeCompare([]byte(username), []byte(ss.sink.Username)) &
			subtle.ConstantTimeCompare([]byte(password), []byte(ss.sink.Password))
		if ok != 1 || (identity != "" && identity != username) {
			return smtp.ErrAuthFailed
		}
		ss.authed = true
		return nil
	}), nil
}

func (ss *sinkSession) Mail(string, *smtp.MailOptions) error {
	if !ss.authed {
		return smtp.ErrAuthRequired
	}
	return nil
}

func (ss *sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }

func (ss *sinkSession) Data(r io.Reader) error {
	if _, err := io.Copy(io.Discard, r); err != nil {
		return err
	}
	ss.sink.messages.Add(1)
	return nil
}

func (ss *sinkSession) Reset() {}

func (ss *sinkSession) Logout() error { return nil }
