package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"
	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/servir-pe/envios/internal/credential"
	"github.com/servir-pe/envios/mailing"
)

// ErrServerClosed is returned by Serve and ServeTLS after Shutdown or Close.
var ErrServerClosed = smtp.ErrServerClosed

// Config configures a Server. Mailer, DB and TLS are required; every other
// zero value has the default its comment states.
type Config struct {
	// Mailer accepts the messages (mailing.Mailer.Submit).
	Mailer *mailing.Mailer
	// DB is the envios database: credentials and failed-login counters.
	DB *bun.DB
	// TLS is the server's TLS configuration (certificate, or GetCertificate
	// for reloading). MinVersion is raised to TLS 1.2 if lower.
	TLS *tls.Config
	// Hostname is the name in the greeting and in the Received field added
	// to each message. Default "localhost".
	Hostname string
	// HideClientAddress leaves the client's IP address out of the Received
	// field (RFC 5321 §4.4 asks for it; a relay serving internal systems
	// may keep their addresses private). Default false: included.
	HideClientAddress bool
	// Limits bound what one client may do.
	Limits Limits
	// Logger receives one line per session and every hidden error.
	// Default slog.Default().
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Limits bound sessions. Zero values take the defaults stated.
type Limits struct {
	MaxMessageSize int           // bytes, advertised with SIZE. Default 25 MB
	MaxRecipients  int           // per transaction. Default 1,000
	MaxLineLength  int           // bytes per line, command or data. Default 2,000 (RFC 5321 doubled, as go-smtp)
	MaxHeaderBytes int           // the message's header block. Default 100 KiB (Postfix's header_size_limit)
	MaxHeaders     int           // header fields. Default 1,000
	ReadTimeout    time.Duration // waiting for one command or data line. Default 5 minutes (RFC 5321 §4.5.3.2)
	WriteTimeout   time.Duration // writing one reply. Default 1 minute
	SessionTimeout time.Duration // a whole connection. Default 30 minutes
	MaxConns       int           // open connections in all. Default 1,000
	MaxConnsPerIP  int           // open connections from one address. Default 50
	AuthDelay      time.Duration // every failed AUTH is answered this long after it began. Default 1 second
	AuthFailures   int           // failures from one IP or for one username before AUTH is refused. Default 10
	AuthWindow     time.Duration // the window those failures are counted in. Default 15 minutes
	AuthCache      time.Duration // how long a successful login is remembered (no argon2id on the next). Default 5 minutes; negative: never
	DataMemory     int64         // bytes of messages being received held in memory at once, all sessions together; over it: 452 4.3.1. Default 512 MiB
}

func (l *Limits) defaults() {
	def := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	def(&l.MaxMessageSize, 25<<20)
	def(&l.MaxRecipients, 1000)
	def(&l.MaxLineLength, 2000)
	def(&l.MaxHeaderBytes, 100<<10)
	def(&l.MaxHeaders, 1000)
	defd(&l.ReadTimeout, 5*time.Minute)
	defd(&l.WriteTimeout, time.Minute)
	defd(&l.SessionTimeout, 30*time.Minute)
	def(&l.MaxConns, 1000)
	def(&l.MaxConnsPerIP, 50)
	defd(&l.AuthDelay, time.Second)
	def(&l.AuthFailures, 10)
	defd(&l.AuthWindow, 15*time.Minute)
	if l.AuthCache == 0 {
		l.AuthCache = 5 * time.Minute
	}
	if l.DataMemory <= 0 {
		l.DataMemory = 512 << 20
	}
}

// Server is the submission server. Its methods are safe for concurrent use.
type Server struct {
	cfg      Config
	creds    *credential.Store
	states   *stateReader // the per-command credential checks, read in shared queries
	thr      *throttle
	hashes   chan struct{} // bounds concurrent password verifications (CPU and 19 MiB each)
	auths    *authCache
	inflight singleflight.Group  // identical password verifications in progress (verifyShared)
	memory   *semaphore.Weighted // DataMemory
	// dummyHash is verified against when a username is unknown, so that
	// it costs what a known one does.
	dummyHash func() string

	ctx    context.Context // parent of every session's context; cancelled by Close
	cancel context.CancelFunc

	starttls, implicit *smtp.Server
	closing            atomic.Bool

	mu    sync.Mutex
	conns int
	perIP map[string]int

	accepted, refused, authFailures, verifications atomic.Int64
}

// Stats are the relay's counters since it started.
type Stats struct {
	Connections  int64 // accepted connections, in all
	Refused      int64 // connections refused over a connection limit
	Active       int64 // connections open now
	AuthFailures int64 // failed AUTH attempts
	// PasswordChecks counts argon2id verifications run; a login answered
	// by the cache of recent logins, or by an identical verification
	// already in progress, runs none.
	PasswordChecks int64
}

// Stats returns the relay's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	active := int64(s.conns)
	s.mu.Unlock()
	return Stats{Connections: s.accepted.Load(), Refused: s.refused.Load(), Active: active, AuthFailures: s.authFailures.Load(),
		PasswordChecks: s.verifications.Load()}
}

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.Mailer == nil || cfg.DB == nil || cfg.TLS == nil {
		return nil, errors.New("relay: Config.Mailer, DB and TLS are required")
	}
	if cfg.Hostname == "" {
		cfg.Hostname = "localhost"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.Limits.defaults()
	t := cfg.TLS.Clone()
	if t.MinVersion < tls.VersionTLS12 {
		t.MinVersion = tls.VersionTLS12
	}
	cfg.TLS = t
	s := &Server{cfg: cfg, creds: credential.NewStore(cfg.DB, cfg.Now), perIP: map[string]int{},
		hashes: make(chan struct{}, runtime.GOMAXPROCS(0))}
	s.dummyHash = sync.OnceValue(func() string {
		h, _ := credential.Hash("envios: no such user") // Hash fails only if the system has no randomness
		return h
	})
	s.auths = newAuthCache(cfg.Limits.AuthCache)
	s.memory = semaphore.NewWeighted(cfg.Limits.DataMemory)
	s.thr = &throttle{db: cfg.DB, now: cfg.Now, max: cfg.Limits.AuthFailures, window: cfg.Limits.AuthWindow}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.states = newStateReader(s.ctx, s.creds.States, 30*time.Second)
	s.starttls = s.newSMTP(t)
	s.implicit = s.newSMTP(t)
	return s, nil
}

