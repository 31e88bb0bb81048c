package segment

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// goodCases are expressions that parse, with their canonical forms.
var goodCases = []struct{ in, canon string }{
	{`region = "Lima"`, `region = "Lima"`},
	{`REGION="Lima"`, `REGION = "Lima"`},
	{`Name = "Peña" AND DOMAIN ends ".pe"`, `name = "Peña" and domain ends ".pe"`},
	{`a = 1 OR b = 2 AND c = 3`, `a = 1 or b = 2 and c = 3`},
	{`(a = 1 or b = 2) and c = 3`, `(a = 1 or b = 2) and c = 3`},
	{`((a = 1))`, `a = 1`},
	{`a = 1 and (b = 2 and c = 3)`, `a = 1 and b = 2 and c = 3`},
	{`a=1 or (b=2 or c=3)`, `a = 1 or b = 2 or c = 3`},
	{`not (a = 1)`, `not a = 1`},
	{`not (a = 1 and b = 2) or c exists`, `not (a = 1 and b = 2) or c exists`},
	{`NOT NOT a exists`, `not not a exists`},
	{`not a = 1 and b = 2`, `not a = 1 and b = 2`},
	{`x in("a","b" , 3)`, `x in ("a", "b", 3)`},
	{`status IN ("Active","blocklisted")`, `status in ("active", "blocklisted")`},
	{`status != "UNSUBSCRIBED"`, `status != "unsubscribed"`},
	{"created_at>=2026-12-01\tand\ncreated_at<2027-01-01", `created_at >= 2026-12-01 and created_at < 2027-01-01`},
	{`nota contains "dijo \"sí\" \\ fin"`, `nota contains "dijo \"sí\" \\ fin"`},
	{`list "boletín" or LIST "Boletín"`, `list "boletín" or list "Boletín"`},
	{`edad > -3.50 and edad <= 007`, `edad > -3.50 and edad <= 007`},
	{`x != ""`, `x != ""`},
	{`name exists and cargo starts "dir" and cargo ends "ora"`, `name exists and cargo starts "dir" and cargo ends "ora"`},
	{`region = "Lima" and (cargo contains "director" or list "boletín") and not domain in ("gmail.com", "hotmail.com")`,
		`region = "Lima" and (cargo contains "director" or list "boletín") and not domain in ("gmail.com", "hotmail.com")`},

	// Unicode words; keywords and built-ins are ASCII only.
	{`Región = "Lima" and año_2 >= 2020`, `Región = "Lima" and año_2 >= 2020`},
	{`Ñandú exists or _x٣ = 1 or 東京 contains "a"`, `Ñandú exists or _x٣ = 1 or 東京 contains "a"`},
	{`liſt = "x" and ſtatus exists or Key = 1`, `liſt = "x" and ſtatus exists or Key = 1`},
	// Backticks: a name with spaces or other characters, one that spells
	// a keyword or a built-in; dropped where a word says the same.
	{"`Fecha de alta` >= 2026", "`Fecha de alta` >= 2026"},
	{"`Fecha de alta` STARTS \"2026-03\"", "`Fecha de alta` starts \"2026-03\""},
	{"`name` = \"x\" and NAME = \"y\" and `Name` exists", "`name` = \"x\" and name = \"y\" and `Name` exists"},
	{"`and` exists or `NOT` = 1 or `list` in (\"a\") or `created_at` > 3", "`and` exists or `NOT` = 1 or `list` in (\"a\") or `created_at` > 3"},
	{"`status` = \"x\" and status = \"Active\"", "`status` = \"x\" and status = \"active\""},
	{"`región` = 1 and `Cargo` exists", "región = 1 and Cargo exists"},
	{"`Región`=\"x\"and`a b`exists", "Región = \"x\" and `a b` exists"},
	{"`it's 50% ?; --` contains \"x\" or ` a ` != \"y\"", "`it's 50% ?; --` contains \"x\" or ` a ` != \"y\""},
	{"`1a` = 1 or `a-b` = 2 or `N° DNI` = 3 or `Regio\u0301n` = 4", "`1a` = 1 or `a-b` = 2 or `N° DNI` = 3 or `Regio\u0301n` = 4"},
}

