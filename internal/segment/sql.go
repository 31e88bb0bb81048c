package segment

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Dialect is the SQL dialect an expression compiles to.
type Dialect int

// The dialects.
const (
	SQLite Dialect = iota
	PostgreSQL
)

// SQL returns a boolean SQL condition over the contacts table aliased
// alias (a constant of the caller's, an identifier) with bun-style "?"
// placeholders, and its args, in order. Attribute names, values and list
// ids are all args: nothing of the expression's text reaches the SQL
// text. listID resolves a list name to its id (the caller checks that the
// list is the account's); an error from it is returned as it is.
//
// The condition never evaluates to NULL, so NOT of it is its complement.
func (e *Expr) SQL(d Dialect, alias string, listID func(name string) (int64, error)) (where string, args []any, err error) {
	if d != SQLite && d != PostgreSQL {
		return "", nil, fmt.Errorf("segment: unknown dialect %d", d)
	}
	if !isAlias(alias) {
		return "", nil, fmt.Errorf("segment: table alias %q is not an identifier", alias)
	}
	if listID == nil {
		return "", nil, errors.New("segment: SQL needs a listID function")
	}
	c := &compiler{d: d, a: alias + ".", listID: listID, ids: map[string]int64{}}
	if err := c.node(e.root); err != nil {
		return "", nil, err
	}
	return c.b.String(), c.args, nil
}

// isAlias reports whether s is an ASCII identifier: [A-Za-z_][A-Za-z0-9_]*.
func isAlias(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= utf8.RuneSelf || !isWordStart(rune(c)) && (i == 0 || !isDigit(c)) {
			return false
		}
	}
	return s != ""
}

// compiler writes a tree as SQL.
type compiler struct {
	d      Dialect
	a      string // the alias and "."
	listID func(string) (int64, error)
	ids    map[string]int64 // listID's answers
	b      strings.Builder
	args   []any
}

func (c *compiler) w(sql string, args ...any) {
	c.b.WriteString(sql)
	c.args = append(c.args, args...)
}

func (c *compiler) node(n *node) error {
	switch n.kind {
	case kOr, kAnd:
		sep := " OR "
		if n.kind == kAnd {
			sep = " AND "
		}
		c.w("(")
		for i, k := range n.kids {
			if i > 0 {
				c.w(sep)
			}
			if err := c.node(k); err != nil {
				return err
			}
		}
		c.w(")")
	case kNot:
		c.w("NOT (")
		if err := c.node(n.kids[0]); err != nil {
			return err
		}
		c.w(")")
	case kCond:
		return c.cond(&n.c)
	}
	return nil
}

// cond writes one condition.
func (c *compiler) cond(k *cond) error {
	switch {
	case k.op == opList:
		name := k.vals[0].s
		id, ok := c.ids[name]
		if !ok {
			var err error
			if id, err = c.listID(name); err != nil {
				return err
			}
			c.ids[name] = id
		}
		c.w("EXISTS (SELECT 1 FROM contact_memberships m WHERE m.contact_id = "+c.a+"id AND m.list_id = ? AND m.status = 'subscribed')", id)
	case k.attr:
		c.w("COALESCE(")
		c.attr(k)
		c.w(", FALSE)")
	case k.field == fCreatedAt:
		c.createdAt(k)
	case k.field == fStatus:
		c.compare(c.column(fStatus), k.op, strs(k.vals, func(s string) string { return s }))
	case k.op == opExists && k.field == fName:
		c.w("(" + c.a + "name <> '')")
	default: // address, domain, name
		col := c.column(k.field)
		norm := strings.ToLower
		if k.field == fName {
			col = c.fold(col)
		} else if k.op == opEq || k.op == opNe || k.op == opIn {
			norm = asciiAddress
		}
		c.text(col, k.op, k.vals, norm)
	}
	return nil
}

// column is a built-in field's SQL (an address is stored in lower case).
func (c *compiler) column(field string) string {
	switch field {
	case fDomain:
		if c.d == PostgreSQL {
			return "regexp_replace(" + c.a + "address, '^.*@', '')"
		}
		// What follows the last "@": rtrim takes off every character
		// but "@" from the end.
		return "substr(" + c.a + "address, length(rtrim(" + c.a + "address, replace(" + c.a + "address, '@', ''))) + 1)"
	case fCreatedAt:
		return c.a + "created_at"
	}
	return c.a + field
}

// fold is sql in lower case (see the package comment for which letters).
func (c *compiler) fold(sql string) string {
	if c.d == PostgreSQL {
		return "translate(lower(" + sql + "), 'ÁÉÍÓÚÜÑ', 'áéíóúüñ')"
	}
	sql = "lower(" + sql + ")"
	for _, r := range "ÁÉÍÓÚÜÑ" {
		sql = "replace(" + sql + ", '" + string(r) + "', '" + strings.ToLower(string(r)) + "')"
	}
	return sql
}

