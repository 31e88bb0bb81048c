package smtpout

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Transport hands a message to the next hop. Deliver returns one Result
// per recipient, in order; it never returns fewer.
type Transport interface {
	Deliver(ctx context.Context, from string, to []string, msg []byte) []Result
}

// Result is what the next hop said about one recipient.
type Result struct {
	Host     string // the server that answered ("" if none could be reached)
	Code     int    // SMTP reply code; 0 when there was no reply (connection failure, timeout)
	Enhanced string // enhanced status code (RFC 3463), e.g. "5.1.1"; may be empty
	Text     string // the reply text, or what went wrong
	// LostAfterData: the connection failed after the message was sent and
	// before the final reply. The server may have taken it: the recipient
	// is deferred and logged as a possible duplicate, never marked sent.
	LostAfterData bool
}

// Delivered reports a 2xx reply.
func (r Result) Delivered() bool { return r.Code >= 200 && r.Code < 300 }

// Permanent reports a 5xx reply: the recipient bounced.
func (r Result) Permanent() bool { return r.Code >= 500 }

// Reply renders the result as it is recorded: "250 2.0.0 Ok: queued as X".
func (r Result) Reply() string {
	var b strings.Builder
	if r.Code > 0 {
		fmt.Fprintf(&b, "%d ", r.Code)
	}
	if r.Enhanced != "" {
		b.WriteString(r.Enhanced + " ")
	}
	b.WriteString(r.Text)
	if r.LostAfterData {
		b.WriteString(" (connection lost after the message was sent: possible duplicate)")
	}
	return strings.TrimSpace(b.String())
}

// Smarthost delivers everything to one relay, as Postfix's relayhost does.
type Smarthost struct {
	// Addr is host:port. Required.
	Addr string
	// TLS is the client TLS configuration; nil: verify the server's
	// certificate against the system roots for the host of Addr.
	TLS *tls.Config
	// AllowPlaintext lets delivery go on when the smarthost does not offer
	// STARTTLS. Default false: such a server gets a temporary failure. AUTH
	// is never sent without TLS, whatever this says.
	AllowPlaintext bool
	// Username and Password, when set, authenticate (AUTH PLAIN, or LOGIN
	// when the server offers only that), and only over TLS.
	Username, Password string
	// Timeout bounds each delivery. Default 2 minutes.
	Timeout time.Duration
	// HelloName is the name relayd gives in EHLO. Default "localhost".
	HelloName string
	// MaxIdle is how many open connections are kept for reuse. Default 64
	// (at least the engine's workers, or new connections are opened and
	// closed for every message).
	MaxIdle int
	// MessagesPerConn is how many messages one connection carries before
	// it is closed. Default 100.
	MessagesPerConn int

	mu     sync.Mutex
	idle   []*session
	closed bool
}

var _ Transport = (*Smarthost)(nil)

// session is an open, authenticated connection to the smarthost.
type session struct {
	c     *smtp.Client
	used  int
	idle  time.Time
	clean bool // the last transaction ended with the reply to its data: the server awaits MAIL
	// trusted: taken for reuse without an RSET.
	trusted bool
}

// trustIdle is how long after its last transaction an idle connection is
// reused without an RSET to check it: a connection that turns out to be
// dead then costs one retry on a new one (nothing was sent on it), while
// the RSET cost a round trip for every message.
const trustIdle = 2 * time.Second

// get returns an idle session or opens one.
func (s *Smarthost) get(ctx context.Context, host string, timeout time.Duration) (*session, error) {
	s.mu.Lock()
	for len(s.idle) > 0 {
		ss := s.idle[len(s.idle)-1]
		s.idle = s.idle[:len(s.idle)-1]
		if time.Since(ss.idle) < 30*time.Second {
			s.mu.Unlock()
			if ss.clean && time.Since(ss.idle) < trustIdle {
				ss.trusted = true
				return ss, nil
			}
			ss.trusted = false
			if ss.c.Reset() == nil { // RSET: the server still talks to us
				return ss, nil
			}
			ss.c.Close()
			s.mu.Lock()
			continue
		}
		ss.c.Close()
	}
	s.mu.Unlock()
	return s.dial(ctx, host, timeout)
}

