// Package smtpload is a load generator for SMTP submission servers: many
// concurrent connections, each with STARTTLS (or implicit TLS) and AUTH
// PLAIN, sending messages one after another, counting replies and timing
// each transaction. The messages are of a Shape: plain text, or what
// legacy systems send — a personalised multipart/alternative notification,
// with or without a PDF attachment. It measures relayd (BENCHMARKS.md) and
// works against any submission server, Postfix included; RunCeiling
// measures the same load against a bare go-smtp Sink, the ceiling a
// server's rate is compared with.
package smtpload

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Config is one load run.
type Config struct {
	Addr        string      // host:port
	ImplicitTLS bool        // TLS from the first byte (port 465) instead of STARTTLS
	TLS         *tls.Config // client TLS configuration
	Username    string
	Password    string
	From        string
	To          string // each message has one recipient; "%d" in it is replaced by the message number
	Conns       int    // concurrent connections. Default 32
	Messages    int    // in all. Default 10,000
	Size        int    // message size in bytes (for PDF, without the attachment). Default 5,120
	Shape       Shape  // the messages sent. Default Plain
}

// Result is what a run measured.
type Result struct {
	Sent     int            // messages answered 250
	Bytes    int64          // their size in all, as written before dot-stuffing
	Failed   map[string]int // other outcomes, by reply code or error
	Elapsed  time.Duration  // from the first connection to the last reply
	P50, P99 time.Duration  // MAIL..end-of-DATA time per message
}

// Rate is accepted messages per second.
func (r Result) Rate() float64 { return float64(r.Sent) / r.Elapsed.Seconds() }

func (r Result) String() string {
	return fmt.Sprintf("%d messages accepted in %s: %.0f msg/s; per message p50 %s, p99 %s, %d bytes on average; failures %v",
		r.Sent, r.Elapsed.Round(time.Millisecond), r.Rate(), r.P50.Round(10*time.Microsecond), r.P99.Round(10*time.Microsecond),
		r.Bytes/int64(max(r.Sent, 1)), r.Failed)
}

// Run sends cfg.Messages messages over cfg.Conns connections.
func Run(ctx context.Context, cfg Config) (Result, error) {
	if cfg.Conns <= 0 {
		cfg.Conns = 32
	}
	if cfg.Messages <= 0 {
		cfg.Messages = 10_000
	}
	gen, err := NewGenerator(cfg.Shape, cfg.Size)
	if err != nil {
		return Result{}, err
	}
	var next atomic.Int64
	var mu sync.Mutex
	res := Result{Failed: map[string]int{}}
	var lat []time.Duration
	fail := func(what string) {
		mu.Lock()
		res.Failed[what]++
		mu.Unlock()
	}
	start := time.Now()
	var wg sync.WaitGroup
	var firstErr error
	for range cfg.Conns {
		wg.Go(func() {
			c, err := dial(ctx, cfg)
			if err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = err
				}
				mu.Unlock()
				return
			}
			defer c.Close()
			var mine []time.Duration
			var written int64
			for ctx.Err() == nil {
				n := int(next.Add(1))
				if n > cfg.Messages {
					break
				}
				to := cfg.To
				if strings.Contains(to, "%d") {
					to = fmt.Sprintf(to, n)
				}
				msg := gen.Message(cfg.From, to, n)
				t0 := time.Now()
				if err := send(c, cfg.From, to, msg); err != nil {
					fail(outcome(err))
					if !isReply(err) {
						return // the connection is gone
					}
					_ = c.Reset()
					continue
				}
				mine = append(mine, time.Since(t0))
				written += int64(len(msg))
			}
			_ = c.Quit()
			mu.Lock()
			res.Sent += len(mine)
			res.Bytes += written
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	res.Elapsed = time.Since(start)
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50, res.P99 = lat[len(lat)/2], lat[len(lat)*99/100]
	}
	if res.Sent == 0 && firstErr != nil {
		return res, firstErr
	}
	return res, nil
}

func dial(ctx context.Context, cfg Config) (*smtp.Client, error) {
	host, _, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	if cfg.ImplicitTLS {
		conn = tls.Client(conn, cfg.TLS)
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return nil, err
	}
	if err := c.Hello("smtpload.invalid"); err != nil {
		c.Close()
		return nil, err
	}
	if !cfg.ImplicitTLS {
		if err := c.StartTLS(cfg.TLS); err != nil {
			c.Close()
			return nil, fmt.Errorf("STARTTLS: %w", err)
		}
	}
	if cfg.Username != "" {
		if err := c.Auth(smtp.PlainAuth("", cfg.Username, cfg.Password, host)); err != nil {
			c.Close()
			return nil, fmt.Errorf("AUTH: %w", err)
		}
	}
	return c, nil
}

func send(c *smtp.Client, from, to string, msg []byte) error {
	if err := c.Mail(from); err != nil {
		return err
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	// DATA by hand: net/smtp's data writer dot-stuffs a byte at a time,
	// which made the load generator a tenth of the CPU it measures. The
	// message is stuffed here and written at once, then ".".
	id, err := c.Text.Cmd("DATA")
	if err != nil {
		return err
	}
	c.Text.StartResponse(id)
	_, _, err = c.Text.ReadResponse(354)
	c.Text.EndResponse(id)
	if err != nil {
		return err
	}
	if _, err := c.Text.W.Write(append(stuff(msg), ".\r\n"...)); err != nil {
		return err
	}
	if err := c.Text.W.Flush(); err != nil {
		return err
	}
	_, _, err = c.Text.ReadResponse(250)
	return err
}

// stuff returns msg (CRLF lines) ready to follow DATA: every line that
// starts with a dot gets another (RFC 5321 §4.5.2), and it ends with CRLF.
// The caller appends the final ".\r\n" and writes it all at once: one TLS
// record and one write for the message, not a second one for the dot.
func stuff(msg []byte) []byte {
	out := make([]byte, 0, len(msg)+16) // room for the caller's ".\r\n"
	if len(msg) > 0 && msg[0] == '.' {
		out = append(out, '.')
	}
	for {
		i := bytes.Index(msg, []byte("\r\n."))
		if i < 0 {
			break
		}
		out = append(out, msg[:i+3]...)
		out = append(out, '.')
		msg = msg[i+3:]
	}
	out = append(out, msg...)
	if !bytes.HasSuffix(out, []byte("\r\n")) {
		out = append(out, "\r\n"...)
	}
	return out
}

func isReply(err error) bool {
	var te *textproto.Error
	return errors.As(err, &te)
}

func outcome(err error) string {
	var te *textproto.Error
	if errors.As(err, &te) {
		return fmt.Sprint(te.Code)
	}
	return "connection: " + err.Error()
}
