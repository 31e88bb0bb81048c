// Package segment parses the filter expressions that pick an account's
// contacts (a saved segment, a campaign's audience) and compiles them to a
// SQL condition whose every user-given part — attribute names, values,
// list ids — is a bun "?" argument, never SQL text.
//
// The grammar, keywords case-insensitive:
//
//	expr    := or
//	or      := and ( "or" and )*
//	and     := unary ( "and" unary )*
//	unary   := "not" unary | "(" expr ")" | cond
//	cond    := field op value
//	         | field "in" "(" value ("," value)* ")"
//	         | field "exists"
//	         | "list" string
//	field   := word | "`" name "`"
//	word    := ( letter | "_" ) ( letter | digit | "_" )*
//	name    := 1 to 200 bytes of UTF-8 but "`", a double quote, a backslash and control characters
//	op      := "=" | "!=" | "<" | "<=" | ">" | ">=" | "contains" | "starts" | "ends"
//	value   := string | number | date
//
// where a letter and a digit are Unicode's (unicode.IsLetter,
// unicode.IsDigit), as in a Go identifier. For example
//
//	Región = "Lima" and (cargo contains "director" or list "boletín") and `Fecha de alta` starts "2026"
//
// A field is one of the built-ins address, name, domain (the address after
// its last "@"), status and created_at, or else the name of an attribute,
// exactly as the contacts file's column header spelled it (attribute names
// are case-sensitive). A word that spells a built-in or a keyword — and,
// or, not, in, exists, contains, starts, ends, list — in any ASCII case is
// that built-in or keyword, never an attribute; a name between backticks
// is always an attribute's, so `name`, `Status` and `and` are the
// attributes so called, and `Fecha de alta` one whose name has spaces. A
// string is double-quoted UTF-8 with the escapes \" and \\ and no control
// characters; a number is -?[0-9]+(\.[0-9]+)?; a date is YYYY-MM-DD.
//
// Semantics:
//   - =, != and in with strings compare case-insensitively, as do
//     contains, starts and ends (a LIKE with % and _ taken literally).
//     Case folding covers ASCII and the Spanish letters ÁÉÍÓÚÜÑ on every
//     engine; PostgreSQL folds other letters too, SQLite does not.
//   - =, !=, in, <, <=, > and >= with a number compare numerically; a
//     value that is not a number (by the grammar's definition: "1,5",
//     " 3" and "1e3" are not) does not match.
//   - An attribute a contact lacks (or has empty) makes every condition
//     on it false, so x != "a" does not match contacts without x, and
//     not x = "a" does. x exists is true when x is present and non-empty.
//   - created_at takes dates, each the whole UTC day: created_at =
//     2026-12-01 is that day, created_at < 2026-12-01 before it began,
//     created_at <= 2026-12-01 up to its end, > after its end.
//   - status takes active, unsubscribed or blocklisted (=, != and in).
//   - list "x" is true for a contact subscribed to the account's list x.
//   - and binds tighter than or; not tighter than both.
//
// Limits: an expression (and its canonical form) of at most 4096 bytes,
// parentheses and nots nested at most 32 deep, at most 64 conditions.
// Errors name the byte offset: segment: at 17: expected a value after
// "=", found "and".
package segment

import (
	"slices"
	"strings"
)

// The limits of an expression.
const (
	maxLen   = 4096
	maxDepth = 32
	maxConds = 64
	maxName  = 200 // bytes of a name between backticks
)

// Expr is a parsed, fully validated expression.
type Expr struct {
	root *node
}

// kind is what a node of the tree is.
type kind uint8

const (
	kOr   kind = iota // kids: two or more, none an or
	kAnd              // kids: two or more, none an and
	kNot              // kids: one
	kCond             // c
)

type node struct {
	kind kind
	kids []*node
	c    cond
}

// op is a condition's operator.
type op uint8

const (
	opEq op = iota
	opNe
	opLt
	opLe
	opGt
	opGe
	opContains
	opStarts
	opEnds
	opIn
	opExists
	opList
)

// opNames are the operators as written.
var opNames = [...]string{opEq: "=", opNe: "!=", opLt: "<", opLe: "<=", opGt: ">", opGe: ">=", opContains: "contains",
	opStarts: "starts", opEnds: "ends", opIn: "in", opExists: "exists", opList: "list"}

func (o op) String() string { return opNames[o] }

// cond is one condition: field op vals. A built-in field is held in lower
// case, an attribute's name as written (without backticks); list has no
// field and its one value is the list's name.
type cond struct {
	field string
	attr  bool // field is an attribute's name, not a built-in
	op    op
	vals  []value
}