// badCases are expressions that do not parse, with their errors.
var badCases = []struct{ in, err string }{
	{``, `segment: at 0: expected a field, "not", "(" or "list", found end of input`},
	{`region = and`, `segment: at 9: expected a value after "=", found "and"`},
	{`region = "Lima" and`, `segment: at 19: expected a field, "not", "(" or "list", found end of input`},
	{`region "Lima"`, `segment: at 7: expected an operator (=, !=, <, <=, >, >=, contains, starts, ends, in, exists) after "region", found "Lima"`},
	{`(a = 1`, `segment: at 6: expected ")", found end of input`},
	{`a = 1)`, `segment: at 5: expected "and", "or" or the end, found ")"`},
	{`a = 1 b = 2`, `segment: at 6: expected "and", "or" or the end, found "b"`},
	{`a = "x`, `segment: at 4: unterminated string`},
	{`a = "x\n"`, `segment: at 6: unknown escape in a string (only \" and \\)`},
	{"a = \"x\ny\"", `segment: at 6: control character 0x0a in a string`},
	{"a = \"\xff\"", `segment: at 5: invalid UTF-8 in a string`},
	{"a = 1 and \xff", `segment: at 10: invalid UTF-8`},
	{`a = 1 # b`, `segment: at 6: unexpected character '#'`},
	{"Regio\u0301n = \"x\"", `segment: at 5: unexpected character '\u0301' (a name with characters other than letters, digits and _ goes between backticks)`},
	{`Fecha-alta = 1`, `segment: at 5: unexpected character '-' (a name with characters other than letters, digits and _ goes between backticks)`},
	{`Fecha de alta >= 2026`, "segment: at 6: expected an operator (=, !=, <, <=, >, >=, contains, starts, ends, in, exists) after \"Fecha\", " +
		"found \"de\" (a name with spaces goes between backticks: `Fecha de alta`)"},
	{`a = 12é`, `segment: at 4: malformed number or date "12é"`},
	{"\u00a0a = 1", `segment: at 0: unexpected character '\u00a0'`},
	{"`Fecha de alta = \"x\"", "segment: at 0: unterminated name between backticks"},
	{"a = 1 or `", "segment: at 9: unterminated name between backticks"},
	{"`` = 1", "segment: at 0: a name between backticks is 1 to 200 bytes long, not 0"},
	{"`" + strings.Repeat("ñ", 100) + "` = 1", ""}, // 200 bytes are fine
	{"a = 1 or `" + strings.Repeat("ñ", 100) + "x` = 1", "segment: at 9: a name between backticks is 1 to 200 bytes long, not 201"},
	{"`a\"b` = 1", `segment: at 2: a name between backticks cannot hold '"'`},
	{"`a\\b` = 1", `segment: at 2: a name between backticks cannot hold '\\'`},
	{"`ñ\tb` = 1", `segment: at 3: control character 0x09 in a name between backticks`},
	{"`a\x00b` = 1", `segment: at 2: control character 0x00 in a name between backticks`},
	{"`a\x7fb` = 1", `segment: at 2: control character 0x7f in a name between backticks`},
	{"`a\u0085b` = 1", `segment: at 2: control character U+0085 in a name between backticks`},
	{"`a\xffb` = 1", `segment: at 2: invalid UTF-8 in a name between backticks`},
	{"`a` `b` = 1", "segment: at 4: expected an operator (=, !=, <, <=, >, >=, contains, starts, ends, in, exists) after \"a\", found \"`b`\""},
	{"a = `b`", "segment: at 4: expected a value after \"=\", found \"`b`\""},
	{"list `b`", "segment: at 5: expected a list name (a string) after \"list\", found \"`b`\""},
	{"`x` > 2026-01-01", "segment: at 6: only created_at compares with a date, not x"},
	{"`Fecha de alta` > 2026-01-01", "segment: at 18: only created_at compares with a date, not `Fecha de alta`"},
	{"`created_at` = 2026-01-01", "segment: at 15: only created_at compares with a date, not `created_at`"},
	{"`address` exists and `status` contains \"a\" and `name` > 5", ""}, // attributes take every operator
	{`ſtatus = "gone" and liſt exists`, ""},                             // attributes, not status and list
	{`LIST "a" and Status = "ACTIVE" and nOt a exists`, ""},
	{`a ! 1`, `segment: at 2: unexpected character "!" (not equal is "!=", negation "not")`},
	{`a = 12ab`, `segment: at 4: malformed number or date "12ab"`},
	{`a = 1.`, `segment: at 4: malformed number or date "1."`},
	{`a = - 1`, `segment: at 4: unexpected character '-'`},
	{`created_at > 2026-02-30`, `segment: at 13: invalid date 2026-02-30`},
	{`created_at > "ayer"`, `segment: at 13: created_at compares with a date (YYYY-MM-DD), found "ayer"`},
	{`created_at in (2026-01-01)`, `segment: at 11: created_at takes =, !=, <, <=, > or >=, not "in"`},
	{`edad > 2026-01-01`, `segment: at 7: only created_at compares with a date, not edad`},
	{`status = "gone"`, `segment: at 9: status is "active", "unsubscribed" or "blocklisted", not "gone"`},
	{`status in ("active", 1)`, `segment: at 21: status is "active", "unsubscribed" or "blocklisted", not 1`},
	{`status contains "a"`, `segment: at 7: status takes =, != or in, not "contains"`},
	{`name > 5`, `segment: at 5: name takes =, !=, in, contains, starts, ends or exists, not ">"`},
	{`address exists`, `segment: at 8: address takes =, !=, in, contains, starts or ends, not "exists"`},
	{`domain = 5`, `segment: at 9: domain compares with a string, found 5`},
	{`edad > "x"`, `segment: at 7: ">" compares numbers, found "x"`},
	{`cargo contains 5`, `segment: at 15: "contains" takes a string, found 5`},
	{`a in "x"`, `segment: at 5: expected "(" after "in", found "x"`},
	{`a in ("x" "y")`, `segment: at 10: expected "," or ")" in the list of "in", found "y"`},
	{`a in ()`, `segment: at 6: expected a value in the list of "in", found ")"`},
	{`list boletin`, `segment: at 5: expected a list name (a string) after "list", found "boletin"`},
	{`list " "`, `segment: at 5: a list name cannot be empty`},
	{`and = 1`, `segment: at 0: expected a field, "not", "(" or "list", found "and"`},
	{`x exists exists`, `segment: at 9: expected "and", "or" or the end, found "exists"`},
	{`a = "` + strings.Repeat("x", 50) + `" b`, `segment: at 57: expected "and", "or" or the end, found "b"`},
	{`a = ` + strings.Repeat("x", 50), `segment: at 4: expected a value after "=", found "` + strings.Repeat("x", 50) + `"`},
	{`a contains "` + strings.Repeat("ñ", 50) + `" )`, `segment: at 114: expected "and", "or" or the end, found ")"`},
	{strings.Repeat("not ", 32) + "a exists", ""}, // 32 deep is fine
	{strings.Repeat("not ", 33) + "a exists", `segment: at 128: nested more than 32 deep`},
	{strings.Repeat("(", 33) + "a exists" + strings.Repeat(")", 33), `segment: at 32: nested more than 32 deep`},
	{strings.Repeat("a = 1 or ", 63) + "a = 1", ""}, // 64 conditions are fine
	{strings.Repeat("a = 1 or ", 64) + "list \"x\"", `segment: at 576: more than 64 conditions`},
	{strings.Repeat("a", 4097), `segment: the expression is 4097 bytes long, more than 4096`},
	{strings.Repeat(`a="`+strings.Repeat("x", 1017)+`"or `, 3) + `a="` + strings.Repeat("x", 1017) + `"`, // 4093 bytes
		`segment: the expression's canonical form is 4104 bytes long, more than 4096`},
}

