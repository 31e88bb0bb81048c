package docs

import (
	"fmt"
	"go/ast"
	"go/build"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// root is the repository root, seen from this package's directory.
const root = ".."

// tablePrefixes are the prefixes of every table the migrations create
// (internal/store/migrations/*.up.sql); a word in a code span that starts
// with one is taken as a table (or index) name.
var tablePrefixes = []string{"api_", "audit_", "campaign", "contact", "dkim_", "envios_", "mail_", "quota_", "relay_"}

// span is one inline code span of a Markdown file.
type span struct {
	line    int
	text    string // newlines as spaces
	section int    // index of the heading it is under
}

// problem is one thing flow.md names that does not exist.
type problem struct {
	line int
	text string
}

// TestFlow checks that docs/flow.md names only things that exist: every
// file or directory path, every table (and index) name, and every Go
// identifier written pkg.Name, pkg.Type.Method or Type.Method.
func TestFlow(t *testing.T) {
	src, err := os.ReadFile("flow.md")
	if err != nil {
		t.Fatal(err)
	}
	r := newRepo(t).check(string(src))
	if r.paths < 20 || r.tables < 10 || r.idents < 20 { // not a vacuous pass
		t.Errorf("flow.md: found only %d paths, %d table names and %d Go identifiers: is the extraction broken?", r.paths, r.tables, r.idents)
	}
	if len(r.missing) > 0 {
		var b strings.Builder
		for _, p := range r.missing {
			fmt.Fprintf(&b, "\n\tflow.md:%d: %s", p.line, p.text)
		}
		t.Errorf("docs/flow.md: %d names of things that do not exist:%s", len(r.missing), b.String())
	}
	t.Logf("checked %d paths, %d bare file names, %d table names, %d Go identifiers", r.paths, r.bare, r.tables, r.idents)
}

// The checker itself: what it must report, and what it must let pass.
func TestFlowCheck(t *testing.T) {
	rp := newRepo(t)
	for _, c := range []struct {
		md      string
		missing bool
	}{
		{"`mailing/submit.go`", false},
		{"`internal/store/migrations/`", false},
		{"`./cmd/relayd`", false},
		{"## `relay`\n\nthe one reply function (`reply.go`)", false},
		{"`mail_recipients`, `UPDATE quota_accounts SET used = used + n\n  WHERE name = ?`", false},
		{"`mail_recipients_address_lower_idx`, `envios_migrations`, `envios_smtp_sessions`", false},
		{"`quota.Ledger.Init`, `Ledger.Transfer`, `store.Open`, `mailing.Mailer`, `Mailer.Send(ctx, m)`", false},
		{"`authCache`, `pool.create`, `R.E`, `mail_messages.raw`, `txid_current()`", false},
		{"`encoding/csv`, `golang.org/x/time/rate`, `./data/relayd.db`, `postgres://…`, `b+TOKEN@domain`", false},
		{"`:587`, `localhost:8443`, `--https`, `relayd report log`, `https://example.org/a`", false},
		{"`application/json`, `multipart/alternative`, `text/plain; charset=utf-8`, `application/vnd.api+json`", false},
		{"```\n`cmd/relayd/nope.go`\n```", false},
		{"`cmd/relayd/relay.go`", true},
		{"`internal/nope/`", true},
		{"## `relay`\n\n(`nope.go`)", true},
		{"## `relay`\n\n`relay/session.go`\n\n## `quota`\n\n(`session.go`)", true},
		{"`mail_attempts`", true},
		{"`SELECT * FROM mail_attempts`", true},
		{"`store.Nope`", true},
		{"`quota.Ledger.Nope`", true},
		{"`Mailer.Nope`", true},
		{"`limits.acquire`", true},
		{"`parseTemplates`", true},
	} {
		r := rp.check(c.md)
		if got := len(r.missing) > 0; got != c.missing {
			t.Errorf("%q: missing %v, want missing: %v", c.md, r.missing, c.missing)
		}
	}
}

// repo is what a name in flow.md may refer to.
type repo struct {
	code            *goCode
	tables, indexes map[string]bool
}

func newRepo(t *testing.T) *repo {
	t.Helper()
	tables, indexes := schema(t)
	for name := range tables {
		if !slices.ContainsFunc(tablePrefixes, func(p string) bool { return strings.HasPrefix(name, p) }) {
			t.Errorf("the repository creates table %s, whose prefix is not in tablePrefixes", name)
		}
	}
	return &repo{parseGo(t), tables, indexes}
}

// result is what check found.
type result struct {
	missing                     []problem // by line
	paths, bare, tables, idents int       // how many of each were checked
}

var (
	tableWord = regexp.MustCompile(`\b(?:` + strings.Join(tablePrefixes, "|") + `)[a-z0-9_]+\b`)
	dotted    = regexp.MustCompile(`(?s)^([A-Za-z_]\w*)\.([A-Za-z_]\w*)(?:\.([A-Za-z_]\w*))?(?:\(.*\))?$`)
	camel     = regexp.MustCompile(`^[a-z][a-z0-9]*[A-Z]\w*$`)
)

// check checks the names in the code spans of a Markdown text.
func (rp *repo) check(md string) result {
	var r result
	report := func(s span, format string, args ...any) {
		r.missing = append(r.missing, problem{s.line, fmt.Sprintf(format, args...)})
	}
	spans := codeSpans(md)

	// (a) Paths. A bare file name (cli.go) is looked up in the directories
	// its section mentions.
	dirs := map[int][]string{} // by section
	var bare []span
	for _, s := range spans {
		p, ok := repoPath(s.text)
		if !ok {
			continue
		}
		if !strings.Contains(p, "/") {
			if isDir(p) {
				dirs[s.section] = append(dirs[s.section], p)
			} else if hasDocExt(p) {
				bare = append(bare, s)
			}
			continue
		}
		r.paths++
		if d := strings.TrimSuffix(p, "/"); isDir(d) {
			dirs[s.section] = append(dirs[s.section], d)
		} else if isDir(filepath.Dir(d)) {
			dirs[s.section] = append(dirs[s.section], filepath.Dir(d))
		}
		if !exists(p) {
			report(s, "path `%s`: no such file or directory", s.text)
		}
	}
	for _, s := range bare {
		r.bare++
		if !slices.ContainsFunc(dirs[s.section], func(d string) bool { return exists(filepath.Join(d, s.text)) }) {
			report(s, "file `%s`: in none of its section's directories (%s)", s.text, strings.Join(uniq(dirs[s.section]), ", "))
		}
	}

	// (b) Tables and indexes: every word with a table prefix. One that
	// begins a string of the code and is no table is the name of
	// something else (the metric envios_smtp_sessions).
	for _, s := range spans {
		if _, ok := repoPath(s.text); ok {
			continue
		}
		for _, w := range tableWord.FindAllString(s.text, -1) {
			r.tables++
			if !rp.tables[w] && !rp.indexes[w] && !rp.code.begins(w) {
				report(s, "table `%s`: no CREATE TABLE (or CREATE INDEX) makes it in internal/store/migrations/*.up.sql", w)
			}
		}
	}

	// (c) Go identifiers: pkg.Name, pkg.Type.Method and Type.Method (or
	// field), a call's arguments aside, of this repository's packages. A
	// dotted name that is a string of the code (the audit action
	// pool.create) is not Go; one with a one-letter part is a placeholder
	// (the cursor R.E). An unqualified lowerCamel name (authCache) must be
	// declared somewhere: a top-level name, a method or a field.
	for _, s := range spans {
		if camel.MatchString(s.text) {
			r.idents++
			if !rp.code.declared(s.text) {
				report(s, "identifier `%s`: declared nowhere in the repository", s.text)
			}
			continue
		}
		m := dotted.FindStringSubmatch(s.text)
		if m == nil || hasDocExt(s.text) || tableWord.MatchString(m[1]) || rp.code.strings[s.text] || len(m[1]) == 1 || len(m[2]) == 1 {
			continue
		}
		r.idents++
		if problem := rp.code.check(m[1], m[2], m[3]); problem != "" {
			report(s, "identifier `%s`: %s", s.text, problem)
		}
	}
	slices.SortStableFunc(r.missing, func(a, b problem) int { return a.line - b.line })
	return r
}

// codeSpans returns the inline code spans of a Markdown text (fenced
// blocks skipped), each with its line and section.
func codeSpans(md string) []span {
	var (
		out     []span
		section int
		inFence bool
		open    *span // a span continued on the next line
	)
	for i, line := range strings.Split(md, "\n") {
		if open == nil {
			if f := strings.TrimSpace(line); strings.HasPrefix(f, "```") || strings.HasPrefix(f, "~~~") {
				inFence = !inFence
				continue
			}
			if inFence {
				continue
			}
			if strings.HasPrefix(line, "#") {
				section++
			}
		}
		for {
			if open != nil {
				j := strings.IndexByte(line, '`')
				if j < 0 {
					open.text += " " + line
					break
				}
				open.text = strings.TrimSpace(open.text + " " + line[:j])
				out = append(out, *open)
				open, line = nil, line[j+1:]
				continue
			}
			j := strings.IndexByte(line, '`')
			if j < 0 {
				break
			}
			open, line = &span{line: i + 1, section: section}, line[j+1:]
			if k := strings.IndexByte(line, '`'); k >= 0 {
				open.text = line[:k]
				out = append(out, *open)
				open, line = nil, line[k+1:]
			} else {
				open.text = line
				break
			}
		}
	}
	return out
}

var pathChars = regexp.MustCompile(`^[A-Za-z0-9_./+-]+$`)

// mediaTypes are the top-level media types (RFC 6838): text/plain is a
// media type, not a path.
var mediaTypes = map[string]bool{"application": true, "audio": true, "font": true, "image": true, "message": true,
	"model": true, "multipart": true, "text": true, "video": true}

// repoPath reports whether a code span is a path in the repository (with
// a "/", or a file name ending in .go, .sql or .md), and returns it
// without a leading "./". URLs, host:port, addresses, flags, commands,
// elisions, media types, Go and other modules' import paths (encoding/csv,
// golang.org/x/…) and relayd's run-time data directory (data/, ignored
// by git) are not.
func repoPath(s string) (string, bool) {
	if !pathChars.MatchString(s) || strings.HasPrefix(s, "-") || strings.HasPrefix(s, "/") {
		return "", false
	}
	p := strings.TrimPrefix(s, "./")
	if !strings.Contains(p, "/") {
		return p, hasDocExt(p) || isDir(p)
	}
	first, _, _ := strings.Cut(p, "/")
	if first == "data" || (strings.Contains(first, ".") && first != "..") {
		return "", false
	}
	if !exists(p) {
		if mediaTypes[first] { // application/json
			return "", false
		}
		if pkg, err := build.Import(strings.TrimSuffix(p, "/"), "", build.FindOnly); err == nil && pkg.Goroot {
			return "", false
		}
	}
	return p, true
}

func hasDocExt(p string) bool {
	return strings.HasSuffix(p, ".go") || strings.HasSuffix(p, ".sql") || strings.HasSuffix(p, ".md")
}

func exists(p string) bool {
	_, err := os.Stat(filepath.Join(root, p))
	return err == nil
}

func isDir(p string) bool {
	fi, err := os.Stat(filepath.Join(root, p))
	return err == nil && fi.IsDir()
}

func uniq(xs []string) []string {
	xs = slices.Clone(xs)
	slices.Sort(xs)
	return slices.Compact(xs)
}

// schema returns the tables and indexes the up migrations leave, applied
// in order, and the migrator's own tables (internal/store/migrate.go).
func schema(t *testing.T) (tables, indexes map[string]bool) {
	t.Helper()
	tables, indexes = map[string]bool{}, map[string]bool{}
	b, err := os.ReadFile(filepath.Join(root, "internal/store/migrate.go"))
	if err != nil {
		t.Fatal(err)
	}
	own := regexp.MustCompile(`With(?:Locks)?TableName\("(\w+)"\)`).FindAllStringSubmatch(string(b), -1)
	if len(own) != 2 {
		t.Fatalf("internal/store/migrate.go: found %d of the migrator's table names, want 2", len(own))
	}
	for _, m := range own {
		tables[m[1]] = true
	}
	files, err := filepath.Glob(filepath.Join(root, "internal/store/migrations/*.up.sql"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no migrations found: %v", err)
	}
	slices.Sort(files)
	stmt := regexp.MustCompile(`(?i)\b(create|drop)\s+(?:unique\s+)?(table|index)\s+(?:if\s+(?:not\s+)?exists\s+)?"?(\w+)`)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range stmt.FindAllStringSubmatch(string(b), -1) {
			set := tables
			if strings.EqualFold(m[2], "index") {
				set = indexes
			}
			set[strings.ToLower(m[3])] = strings.EqualFold(m[1], "create")
		}
	}
	for _, set := range []map[string]bool{tables, indexes} {
		maps.DeleteFunc(set, func(_ string, created bool) bool { return !created })
	}
	if len(tables) < 10 {
		t.Fatalf("found only %d tables in the migrations: is the parsing broken?", len(tables))
	}
	return tables, indexes
}

// goCode is what the repository's Go packages declare (test files aside).
type goCode struct {
	pkgs    map[string]map[string]bool // package name → top-level names
	members map[string]map[string]bool // type name (any package) → methods and fields
	links   map[string][]string        // type name → types whose members it has (embedded, aliased, underlying)
	strings map[string]bool            // the string literals
}

// parseGo reads the declarations of every Go package in the repository.
func parseGo(t *testing.T) *goCode {
	t.Helper()
	c := &goCode{pkgs: map[string]map[string]bool{}, members: map[string]map[string]bool{}, links: map[string][]string{}, strings: map[string]bool{}}
	fset := token.NewFileSet()
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		c.add(f)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(c.pkgs) < 10 {
		t.Fatalf("found only %d Go packages: is the walk broken?", len(c.pkgs))
	}
	return c
}

func (c *goCode) add(f *ast.File) {
	ast.Inspect(f, func(n ast.Node) bool {
		if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if s, err := strconv.Unquote(lit.Value); err == nil {
				c.strings[s] = true
			}
		}
		return true
	})
	top := c.pkgs[f.Name.Name]
	if top == nil {
		top = map[string]bool{}
		c.pkgs[f.Name.Name] = top
	}
	member := func(typ, name string) {
		if c.members[typ] == nil {
			c.members[typ] = map[string]bool{}
		}
		c.members[typ][name] = true
	}
	for _, d := range f.Decls {
		switch d := d.(type) {
		case *ast.FuncDecl:
			if d.Recv == nil || len(d.Recv.List) == 0 {
				top[d.Name.Name] = true
			} else if typ := typeName(d.Recv.List[0].Type); typ != "" {
				member(typ, d.Name.Name)
			}
		case *ast.GenDecl:
			for _, s := range d.Specs {
				switch s := s.(type) {
				case *ast.ValueSpec:
					for _, n := range s.Names {
						top[n.Name] = true
					}
				case *ast.TypeSpec:
					typ := s.Name.Name
					top[typ] = true
					if c.members[typ] == nil {
						c.members[typ] = map[string]bool{}
					}
					var fields []*ast.Field
					switch u := s.Type.(type) {
					case *ast.StructType:
						fields = u.Fields.List
					case *ast.InterfaceType:
						fields = u.Methods.List
					default: // an alias or a defined type: its members
						if n := typeName(u); n != "" {
							c.links[typ] = append(c.links[typ], n)
						}
					}
					for _, fl := range fields {
						if len(fl.Names) == 0 { // embedded
							if n := typeName(fl.Type); n != "" {
								member(typ, n)
								c.links[typ] = append(c.links[typ], n)
							}
						}
						for _, n := range fl.Names {
							member(typ, n.Name)
						}
					}
				}
			}
		}
	}
}

