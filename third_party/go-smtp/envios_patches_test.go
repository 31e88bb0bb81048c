package smtp_test

// One test per envios patch that changes what a client or a backend sees
// (README.envios.md). Each fails without its patch.

import (
	"crypto/tls"
	"io"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-smtp"
)

// envios patch 1: a BDAT LAST chunk cut short by the end of the connection
// is not a message.
func TestServer_Chunking_ClosedInTheMiddleOfLast(t *testing.T) {
	be, s, c, scanner := testServerAuthenticated(t)
	defer s.Close()
	defer c.Close()
	be.dataErrors = make(chan error, 10)

	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\n")
	scanner.Scan()
	if !strings.HasPrefix(scanner.Text(), "250 ") {
		t.Fatal("Invalid MAIL response:", scanner.Text())
	}

	io.WriteString(c, "RCPT TO:<root@gchq.gov.uk>\r\n")
	scanner.Scan()
	if !strings.HasPrefix(scanner.Text(), "250 ") {
		t.Fatal("Invalid RCPT response:", scanner.Text())
	}

	io.WriteString(c, "BDAT 8 LAST\r\n")
	io.WriteString(c, "Hey <")

	// Bye, three bytes short!
	c.Close()

	if err := <-be.dataErrors; err != smtp.ErrDataReset {
		t.Fatal("Backend received a different error:", err)
	}
	if len(be.messages) != 0 || len(be.anonmsgs) != 0 {
		t.Fatal("A cut-short chunk was taken for a message:", be.messages, be.anonmsgs)
	}
}

// abortSession is a session whose Data, once its reader fails, reports the
// error on aborted and returns when release is closed. It logs the order
// of Data's return and the other calls, which must not overlap it. With
// closeInData, Data closes the connection itself after the first 8 bytes.
type abortSession struct {
	aborted     chan error
	release     chan struct{}
	logout      chan struct{}
	conn        *smtp.Conn
	closeInData bool

	mu     sync.Mutex
	inData bool
	events []string
}

func newAbortSession() *abortSession {
	return &abortSession{aborted: make(chan error, 1), release: make(chan struct{}), logout: make(chan struct{})}
}

func (s *abortSession) event(name string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inData {
		name += " during Data"
	}
	s.events = append(s.events, name)
}

func (s *abortSession) Reset()                               { s.event("Reset") }
func (s *abortSession) Mail(string, *smtp.MailOptions) error { s.event("Mail"); return nil }
func (s *abortSession) Rcpt(string, *smtp.RcptOptions) error { s.event("Rcpt"); return nil }

func (s *abortSession) Logout() error {
	s.event("Logout")
	close(s.logout)
	return nil
}

func (s *abortSession) Data(r io.Reader) error {
	s.mu.Lock()
	s.inData = true
	s.mu.Unlock()
	if s.closeInData {
		if _, err := io.ReadFull(r, make([]byte, 8)); err != nil {
			return err
		}
		s.conn.Close()
	}
	_, err := io.ReadAll(r)
	if err != nil {
		s.aborted <- err
		<-s.release
	}
	s.mu.Lock()
	s.inData = false
	s.mu.Unlock()
	s.event("Data returned")
	return err
}

func (s *abortSession) overlaps() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var bad []string
	for _, e := range s.events {
		if strings.HasSuffix(e, " during Data") {
			bad = append(bad, e)
		}
	}
	return bad
}

