package bounce

import (
	"regexp"
	"strconv"
	"strings"
)

// enhancedCode is a parsed RFC 3463 status code class.subject.detail.
type enhancedCode struct {
	class, subject, detail int
}

// String formats the code as "5.1.1".
func (e enhancedCode) String() string {
	return strconv.Itoa(e.class) + "." + strconv.Itoa(e.subject) + "." + strconv.Itoa(e.detail)
}

// generic reports whether the code carries no subject and detail (X.0.0).
func (e enhancedCode) generic() bool { return e.subject == 0 && e.detail == 0 }

// enhancedRe finds an RFC 3463 code inside free text: a class digit 2, 4 or
// 5, a subject and a detail of one to three digits, not part of a longer
// dotted number (IP addresses, version strings).
var enhancedRe = regexp.MustCompile(`(?:^|[^0-9.])([245])\.([0-9]{1,3})\.([0-9]{1,3})(?:[^0-9.]|\.(?:[^0-9]|$)|$)`)

// basicRe finds an RFC 5321 reply code inside free text: three digits
// starting with 2, 4 or 5, standing alone or followed by "-" (multi-line
// replies) and not part of a longer number or dotted quad.
var basicRe = regexp.MustCompile(`(?:^|[\s;:'"(\[#=])([245][0-5][0-9])(?:[ \t\-]|$)`)

// parseEnhanced reads a status field such as "5.0.0 (permanent failure)":
// the first code at its start, comments and trailing text ignored.
func parseEnhanced(s string) (enhancedCode, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return enhancedCode{}, false
	}
	end := strings.IndexAny(s, " \t(;,")
	if end < 0 {
		end = len(s)
	}
	f := strings.Split(s[:end], ".")
	if len(f) != 3 {
		return findEnhanced(s)
	}
	var n [3]int
	for i, p := range f {
		v, err := strconv.Atoi(p)
		if err != nil || len(p) == 0 || len(p) > 3 || v < 0 {
			return findEnhanced(s)
		}
		n[i] = v
	}
	if n[0] != 2 && n[0] != 4 && n[0] != 5 {
		return enhancedCode{}, false
	}
	return enhancedCode{n[0], n[1], n[2]}, true
}

// findEnhanced returns the most specific RFC 3463 code in text: the first
// one with a detail, else the first with a subject, else the first one.
func findEnhanced(text string) (enhancedCode, bool) {
	if len(text) > maxScan {
		text = text[:maxScan]
	}
	var first, withSubject enhancedCode
	var haveFirst, haveSubject bool
	rest := text
	for range 16 {
		m := enhancedRe.FindStringSubmatchIndex(rest)
		if m == nil {
			break
		}
		c, _ := strconv.Atoi(rest[m[2]:m[3]])
		s, _ := strconv.Atoi(rest[m[4]:m[5]])
		d, _ := strconv.Atoi(rest[m[6]:m[7]])
		e := enhancedCode{c, s, d}
		if d != 0 {
			return e, true
		}
		if !haveFirst {
			first, haveFirst = e, true
		}
		if s != 0 && !haveSubject {
			withSubject, haveSubject = e, true
		}
		rest = rest[m[7]:]
	}
	if haveSubject {
		return withSubject, true
	}
	return first, haveFirst
}

// findBasic returns the first RFC 5321 reply code in text, 0 if none.
func findBasic(text string) int {
	if len(text) > maxScan {
		text = text[:maxScan]
	}
	m := basicRe.FindStringSubmatch(text)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// maxScan bounds how much of a text the code finders look at.
const maxScan = 8 << 10