// typeName is the name of a (receiver, embedded or aliased) type
// expression: T, *T, pkg.T, T[P].
func typeName(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.StarExpr:
		return typeName(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.IndexExpr:
		return typeName(e.X)
	case *ast.IndexListExpr:
		return typeName(e.X)
	case *ast.ParenExpr:
		return typeName(e.X)
	}
	return ""
}

// hasMember reports whether a type of that name (in any package) has a
// method or field of that name, directly or through what it embeds.
func (c *goCode) hasMember(typ, name string, seen map[string]bool) bool {
	if seen[typ] {
		return false
	}
	seen[typ] = true
	if c.members[typ][name] {
		return true
	}
	for _, l := range c.links[typ] {
		if c.hasMember(l, name, seen) {
			return true
		}
	}
	return false
}

// check looks a.b (or a.b.c) up, a being a package's name or a type's,
// and says what is missing.
func (c *goCode) check(a, b, cc string) string {
	if top, ok := c.pkgs[a]; ok {
		switch {
		case !top[b]:
			return fmt.Sprintf("package %s declares no %s", a, b)
		case cc != "" && !c.hasMember(b, cc, map[string]bool{}):
			return fmt.Sprintf("%s.%s has no method or field %s", a, b, cc)
		}
		return ""
	}
	if _, ok := c.members[a]; ok {
		if !c.hasMember(a, b, map[string]bool{}) {
			return fmt.Sprintf("no type %s has a method or field %s", a, b)
		}
		return ""
	}
	return fmt.Sprintf("%s is neither a package nor a type of the repository", a)
}

// begins reports whether a string of the code is word or begins with
// word and "_" or "{".
func (c *goCode) begins(word string) bool {
	for s := range c.strings {
		if rest, ok := strings.CutPrefix(s, word); ok && (rest == "" || rest[0] == '_' || rest[0] == '{') {
			return true
		}
	}
	return false
}

// declared reports whether name is declared anywhere: at top level, as a
// method or as a field.
func (c *goCode) declared(name string) bool {
	for _, set := range c.pkgs {
		if set[name] {
			return true
		}
	}
	for _, set := range c.members {
		if set[name] {
			return true
		}
	}
	return false
}