// envios patch 2: a BDAT transfer given up by RSET, by hanging up between
// chunks, or by the backend closing the connection from Data, ends before
// the session goes on: Reset and Logout come after the backend's Data has
// returned, never alongside it, and the connection closes after Data too.
func TestServer_Chunking_AbortWaitsForData(t *testing.T) {
	for _, end := range []string{"RSET", "hang-up", "closed by the backend"} {
		t.Run(end, func(t *testing.T) {
			sess := newAbortSession()
			sess.closeInData = end == "closed by the backend"
			_, s, c, scanner, _ := testServerEhlo(t, func(s *smtp.Server) {
				s.Backend = smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
					sess.conn = c
					return sess, nil
				})
			})
			defer s.Close()
			defer c.Close()

			for _, cmd := range []string{"MAIL FROM:<root@nsa.gov>\r\n", "RCPT TO:<root@gchq.gov.uk>\r\n", "BDAT 8\r\nHey <3\r\n"} {
				io.WriteString(c, cmd)
				scanner.Scan()
				if !strings.HasPrefix(scanner.Text(), "250 ") {
					t.Fatalf("Invalid response to %q: %s", cmd, scanner.Text())
				}
			}
			// Data has read the chunk: the pipe gives the 250 only then.

			switch end {
			case "RSET":
				io.WriteString(c, "RSET\r\n")
			case "hang-up":
				c.Close()
			}
			if err := <-sess.aborted; err != smtp.ErrDataReset {
				t.Fatal("Backend received a different error:", err)
			}
			close(sess.release)
			switch end {
			case "RSET":
				scanner.Scan()
				if !strings.HasPrefix(scanner.Text(), "250 ") {
					t.Fatal("Invalid RSET response:", scanner.Text())
				}
			case "hang-up":
				<-sess.logout
			case "closed by the backend":
				<-sess.logout
				if scanner.Scan() {
					t.Fatal("Connection still open, read:", scanner.Text())
				}
			}
			if bad := sess.overlaps(); len(bad) > 0 {
				t.Fatalf("%v; events %v", bad, sess.events)
			}
		})
	}
}

// envios patch 3: in "<CR><LF>.<CR>X" the CR after the dot is a bare CR,
// and the backend sees it (upstream dropped it with the dot).
func TestServer_DotCRKeepsTheBareCR(t *testing.T) {
	be, s, c, scanner := testServerAuthenticated(t)
	defer s.Close()
	defer c.Close()

	io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\n")
	scanner.Scan()
	io.WriteString(c, "RCPT TO:<root@gchq.gov.uk>\r\n")
	scanner.Scan()
	io.WriteString(c, "DATA\r\n")
	scanner.Scan()
	io.WriteString(c, "Hey\r\n.\rsmuggled\r\n.\r\n")
	scanner.Scan()
	if !strings.HasPrefix(scanner.Text(), "250 ") {
		t.Fatal("Invalid DATA response:", scanner.Text())
	}

	if len(be.messages) != 1 {
		t.Fatal("Invalid number of sent messages:", len(be.messages))
	}
	if got, want := string(be.messages[0].Data), "Hey\r\n\rsmuggled\r\n"; got != want {
		t.Fatalf("Invalid mail data: %q, want %q", got, want)
	}
}

// envios patch 5: a SASL response that is not base64 is a syntax error,
// 501 (RFC 4954 section 4), in the initial response and after a challenge.
func TestServerAuthMalformedBase64(t *testing.T) {
	for _, steps := range [][]string{
		{"AUTH PLAIN !!!notbase64"},
		{"AUTH PLAIN", "!!!notbase64"},
	} {
		t.Run(strings.Join(steps, " then "), func(t *testing.T) {
			_, s, c, scanner, _ := testServerEhlo(t)
			defer s.Close()
			defer c.Close()

			for i, line := range steps {
				io.WriteString(c, line+"\r\n")
				scanner.Scan()
				if i < len(steps)-1 {
					if !strings.HasPrefix(scanner.Text(), "334 ") {
						t.Fatal("Invalid AUTH response:", scanner.Text())
					}
					continue
				}
				if !strings.HasPrefix(scanner.Text(), "501 5.5.2 ") {
					t.Fatal("Invalid response to malformed base64:", scanner.Text())
				}
			}
		})
	}
}

// envios patch 6: STARTTLS takes no parameter (RFC 3207 section 4): a line
// that only begins with it is refused, and the session stays in plaintext.
func TestServerStartTLSWithParameter(t *testing.T) {
	for _, line := range []string{"STARTTLS now", "STARTTLSX"} {
		t.Run(line, func(t *testing.T) {
			_, s, c, scanner, caps := testServerEhlo(t, func(s *smtp.Server) {
				s.TLSConfig = &tls.Config{}
			})
			defer s.Close()
			defer c.Close()
			if !caps["STARTTLS"] {
				t.Fatal("STARTTLS not advertised:", caps)
			}

			io.WriteString(c, line+"\r\n")
			scanner.Scan()
			if !strings.HasPrefix(scanner.Text(), "501 5.5.4 ") {
				t.Fatal("Invalid STARTTLS response:", scanner.Text())
			}
			io.WriteString(c, "NOOP\r\n")
			scanner.Scan()
			if !strings.HasPrefix(scanner.Text(), "250 ") {
				t.Fatal("Invalid NOOP response (is it TLS now?):", scanner.Text())
			}
		})
	}
}

