package smtp

import (
	"bufio"
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"
)

// unstuffBytes is the DATA reader as a byte-at-a-time state machine (the
// one of net/textproto, CRLF kept, with envios patch 3): what a backend
// must read from in, and whether in held the end of data.
func unstuffBytes(in []byte) (out []byte, ended bool) {
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
				return out, true
			}
			i-- // read c again
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
	return out, false
}

// envios patch 4: the DATA reader copies the buffered bytes of a line at
// once instead of one ReadByte each. What it gives is unchanged byte for
// byte, however the bytes arrive and however they are read: every
// smuggling variant, and random mixes of dots, CRs and LFs.
func TestDataReader_bulkCopyMatchesByteMachine(t *testing.T) {
	cases := []string{
		"", "a", "hola\r\n", "..a\r\n", ".\r", "a\r\n.b\r\n", "a\n.\n b", "a\r\n.\n b", "a\r.\r b", "a\r\n.\r b",
		"a\n.\r\n b", "a\r\n.\rX\r\n", "\r\r\n\n..\r\n", strings.Repeat("x", 9000) + "\r\n.." + strings.Repeat("y", 5000),
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte(".\r\n\r\nab")
	for k := 0; k < 400; k++ {
		b := make([]byte, rng.IntN(300))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	sources := []func(io.Reader) io.Reader{
		func(r io.Reader) io.Reader { return r },
		iotest.OneByteReader,
		iotest.HalfReader,
	}
	for i, payload := range cases {
		in := []byte(payload)
		if i%2 == 1 {
			in = append(in, "\r\n.\r\n"...) // ended, most of the time
		}
		want, ended := unstuffBytes(in)
		src := sources[i%len(sources)](bytes.NewReader(in))
		r := &dataReader{r: bufio.NewReaderSize(src, 16)}
		chunk := []int{1, 2, 3, 7, 64, 4096}[i%6]
		var got []byte
		buf := make([]byte, chunk)
		var err error
		for err == nil {
			var n int
			n, err = r.Read(buf)
			got = append(got, buf[:n]...)
		}
		if ended && err != io.EOF || !ended && err != io.ErrUnexpectedEOF {
			t.Fatalf("case %d: payload %q: read error %v, ended %v", i, payload, err, ended)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("case %d (reads of %d): payload %q\nread %q\nwant %q", i, chunk, payload, got, want)
		}
	}
}
