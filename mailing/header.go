package mailing

import (
	"bytes"
	"fmt"
	"strings"
)

// field is one header field of a submitted message, as received: Name as
// written, Raw the whole field with its folded lines and final CRLF.
type field struct {
	Name string
	Raw  []byte
}

// Value is the field's unfolded value, trimmed (RFC 5322 §2.2.3).
func (f field) Value() string {
	v := f.Raw[len(f.Name)+1:]
	v = bytes.ReplaceAll(v, []byte("\r\n"), nil)
	return strings.TrimSpace(string(v))
}

// splitHeader splits a CRLF message into its header fields and its body
// (what follows the empty line; nil when there is none). It refuses bare CR
// or LF, NUL, lines that are neither a field nor a continuation, and field
// names outside RFC 5322's printable ASCII.
func splitHeader(msg []byte) ([]field, []byte, error) {
	var fields []field
	rest := msg
	for line := 1; ; line++ {
		if len(rest) == 0 {
			return fields, nil, nil // a message that is all header
		}
		i := bytes.Index(rest, []byte("\r\n"))
		if i < 0 {
			return nil, nil, contentErr("message", "header line %d does not end with CRLF", line)
		}
		l := rest[:i]
		if bytes.IndexByte(l, '\r') >= 0 || bytes.IndexByte(l, '\n') >= 0 || bytes.IndexByte(l, 0) >= 0 {
			return nil, nil, contentErr("message", "header line %d has a bare CR, LF or NUL", line)
		}
		if len(l) == 0 {
			return fields, rest[2:], nil
		}
		if l[0] == ' ' || l[0] == '\t' {
			if len(fields) == 0 {
				return nil, nil, contentErr("message", "header line %d continues no field", line)
			}
			f := &fields[len(fields)-1]
			f.Raw = f.Raw[:len(f.Raw):len(f.Raw)] // never write into msg
			f.Raw = append(f.Raw, rest[:i+2]...)
			rest = rest[i+2:]
			continue
		}
		colon := bytes.IndexByte(l, ':')
		if colon <= 0 {
			return nil, nil, contentErr("message", "header line %d is not a field (name: value)", line)
		}
		name := l[:colon]
		for _, c := range name {
			if c < 33 || c > 126 {
				return nil, nil, contentErr("message", "header line %d has an invalid field name %q", line, name)
			}
		}
		fields = append(fields, field{Name: string(name), Raw: rest[: i+2 : i+2]})
		rest = rest[i+2:]
	}
}

// checkBody refuses bare CR, bare LF and NUL in a body.
func checkBody(body []byte) error {
	if bodyClean(body) {
		return nil
	}
	// Something is wrong: find the first offence to name it.
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '\r':
			if i+1 >= len(body) || body[i+1] != '\n' {
				return contentErr("message", "the body has a bare CR at byte %d", i)
			}
			i++
		case '\n':
			return contentErr("message", "the body has a bare LF at byte %d", i)
		case 0:
			return contentErr("message", "the body has a NUL at byte %d", i)
		}
	}
	return nil
}

// bodyClean reports whether body has no NUL and every CR and LF in it is
// a CRLF pair, with counts the runtime makes in vector instructions (a
// byte-at-a-time loop over a 140 KB message with an attachment took
// 150 µs): the pairs are disjoint, so when there are as many as CRs and as
// many as LFs, no CR and no LF stands alone.
func bodyClean(body []byte) bool {
	if bytes.IndexByte(body, 0) >= 0 {
		return false
	}
	cr := bytes.Count(body, []byte{'\r'})
	return cr == bytes.Count(body, []byte{'\n'}) && cr == bytes.Count(body, []byte("\r\n"))
}

func fieldsNamed(fields []field, name string) []field {
	var out []field
	for _, f := range fields {
		if strings.EqualFold(f.Name, name) {
			out = append(out, f)
		}
	}
	return out
}

// single returns the one field called name ("" if absent) and refuses
// several.
func single(fields []field, name string) (string, bool, error) {
	fs := fieldsNamed(fields, name)
	switch len(fs) {
	case 0:
		return "", false, nil
	case 1:
		return fs[0].Value(), true, nil
	}
	return "", false, contentErr("message", "the message has %d %s fields; at most one is allowed", len(fs), name)
}

func joinFields(fields []field) []byte {
	return appendFields(make([]byte, 0, fieldsSize(fields)), fields)
}

// fieldsSize is the length of the fields written out.
func fieldsSize(fields []field) int {
	n := 0
	for _, f := range fields {
		n += len(f.Raw)
	}
	return n
}

// appendFields writes the fields out after b.
func appendFields(b []byte, fields []field) []byte {
	for _, f := range fields {
		b = append(b, f.Raw...)
	}
	return b
}

func newField(name, value string) field {
	return field{Name: name, Raw: fmt.Appendf(nil, "%s: %s\r\n", name, value)}
}
