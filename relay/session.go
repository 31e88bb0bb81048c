package relay

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/servir-pe/envios/internal/credential"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// session is one SMTP connection's state after EHLO. go-smtp calls its
// methods from the connection's goroutine, one at a time.
type session struct {
	s      *Server
	conn   *smtp.Conn
	ctx    context.Context // cancelled at logout
	cancel context.CancelFunc
	log    *slog.Logger
	ip     string

	cred    credential.Credential // ID 0: not authenticated
	from    string
	rcpts   []string
	senders map[string]time.Time // envelope senders MaySend allowed, and when (a cache: the commit checks again)
}

// senderCacheTTL is how long a session trusts an envelope sender it
// checked. The commit re-checks every identity in its transaction, so a
// withdrawn identity is refused at DATA at the latest.
const senderCacheTTL = time.Minute

var _ smtp.AuthSession = (*session)(nil)

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	ctx, cancel := context.WithCancel(s.ctx)
	ip := hostOf(c.Conn().RemoteAddr())
	_, isTLS := c.TLSConnectionState()
	return &session{s: s, conn: c, ctx: ctx, cancel: cancel, ip: ip,
		log: s.cfg.Logger.With("remote", c.Conn().RemoteAddr().String(), "tls", isTLS)}, nil
}

// AuthMechanisms lists PLAIN and LOGIN; go-smtp advertises them only
// after TLS.
func (ss *session) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

// Auth starts a SASL exchange.
func (ss *session) Auth(mech string) (sasl.Server, error) {
	check := func(identity, username, password string) error {
		return ss.s.authenticate(ss, identity, username, password)
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return &plainServer{auth: check}, nil
	case sasl.Login:
		return &loginServer{auth: check}, nil
	}
	return nil, smtp.ErrAuthUnknownMechanism
}

// authorised checks, before each transaction command, that the session has
// logged in and that its credential has not been revoked since, and
// returns the credential's account state (one query).
func (ss *session) authorised(at stage) (credential.State, error) {
	if ss.cred.ID == 0 {
		return credential.State{}, errAuthRequired
	}
	return ss.judge(at, ss.s.states.ask(ss.cred.ID))
}

// judge waits for a credential state asked of the stateReader and says
// what it allows.
func (ss *session) judge(at stage, asked <-chan stateResult) (credential.State, error) {
	var res stateResult
	select {
	case res = <-asked:
	case <-ss.ctx.Done():
		res.err = ss.ctx.Err()
	}
	st, err := res.st, res.err
	if err != nil {
		return st, reply(ss.log, at, err)
	}
	if !st.Active {
		ss.log.Warn("credential revoked during the session")
		ss.cred = credential.Credential{}
		return st, errRevoked
	}
	if st.Disabled {
		return st, errDisabled
	}
	return st, nil
}

// Mail checks the envelope sender against the account's identities.
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	if _, err := ss.authorised(atMail); err != nil {
		return err
	}
	if from == "" {
		return errNullSender
	}
	key := strings.ToLower(from)
	if at, ok := ss.senders[key]; !ok || time.Since(at) > senderCacheTTL {
		if err := ss.s.cfg.Mailer.MaySend(ss.ctx, ss.cred.Account, from); err != nil {
			return reply(ss.log, atMail, err)
		}
		if ss.senders == nil {
			ss.senders = map[string]time.Time{}
		}
		ss.senders[key] = time.Now()
	}
	ss.from, ss.rcpts = from, nil
	return nil
}

// Rcpt accepts a recipient if the account's pool can still pay for it.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	st, err := ss.authorised(atRcpt)
	if err != nil {
		return err
	}
	if _, err := mailing.ParseAddress(to); err != nil {
		return reply(ss.log, atRcpt, err)
	}
	if need := int64(len(ss.rcpts) + 1); st.Remaining < need {
		return poolExhausted(ss.cred.Account, st.Remaining, need)
	}
	ss.rcpts = append(ss.rcpts, to)
	return nil
}

