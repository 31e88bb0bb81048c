package csvin

import (
	"bytes"
	"io"
	"unicode/utf8"

	"golang.org/x/text/encoding/charmap"
)

const (
	// bufSize is the read buffer and the sniffed prefix: 64 KiB.
	bufSize = 64 << 10
	// maxLine is the longest physical line (decoded or not) kept whole;
	// a longer one is cut here and rejected.
	maxLine = 1 << 20
	// maxRecord bounds the text of one record spread over several lines
	// (a quoted field that is never closed stops here).
	maxRecord = 1 << 20
	// maxEmptyReads is how many (0, nil) reads in a row count as a stuck
	// reader, as in bufio.
	maxEmptyReads = 100
)

// lineReader cuts its source into physical lines. A line ends at "\n",
// "\r\n" or a lone "\r" (old Mac Excel). It holds at most bufSize bytes of
// look-ahead plus one long line of at most maxLine bytes.
type lineReader struct {
	src      io.Reader
	buf      []byte // len(buf) == bufSize
	r, w     int    // unread bytes are buf[r:w]
	nl       int    // index of the next '\n' in buf[r:w]; -1: none there; -2: not searched
	eof      bool   // src is exhausted (or failed: see err)
	err      error  // a read error other than io.EOF, returned once the buffer is drained
	consumed int64  // bytes handed out as lines, terminators included
	lines    int    // physical lines handed out
	long     []byte // a line longer than the buffer, being assembled
	inLong   bool   // long holds the start of the current line
	cut      bool   // the current long line went past maxLine
}

func newLineReader(src io.Reader) *lineReader {
	return &lineReader{src: src, buf: make([]byte, bufSize), nl: -2}
}

// fill moves the unread bytes to the front of the buffer and reads more
// until at least one byte arrives, the buffer is full, or the source ends.
func (lr *lineReader) fill() {
	if lr.r > 0 {
		n := copy(lr.buf, lr.buf[lr.r:lr.w])
		lr.w, lr.r = n, 0
	}
	lr.nl = -2
	for empty := 0; !lr.eof && lr.w < len(lr.buf); {
		n, err := lr.src.Read(lr.buf[lr.w:])
		if n < 0 || n > len(lr.buf)-lr.w {
			n, err = 0, io.ErrShortBuffer
		}
		lr.w += n
		switch {
		case err == io.EOF:
			lr.eof = true
		case err != nil:
			lr.eof, lr.err = true, err
		case n > 0:
			return
		default:
			if empty++; empty >= maxEmptyReads {
				lr.eof, lr.err = true, io.ErrNoProgress
			}
		}
	}
}

// prefix fills the buffer as far as it goes (for sniffing) and returns the
// unread bytes, which stay unread, and whether they are all there is.
func (lr *lineReader) prefix() ([]byte, bool) {
	for !lr.eof && lr.w-lr.r < len(lr.buf) {
		lr.fill()
	}
	return lr.buf[lr.r:lr.w], lr.eof
}

// skip drops n bytes of the prefix (a BOM); they count as consumed.
func (lr *lineReader) skip(n int) {
	lr.r += n
	lr.consumed += int64(n)
	lr.nl = -2
}

// next returns the next physical line without its terminator; the slice is
// valid until the following call. cut reports a line longer than maxLine,
// of which only the first maxLine bytes are returned. err is io.EOF after
// the last line, or the source's read error.
func (lr *lineReader) next() (line []byte, cut bool, err error) {
	for {
		if lr.nl == -2 {
			lr.nl = -1
			if i := bytes.IndexByte(lr.buf[lr.r:lr.w], '\n'); i >= 0 {
				lr.nl = lr.r + i
			}
		}
		end := lr.w
		if lr.nl >= 0 {
			end = lr.nl
		}
		if i := bytes.IndexByte(lr.buf[lr.r:end], '\r'); i >= 0 {
			cr := lr.r + i
			if cr+1 < lr.w || lr.eof {
				term := 1
				if cr+1 < lr.w && lr.buf[cr+1] == '\n' {
					term = 2
				}
				return lr.take(cr, term)
			}
		} else if lr.nl >= 0 {
			return lr.take(lr.nl, 1)
		} else if lr.eof {
			switch {
			case lr.err != nil:
				return nil, false, lr.err // a line cut by a failed read is not handed out
			case lr.r == lr.w && !lr.inLong:
				return nil, false, io.EOF
			}
			return lr.take(lr.w, 0)
		}
		// No complete line in the buffer: read more, first setting aside
		// the start of a line that fills the whole buffer.
		if lr.r == 0 && lr.w == len(lr.buf) {
			keep := lr.w
			if lr.buf[keep-1] == '\r' {
				keep-- // it may be the first half of a CRLF
			}
			lr.hold(lr.buf[:keep])
			lr.r = keep
		}
		lr.fill()
	}
}

// hold appends part of an overlong line to lr.long, up to maxLine bytes.
func (lr *lineReader) hold(p []byte) {
	lr.inLong = true
	lr.consumed += int64(len(p))
	if room := maxLine - len(lr.long); len(p) > room {
		p, lr.cut = p[:room], true
	}
	lr.long = append(lr.long, p...)
}

// take hands out buf[r:end] as a line followed by a terminator of term bytes.
func (lr *lineReader) take(end, term int) ([]byte, bool, error) {
	line := lr.buf[lr.r:end]
	lr.consumed += int64(end - lr.r + term)
	lr.r = end + term
	if lr.nl >= 0 && lr.nl < lr.r {
		lr.nl = -2
	}
	lr.lines++
	if !lr.inLong {
		return line, false, nil
	}
	lr.consumed -= int64(len(line)) // hold counts it again
	lr.hold(line)
	line, cut := lr.long, lr.cut
	lr.long, lr.inLong, lr.cut = lr.long[:0], false, false
	return line, cut, nil
}

// decoder turns the bytes of a line into valid UTF-8.
type decoder struct {
	cp1252 bool   // every byte ≥ 0x80 is a Windows-1252 character
	out    []byte // reused output buffer
}

// decode returns line as UTF-8: in Windows-1252 mode every byte ≥ 0x80 is
// mapped; otherwise valid UTF-8 is kept and each byte of an invalid
// sequence is read as Windows-1252 (a file that is ASCII in its sniffed
// prefix and Windows-1252 after it still reads "Peña" correctly). The
// result may alias line or the decoder's buffer.
func (d *decoder) decode(line []byte) []byte {
	if d.cp1252 {
		if isASCII(line) {
			return line
		}
	} else if utf8.Valid(line) {
		return line
	}
	out := d.out[:0]
	for i := 0; i < len(line); {
		c := line[i]
		if c < utf8.RuneSelf {
			out = append(out, c)
			i++
			continue
		}
		if !d.cp1252 {
			if r, n := utf8.DecodeRune(line[i:]); r != utf8.RuneError || n > 1 {
				out = append(out, line[i:i+n]...)
				i += n
				continue
			}
		}
		out = utf8.AppendRune(out, charmap.Windows1252.DecodeByte(c))
		i++
	}
	d.out = out
	return out
}

// isASCII reports whether p has no byte ≥ 0x80, eight bytes at a time.
func isASCII(p []byte) bool {
	for len(p) >= 8 {
		if (uint64(p[0])|uint64(p[1])<<8|uint64(p[2])<<16|uint64(p[3])<<24|
			uint64(p[4])<<32|uint64(p[5])<<40|uint64(p[6])<<48|uint64(p[7])<<56)&0x8080808080808080 != 0 {
			return false
		}
		p = p[8:]
	}
	for _, c := range p {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}
