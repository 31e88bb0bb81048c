package segment

import (
	"fmt"
	"slices"
	"strings"
)

// Parse parses and validates an expression: its syntax, its limits, and
// that every value suits its field and operator (a status is one of the
// three, created_at compares with dates, < with numbers…).
func Parse(s string) (*Expr, error) {
	if len(s) > maxLen {
		return nil, fmt.Errorf("segment: the expression is %d bytes long, more than %d", len(s), maxLen)
	}
	p := &parser{lx: lexer{s: s}}
	if err := p.advance(); err != nil {
		return nil, err
	}
	root, err := p.or()
	if err != nil {
		return nil, err
	}
	if p.tok.kind != tEOF {
		return nil, errAt(p.tok.pos, `expected "and", "or" or the end, found %s`, p.tok.found())
	}
	e := &Expr{root: root}
	if n := len(e.String()); n > maxLen {
		return nil, fmt.Errorf("segment: the expression's canonical form is %d bytes long, more than %d", n, maxLen)
	}
	return e, nil
}

// parser is a recursive-descent parser over the lexer's tokens.
type parser struct {
	lx    lexer
	tok   token // the current token
	depth int   // of "(" and "not"
	conds int
}

func (p *parser) advance() error {
	t, err := p.lx.next()
	if err != nil {
		return err
	}
	p.tok = t
	return nil
}

// keyword reports whether the current token is the keyword kw (in any
// ASCII case).
func (p *parser) keyword(kw string) bool {
	return p.tok.kind == tWord && lowerASCII(p.tok.text) == kw
}

func (p *parser) symbol(s string) bool { return p.tok.kind == tSymbol && p.tok.text == s }

func (p *parser) or() (*node, error) { return p.chain(kOr, "or", p.and) }

func (p *parser) and() (*node, error) { return p.chain(kAnd, "and", p.unary) }

