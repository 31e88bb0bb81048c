package bounce

import (
	"bytes"
	"encoding/base64"
	"mime"
	"regexp"
	"strings"
)

// The MIME walk is hand-written rather than built on mime/multipart: that
// package stops at the first malformed boundary or header and gives no way
// to keep the parts read so far, and inbound bounces are often truncated,
// 8-bit, CR-only or missing their closing delimiter.

// Limits that keep a hostile message from costing more than its size.
const (
	maxDepth = 12  // nested multiparts
	maxParts = 256 // leaf parts in one message
)

// field is one header field: the lower-cased name and the unfolded value.
type field struct {
	name, value string
}

// header is a parsed header block, in order.
type header []field

// get returns the first value of the named (lower-case) field, "" if none.
func (h header) get(name string) string {
	for _, f := range h {
		if f.name == name {
			return f.value
		}
	}
	return ""
}

// all returns every value of the named (lower-case) field.
func (h header) all(name string) []string {
	var out []string
	for _, f := range h {
		if f.name == name {
			out = append(out, f.value)
		}
	}
	return out
}

// normalize turns CRLF and lone CR line ends into LF.
func normalize(b []byte) []byte {
	if bytes.IndexByte(b, '\r') < 0 {
		return b
	}
	b = bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(b, []byte("\r"), []byte("\n"))
}

// nextLine splits b at the first LF: the line without it, and the rest.
func nextLine(b []byte) (line, rest []byte) {
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		return b[:i], b[i+1:]
	}
	return b, nil
}

// fieldName returns the name of a header line "Name: value" and the index
// of its colon, or -1 when the line is not a header field.
func fieldName(line []byte) (string, int) {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return "", -1
	}
	name := bytes.TrimRight(line[:i], " \t")
	if len(name) == 0 {
		return "", -1
	}
	for _, c := range name {
		if c <= ' ' || c >= 0x7f {
			return "", -1
		}
	}
	return strings.ToLower(string(name)), i
}

// parseHeader reads a header block up to the first empty line. A line that
// is neither a field nor a continuation ends the block: it starts the body
// of a message that forgot its blank line. ok is false when b does not
// start with a header field at all.
func parseHeader(b []byte) (h header, body []byte, ok bool) {
	var fb fieldBuilder
	for len(b) > 0 {
		line, rest := nextLine(b)
		if len(line) == 0 {
			h = fb.done(h)
			return h, rest, len(h) > 0
		}
		if line[0] == ' ' || line[0] == '\t' {
			fb.fold(line)
			b = rest
			continue
		}
		name, i := fieldName(line)
		if i < 0 {
			h = fb.done(h)
			return h, b, len(h) > 0
		}
		h = fb.start(fb.done(h), name, line[i+1:])
		b = rest
	}
	h = fb.done(h)
	return h, nil, len(h) > 0
}

// maxValue bounds one unfolded field value; the rest of a longer one is
// dropped.
const maxValue = 16 << 10

// fieldBuilder unfolds the value of the last field of a header being read,
// in linear time however many continuation lines it has.
type fieldBuilder struct {
	name string
	buf  []byte
	open bool
}

// start finishes nothing (call done first) and opens field name.
func (fb *fieldBuilder) start(h header, name string, value []byte) header {
	fb.name, fb.open = name, true
	fb.buf = append(fb.buf[:0], bytes.TrimSpace(value)...)
	return h
}

// fold appends a continuation line to the open field with one space.
func (fb *fieldBuilder) fold(line []byte) {
	line = bytes.TrimSpace(line)
	if !fb.open || len(line) == 0 || len(fb.buf) >= maxValue {
		return
	}
	if len(fb.buf) > 0 {
		fb.buf = append(fb.buf, ' ')
	}
	fb.buf = append(fb.buf, line...)
}

// done appends the open field, if any, to h.
func (fb *fieldBuilder) done(h header) header {
	if !fb.open {
		return h
	}
	fb.open = false
	v := fb.buf
	if len(v) > maxValue {
		v = v[:maxValue]
	}
	return append(h, field{fb.name, string(v)})
}

// mediaType returns the lower-cased media type of a Content-Type value and
// its parameters, tolerating what mime.ParseMediaType refuses.
func mediaType(v string) (string, map[string]string) {
	if v == "" {
		return "text/plain", nil
	}
	if mt, params, err := mime.ParseMediaType(v); err == nil {
		return mt, params
	}
	mt := v
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = mt[:i]
	}
	mt = strings.ToLower(strings.TrimSpace(mt))
	params := map[string]string{}
	for _, m := range paramRe.FindAllStringSubmatch(v, 8) {
		k := strings.ToLower(m[1])
		if _, dup := params[k]; dup {
			continue
		}
		if m[2] != "" {
			params[k] = m[2]
		} else {
			params[k] = strings.TrimSpace(m[3])
		}
	}
	return mt, params
}

// paramRe reads "name=value" or name="value" parameters loosely.
var paramRe = regexp.MustCompile(`(?i);\s*([a-z0-9_\-*.]+)\s*=\s*(?:"([^"]*)"|([^;\s]*))`)

// part is one leaf of the MIME tree.
type part struct {
	header header
	ctype  string // lower-cased media type
	params map[string]string
	raw    []byte // the body as it stands, before transfer decoding
}

// decoded returns the body with its Content-Transfer-Encoding undone.
func (p *part) decoded() []byte {
	return decodeBody(p.header.get("content-transfer-encoding"), p.raw)
}

// decodeBody undoes base64 or quoted-printable, leniently; anything else
// (7bit, 8bit, binary, unknown) is returned as it is.
func decodeBody(cte string, b []byte) []byte {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		return decodeBase64(b)
	case "quoted-printable":
		return decodeQP(b)
	}
	return b
}

// decodeBase64 decodes what it can: characters outside the alphabet are
// skipped and a missing or broken tail is dropped.
func decodeBase64(b []byte) []byte {
	clean := make([]byte, 0, len(b))
	for _, c := range b {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			clean = append(clean, c)
		}
	}
	if len(clean)%4 == 1 {
		clean = clean[:len(clean)-1] // a lone sextet carries no byte
	}
	out := make([]byte, base64.RawStdEncoding.DecodedLen(len(clean)))
	n, _ := base64.RawStdEncoding.Decode(out, clean)
	return out[:n]
}

// decodeQP decodes quoted-printable; a malformed "=" escape is kept as is.
func decodeQP(b []byte) []byte {
	out := make([]byte, 0, len(b))
	for i := 0; i < len(b); i++ {
		c := b[i]
		if c != '=' {
			out = append(out, c)
			continue
		}
		if i+1 < len(b) && b[i+1] == '\n' { // soft line break
			i++
			continue
		}
		if i+2 < len(b) && unhex(b[i+1]) >= 0 && unhex(b[i+2]) >= 0 {
			out = append(out, byte(unhex(b[i+1])<<4|unhex(b[i+2])))
			i += 2
			continue
		}
		if j := i + 1; j < len(b) {
			// "=  \n": a soft break with trailing white space.
			k := j
			for k < len(b) && (b[k] == ' ' || b[k] == '\t') {
				k++
			}
			if k > j && k < len(b) && b[k] == '\n' {
				i = k
				continue
			}
		}
		out = append(out, c)
	}
	return out
}

// unhex returns the value of a hex digit, -1 for anything else.
func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
