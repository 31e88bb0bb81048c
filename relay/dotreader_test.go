package relay_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// unstuff is go-smtp's DATA reader as it was before envios copied buffered
// bytes in bulk: the byte-at-a-time state machine of net/textproto (dots
// unstuffed, CRLF kept, the end at <CR><LF>.<CR><LF>) with envios's patch
// that keeps the bare CR of ".<CR>X". It returns what the backend must
// read, and how many bytes of in the data took with its end (0: no end).
func unstuff(in []byte) (out []byte, end int) {
	const (
		beginLine = iota
		dot
		dotCR
		cr
		data
	)
	state := beginLine
	for i := 0; i < len(in); i++ {
		c := in[i]
		switch state {
		case beginLine:
			if c == '.' {
				state = dot
				continue
			}
			if c == '\r' {
				state = cr
				break
			}
			state = data
		case dot:
			if c == '\r' {
				state = dotCR
				continue
			}
			state = data
		case dotCR:
			if c == '\n' {
				return out, i + 1
			}
			i-- // read X again
			c = '\r'
			state = data
		case cr:
			if c == '\n' {
				state = beginLine
				break
			}
			state = data
		case data:
			if c == '\r' {
				state = cr
			}
		}
		out = append(out, c)
	}
	return out, 0
}

// recorder is a go-smtp backend that keeps what DATA read, reading it in
// chunks of a given size.
type recorder struct {
	mu    sync.Mutex
	chunk int
	got   chan []byte
}

func (r *recorder) NewSession(*smtp.Conn) (smtp.Session, error) { return r, nil }
func (r *recorder) Mail(string, *smtp.MailOptions) error        { return nil }
func (r *recorder) Rcpt(string, *smtp.RcptOptions) error        { return nil }
func (r *recorder) Reset()                                      {}
func (r *recorder) Logout() error                               { return nil }
func (r *recorder) Data(rd io.Reader) error {
	r.mu.Lock()
	chunk := r.chunk
	r.mu.Unlock()
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := rd.Read(buf)
		out = append(out, buf[:n]...)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			r.got <- append(out, []byte("\x00READ ERROR: "+err.Error())...)
			return err
		}
	}
	r.got <- out
	return nil
}

// The relay's go-smtp copy copies the buffered bytes of a line in bulk
// (third_party/go-smtp/data.go); what a backend reads must stay byte for
// byte what the byte-at-a-time machine gave, however the backend reads it
// and however the client's bytes arrive: every smuggling variant, and
// random mixes of dots, CRs and LFs.
func TestDataReaderMatchesTheByteMachine(t *testing.T) {
	rec := &recorder{got: make(chan []byte, 1)}
	srv := smtp.NewServer(rec)
	srv.Domain = "dot.test"
	srv.MaxMessageBytes = 1 << 20
	srv.MaxLineLength = 1 << 16
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })

	cases := []string{
		"", "a", "hola\r\n", "..a\r\n", ".\r", "a\r\n.b\r\n", "a\n.\n b", "a\r\n.\n b", "a\r.\r b", "a\r\n.\r b",
		"a\n.\r\n b", "a\r\n.\rX\r\n", "\r\r\n\n..\r\n", strings.Repeat("x", 9000) + "\r\n.." + strings.Repeat("y", 5000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\n\r\nab")
	for range 400 {
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for i, payload := range cases {
		in := []byte(payload)
		want, end := unstuff(in)
		for end == 0 { // close the data whatever state the payload left
			in = append(in, "\r\n.\r\n"...)
			want, end = unstuff(in)
		}
		in = in[:end] // what follows the end would be commands
		chunk := []int{1, 2, 3, 7, 64, 4096}[i%6]
		rec.mu.Lock()
		rec.chunk = chunk
		rec.mu.Unlock()
		got := dataThrough(t, l.Addr().String(), in, i%2 == 0, rec.got)
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d (chunks of %d): payload %q\nbackend read %q\nwant         %q", i, chunk, payload, got, want)
		}
	}
}

// dataThrough sends in after DATA, in one write or a byte at a time, and
// returns what the backend read.
func dataThrough(t *testing.T, addr string, in []byte, trickle bool, got chan []byte) []byte {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(c)
	expect := func(code string) {
		t.Helper()
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", code, err)
			}
			if strings.HasPrefix(line, code+" ") {
				return
			}
			if !strings.HasPrefix(line, code+"-") {
				t.Fatalf("got %q, want %s", line, code)
			}
		}
	}
	expect("220")
	fmt.Fprint(c, "EHLO dot.test\r\n")
	expect("250")
	fmt.Fprint(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	expect("250")
	expect("250")
	expect("354")
	if trickle {
		for i := range in {
			if _, err := c.Write(in[i : i+1]); err != nil {
				t.Fatal(err)
			}
		}
	} else if _, err := c.Write(in); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		return b
	case <-time.After(10 * time.Second):
		t.Fatal("the backend never finished reading the data")
		return nil
	}
}
