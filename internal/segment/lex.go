package segment

import (
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// tokKind is what a token is.
type tokKind uint8

const (
	tEOF    tokKind = iota
	tWord           // an identifier or a keyword
	tName           // a name between backticks (val is the name)
	tString         // a double-quoted string (val is its decoded text)
	tNumber         // -?[0-9]+(\.[0-9]+)?
	tDate           // YYYY-MM-DD
	tSymbol         // ( ) , = != < <= > >=
)

// token is one token of an expression: its kind, its byte offset, its
// source text and, for a string, its decoded value.
type token struct {
	kind tokKind
	pos  int
	text string
	val  string
}

// found describes a token for an error message.
func (t token) found() string {
	switch t.kind {
	case tEOF:
		return "end of input"
	case tString:
		return quote(t.val)
	case tNumber, tDate:
		return t.text
	}
	return strconv.Quote(t.text)
}

// quote quotes s as a value, cut to 40 characters.
func quote(s string) string {
	if utf8.RuneCountInString(s) > 40 {
		s = string([]rune(s)[:39]) + "…"
	}
	return strconv.Quote(s)
}

// lexer reads an expression's tokens one at a time, so an error is the
// first one in the text.
type lexer struct {
	s   string
	pos int
}

// errAt is an error at byte offset pos of the expression.
func errAt(pos int, format string, args ...any) error {
	return fmt.Errorf("segment: at %d: %s", pos, fmt.Sprintf(format, args...))
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isWordStart and isWordRune are what a word is made of, as a Go
// identifier: a letter or "_", then letters, digits and "_".
func isWordStart(r rune) bool { return r == '_' || unicode.IsLetter(r) }
func isWordRune(r rune) bool  { return isWordStart(r) || unicode.IsDigit(r) }

// lowerASCII is word in lower case when it is ASCII, else word as it is.
// Keywords and built-in fields are ASCII and no other letter spells one:
// strings.EqualFold would take "ſ" for "s", strings.ToLower the Kelvin
// sign for "k".
func lowerASCII(word string) string {
	for i := 0; i < len(word); i++ {
		if word[i] >= utf8.RuneSelf {
			return word
		}
	}
	return strings.ToLower(word)
}

// wordEnd is the end of the run of word runes (and of more, if also
// says so) from byte offset i.
func (l *lexer) wordEnd(i int, also func(rune) bool) int {
	for i < len(l.s) {
		r, n := utf8.DecodeRuneInString(l.s[i:])
		if !isWordRune(r) && (also == nil || !also(r)) {
			break
		}
		i += n
	}
	return i
}

// next returns the next token.
func (l *lexer) next() (token, error) {
	for l.pos < len(l.s) && strings.IndexByte(" \t\r\n", l.s[l.pos]) >= 0 {
		l.pos++
	}
	start := l.pos
	if start == len(l.s) {
		return token{kind: tEOF, pos: start}, nil
	}
	c := l.s[start]
	r, n := utf8.DecodeRuneInString(l.s[start:])
	switch {
	case isWordStart(r):
		l.pos = l.wordEnd(start+n, nil)
		return token{kind: tWord, pos: start, text: l.s[start:l.pos]}, nil
	case isDigit(c) || c == '-' && start+1 < len(l.s) && isDigit(l.s[start+1]):
		return l.number()
	case c == '"':
		return l.str()
	case c == '`':
		return l.name()
	case c == '(' || c == ')' || c == ',' || c == '=':
		l.pos++
	case c == '!' || c == '<' || c == '>':
		l.pos++
		if l.pos < len(l.s) && l.s[l.pos] == '=' {
			l.pos++
		} else if c == '!' {
			return token{}, errAt(start, `unexpected character "!" (not equal is "!=", negation "not")`)
		}
	default:
		if r == utf8.RuneError && n == 1 {
			return token{}, errAt(start, "invalid UTF-8")
		}
		q := strconv.QuoteRune(r)
		if unicode.Is(unicode.M, r) { // a combining mark would sit on the quote
			q = strconv.QuoteRuneToASCII(r)
		}
		if prev, _ := utf8.DecodeLastRuneInString(l.s[:start]); isWordRune(prev) {
			return token{}, errAt(start, "unexpected character %s (a name with characters other than letters, digits and _ goes between backticks)", q)
		}
		return token{}, errAt(start, "unexpected character %s", q)
	}
	return token{kind: tSymbol, pos: start, text: l.s[start:l.pos]}, nil
}

// number reads a number or a date.
func (l *lexer) number() (token, error) {
	start := l.pos
	if l.s[l.pos] == '-' {
		l.pos++
	}
	l.digits()
	kind := tNumber
	switch rest := l.s[l.pos:]; {
	case l.pos-start == 4 && len(rest) >= 6 && rest[0] == '-' && isDigit(rest[1]) && isDigit(rest[2]) && rest[3] == '-' && isDigit(rest[4]) && isDigit(rest[5]):
		kind = tDate
		l.pos += 6
	case len(rest) >= 2 && rest[0] == '.' && isDigit(rest[1]):
		l.pos++
		l.digits()
	}
	if end := l.wordEnd(l.pos, func(r rune) bool { return r == '.' || r == '-' }); end > l.pos {
		return token{}, errAt(start, "malformed number or date %q", l.s[start:end])
	}
	t := token{kind: kind, pos: start, text: l.s[start:l.pos]}
	if kind == tDate {
		if _, err := time.Parse(time.DateOnly, t.text); err != nil {
			return token{}, errAt(start, "invalid date %s", t.text)
		}
	}
	return t, nil
}

func (l *lexer) digits() {
	for l.pos < len(l.s) && isDigit(l.s[l.pos]) {
		l.pos++
	}
}

// str reads a double-quoted string: UTF-8, no control characters, the
// escapes \" and \\ only.
func (l *lexer) str() (token, error) {
	start := l.pos
	var b strings.Builder
	i := start + 1
	for {
		if i >= len(l.s) {
			return token{}, errAt(start, "unterminated string")
		}
		c := l.s[i]
		switch {
		case c == '"':
			l.pos = i + 1
			return token{kind: tString, pos: start, text: l.s[start:l.pos], val: b.String()}, nil
		case c == '\\':
			if i+1 >= len(l.s) || l.s[i+1] != '"' && l.s[i+1] != '\\' {
				return token{}, errAt(i, `unknown escape in a string (only \" and \\)`)
			}
			b.WriteByte(l.s[i+1])
			i += 2
		case c < 0x20 || c == 0x7f:
			return token{}, errAt(i, "control character 0x%02x in a string", c)
		case c < utf8.RuneSelf:
			b.WriteByte(c)
			i++
		default:
			r, n := utf8.DecodeRuneInString(l.s[i:])
			if r == utf8.RuneError && n == 1 {
				return token{}, errAt(i, "invalid UTF-8 in a string")
			}
			b.WriteString(l.s[i : i+n])
			i += n
		}
	}
}

// name reads a name between backticks: 1 to maxName bytes of UTF-8
// without control characters, backticks, double quotes or backslashes
// (so it goes into SQLite's JSON path $."name" as it is).
func (l *lexer) name() (token, error) {
	start := l.pos
	end := strings.IndexByte(l.s[start+1:], '`')
	if end < 0 {
		return token{}, errAt(start, "unterminated name between backticks")
	}
	end += start + 1
	for i := start + 1; i < end; {
		r, n := utf8.DecodeRuneInString(l.s[i:end])
		switch {
		case r == utf8.RuneError && n == 1:
			return token{}, errAt(i, "invalid UTF-8 in a name between backticks")
		case unicode.IsControl(r) && r < utf8.RuneSelf:
			return token{}, errAt(i, "control character 0x%02x in a name between backticks", r)
		case unicode.IsControl(r):
			return token{}, errAt(i, "control character %U in a name between backticks", r)
		case r == '"' || r == '\\':
			return token{}, errAt(i, "a name between backticks cannot hold %q", r)
		}
		i += n
	}
	if n := end - start - 1; n < 1 || n > maxName {
		return token{}, errAt(start, "a name between backticks is 1 to %d bytes long, not %d", maxName, n)
	}
	l.pos = end + 1
	return token{kind: tName, pos: start, text: l.s[start:l.pos], val: l.s[start+1 : end]}, nil
}