// attr writes a condition on an attribute, which may be NULL (absent).
func (c *compiler) attr(k *cond) {
	v := c.extract(k.field)
	switch k.op {
	case opExists:
		c.w("COALESCE("+v.sql+", '') <> ''", v.args...)
	case opContains, opStarts, opEnds:
		c.text(c.fold(v.sql), k.op, k.vals, strings.ToLower, v.args...)
	case opLt, opLe, opGt, opGe:
		c.number(v, k.op, k.vals)
	default: // =, !=, in: strings as text, numbers as numbers
		var ss, ns []value
		for _, x := range k.vals {
			if x.kind == vNumber {
				ns = append(ns, x)
			} else {
				ss = append(ss, x)
			}
		}
		if len(ss) > 0 && len(ns) > 0 {
			c.w("(")
		}
		if len(ss) > 0 {
			c.text(c.fold(v.sql), k.op, ss, strings.ToLower, v.args...)
		}
		if len(ss) > 0 && len(ns) > 0 {
			c.w(" OR ")
		}
		if len(ns) > 0 {
			c.number(v, k.op, ns)
		}
		if len(ss) > 0 && len(ns) > 0 {
			c.w(")")
		}
	}
}

// fragment is SQL with its args.
type fragment struct {
	sql  string
	args []any
}

// extract is an attribute's value (NULL when absent), the name an arg.
func (c *compiler) extract(name string) fragment {
	if c.d == PostgreSQL {
		return fragment{"(" + c.a + "attrs->>?)", []any{name}}
	}
	// name has no '"' and no '\\' (Parse refuses them between backticks,
	// and a word has none): inside the quotes it needs no escaping and the
	// quoted label ends where name does.
	return fragment{"json_extract(" + c.a + "attrs, ?)", []any{`$."` + name + `"`}}
}

// text writes col op vals for strings, each value normalised by norm;
// pre are the args col needs.
func (c *compiler) text(col string, o op, vals []value, norm func(string) string, pre ...any) {
	switch o {
	case opContains, opStarts, opEnds:
		p := likeEscaper.Replace(strings.ToLower(vals[0].s))
		switch o {
		case opContains:
			p = "%" + p + "%"
		case opStarts:
			p += "%"
		case opEnds:
			p = "%" + p
		}
		c.w(col+" LIKE ? ESCAPE '!'", append(pre, p)...)
	default:
		c.compare(col, o, strs(vals, norm), pre...)
	}
}

// likeEscaper escapes LIKE's wildcards and its escape character "!".
var likeEscaper = strings.NewReplacer("!", "!!", "%", "!%", "_", "!_")

// compare writes col = ?, col <> ? or col IN (?, …); pre are col's args.
func (c *compiler) compare(col string, o op, vals []any, pre ...any) {
	switch o {
	case opEq:
		c.w(col+" = ?", append(pre, vals[0])...)
	case opNe:
		c.w(col+" <> ?", append(pre, vals[0])...)
	default:
		c.w(col+" IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(vals)), ", ")+")", append(pre, vals...)...)
	}
}

func strs(vals []value, norm func(string) string) []any {
	out := make([]any, len(vals))
	for i, v := range vals {
		out[i] = norm(v.s)
	}
	return out
}

// sqlOps are the comparison operators in SQL.
var sqlOps = map[op]string{opEq: "=", opNe: "<>", opLt: "<", opLe: "<=", opGt: ">", opGe: ">="}

// number writes a numeric comparison of v (a value that is not a number
// is NULL: it neither matches nor raises an error).
func (c *compiler) number(v fragment, o op, vals []value) {
	var num, cast string
	var args []any
	if c.d == PostgreSQL {
		num = "CASE WHEN " + v.sql + " ~ '^-{0,1}[0-9]+([.][0-9]+){0,1}$' THEN CAST(" + v.sql + " AS numeric) END"
		args = append(append(args, v.args...), v.args...)
		cast = "CAST(? AS numeric)"
	} else {
		// SQLite has no regular expressions: the first character is a
		// digit or a "-" and a digit, the others digits and at most one
		// dot, not the last.
		num = "CASE WHEN (" + v.sql + " GLOB '[0-9]*' OR " + v.sql + " GLOB '-[0-9]*') AND substr(" + v.sql + ", 2) NOT GLOB '*[^0-9.]*' AND " +
			v.sql + " NOT GLOB '*.*.*' AND " + v.sql + " NOT GLOB '*.' THEN CAST(" + v.sql + " AS REAL) END"
		for range 6 {
			args = append(args, v.args...)
		}
		cast = "CAST(? AS REAL)"
	}
	if o == opIn {
		c.w(num+" IN ("+strings.TrimSuffix(strings.Repeat(cast+", ", len(vals)), ", ")+")", append(args, strs(vals, ident)...)...)
		return
	}
	c.w(num+" "+sqlOps[o]+" "+cast, append(args, vals[0].s)...)
}

func ident(s string) string { return s }

// createdAt writes a comparison of created_at with a whole UTC day.
func (c *compiler) createdAt(k *cond) {
	day, _ := time.Parse(time.DateOnly, k.vals[0].s) // checked by Parse
	next := day.AddDate(0, 0, 1)
	col := c.column(fCreatedAt)
	switch k.op {
	case opEq:
		c.w("("+col+" >= ? AND "+col+" < ?)", day, next)
	case opNe:
		c.w("("+col+" < ? OR "+col+" >= ?)", day, next)
	case opLt:
		c.w(col+" < ?", day)
	case opLe:
		c.w(col+" < ?", next)
	case opGt:
		c.w(col+" >= ?", next)
	case opGe:
		c.w(col+" >= ?", day)
	}
}

// asciiAddress is an address or domain as contacts are stored: lower
// case, the domain in its IDNA A-label form.
func asciiAddress(s string) string {
	s = strings.ToLower(s)
	at := strings.LastIndexByte(s, '@')
	if ascii, err := idna.Lookup.ToASCII(s[at+1:]); err == nil {
		s = s[:at+1] + strings.ToLower(ascii)
	}
	return s
}
