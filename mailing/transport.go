package mailing

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
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
	// Username and Password, when set, authenticate with AUTH PLAIN.
	Username, Password string
	// Timeout bounds each delivery. Default 2 minutes.
	Timeout time.Duration
}

var _ Transport = (*Smarthost)(nil)

// Deliver opens a connection, sends one transaction and closes it.
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
	c, tlsOn, err := s.connect(ctx, host, timeout)
	if err != nil {
		return all(to, resultOf(host, "connect", err))
	}
	defer c.Close()
	fail := func(step string, err error) []Result {
		return all(to, resultOf(host, step, err))
	}
	if !tlsOn && !s.AllowPlaintext {
		return all(to, Result{Host: host, Text: "smarthost does not offer STARTTLS (delivery requires TLS)", Enhanced: "4.7.10"})
	}
	if s.Username != "" {
		if !tlsOn {
			return all(to, Result{Host: host, Text: "refusing to send AUTH without TLS", Enhanced: "4.7.10"})
		}
		if err := c.Auth(sasl.NewPlainClient("", s.Username, s.Password)); err != nil {
			return fail("AUTH", err)
		}
	}
	if err := c.Mail(from, nil); err != nil {
		return fail("MAIL FROM", err)
	}
	results := make([]Result, len(to))
	accepted := 0
	for i, rcpt := range to {
		if err := c.Rcpt(rcpt, nil); err != nil {
			results[i] = resultOf(host, "RCPT TO", err)
			continue
		}
		results[i] = Result{Host: host, Code: 250}
		accepted++
	}
	if accepted == 0 {
		_ = c.Quit()
		return results
	}
	w, err := c.Data()
	if err != nil {
		return keepFailures(results, resultOf(host, "DATA", err))
	}
	if _, err := bytes.NewReader(msg).WriteTo(w); err != nil {
		r := resultOf(host, "DATA", err)
		r.LostAfterData = r.Code == 0
		return keepFailures(results, r)
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		r := resultOf(host, "end of DATA", err)
		r.LostAfterData = r.Code == 0
		return keepFailures(results, r)
	}
	_ = c.Quit()
	return keepFailures(results, Result{Host: host, Code: 250, Text: resp.StatusText})
}

// connect dials and, when the server offers it, starts TLS. A server
// without STARTTLS is reconnected in plain text (the caller decides whether
// that is allowed).
func (s *Smarthost) connect(ctx context.Context, host string, timeout time.Duration) (*smtp.Client, bool, error) {
	dial := func() (net.Conn, error) {
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", s.Addr)
		if err != nil {
			return nil, err
		}
		if dl, ok := ctx.Deadline(); ok {
			_ = conn.SetDeadline(dl)
		}
		return conn, nil
	}
	conn, err := dial()
	if err != nil {
		return nil, false, err
	}
	cfg := s.TLS
	if cfg == nil {
		cfg = &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	}
	c, err := smtp.NewClientStartTLS(conn, cfg)
	if err == nil {
		c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
		return c, true, nil
	}
	if !strings.Contains(err.Error(), "doesn't support STARTTLS") {
		return nil, false, err
	}
	if conn, err = dial(); err != nil {
		return nil, false, err
	}
	c = smtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = timeout, timeout
	if err := c.Hello("localhost"); err != nil {
		c.Close()
		return nil, false, err
	}
	return c, false, nil
}

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
