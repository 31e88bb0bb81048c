// Package inbound is the MX of the sending domain: an SMTP server that
// receives what comes back for the mail envios sent — bounces to b+TOKEN@,
// mailto unsubscribes to u+TOKEN@, complaints, and mail for postmaster@,
// abuse@ and fbl@ — and nothing else. It accepts a recipient only after its
// token's HMAC verifies (or for those three mailboxes), stores each
// accepted message before it answers 250, and hands the stored rows to a
// Processor afterwards, so that a message the reader cannot make sense of
// is still kept, and a crash between 250 and processing loses nothing.
//
// It never relays, offers no AUTH and never generates a bounce of its own.
package inbound

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"
	"golang.org/x/net/netutil"

	"github.com/servir-pe/envios/internal/rcpttoken"
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = smtp.ErrServerClosed

// Processor reads a stored inbound message (a mail_inbound row) and acts on
// it; it marks the row processed in the same transaction as its effects.
type Processor interface {
	Process(ctx context.Context, id int64) error
	// Pending lists rows not processed yet, oldest first, at most limit.
	Pending(ctx context.Context, limit int) ([]int64, error)
}

// Config configures a Server. DB, Tokens and Domain are required; every
// other zero value has the default its comment states.
type Config struct {
	DB *bun.DB
	// Tokens checks the tokens of b+TOKEN@ and u+TOKEN@ (the keyring the
	// delivery engine makes them with).
	Tokens *rcpttoken.Keyring
	// Domain is the sending domain: the only domain mail is accepted for.
	Domain string
	// Processor acts on what was stored. Default: nothing (rows stay
	// pending until a server with a Processor runs).
	Processor Processor
	// TLS, when set, is offered with STARTTLS.
	TLS *tls.Config
	// Hostname is the name in the greeting. Default "localhost".
	Hostname string
	// MaxMessageSize is the largest message accepted (552 5.3.4 beyond).
	// Default 10 MiB; at least 64 KiB (RFC 5321 §4.5.3.1.7).
	MaxMessageSize int64
	// MaxRecipients per transaction (452 4.5.3 beyond). Default 5.
	MaxRecipients int
	// ReadTimeout waits for one command or data line. Default 5 minutes
	// (RFC 5321 §4.5.3.2).
	ReadTimeout time.Duration
	// SessionTimeout bounds one connection. Default 15 minutes.
	SessionTimeout time.Duration
	// MaxConns bounds the connections open at once. Default 200.
	MaxConns int
	// Logger receives one line per stored message and every hidden error.
	// Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// KeepBytes is how much of each message is stored: its first 256 KiB (the
// size and SHA-256 are of all of it).
const KeepBytes = 256 << 10

// Stats are a Server's counters since it started.
type Stats struct {
	Connections int64 // sessions accepted
	Stored      int64 // messages stored (one per accepted recipient)
	Refused     int64 // recipients refused
}

// Server is the inbound SMTP server.
type Server struct {
	cfg    Config
	smtp   *smtp.Server
	wake   chan struct{}
	ctx    context.Context
	cancel context.CancelFunc
	worker sync.WaitGroup
	start  sync.Once

	closing                     atomic.Bool
	connections, stored, refuse atomic.Int64
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.DB == nil || cfg.Tokens == nil || cfg.Domain == "" {
		return nil, errors.New("inbound: Config.DB, Tokens and Domain are required")
	}
	cfg.Domain = strings.ToLower(strings.TrimSuffix(cfg.Domain, "."))
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.MaxMessageSize <= 0 {
		cfg.MaxMessageSize = 10 << 20
	}
	cfg.MaxMessageSize = max(cfg.MaxMessageSize, 64<<10)
	if cfg.MaxRecipients <= 0 {
		cfg.MaxRecipients = 5
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 5 * time.Minute
	}
	if cfg.SessionTimeout <= 0 {
		cfg.SessionTimeout = 15 * time.Minute
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 200
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, wake: make(chan struct{}, 1)}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	srv.Domain = cfg.Hostname
	if cfg.TLS != nil {
		t := cfg.TLS.Clone()
		t.MinVersion = max(t.MinVersion, tls.VersionTLS12)
		srv.TLSConfig = t
	}
	srv.MaxMessageBytes = cfg.MaxMessageSize
	srv.MaxRecipients = cfg.MaxRecipients
	srv.ReadTimeout = cfg.ReadTimeout
	srv.WriteTimeout = time.Minute
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogAdapter{cfg.Logger}
	s.smtp = srv
	return s, nil
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) { a.l.Debug("mx: " + fmt.Sprintf(format, v...)) }
func (a slogAdapter) Println(v ...any)               { a.l.Debug("mx: " + fmt.Sprint(v...)) }

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	return Stats{Connections: s.connections.Load(), Stored: s.stored.Load(), Refused: s.refuse.Load()}
}

// Serve speaks SMTP on l until Shutdown or Close, and processes what it
// stores (first what earlier runs left pending).
func (s *Server) Serve(l net.Listener) error {
	s.start.Do(func() {
		if s.cfg.Processor != nil {
			s.worker.Go(s.process)
			s.kick()
		}
	})
	err := s.smtp.Serve(&deadlineListener{netutil.LimitListener(l, s.cfg.MaxConns), s})
	if s.closing.Load() && (err == nil || errors.Is(err, net.ErrClosed)) {
		return ErrServerClosed
	}
	return err
}

// Shutdown stops accepting connections, waits until the sessions end or
// ctx does, and stops the processing (what is stored and not processed yet
// is processed at the next start).
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	err := s.smtp.Shutdown(ctx)
	if ctx.Err() != nil {
		_ = s.smtp.Close()
	}
	s.cancel()
	s.worker.Wait()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close closes the listeners and connections at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.cancel()
	err := s.smtp.Close()
	s.worker.Wait()
	if errors.Is(err, smtp.ErrServerClosed) {
		err = nil
	}
	return err
}

func (s *Server) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// process runs the Processor over pending rows whenever a message is
// stored, and once a minute for rows a failed attempt left.
func (s *Server) process() {
	tick := time.NewTicker(time.Minute)
	defer tick.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-s.wake:
		case <-tick.C:
		}
		for s.ctx.Err() == nil {
			ids, err := s.cfg.Processor.Pending(s.ctx, 100)
			if err != nil {
				s.cfg.Logger.Error("inbound: list pending messages", "err", err)
				break
			}
			failed := 0
			for _, id := range ids {
				if err := s.cfg.Processor.Process(s.ctx, id); err != nil {
					failed++
					if s.ctx.Err() == nil {
						s.cfg.Logger.Error("inbound: process message; retried in a minute", "inbound", id, "err", err)
					}
				}
			}
			if len(ids) < 100 || failed == len(ids) {
				break
			}
		}
	}
}

// deadlineListener closes every connection at the end of the session
// timeout (go-smtp sets per-command deadlines, which would override a
// connection deadline).
type deadlineListener struct {
	net.Listener
	s *Server
}

func (l *deadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.s.connections.Add(1)
	tc := &timedConn{Conn: c}
	tc.timer = time.AfterFunc(l.s.cfg.SessionTimeout, func() { _ = c.Close() })
	return tc, nil
}

type timedConn struct {
	net.Conn
	timer *time.Timer
}

func (c *timedConn) Close() error {
	c.timer.Stop()
	return c.Conn.Close()
}