func (s *Server) newSMTP(t *tls.Config) *smtp.Server {
	srv := smtp.NewServer(smtp.BackendFunc(s.newSession))
	l := s.cfg.Limits
	srv.Domain = s.cfg.Hostname
	srv.TLSConfig = t
	srv.MaxMessageBytes = int64(l.MaxMessageSize)
	srv.MaxRecipients = l.MaxRecipients
	srv.MaxLineLength = l.MaxLineLength
	srv.ReadTimeout = l.ReadTimeout
	srv.WriteTimeout = l.WriteTimeout
	srv.AllowInsecureAuth = false
	srv.ErrorLog = slogAdapter{s.cfg.Logger}
	return srv
}

type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Printf(format string, v ...any) { a.l.Debug("smtp: " + fmt.Sprintf(format, v...)) }
func (a slogAdapter) Println(v ...any)               { a.l.Debug("smtp: " + fmt.Sprint(v...)) }

// Serve speaks SMTP with STARTTLS (submission, port 587) on l until
// Shutdown or Close; it returns ErrServerClosed then.
func (s *Server) Serve(l net.Listener) error {
	return s.served(s.starttls.Serve(&limitListener{Listener: l, s: s}))
}

// served makes Serve's result net/http-shaped: ErrServerClosed after
// Shutdown or Close (go-smtp returns nil then).
func (s *Server) served(err error) error {
	if s.closing.Load() && (err == nil || errors.Is(err, net.ErrClosed)) {
		return ErrServerClosed
	}
	return err
}