// chain parses operand (kw operand)*, flattening nested chains of the
// same kind (so the tree, like the canonical form, does not depend on
// redundant parentheses).
func (p *parser) chain(k kind, kw string, operand func() (*node, error)) (*node, error) {
	var kids []*node
	for {
		n, err := operand()
		if err != nil {
			return nil, err
		}
		if n.kind == k {
			kids = append(kids, n.kids...)
		} else {
			kids = append(kids, n)
		}
		if !p.keyword(kw) {
			break
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
	}
	if len(kids) == 1 {
		return kids[0], nil
	}
	return &node{kind: k, kids: kids}, nil
}

func (p *parser) unary() (*node, error) {
	switch {
	case p.keyword("not"), p.symbol("("):
		open := p.symbol("(")
		if p.depth++; p.depth > maxDepth {
			return nil, errAt(p.tok.pos, "nested more than %d deep", maxDepth)
		}
		if err := p.advance(); err != nil {
			return nil, err
		}
		var n *node
		var err error
		if open {
			n, err = p.or()
		} else {
			n, err = p.unary()
		}
		if err != nil {
			return nil, err
		}
		if open {
			if !p.symbol(")") {
				return nil, errAt(p.tok.pos, `expected ")", found %s`, p.tok.found())
			}
			if err := p.advance(); err != nil {
				return nil, err
			}
		} else {
			n = &node{kind: kNot, kids: []*node{n}}
		}
		p.depth--
		return n, nil
	case p.keyword("list"):
		return p.list()
	case p.tok.kind == tName, p.tok.kind == tWord && !keywords[lowerASCII(p.tok.text)]:
		return p.cond()
	}
	return nil, errAt(p.tok.pos, `expected a field, "not", "(" or "list", found %s`, p.tok.found())
}

// count counts one more condition.
func (p *parser) count(pos int) error {
	if p.conds++; p.conds > maxConds {
		return errAt(pos, "more than %d conditions", maxConds)
	}
	return nil
}

// list parses list "name".
func (p *parser) list() (*node, error) {
	if err := p.count(p.tok.pos); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	if p.tok.kind != tString {
		return nil, errAt(p.tok.pos, `expected a list name (a string) after "list", found %s`, p.tok.found())
	}
	if strings.TrimSpace(p.tok.val) == "" {
		return nil, errAt(p.tok.pos, "a list name cannot be empty")
	}
	n := &node{kind: kCond, c: cond{op: opList, vals: []value{{kind: vString, s: p.tok.val}}}}
	return n, p.advance()
}

// ops are the operators written as symbols or words (in and exists
// aside).
var ops = map[string]op{"=": opEq, "!=": opNe, "<": opLt, "<=": opLe, ">": opGt, ">=": opGe, "contains": opContains,
	"starts": opStarts, "ends": opEnds, "in": opIn, "exists": opExists}

// cond parses a condition on a field: a word that is a built-in (held in
// lower case) or an attribute's name, or a name between backticks (an
// attribute's, always).
func (p *parser) cond() (*node, error) {
	c := cond{field: p.tok.val, attr: true}
	if p.tok.kind == tWord {
		c.field = p.tok.text
		if f := lowerASCII(c.field); builtin(f) {
			c.field, c.attr = f, false
		}
	}
	if err := p.count(p.tok.pos); err != nil {
		return nil, err
	}
	if err := p.advance(); err != nil {
		return nil, err
	}
	o, ok := ops[lowerASCII(p.tok.text)]
	if p.tok.kind != tSymbol && p.tok.kind != tWord || !ok {
		hint := ""
		if p.tok.kind == tWord {
			hint = " (a name with spaces goes between backticks: `Fecha de alta`)"
		}
		return nil, errAt(p.tok.pos, "expected an operator (=, !=, <, <=, >, >=, contains, starts, ends, in, exists) after %q, found %s%s",
			c.field, p.tok.found(), hint)
	}
	if err := checkOp(c.builtin(), o, p.tok.pos); err != nil {
		return nil, err
	}
	c.op = o
	opText := p.tok.text
	if err := p.advance(); err != nil {
		return nil, err
	}
	switch o {
	case opExists:
	case opIn:
		vals, err := p.values(&c)
		if err != nil {
			return nil, err
		}
		c.vals = vals
	default:
		if !p.isValue() {
			return nil, errAt(p.tok.pos, "expected a value after %q, found %s", opText, p.tok.found())
		}
		v, err := p.value(&c)
		if err != nil {
			return nil, err
		}
		c.vals = []value{v}
	}
	return &node{kind: kCond, c: c}, nil
}

func (p *parser) isValue() bool {
	return p.tok.kind == tString || p.tok.kind == tNumber || p.tok.kind == tDate
}

// values parses the ( value, … ) of c, an in.
func (p *parser) values(c *cond) ([]value, error) {
	if !p.symbol("(") {
		return nil, errAt(p.tok.pos, `expected "(" after "in", found %s`, p.tok.found())
	}
	var vals []value
	for {
		if err := p.advance(); err != nil {
			return nil, err
		}
		if !p.isValue() {
			return nil, errAt(p.tok.pos, `expected a value in the list of "in", found %s`, p.tok.found())
		}
		v, err := p.value(c)
		if err != nil {
			return nil, err
		}
		vals = append(vals, v)
		switch {
		case p.symbol(")"):
			return vals, p.advance()
		case !p.symbol(","):
			return nil, errAt(p.tok.pos, `expected "," or ")" in the list of "in", found %s`, p.tok.found())
		}
	}
}

// value reads the current token as a value of c (its field and operator
// set), checking that it suits them.
func (p *parser) value(c *cond) (value, error) {
	t := p.tok
	v := value{kind: vNumber, s: t.text}
	switch t.kind {
	case tString:
		v = value{kind: vString, s: t.val}
	case tDate:
		v.kind = vDate
	}
	if msg := checkValue(c, &v, t.found()); msg != "" {
		return value{}, errAt(t.pos, "%s", msg)
	}
	return v, p.advance()
}

// fieldOps are the operators each built-in field takes; an attribute
// takes them all.
var fieldOps = map[string][]op{
	fAddress:   {opEq, opNe, opIn, opContains, opStarts, opEnds},
	fDomain:    {opEq, opNe, opIn, opContains, opStarts, opEnds},
	fName:      {opEq, opNe, opIn, opContains, opStarts, opEnds, opExists},
	fStatus:    {opEq, opNe, opIn},
	fCreatedAt: {opEq, opNe, opLt, opLe, opGt, opGe},
}

// checkOp checks that a built-in field (or "", an attribute) takes o.
func checkOp(field string, o op, pos int) error {
	allowed, ok := fieldOps[field]
	if !ok || slices.Contains(allowed, o) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = a.String()
	}
	return errAt(pos, "%s takes %s or %s, not %q", field, strings.Join(names[:len(names)-1], ", "), names[len(names)-1], o.String())
}

// statuses are the values of status.
var statuses = []string{"active", "unsubscribed", "blocklisted"}

// checkValue says what is wrong with v (found is how it was written) as
// a value of c, or "". A status is put in lower case.
func checkValue(c *cond, v *value, found string) string {
	field, o := c.builtin(), c.op
	switch {
	case field == fCreatedAt:
		if v.kind != vDate {
			return "created_at compares with a date (YYYY-MM-DD), found " + found
		}
	case v.kind == vDate:
		return "only created_at compares with a date, not " + c.name()
	case field == fStatus:
		s := strings.ToLower(v.s)
		if v.kind != vString || !slices.Contains(statuses, s) {
			return `status is "active", "unsubscribed" or "blocklisted", not ` + found
		}
		v.s = s
	case field != "":
		if v.kind != vString {
			return field + " compares with a string, found " + found
		}
	case o == opLt || o == opLe || o == opGt || o == opGe:
		if v.kind != vNumber {
			return fmt.Sprintf("%q compares numbers, found %s", o.String(), found)
		}
	case o == opContains || o == opStarts || o == opEnds:
		if v.kind != vString {
			return fmt.Sprintf("%q takes a string, found %s", o.String(), found)
		}
	}
	return ""
}
