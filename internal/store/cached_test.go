package store

import (
	"testing"

	"github.com/jackc/pgx/v5"
)

// cached numbers the placeholders for PostgreSQL, leads the arguments with
// the cache mode, and makes their strings valid UTF-8 (in slices too,
// without touching the caller's slice).
func TestCachedArguments(t *testing.T) {
	bad := "A\xf1o"
	names := []string{"ok", bad}
	ptrs := []*string{nil, &bad}
	q, args := cached("SELECT ? WHERE a = ? AND b IN (?, '¿?')", []any{bad, names, ptrs, 7})
	if q != "SELECT $1 WHERE a = $2 AND b IN ($3, '¿$4')" {
		// A ? inside a literal is numbered too: the fixed queries have none.
		t.Fatalf("query %q", q)
	}
	if args[0] != pgx.QueryExecModeCacheStatement || args[1] != "A\uFFFDo" || args[4] != 7 {
		t.Fatalf("args %#v", args)
	}
	if got := args[2].([]string); got[0] != "ok" || got[1] != "A\uFFFDo" || names[1] != bad {
		t.Fatalf("[]string %q (caller's %q)", got, names)
	}
	if got := args[3].([]*string); got[0] != nil || *got[1] != "A\uFFFDo" || *ptrs[1] != bad {
		t.Fatalf("[]*string %v", got)
	}
	valid := []string{"ya", "válido"}
	if _, args := cached("?", []any{valid}); &args[1].([]string)[0] != &valid[0] {
		t.Fatal("a valid slice was copied")
	}
}
