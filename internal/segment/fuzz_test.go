package segment

import (
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; what parses has a canonical form that
// parses to the same canonical form, and compiles on both dialects with
// one arg per placeholder. The seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, in string) {
		e, err := Parse(in)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "segment: ") {
				t.Fatalf("error without the package prefix: %v", err)
			}
			return
		}
		canon := e.String()
		again, err := Parse(canon)
		if err != nil {
			t.Fatalf("%q parses, its canonical form %q does not: %v", in, canon, err)
		}
		if again.String() != canon {
			t.Fatalf("%q: canonical form %q, then %q", in, canon, again.String())
		}
		for _, d := range []Dialect{SQLite, PostgreSQL} {
			where, args, err := e.SQL(d, "c", func(string) (int64, error) { return 1, nil })
			if err != nil {
				t.Fatalf("%q: SQL: %v", in, err)
			}
			if n := strings.Count(where, "?"); n != len(args) {
				t.Fatalf("%q: %d placeholders, %d args in %s", in, n, len(args), where)
			}
		}
	})
}