// envios patch 7: a command line that does not parse is an unrecognised
// command, 500 (RFC 5321 section 4.2.4), and the reply does not echo the
// command, which could put a bare CR in it.
func TestServer_unrecognizedCommand(t *testing.T) {
	for _, line := range []string{"FOO bar", "HELLOX", "XYZW", "\r000"} {
		t.Run(line, func(t *testing.T) {
			_, s, c, scanner, _ := testServerEhlo(t)
			defer s.Close()
			defer c.Close()

			io.WriteString(c, line+"\r\n")
			scanner.Scan()
			if !strings.HasPrefix(scanner.Text(), "500 5.5.2 ") {
				t.Fatal("Invalid response:", scanner.Text())
			}
			if strings.ContainsAny(scanner.Text(), "\r\n") {
				t.Fatalf("Reply line holds a bare CR or LF: %q", scanner.Text())
			}
		})
	}
}

// envios patch 9: MAIL inside a transaction is refused with 503 (RFC 5321
// section 4.1.4), and the transaction goes on as it was.
func TestServer_nestedMAIL(t *testing.T) {
	be, s, c, scanner := testServerAuthenticated(t)
	defer s.Close()
	defer c.Close()

	for _, step := range []struct{ in, want string }{
		{"MAIL FROM:<root@nsa.gov>", "250 "},
		{"RCPT TO:<root@gchq.gov.uk>", "250 "},
		{"MAIL FROM:<other@nsa.gov>", "503 5.5.1 "},
		{"DATA", "354 "},
		{"Hey <3\r\n.", "250 "},
		// After DATA a new transaction may begin.
		{"MAIL FROM:<other@nsa.gov>", "250 "},
	} {
		io.WriteString(c, step.in+"\r\n")
		scanner.Scan()
		if !strings.HasPrefix(scanner.Text(), step.want) {
			t.Fatalf("Invalid response to %q: %s, want %q", step.in, scanner.Text(), step.want)
		}
	}

	if len(be.messages) != 1 {
		t.Fatal("Invalid number of sent messages:", be.messages)
	}
	if msg := be.messages[0]; msg.From != "root@nsa.gov" || len(msg.To) != 1 || msg.To[0] != "root@gchq.gov.uk" {
		t.Fatalf("Invalid envelope: from %q to %q", msg.From, msg.To)
	}
}