// Data reads the message within the limits, then submits it; the reply
// comes after the commit.
func (ss *session) Data(r io.Reader) error {
	if ss.cred.ID == 0 {
		return errAuthRequired
	}
	// go-smtp has already answered DATA with 354, so the credential's
	// check is decided with the final reply: it is asked for now and
	// runs while the message is read, off the message's path.
	asked := ss.s.states.ask(ss.cred.ID)
	start := time.Now()
	var held int64
	defer func() { ss.s.memory.Release(held) }()
	msg, err := readMessage(r, ss.s.cfg.Limits, func(n int64) bool {
		if !ss.s.memory.TryAcquire(n) {
			return false
		}
		held += n
		return true
	})
	if errors.Is(err, smtp.ErrTooLongLine) {
		// The stream is out of step: answer once and close, before
		// go-smtp answers the rest of the line as a command.
		if tc := tracked(ss.conn.Conn()); tc != nil {
			tc.closeAfterReply()
		}
	}
	if _, err := ss.judge(atData, asked); err != nil {
		return err
	}
	if err != nil {
		ss.log.Warn("message refused while reading", "err", err)
		return reply(ss.log, atData, err)
	}
	rcpt, err := ss.s.cfg.Mailer.Submit(ss.ctx, mailing.Submission{Account: ss.cred.Account, EnvelopeFrom: ss.from, Recipients: ss.rcpts,
		Message: msg, Origin: quota.OriginSMTP, Actor: "smtp:" + ss.cred.Username, Trace: ss.trace()})
	if err != nil {
		e := reply(ss.log, atData, err)
		ss.log.Info("message refused", "from", ss.from, "code", e.Code, "reply", e.Message, "bytes", len(msg))
		return e
	}
	ss.log.Info("message accepted", "id", rcpt.MessageID, "from", ss.from, "recipients", rcpt.Recipients, "bytes", len(msg),
		"duplicate", rcpt.Duplicate, "ms", time.Since(start).Milliseconds())
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "Ok: queued as " + rcpt.MessageID}
}

// trace describes the session for the message's Received field: an
// authenticated session over TLS is ESMTPSA (RFC 3848).
func (ss *session) trace() *mailing.Trace {
	t := &mailing.Trace{Helo: ss.conn.Hostname(), By: ss.s.cfg.Hostname, With: "ESMTPSA"}
	if !ss.s.cfg.HideClientAddress {
		t.Addr, _ = netip.ParseAddr(ss.ip)
	}
	if st, ok := ss.conn.TLSConnectionState(); ok {
		t.TLS = "version=" + strings.ReplaceAll(tls.VersionName(st.Version), " ", "") + " cipher=" + tls.CipherSuiteName(st.CipherSuite)
	}
	return t
}

// Reset forgets the transaction (RSET, a new EHLO, the end of DATA).
func (ss *session) Reset() { ss.from, ss.rcpts = "", nil }

// Logout ends the session: its context is cancelled.
func (ss *session) Logout() error {
	ss.cancel()
	return nil
}

// readMessage reads DATA (dot-unstuffed by go-smtp, which stops only at
// <CR><LF>.<CR><LF>) and refuses bare CR, bare LF and NUL anywhere, and a
// header block over the limits.
//
// The bytes held count against the server's memory budget (take): when it
// is spent, the message is refused with 452 4.3.1, as a server out of
// storage does, rather than the process running out of memory.
func readMessage(r io.Reader, l Limits, take func(int64) bool) ([]byte, error) {
	// Read straight into the message's own buffer, doubling it as it
	// fills: a 5 KB message allocates 8 KB, not a 64 KB chunk as well.
	msg := make([]byte, 0, 8<<10)
	for {
		if len(msg) == cap(msg) {
			msg = slices.Grow(msg, cap(msg))
		}
		n, err := r.Read(msg[len(msg):cap(msg)])
		if n > 0 {
			if !take(int64(n)) {
				return nil, errNoMemory
			}
			msg = msg[:len(msg)+n]
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	fields, inHeader, headerBytes := 0, true, 0
	lineStart := 0
	for i := 0; i < len(msg); i++ {
		switch msg[i] {
		case '\r':
			if i+1 >= len(msg) || msg[i+1] != '\n' {
				return nil, errBareLF
			}
			if inHeader {
				if i == lineStart {
					inHeader = false
				} else if msg[lineStart] != ' ' && msg[lineStart] != '\t' {
					fields++
					if fields > l.MaxHeaders {
						return nil, errHeaderCount
					}
				}
				headerBytes = i + 2
				if headerBytes > l.MaxHeaderBytes {
					return nil, errHeaderSize
				}
			}
			i++
			lineStart = i + 1
		case '\n':
			return nil, errBareLF
		case 0:
			return nil, errNUL
		}
	}
	return msg, nil
}
