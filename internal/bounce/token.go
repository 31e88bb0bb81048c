package bounce

import (
	"bytes"
	"slices"
	"strings"
)

// The tokens envios puts in its messages: the envelope sender
// b+TOKEN@domain (and so Return-Path), the unsubscribe mailto u+TOKEN@host
// and the one-click URL https://host/u/TOKEN. A token (internal/rcpttoken)
// is the recipient row's id in base 36 (at most 13 characters), "-", and
// 80 bits of HMAC in RFC 4648 base32 without padding (16 characters), in
// any case.
const (
	maxTokenID = 13
	tokenMAC   = 16
	maxTokens  = 32 // kept from one message
)

// findTokens returns the candidate tokens of b, lower-cased, in order of
// appearance, without repeats. The caller checks each one's HMAC. It is a
// hand-written scan: a regular expression over a whole message costs ten
// times as much.
func findTokens(b []byte) []string {
	var out []string
	for i := 0; i < len(b) && len(out) < maxTokens; {
		j := bytes.IndexAny(b[i:], "+/")
		if j < 0 {
			break
		}
		i += j
		var t []byte
		switch b[i] {
		case '+':
			t = plusToken(b, i)
		case '/':
			t = pathToken(b, i)
		}
		i++
		if t == nil {
			continue
		}
		if s := strings.ToLower(string(t)); !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// plusToken reads "b+TOKEN@" or "u+TOKEN@" around the '+' at b[i]: the
// letter must start a local part and the token must end at the '@'.
func plusToken(b []byte, i int) []byte {
	if i == 0 || (b[i-1]|0x20 != 'b' && b[i-1]|0x20 != 'u') || (i >= 2 && localPartChar(b[i-2])) {
		return nil
	}
	n := tokenRun(b[i+1:])
	if n == 0 || i+1+n >= len(b) || b[i+1+n] != '@' {
		return nil
	}
	return b[i+1 : i+1+n]
}

// pathToken reads "/u/TOKEN" at the '/' at b[i]; the token must end the
// path segment, and not at a quoted-printable soft break ("=\n").
func pathToken(b []byte, i int) []byte {
	if i+3 > len(b) || b[i+1]|0x20 != 'u' || b[i+2] != '/' {
		return nil
	}
	n := tokenRun(b[i+3:])
	if n == 0 {
		return nil
	}
	if end := i + 3 + n; end < len(b) && (alnum(b[end]) || b[end] == '=' || b[end] == '-') {
		return nil
	}
	return b[i+3 : i+3+n]
}

// tokenRun is the length of the token shape ID-MAC at the start of b (1–13
// base-36 characters, "-", 16 base32 characters: a-z, A-Z, 2-7), or 0.
// The caller checks what follows it.
func tokenRun(b []byte) int {
	n := 0
	for n < len(b) && n <= maxTokenID && alnum(b[n]) {
		n++
	}
	if n == 0 || n > maxTokenID || n >= len(b) || b[n] != '-' {
		return 0
	}
	n++
	for k := 0; k < tokenMAC; k, n = k+1, n+1 {
		if n >= len(b) {
			return 0
		}
		c := b[n] | 0x20
		if !(c >= 'a' && c <= 'z' || b[n] >= '2' && b[n] <= '7') {
			return 0
		}
	}
	return n
}

// alnum reports whether c is an ASCII letter or digit.
func alnum(c byte) bool {
	return c >= '0' && c <= '9' || c|0x20 >= 'a' && c|0x20 <= 'z'
}

// localPartChar reports whether c can precede "b+" inside a longer local
// part ("bob+x@"), which would make it no envios address.
func localPartChar(c byte) bool {
	return alnum(c) || strings.IndexByte("._%+-", c) >= 0
}

// tokenText is what findTokens searches in a returned part: for a whole
// message, its header and its body with the transfer encoding undone (a
// quoted-printable soft break would cut a token in two); headers alone as
// they are.
func tokenText(ret []byte, ctype string) []byte {
	if ctype != "message/rfc822" && ctype != "message/global" {
		return ret
	}
	h, body, _ := parseHeader(ret)
	dec := decodeBody(h.get("content-transfer-encoding"), body)
	out := make([]byte, 0, len(ret)+len(dec)+1)
	out = append(out, ret[:len(ret)-len(body)]...)
	out = append(out, '\n')
	return append(out, dec...)
}