// envios patch 10: MAIL and RCPT paths are parsed as RFC 5321 section
// 4.1.2 writes them, and a path that does not parse is answered 501 5.1.7
// (MAIL) or 501 5.1.3 (RCPT), the address codes of RFC 3463. A source
// route is parsed and ignored (section 4.1.1.3).
func TestServer_pathSyntax(t *testing.T) {
	cases := []struct {
		cmd  string // MAIL or RCPT
		path string // what follows FROM: or TO:
		want string // the reply's start
		addr string // what the backend gets, when accepted
	}{
		{"MAIL", "<root@nsa.gov>", "250 ", "root@nsa.gov"},
		{"MAIL", " <root@nsa.gov>", "250 ", "root@nsa.gov"},
		{"MAIL", "<>", "250 ", ""},
		{"MAIL", `<"root"@nsa.gov>`, "250 ", "root@nsa.gov"},
		{"MAIL", "<@relay.example,@other.example:root@nsa.gov>", "250 ", "root@nsa.gov"},
		{"MAIL", "root@nsa.gov", "501 5.1.7 ", ""},
		{"MAIL", " root@nsa.gov", "501 5.1.7 ", ""},
		{"MAIL", "<root>", "501 5.1.7 ", ""},
		{"MAIL", `<"root"(comment)@nsa.gov>`, "501 5.1.7 ", ""},
		{"MAIL", "<(comment)root@nsa.gov>", "501 5.1.7 ", ""},
		{"MAIL", "", "501 5.1.7 ", ""},

		{"RCPT", "<root@gchq.gov.uk>", "250 ", "root@gchq.gov.uk"},
		{"RCPT", `<"root"@gchq.gov.uk>`, "250 ", "root@gchq.gov.uk"},
		{"RCPT", "<@relay.example,@other.example:root@gchq.gov.uk>", "250 ", "root@gchq.gov.uk"},
		{"RCPT", "<@relay.example:root@gchq.gov.uk>", "250 ", "root@gchq.gov.uk"},
		{"RCPT", "<root@[192.0.2.1]>", "250 ", "root@[192.0.2.1]"},
		{"RCPT", "<o'brien+tag@gchq.gov.uk>", "250 ", "o'brien+tag@gchq.gov.uk"},
		{"RCPT", "<grå@grå.org>", "250 ", "grå@grå.org"},
		{"RCPT", "root@gchq.gov.uk", "501 5.1.3 ", ""},
		{"RCPT", "<root@gchq.gov.uk", "501 5.1.3 ", ""},
		{"RCPT", "<pepe>", "501 5.1.3 ", ""},
		{"RCPT", "<>", "501 5.1.3 ", ""},
		{"RCPT", `<"root"(comment)@gchq.gov.uk>`, "501 5.1.3 ", ""},
		{"RCPT", "<root(comment)@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<root@gchq.gov.uk(comment)>", "501 5.1.3 ", ""},
		{"RCPT", `<"Boss <boss@evil.example> ("@gchq.gov.uk)>`, "501 5.1.3 ", ""},
		{"RCPT", "<root@(comment)gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<.root@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<root.@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<ro..ot@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<ro\x01ot@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<\"ro\x01ot\"@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<root@gchq.gov.uk.>", "501 5.1.3 ", ""},
		{"RCPT", "<root@-gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<root@gchq..gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<root@[]>", "501 5.1.3 ", ""},
		{"RCPT", "<@relay(example):root@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<@relay.example,other.example:root@gchq.gov.uk>", "501 5.1.3 ", ""},
		{"RCPT", "<@relay.example root@gchq.gov.uk>", "501 5.1.3 ", ""},
	}
	for _, tc := range cases {
		t.Run(tc.cmd+" "+tc.path, func(t *testing.T) {
			be, s, c, scanner := testServerAuthenticated(t)
			defer s.Close()
			defer c.Close()

			if tc.cmd == "RCPT" {
				io.WriteString(c, "MAIL FROM:<root@nsa.gov>\r\n")
				scanner.Scan()
				if !strings.HasPrefix(scanner.Text(), "250 ") {
					t.Fatal("Invalid MAIL response:", scanner.Text())
				}
				io.WriteString(c, "RCPT TO:"+tc.path+"\r\n")
			} else {
				io.WriteString(c, "MAIL FROM:"+tc.path+"\r\n")
			}
			scanner.Scan()
			if !strings.HasPrefix(scanner.Text(), tc.want) {
				t.Fatalf("Invalid response: %s, want %q", scanner.Text(), tc.want)
			}
			if !strings.HasPrefix(tc.want, "250 ") {
				return
			}
			if tc.cmd == "MAIL" {
				io.WriteString(c, "RCPT TO:<root@gchq.gov.uk>\r\n")
				scanner.Scan()
			}
			io.WriteString(c, "DATA\r\nHey <3\r\n.\r\n")
			scanner.Scan()
			scanner.Scan()
			if !strings.HasPrefix(scanner.Text(), "250 ") {
				t.Fatal("Invalid DATA response:", scanner.Text())
			}
			if len(be.messages) != 1 {
				t.Fatal("Invalid number of sent messages:", be.messages)
			}
			got := be.messages[0].From
			if tc.cmd == "RCPT" {
				got = strings.Join(be.messages[0].To, ",")
			}
			if got != tc.addr {
				t.Fatalf("Backend got %q, want %q", got, tc.addr)
			}
		})
	}
}