// dial opens and authenticates a new session.
func (s *Smarthost) dial(ctx context.Context, host string, timeout time.Duration) (*session, error) {
	c, tlsOn, err := s.connect(ctx, host, timeout)
	if err != nil {
		return nil, resultErr{resultOf(host, "connect", err)}
	}
	if !tlsOn && !s.AllowPlaintext {
		c.Close()
		return nil, resultErr{Result{Host: host, Text: "smarthost does not offer STARTTLS (delivery requires TLS)", Enhanced: "4.7.10"}}
	}
	if s.Username != "" {
		if !tlsOn {
			c.Close()
			return nil, resultErr{Result{Host: host, Text: "refusing to send AUTH without TLS", Enhanced: "4.7.10"}}
		}
		var mech sasl.Client
		switch {
		case c.SupportsAuth("PLAIN"):
			mech = sasl.NewPlainClient("", s.Username, s.Password)
		case c.SupportsAuth("LOGIN"):
			mech = sasl.NewLoginClient(s.Username, s.Password)
		default:
			c.Close()
			return nil, resultErr{Result{Host: host, Code: 454, Enhanced: "4.7.0", Text: "smarthost offers neither AUTH PLAIN nor LOGIN"}}
		}
		if err := c.Auth(mech); err != nil {
			c.Close()
			// A refused login is our configuration, not the recipients'
			// fault: defer (454), never bounce the mail.
			r := resultOf(host, "AUTH", err)
			r.Text = "smarthost refused our credentials: " + r.Reply()
			r.Code, r.Enhanced = 454, "4.7.0"
			return nil, resultErr{r}
		}
	}
	return &session{c: c}, nil
}

type resultErr struct{ r Result }

func (e resultErr) Error() string { return e.r.Reply() }

