package bounce

import (
	"bytes"
	"net/mail"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// fieldBlocks reads the body of a message/delivery-status or
// message/feedback-report part: blocks of header-style fields separated by
// blank lines. Continuations may be indented or, as some MTAs write them,
// not indented at all (a line that is no "Name: value" continues the last
// field). A new block also starts where a second Final-Recipient (or an
// Original-Recipient after one) shows a missing blank line.
func fieldBlocks(b []byte) []header {
	var blocks []header
	var cur header
	var fb fieldBuilder
	flush := func() {
		if cur = fb.done(cur); len(cur) > 0 && len(blocks) < maxGroups {
			blocks = append(blocks, cur)
		}
		cur = nil
	}
	for len(b) > 0 {
		var line []byte
		line, b = nextLine(b)
		if len(bytes.TrimSpace(line)) == 0 {
			flush()
			continue
		}
		name, i := fieldName(line)
		if line[0] == ' ' || line[0] == '\t' || i < 0 {
			fb.fold(line)
			continue
		}
		cur = fb.done(cur)
		if newGroup(cur, name) {
			flush()
		}
		cur = fb.start(cur, name, line[i+1:])
	}
	flush()
	return blocks
}

// maxGroups bounds the field blocks (recipient groups) read from one report.
const maxGroups = 500

// newGroup reports whether field name, arriving in block cur, must start
// a new recipient group: a second Final-Recipient, a second
// Original-Recipient, or an Original-Recipient after a complete group.
func newGroup(cur header, name string) bool {
	switch name {
	case "final-recipient":
		return cur.get("final-recipient") != ""
	case "original-recipient":
		return cur.get("original-recipient") != "" ||
			(cur.get("final-recipient") != "" && (cur.get("action") != "" || cur.get("status") != ""))
	}
	return false
}

// stripType drops the type of a typed field: "dns; mx.example.com" →
// "mx.example.com", "smtp; 550 …" → "550 …". A value whose first ";" does
// not follow a bare type word is returned trimmed.
func stripType(v string) string {
	v = strings.TrimSpace(v)
	i := strings.IndexByte(v, ';')
	if i <= 0 || i > 20 {
		return v
	}
	for _, c := range v[:i] {
		if !(c == '-' || c == '_' || c == '.' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z') {
			return v
		}
	}
	return strings.TrimSpace(v[i+1:])
}

// xtextRe matches RFC 6533 unitext escapes "\x{E9}".
var xtextRe = regexp.MustCompile(`\\x\{([0-9A-Fa-f]{1,6})\}`)

// normAddr normalises an address field: the type dropped, angle brackets
// and quotes stripped, RFC 6533 escapes read, the domain lower-cased (the
// local part keeps its case).
func normAddr(v string) string {
	v = stripType(v)
	if f := strings.Fields(v); len(f) > 0 {
		v = f[0]
		for _, w := range f {
			if strings.Contains(w, "@") {
				v = w
				break
			}
		}
	}
	v = strings.Trim(v, `<>"'`)
	v = strings.TrimRight(v, ".,;:")
	if strings.Contains(v, `\x{`) {
		v = xtextRe.ReplaceAllStringFunc(v, func(s string) string {
			n, err := strconv.ParseUint(s[3:len(s)-1], 16, 32)
			if err != nil || n > 0x10ffff {
				return s
			}
			return string(rune(n))
		})
	}
	if at := strings.LastIndexByte(v, '@'); at >= 0 {
		v = v[:at] + strings.ToLower(v[at:])
	}
	return v
}

// commentRe matches a trailing RFC 5322 comment such as "(PDT)".
var commentRe = regexp.MustCompile(`\s*\([^()]*\)\s*$`)

// dateLayouts are the non-RFC 5322 dates seen in reports.
var dateLayouts = []string{
	time.RFC3339,
	"Mon, 2 Jan 2006 15:04:05 MST",
	"Mon, 2 Jan 2006 15:04:05",
	"2 Jan 2006 15:04:05 -0700",
	"Mon Jan 2 15:04:05 2006",
	"Mon Jan 2 15:04:05 MST 2006",
}

// parseDate reads a report date, the zero time when it is absent or
// unreadable.
func parseDate(v string) time.Time {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}
	}
	if t, err := mail.ParseDate(v); err == nil {
		return t
	}
	v = commentRe.ReplaceAllString(v, "")
	if t, err := mail.ParseDate(v); err == nil {
		return t
	}
	for _, l := range dateLayouts {
		if t, err := time.Parse(l, v); err == nil {
			return t
		}
	}
	return time.Time{}
}