func TestParse(t *testing.T) {
	for _, c := range goodCases {
		t.Run(c.in, func(t *testing.T) {
			e, err := Parse(c.in)
			if err != nil {
				t.Fatal(err)
			}
			if got := e.String(); got != c.canon {
				t.Errorf("String() = %s\nwant        %s", got, c.canon)
			}
		})
	}
	for _, c := range badCases {
		name := c.in
		if len(name) > 60 {
			name = name[:60]
		}
		t.Run(name, func(t *testing.T) {
			_, err := Parse(c.in)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("error %v, want none", err)
			case c.err != "" && err == nil:
				t.Fatalf("no error, want %s", c.err)
			case err != nil && err.Error() != c.err:
				t.Errorf("error\n got %s\nwant %s", err, c.err)
			}
		})
	}
}

// The canonical form parses back to itself.
func TestStringRoundTrip(t *testing.T) {
	for _, c := range goodCases {
		e, err := Parse(c.in)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(e.String())
		if err != nil {
			t.Fatalf("%s: its canonical form %s does not parse: %v", c.in, e, err)
		}
		if again.String() != e.String() {
			t.Errorf("%s: canonical form %s, then %s", c.in, e, again)
		}
	}
}

func TestAttributesLists(t *testing.T) {
	e, err := Parse(`zona = "a" and (Cargo exists or list "b" or list "a") and not zona in ("x") and name = "n" and status = "active" or list "b"` +
		" or Región = 1 or `Región` = 2 or `Fecha de alta` exists or `name` = \"x\" or `zona` = 3")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := e.Attributes(), []string{"Cargo", "Fecha de alta", "Región", "name", "zona"}; !slices.Equal(got, want) {
		t.Errorf("Attributes() = %q, want %q", got, want)
	}
	if got, want := e.Lists(), []string{"a", "b"}; !slices.Equal(got, want) {
		t.Errorf("Lists() = %q, want %q", got, want)
	}
}

