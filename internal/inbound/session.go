package inbound

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/servir-pe/envios/internal/mailstore"
)

// Mailboxes of the sending domain, besides the tokens.
const (
	MailboxBounce      = "bounce"      // b+TOKEN@: the envelope sender of every delivery
	MailboxUnsubscribe = "unsubscribe" // u+TOKEN@: the mailto of List-Unsubscribe
	MailboxPostmaster  = "postmaster"  // RFC 5321 §4.5.1
	MailboxAbuse       = "abuse"       // RFC 2142
	MailboxFBL         = "fbl"         // where feedback loops are registered to report
)

// The replies a session gives; each names what was wrong.
var (
	errNoSuchUser = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1},
		Message: "No such recipient here"}
	errRelay = &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
		Message: "Relay access denied: this server receives mail only for its own domain"}
	errNoRecipients = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "No valid recipients"}
	errStore        = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0},
		Message: "Temporary failure storing the message; try again later"}
)

// rcpt is one accepted recipient of a transaction.
type rcpt struct {
	addr      string
	mailbox   string
	recipient int64 // the recipient row its token names; 0 for postmaster@, abuse@, fbl@
}

type session struct {
	s      *Server
	remote string
	helo   string
	from   string
	rcpts  []rcpt
}

func (s *Server) newSession(c *smtp.Conn) (smtp.Session, error) {
	if s.closing.Load() {
		return nil, &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Service shutting down"}
	}
	remote := ""
	if a, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		remote = a.IP.String()
	}
	return &session{s: s, remote: remote, helo: c.Hostname()}, nil
}

func (ss *session) Reset() {
	ss.from = ""
	ss.rcpts = nil
}

func (ss *session) Logout() error { return nil }

// Mail accepts every reverse-path, the null one included (RFC 5321
// §4.5.5: DSNs come from <>).
func (ss *session) Mail(from string, _ *smtp.MailOptions) error {
	ss.from = from
	return nil
}

// Rcpt accepts b+TOKEN@ and u+TOKEN@ of the sending domain whose token
// verifies, and postmaster@, abuse@ and fbl@; 550 5.1.1 for any other
// address there, 550 5.7.1 for any other domain.
func (ss *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	r, err := ss.s.resolve(to)
	if err != nil {
		ss.s.refuse.Add(1)
		ss.s.cfg.Logger.Info("mx: recipient refused", "client", ss.remote, "from", ss.from, "rcpt", to, "reply", err.Error())
		return err
	}
	ss.rcpts = append(ss.rcpts, r)
	return nil
}

// resolve maps a recipient address to its mailbox (and recipient row).
func (s *Server) resolve(to string) (rcpt, error) {
	at := strings.LastIndexByte(to, '@')
	if at < 0 {
		return rcpt{}, errRelay
	}
	local, domain := to[:at], strings.TrimSuffix(strings.ToLower(to[at+1:]), ".")
	if domain != s.cfg.Domain {
		return rcpt{}, errRelay
	}
	lower := strings.ToLower(local)
	switch lower {
	case MailboxPostmaster, MailboxAbuse, MailboxFBL:
		return rcpt{addr: lower + "@" + domain, mailbox: lower}, nil
	}
	box := ""
	switch {
	case strings.HasPrefix(lower, "b+"):
		box = MailboxBounce
	case strings.HasPrefix(lower, "u+"):
		box = MailboxUnsubscribe
	default:
		return rcpt{}, errNoSuchUser
	}
	id, ok := s.cfg.Tokens.Recipient(lower[2:])
	if !ok {
		return rcpt{}, errNoSuchUser
	}
	return rcpt{addr: lower + "@" + domain, mailbox: box, recipient: id}, nil
}

// Data stores the message once per accepted recipient, then answers 250
// whatever the message holds: reading it is the Processor's business.
func (ss *session) Data(r io.Reader) error {
	if len(ss.rcpts) == 0 {
		return errNoRecipients
	}
	h := sha256.New()
	var kept limitedBuffer
	kept.max = KeepBytes
	n, err := io.Copy(io.MultiWriter(h, &kept), r)
	if err != nil {
		var se *smtp.SMTPError
		if errors.As(err, &se) {
			return se // 552 5.3.4 over the size limit
		}
		return err
	}
	msg := mailstore.InboundRow{ReceivedAt: ss.s.cfg.Now().UTC(), RemoteAddr: ss.remote, Helo: ss.helo, MailFrom: ss.from,
		Size: n, SHA256: hex.EncodeToString(h.Sum(nil)), Raw: kept.b, Truncated: n > int64(len(kept.b))}
	ctx, cancel := context.WithTimeout(ss.s.ctx, 30*time.Second)
	defer cancel()
	ids, err := ss.s.store(ctx, msg, ss.rcpts)
	if err != nil {
		ss.s.cfg.Logger.Error("mx: store message", "client", ss.remote, "from", ss.from, "err", err)
		return errStore
	}
	ss.s.stored.Add(int64(len(ids)))
	for i, id := range ids {
		ss.s.cfg.Logger.Info("mx: stored", "inbound", id, "client", ss.remote, "from", ss.from, "rcpt", ss.rcpts[i].addr,
			"mailbox", ss.rcpts[i].mailbox, "size", n)
	}
	ss.s.kick()
	return nil
}

// limitedBuffer keeps the first max bytes written to it and counts the rest.
type limitedBuffer struct {
	b   []byte
	max int
}

func (l *limitedBuffer) Write(p []byte) (int, error) {
	if room := l.max - len(l.b); room > 0 {
		l.b = append(l.b, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// store inserts one row per recipient, in one transaction.
func (s *Server) store(ctx context.Context, msg mailstore.InboundRow, rcpts []rcpt) ([]int64, error) {
	rows := make([]mailstore.InboundRow, len(rcpts))
	for i, r := range rcpts {
		rows[i] = msg
		rows[i].Rcpt, rows[i].Mailbox = r.addr, r.mailbox
		if r.recipient != 0 {
			rows[i].RecipientID = &r.recipient
		}
	}
	if _, err := s.cfg.DB.NewInsert().Model(&rows).Returning("id").Exec(ctx); err != nil {
		return nil, err
	}
	ids := make([]int64, len(rows))
	for i := range rows {
		ids[i] = rows[i].ID
	}
	return ids, nil
}