// put keeps a healthy session for reuse, or closes it.
func (s *Smarthost) put(ss *session) {
	ss.used++
	max := s.MaxIdle
	if max <= 0 {
		max = 64
	}
	per := s.MessagesPerConn
	if per <= 0 {
		per = 100
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.used >= per || len(s.idle) >= max || s.closed {
		go func() { _ = ss.c.Quit(); ss.c.Close() }()
		return
	}
	ss.idle = time.Now()
	s.idle = append(s.idle, ss)
}

// Close closes the idle connections.
func (s *Smarthost) Close() error {
	s.mu.Lock()
	idle := s.idle
	s.idle, s.closed = nil, true
	s.mu.Unlock()
	for _, ss := range idle {
		_ = ss.c.Quit()
		ss.c.Close()
	}
	return nil
}

// Deliver sends one transaction, on a reused connection when one is idle.
func (s *Smarthost) Deliver(ctx context.Context, from string, to []string, msg []byte) []Result {
	host, _, err := net.SplitHostPort(s.Addr)
	if err != nil {
		return all(to, Result{Text: "smarthost address: " + err.Error()})
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 2 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ss, err := s.get(ctx, host, timeout)
	if err != nil {
		var re resultErr
		errors.As(err, &re)
		return all(to, re.r)
	}
	results, healthy, clean := transaction(ss.c, host, from, to, msg)
	if !healthy && ss.trusted && nothingSent(results) {
		// The connection died while idle: no server saw this message.
		// Once more, on a new connection.
		ss.c.Close()
		if ss, err = s.dial(ctx, host, timeout); err != nil {
			var re resultErr
			errors.As(err, &re)
			return all(to, re.r)
		}
		results, healthy, clean = transaction(ss.c, host, from, to, msg)
	}
	if healthy {
		ss.clean = clean
		s.put(ss)
	} else {
		ss.c.Close()
	}
	return results
}

// nothingSent reports a transaction that got no reply at all and never
// reached the message's data.
func nothingSent(results []Result) bool {
	for _, r := range results {
		if r.Code != 0 || r.LostAfterData {
			return false
		}
	}
	return true
}

// transaction runs MAIL, RCPT, DATA on c. Each recipient keeps its own
// RCPT reply when refused; those RCPT accepted share the reply to the
// message. healthy: every step got an SMTP reply, so the connection can
// carry another message.
func transaction(c *smtp.Client, host, from string, to []string, msg []byte) (results []Result, healthy, clean bool) {
	if ok, _ := c.Extension("PIPELINING"); ok {
		return pipelined(c, host, from, to, msg)
	}
	mopts, ropts := dsnOptions(from, to)
	if err := c.Mail(from, mopts); err != nil {
		r := resultOf(host, "MAIL FROM", err)
		return all(to, r), r.Code != 0, r.Code != 0 // refused MAIL leaves no transaction open
	}
	results = make([]Result, len(to))
	accepted := 0
	for i, rcpt := range to {
		ok, lost := rcptResult(results, i, host, c.Rcpt(rcpt, ropts[i]))
		if lost {
			return keepFailures(results, results[i]), false, false
		}
		if ok {
			accepted++
		}
	}
	if accepted == 0 {
		return results, true, false
	}
	w, err := c.Data()
	if err != nil {
		r := resultOf(host, "DATA", err)
		return keepFailures(results, r), r.Code != 0, false
	}
	return sendData(w, host, results, msg)
}

// dsnOptions ask a server that offers DSN (RFC 3461; go-smtp writes them
// only then) for a report of failures only, with the headers of the
// message rather than all of it, the envelope's token as ENVID (the local
// part of b+TOKEN@) and each recipient as ORCPT: a DSN then names our
// recipient whatever forwarding happened on the way.
func dsnOptions(from string, to []string) (*smtp.MailOptions, []*smtp.RcptOptions) {
	m := &smtp.MailOptions{Return: smtp.DSNReturnHeaders}
	if local, _, ok := strings.Cut(from, "@"); ok {
		if tok, ok := strings.CutPrefix(local, "b+"); ok && tok != "" {
			m.EnvelopeID = tok
		}
	}
	r := make([]*smtp.RcptOptions, len(to))
	for i, a := range to {
		r[i] = &smtp.RcptOptions{Notify: []smtp.DSNNotify{smtp.DSNNotifyFailure}}
		if isPrintableASCII(a) {
			r[i].OriginalRecipientType, r[i].OriginalRecipient = smtp.DSNAddressTypeRFC822, a
		}
	}
	return m, r
}

func isPrintableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return s != ""
}

// rcptResult records in results[i] the reply to the i-th RCPT TO (err nil:
// accepted). lost: the connection is gone, or closing (421, RFC 5321
// §3.8); then the recipients from i on get that reply too, and the caller
// gives it to those accepted so far (keepFailures), those refused keeping
// theirs.
func rcptResult(results []Result, i int, host string, err error) (accepted, lost bool) {
	if err == nil {
		results[i] = Result{Host: host, Code: 250}
		return true, false
	}
	r := resultOf(host, "RCPT TO", err)
	if r.Code != 0 && r.Code != 421 {
		results[i] = r
		return false, false
	}
	for j := i; j < len(results); j++ {
		results[j] = r
	}
	return false, true
}

// sendData writes the message after a 354 and reads the final reply, which
// applies to every recipient RCPT accepted.
func sendData(w *smtp.DataCommand, host string, results []Result, msg []byte) ([]Result, bool, bool) {
	if _, err := bytes.NewReader(msg).WriteTo(w); err != nil {
		r := resultOf(host, "DATA", err)
		r.LostAfterData = r.Code == 0
		return keepFailures(results, r), false, false
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		r := resultOf(host, "end of DATA", err)
		r.LostAfterData = r.Code == 0
		return keepFailures(results, r), r.Code != 0, r.Code != 0
	}
	return keepFailures(results, Result{Host: host, Code: 250, Text: resp.StatusText}), true, true
}

// pipelined is transaction for a server that offers PIPELINING (RFC 2920):
// MAIL, the RCPTs and DATA go in one write, their replies are read in
// order, and each keeps its meaning.
func pipelined(c *smtp.Client, host, from string, to []string, msg []byte) (results []Result, healthy, clean bool) {
	mopts, ropts := dsnOptions(from, to)
	mailErr, rcptErrs, w, dataErr := c.PipelineMail(from, to, mopts, ropts)
	if mailErr != nil {
		r := resultOf(host, "MAIL FROM", mailErr)
		return all(to, r), r.Code != 0 && (dataErr == nil || resultOf(host, "", dataErr).Code != 0), false
	}
	results = make([]Result, len(to))
	accepted := 0
	for i, err := range rcptErrs {
		ok, lost := rcptResult(results, i, host, err)
		if lost {
			return keepFailures(results, results[i]), false, false
		}
		if ok {
			accepted++
		}
	}
	if dataErr != nil {
		r := resultOf(host, "DATA", dataErr)
		if accepted == 0 { // refused for want of recipients, as it should be
			return results, r.Code != 0, false
		}
		return keepFailures(results, r), r.Code != 0, false
	}
	if accepted == 0 {
		// A server that took DATA without a recipient: end it empty.
		if err := w.Close(); err != nil {
			return results, resultOf(host, "end of DATA", err).Code != 0, false
		}
		return results, true, true
	}
	return sendData(w, host, results, msg)
}

// connect dials and, when the server offers it, starts TLS. A server
// without STARTTLS is reconnected in plain text (the caller decides whether
// that is allowed).
func (s *Smarthost) connect(ctx context.Context, host string, timeout time.Duration) (*smtp.Client, bool, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.Addr)
	if err != nil {
		return nil, false, err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	cfg := s.TLS
	if cfg == nil {
		cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	name := s.HelloName
	if name == "" {
		name = "localhost"
	}
	wrapped, tlsOn, err := startTLS(ctx, conn, name, cfg)
	if err != nil {
		conn.Close()
		return nil, false, err
	}
	c := smtp.NewClient(wrapped)
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	if err := c.Hello(name); err != nil {
		c.Close()
		return nil, false, err
	}
	// From here the client sets a deadline per command; the dial's
	// deadline must not outlive this delivery on a reused connection.
	_ = conn.SetDeadline(time.Time{})
	return c, tlsOn, nil
}

// startTLS reads the greeting, says EHLO name and, if the server offers
// it, runs STARTTLS and the TLS handshake itself — go-smtp's client would
// otherwise introduce itself as "localhost". It returns a connection on
// which a fresh go-smtp client can start: the bytes it reads begin with a
// stand-in greeting, after which the client says EHLO name again (over
// TLS), as RFC 3207 requires.
func startTLS(ctx context.Context, conn net.Conn, name string, cfg *tls.Config) (net.Conn, bool, error) {
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, false, err
	}
	id, err := tp.Cmd("EHLO %s", name)
	if err != nil {
		return nil, false, err
	}
	tp.StartResponse(id)
	_, msg, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	if err != nil {
		return nil, false, err
	}
	offered := false
	for _, line := range strings.Split(msg, "\n") {
		if strings.EqualFold(strings.TrimSpace(line), "STARTTLS") {
			offered = true
		}
	}
	if !offered {
		return greeted(conn, tp.R), false, nil
	}
	if id, err = tp.Cmd("STARTTLS"); err != nil {
		return nil, false, err
	}
	tp.StartResponse(id)
	_, _, err = tp.ReadResponse(220)
	tp.EndResponse(id)
	if err != nil {
		return nil, false, err
	}
	tc := tls.Client(conn, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, false, err
	}
	return greeted(tc, tc), true, nil
}

// greeted is conn, read through r, preceded by a stand-in 220 greeting.
func greeted(conn net.Conn, r io.Reader) net.Conn {
	return &prefixConn{Conn: conn, r: io.MultiReader(strings.NewReader("220 envios: session continues\r\n"), r)}
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// keepFailures gives the final result to every recipient RCPT accepted.
func keepFailures(results []Result, final Result) []Result {
	for i := range results {
		if results[i].Delivered() {
			results[i] = final
		}
	}
	return results
}

func all(to []string, r Result) []Result {
	out := make([]Result, len(to))
	for i := range out {
		out[i] = r
	}
	return out
}

// resultOf turns a client error into a Result: an SMTP reply keeps its
// codes; anything else (a network failure) has code 0, which is temporary.
func resultOf(host, step string, err error) Result {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		r := Result{Host: host, Code: se.Code, Text: se.Message}
		if se.EnhancedCode != (smtp.EnhancedCode{}) && se.EnhancedCode != smtp.NoEnhancedCode {
			r.Enhanced = fmt.Sprintf("%d.%d.%d", se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2])
		}
		return r
	}
	return Result{Host: host, Text: step + ": " + err.Error()}
}