// The SQL: one arg per placeholder, and none of the expression's text in
// the SQL text (every good case, on both dialects).
func TestSQLArgs(t *testing.T) {
	hostile := `x = "'; DROP TABLE contacts; --" or y contains "a'b%_!c" or list "l'); DELETE FROM contacts; --"` +
		" or `x'); DROP TABLE contacts; --` exists or `?` = 1 or `Región` starts \"a\""
	for _, in := range append(slicesOf(goodCases), hostile) {
		e, err := Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range []Dialect{SQLite, PostgreSQL} {
			where, args, err := e.SQL(d, "c", func(string) (int64, error) { return 1, nil })
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(where, "?"); n != len(args) {
				t.Errorf("%s (%d): %d placeholders, %d args", in, d, n, len(args))
			}
			for _, word := range []string{"DROP", "DELETE", "Lima", "region", "boletín", "--", ";"} {
				if strings.Contains(where, word) {
					t.Errorf("%s (%d): %q in the SQL text %s", in, d, word, where)
				}
			}
		}
	}
}

func slicesOf(cs []struct{ in, canon string }) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.in)
	}
	return out
}

func TestSQL(t *testing.T) {
	e, err := Parse(`status = "active" and cargo contains "50%_off" and not list "b"`)
	if err != nil {
		t.Fatal(err)
	}
	where, args, err := e.SQL(PostgreSQL, "c", func(name string) (int64, error) { return int64(len(name)) + 41, nil })
	if err != nil {
		t.Fatal(err)
	}
	want := `(c.status = ? AND COALESCE(translate(lower((c.attrs->>?)), 'ÁÉÍÓÚÜÑ', 'áéíóúüñ') LIKE ? ESCAPE '!', FALSE) AND ` +
		`NOT (EXISTS (SELECT 1 FROM contact_memberships m WHERE m.contact_id = c.id AND m.list_id = ? AND m.status = 'subscribed')))`
	if where != want {
		t.Errorf("where\n got %s\nwant %s", where, want)
	}
	if got, want := args, []any{"active", "cargo", "%50!%!_off%", int64(42)}; !slices.Equal(got, want) {
		t.Errorf("args %v, want %v", got, want)
	}
	_, args, _ = e.SQL(SQLite, "c", func(string) (int64, error) { return 1, nil })
	if args[1] != `$."cargo"` {
		t.Errorf("SQLite JSON path %v", args[1])
	}

	boom := errors.New("boom")
	if _, _, err := e.SQL(SQLite, "c", func(string) (int64, error) { return 0, boom }); !errors.Is(err, boom) {
		t.Errorf("listID's error: %v", err)
	}
	for _, alias := range []string{"", "c d", "c;", "1c", "ç"} {
		if _, _, err := e.SQL(SQLite, alias, func(string) (int64, error) { return 1, nil }); err == nil {
			t.Errorf("alias %q accepted", alias)
		}
	}
	if _, _, err := e.SQL(Dialect(9), "c", func(string) (int64, error) { return 1, nil }); err == nil {
		t.Error("unknown dialect accepted")
	}
}