// builtin is the condition's built-in field, or "" (an attribute, a list).
func (c *cond) builtin() string {
	if c.attr {
		return ""
	}
	return c.field
}

// name is the field as String writes it: a built-in, or an attribute's
// name bare when it is a word that is no keyword or built-in, else
// between backticks.
func (c *cond) name() string {
	if !c.attr || bare(c.field) {
		return c.field
	}
	return "`" + c.field + "`"
}

// bare reports whether Parse reads name, unquoted, as the attribute name.
func bare(name string) bool {
	if w := lowerASCII(name); keywords[w] || builtin(w) {
		return false
	}
	for i, r := range name {
		if !isWordRune(r) || i == 0 && !isWordStart(r) {
			return false
		}
	}
	return name != ""
}

// valKind is what a value is.
type valKind uint8

const (
	vString valKind = iota
	vNumber
	vDate
)

// value is a value as written (a string decoded; a status in lower case).
type value struct {
	kind valKind
	s    string
}

// The built-in fields.
const (
	fAddress   = "address"
	fName      = "name"
	fDomain    = "domain"
	fStatus    = "status"
	fCreatedAt = "created_at"
)

func builtin(field string) bool {
	switch field {
	case fAddress, fName, fDomain, fStatus, fCreatedAt:
		return true
	}
	return false
}

// keywords cannot name a field.
var keywords = map[string]bool{"and": true, "or": true, "not": true, "in": true, "exists": true, "contains": true,
	"starts": true, "ends": true, "list": true}

// String returns the expression's canonical form: keywords and built-in
// fields in lower case, attribute names between backticks only where
// needed, single spaces, parentheses only where needed. Parse(e.String())
// gives the same expression.
func (e *Expr) String() string {
	var b strings.Builder
	e.root.write(&b)
	return b.String()
}

func (n *node) write(b *strings.Builder) {
	switch n.kind {
	case kOr, kAnd:
		sep := " or "
		if n.kind == kAnd {
			sep = " and "
		}
		for i, k := range n.kids {
			if i > 0 {
				b.WriteString(sep)
			}
			k.writeIn(b, n.kind == kAnd && k.kind == kOr)
		}
	case kNot:
		b.WriteString("not ")
		k := n.kids[0]
		k.writeIn(b, k.kind == kOr || k.kind == kAnd)
	case kCond:
		n.c.write(b)
	}
}

func (n *node) writeIn(b *strings.Builder, parens bool) {
	if parens {
		b.WriteByte('(')
	}
	n.write(b)
	if parens {
		b.WriteByte(')')
	}
}

func (c *cond) write(b *strings.Builder) {
	switch c.op {
	case opList:
		b.WriteString("list ")
		c.vals[0].write(b)
		return
	case opExists:
		b.WriteString(c.name() + " exists")
		return
	}
	b.WriteString(c.name() + " " + c.op.String() + " ")
	if c.op != opIn {
		c.vals[0].write(b)
		return
	}
	b.WriteByte('(')
	for i, v := range c.vals {
		if i > 0 {
			b.WriteString(", ")
		}
		v.write(b)
	}
	b.WriteByte(')')
}

func (v value) write(b *strings.Builder) {
	if v.kind != vString {
		b.WriteString(v.s)
		return
	}
	b.WriteByte('"')
	for i := 0; i < len(v.s); i++ {
		if c := v.s[i]; c == '"' || c == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(v.s[i])
	}
	b.WriteByte('"')
}

// Attributes returns the names of the attributes the expression refers
// to (as the contacts' keys: without backticks), sorted and unique; the
// built-in fields are not among them.
func (e *Expr) Attributes() []string {
	return e.collect(func(c *cond) string {
		if !c.attr {
			return ""
		}
		return c.field
	})
}

// Lists returns the names of the lists the expression refers to, sorted
// and unique.
func (e *Expr) Lists() []string {
	return e.collect(func(c *cond) string {
		if c.op != opList {
			return ""
		}
		return c.vals[0].s
	})
}

func (e *Expr) collect(pick func(*cond) string) []string {
	var out []string
	var walk func(n *node)
	walk = func(n *node) {
		if n.kind == kCond {
			if s := pick(&n.c); s != "" {
				out = append(out, s)
			}
		}
		for _, k := range n.kids {
			walk(k)
		}
	}
	walk(e.root)
	slices.Sort(out)
	return slices.Compact(out)
}