// ServeTLS speaks SMTP over implicit TLS (submissions, port 465, RFC 8314)
// on l until Shutdown or Close.
func (s *Server) ServeTLS(l net.Listener) error {
	return s.served(s.implicit.Serve(tls.NewListener(&limitListener{Listener: l, s: s}, s.cfg.TLS)))
}

// Shutdown stops accepting connections and waits until the sessions end or
// ctx does, then closes what remains. A message whose DATA is being
// committed finishes committing: its client gets its reply.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	var errs []error
	var wg sync.WaitGroup
	for _, srv := range []*smtp.Server{s.starttls, s.implicit} {
		wg.Go(func() {
			if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, smtp.ErrServerClosed) {
				s.mu.Lock()
				errs = append(errs, err)
				s.mu.Unlock()
			}
		})
	}
	wg.Wait()
	if ctx.Err() != nil {
		s.cancel()
		_ = s.starttls.Close()
		_ = s.implicit.Close()
	}
	s.cancel()
	return errors.Join(errs...)
}

// Close closes every listener and connection at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.cancel()
	return errors.Join(ignoreClosed(s.starttls.Close()), ignoreClosed(s.implicit.Close()))
}

func ignoreClosed(err error) error {
	if errors.Is(err, smtp.ErrServerClosed) {
		return nil
	}
	return err
}

// limitListener enforces MaxConns and MaxConnsPerIP and the session
// deadline. A connection over a limit gets 421 4.7.0 and is closed.
type limitListener struct {
	net.Listener
	s *Server
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		ip := hostOf(c.RemoteAddr())
		s := l.s
		s.mu.Lock()
		over := ""
		switch {
		case s.conns >= s.cfg.Limits.MaxConns:
			over = "421 4.7.0 Too many connections, try again later\r\n"
		case s.perIP[ip] >= s.cfg.Limits.MaxConnsPerIP:
			over = "421 4.7.0 Too many connections from your address, try again later\r\n"
		default:
			s.conns++
			s.perIP[ip]++
		}
		s.mu.Unlock()
		if over != "" {
			s.refused.Add(1)
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			_, _ = c.Write([]byte(over))
			_ = c.Close()
			s.cfg.Logger.Warn("connection refused", "remote", c.RemoteAddr().String(), "reason", over[10:len(over)-2])
			continue
		}
		s.accepted.Add(1)
		tc := &trackedConn{Conn: c, s: s, ip: ip}
		tc.deadline = time.AfterFunc(s.cfg.Limits.SessionTimeout, func() { _ = tc.Close() })
		return tc, nil
	}
}

func hostOf(a net.Addr) string {
	h, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return h
}

// trackedConn releases its connection slots when closed, and can be told to
// close right after its next write (a reply that ends the session).
type trackedConn struct {
	net.Conn
	s        *Server
	ip       string
	deadline *time.Timer
	once     sync.Once

	mu           sync.Mutex
	closeOnWrite bool
}

func (c *trackedConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.mu.Lock()
	closeNow := c.closeOnWrite
	c.mu.Unlock()
	if closeNow {
		_ = c.Close()
	}
	return n, err
}

func (c *trackedConn) closeAfterReply() {
	c.mu.Lock()
	c.closeOnWrite = true
	c.mu.Unlock()
}

func (c *trackedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() {
		c.deadline.Stop()
		s := c.s
		s.mu.Lock()
		s.conns--
		if s.perIP[c.ip]--; s.perIP[c.ip] <= 0 {
			delete(s.perIP, c.ip)
		}
		s.mu.Unlock()
	})
	return err
}

// tracked finds our connection under go-smtp's (and TLS's) wrapping.
func tracked(c net.Conn) *trackedConn {
	for {
		switch x := c.(type) {
		case *trackedConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		default:
			return nil
		}
	}
}