// An address or domain compared for equality is put in the form contacts
// are stored in (an IDNA A-label domain).
func TestSQLIDNA(t *testing.T) {
	e, err := Parse(`domain = "Ñandú.PE" or address in ("Ana@Ñandú.pe", "x@y.org")`)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := e.SQL(SQLite, "c", nil); err == nil {
		t.Fatal("SQL without listID accepted")
	}
	_, args, err := e.SQL(SQLite, "c", func(string) (int64, error) { return 1, nil })
	if err != nil {
		t.Fatal(err)
	}
	if want := []any{"xn--and-6ma2c.pe", "ana@xn--and-6ma2c.pe", "x@y.org"}; !slices.Equal(args, want) {
		t.Errorf("args %q, want %q", args, want)
	}
}

// An attribute's name, with backticks or not, is the key as it is: an arg
// (SQLite: in a JSON path), and a backticked built-in's name is an
// attribute's, not the column.
func TestSQLAttributeNames(t *testing.T) {
	e, err := Parse("`Fecha de alta` starts \"2026\" and Región = \"Lima\" and `name` exists and not `created_at` contains \"x\"")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		d     Dialect
		where string
		keys  []any
	}{
		{PostgreSQL, `(COALESCE(translate(lower((c.attrs->>?)), 'ÁÉÍÓÚÜÑ', 'áéíóúüñ') LIKE ? ESCAPE '!', FALSE) AND ` +
			`COALESCE(translate(lower((c.attrs->>?)), 'ÁÉÍÓÚÜÑ', 'áéíóúüñ') = ?, FALSE) AND ` +
			`COALESCE(COALESCE((c.attrs->>?), '') <> '', FALSE) AND ` +
			`NOT (COALESCE(translate(lower((c.attrs->>?)), 'ÁÉÍÓÚÜÑ', 'áéíóúüñ') LIKE ? ESCAPE '!', FALSE)))`,
			[]any{"Fecha de alta", "Región", "name", "created_at"}},
		{SQLite, "", []any{`$."Fecha de alta"`, `$."Región"`, `$."name"`, `$."created_at"`}},
	} {
		where, args, err := e.SQL(c.d, "c", func(string) (int64, error) { return 1, nil })
		if err != nil {
			t.Fatal(err)
		}
		if c.where != "" && where != c.where {
			t.Errorf("where\n got %s\nwant %s", where, c.where)
		}
		if strings.Contains(where, "c.name") || strings.Contains(where, "c.created_at") {
			t.Errorf("%d: a built-in's column in %s", c.d, where)
		}
		if want := []any{c.keys[0], "2026%", c.keys[1], "lima", c.keys[2], c.keys[3], "%x%"}; !slices.Equal(args, want) {
			t.Errorf("%d: args %q, want %q", c.d, args, want)
		}
	}
}
