package httpapi_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
)

// fields is the fields of an error answer.
func fields(out map[string]any) map[string]any {
	e, _ := out["error"].(map[string]any)
	f, _ := e["fields"].(map[string]any)
	return f
}

func sup(out map[string]any) map[string]any {
	s, _ := out["suppression"].(map[string]any)
	return s
}

func count(t *testing.T, db *bun.DB, query string, args ...any) int {
	t.Helper()
	var n int
	if err := db.NewRaw(query, args...).Scan(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The suppression routes: an admin token adds and removes any entry; an
// account token only its own account's (scope account), and reads
// installation-wide ones only through check. Rows are never deleted, and
// every change is in the audit log with the token and why.
func TestAPISuppressions(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)

		// Adding: admin, installation-wide by default; again: the same entry.
		st, out := f.call(t, "POST", "/v1/suppressions", f.admin, map[string]any{"address": "Ana@Example.org", "why": "pidió por mesa de partes"})
		if s := sup(out); st != 201 || out["added"] != true || s["scope"] != "all" || s["reason"] != "manual" || s["address"] != "ana@example.org" ||
			s["active"] != true || s["evidence"].(map[string]any)["why"] != "pidió por mesa de partes" || !strings.HasPrefix(s["actor"].(string), "token:") {
			t.Fatalf("admin add: %d %v", st, out)
		}
		anaID := fmt.Sprint(sup(out)["id"])
		st, out = f.call(t, "POST", "/v1/suppressions", f.admin, map[string]any{"address": "ana@example.org", "why": "otra vez"})
		if st != 200 || out["added"] != false || fmt.Sprint(sup(out)["id"]) != anaID {
			t.Fatalf("admin add again: %d %v", st, out)
		}
		// An account token: its own account's bulk mail, by default.
		st, out = f.call(t, "POST", "/v1/suppressions", f.talento, map[string]any{"address": "luis@example.org", "why": "baja en el sistema de talento"})
		if s := sup(out); st != 201 || s["scope"] != "account" || s["account"] != "sjti/talento" || s["topic"] != "" {
			t.Fatalf("account add: %d %v", st, out)
		}
		luisTalento := fmt.Sprint(sup(out)["id"])
		st, out = f.call(t, "POST", "/v1/suppressions", f.eventos, map[string]any{"address": "luis@example.org", "topic": "boletin",
			"reason": "unsubscribe", "why": "llamó", "expires_at": time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)})
		if s := sup(out); st != 201 || s["account"] != "enap/eventos" || s["topic"] != "boletin" || s["expires_at"] == nil {
			t.Fatalf("eventos add: %d %v", st, out)
		}
		luisEventos := fmt.Sprint(sup(out)["id"])

		// Refusals, with their exact answers.
		for _, c := range []struct {
			name, token string
			body        any
			status      int
			code, field string
		}{
			{"account token, scope all", f.talento, map[string]any{"address": "x@example.org", "scope": "all", "why": "w"}, 403, "forbidden", ""},
			{"account token, complaint (bulk)", f.talento, map[string]any{"address": "x@example.org", "reason": "complaint", "scope": "bulk", "why": "w"}, 403, "forbidden", ""},
			{"account token, another account", f.talento, map[string]any{"address": "x@example.org", "account": "enap/eventos", "why": "w"}, 404, "not_found", ""},
			{"admin, scope account without one", f.admin, map[string]any{"address": "x@example.org", "scope": "account", "why": "w"}, 422, "invalid", "account"},
			{"admin, unknown account", f.admin, map[string]any{"address": "x@example.org", "account": "enap/nadie", "why": "w"}, 422, "invalid", "account"},
			{"admin, malformed account", f.admin, map[string]any{"address": "x@example.org", "account": "Nadie", "why": "w"}, 422, "invalid", "account"},
			{"no why", f.admin, map[string]any{"address": "x@example.org"}, 422, "invalid", "why"},
			{"blank why", f.admin, map[string]any{"address": "x@example.org", "why": "  "}, 422, "invalid", "why"},
			{"not an address", f.admin, map[string]any{"address": "not an address", "why": "w"}, 422, "invalid", "address"},
			{"soft streak by hand", f.admin, map[string]any{"address": "x@example.org", "reason": "soft_streak", "why": "w"}, 422, "invalid", "reason"},
			{"bad scope", f.admin, map[string]any{"address": "x@example.org", "scope": "world", "why": "w"}, 422, "invalid", "scope"},
			{"topic without scope account", f.admin, map[string]any{"address": "x@example.org", "topic": "t", "why": "w"}, 422, "invalid", "topic"},
			{"expiry in the past", f.admin, map[string]any{"address": "x@example.org", "why": "w", "expires_at": "2020-01-01T00:00:00Z"}, 422, "invalid", "expires_at"},
			{"unknown field", f.admin, `{"address": "x@example.org", "why": "w", "reson": "manual"}`, 400, "malformed_json", ""},
			{"no token", "", map[string]any{"address": "x@example.org", "why": "w"}, 401, "unauthorized", ""},
		} {
			st, out := f.call(t, "POST", "/v1/suppressions", c.token, c.body)
			if st != c.status || code(out) != c.code || (c.field != "" && fields(out)[c.field] == nil) {
				t.Errorf("%s: %d %v, want %d %s (field %q)", c.name, st, out, c.status, c.code, c.field)
			}
		}
		if st, out := f.call(t, "POST", "/v1/suppressions", f.talento, map[string]any{"address": "x@example.org", "scope": "all", "why": "w"}); st == 403 &&
			out["error"].(map[string]any)["message"] != "entries of scope all and bulk are installation-wide: an admin token is needed to add or remove one" {
			t.Errorf("403 message: %v", out)
		}

		// Listing: an account token sees its own entries only.
		list := func(token, query string) []any {
			t.Helper()
			st, out := f.call(t, "GET", "/v1/suppressions"+query, token, nil)
			if st != 200 {
				t.Fatalf("list %s: %d %v", query, st, out)
			}
			return out["suppressions"].([]any)
		}
		if n := len(list(f.admin, "")); n != 3 {
			t.Fatalf("admin list: %d entries, want 3", n)
		}
		if l := list(f.talento, ""); len(l) != 1 || fmt.Sprint(l[0].(map[string]any)["id"]) != luisTalento {
			t.Fatalf("talento's list: %v", l)
		}
		if l := list(f.eventos, "?address=LUIS@example.org"); len(l) != 1 || fmt.Sprint(l[0].(map[string]any)["id"]) != luisEventos {
			t.Fatalf("eventos's list: %v", l)
		}
		if l := list(f.admin, "?address=luis@example.org&reason=unsubscribe"); len(l) != 1 {
			t.Fatalf("by reason: %v", l)
		}
		st, out = f.call(t, "GET", "/v1/suppressions?limit=2", f.admin, nil)
		if st != 200 || len(out["suppressions"].([]any)) != 2 || out["next"].(float64) == 0 {
			t.Fatalf("first page: %d %v", st, out)
		}
		if l := list(f.admin, fmt.Sprintf("?limit=2&after=%v", out["next"])); len(l) != 1 {
			t.Fatalf("second page: %v", l)
		}
		for _, q := range []string{"?reason=bogus", "?active=maybe", "?after=-1", "?limit=x"} {
			if st, out := f.call(t, "GET", "/v1/suppressions"+q, f.admin, nil); st != 422 || code(out) != "invalid" {
				t.Errorf("list %s: %d %v", q, st, out)
			}
		}

		// Check: would mail be stopped, and by which entry.
		check := func(token, query string) map[string]any {
			t.Helper()
			st, out := f.call(t, "GET", "/v1/suppressions/check?"+query, token, nil)
			if st != 200 {
				t.Fatalf("check %s: %d %v", query, st, out)
			}
			return out
		}
		if out := check(f.talento, "address=ANA@example.org"); out["suppressed"] != true || fmt.Sprint(sup(out)["id"]) != anaID || sup(out)["recipient_id"] != nil {
			t.Fatalf("ana, transactional: %v", out)
		}
		if out := check(f.talento, "address=luis@example.org"); out["suppressed"] != false || out["suppression"] != nil {
			t.Fatalf("luis, transactional mail is never stopped by an account's entry: %v", out)
		}
		if out := check(f.talento, "address=luis@example.org&bulk=true"); out["suppressed"] != true || fmt.Sprint(sup(out)["id"]) != luisTalento {
			t.Fatalf("luis, talento's bulk mail: %v", out)
		}
		if out := check(f.eventos, "address=luis@example.org&bulk=1&topic=otro"); out["suppressed"] != false {
			t.Fatalf("luis, eventos's bulk mail about another topic: %v", out)
		}
		if out := check(f.eventos, "address=luis@example.org&bulk=1&topic=boletin"); out["suppressed"] != true || fmt.Sprint(sup(out)["id"]) != luisEventos {
			t.Fatalf("luis, eventos's boletin: %v", out)
		}
		if out := check(f.admin, "address=luis@example.org&bulk=1&topic=boletin&account=enap/eventos"); out["suppressed"] != true || out["account"] != "enap/eventos" {
			t.Fatalf("admin check for eventos: %v", out)
		}
		for _, c := range []struct {
			token, query string
			status       int
		}{{f.talento, "", 422}, {f.talento, "address=nope", 422}, {f.talento, "address=a@example.org&bulk=perhaps", 422},
			{f.talento, "address=a@example.org&account=enap/eventos", 404}, {"", "address=a@example.org", 401}} {
			if st, out := f.call(t, "GET", "/v1/suppressions/check?"+c.query, c.token, nil); st != c.status {
				t.Errorf("check %q: %d %v, want %d", c.query, st, out, c.status)
			}
		}

		// Removing: marks the row, which stays.
		for _, c := range []struct {
			name, token, path string
			body              any
			status            int
			code              string
		}{
			{"account token, installation-wide", f.talento, "/v1/suppressions/" + anaID + "?why=x", nil, 403, "forbidden"},
			{"another account's", f.eventos, "/v1/suppressions/" + luisTalento + "?why=x", nil, 404, "not_found"},
			{"no why", f.talento, "/v1/suppressions/" + luisTalento, nil, 422, "invalid"},
			{"no such id", f.admin, "/v1/suppressions/999999?why=x", nil, 404, "not_found"},
			{"not an id", f.admin, "/v1/suppressions/abc?why=x", nil, 404, "not_found"},
			{"bad body", f.admin, "/v1/suppressions/" + anaID, `{"why": 1}`, 400, "malformed_json"},
		} {
			st, out := f.call(t, "DELETE", c.path, c.token, c.body)
			if st != c.status || code(out) != c.code {
				t.Errorf("%s: %d %v, want %d %s", c.name, st, out, c.status, c.code)
			}
		}
		st, out = f.call(t, "DELETE", "/v1/suppressions/"+luisTalento+"?why=volvió+a+suscribirse", f.talento, nil)
		if s := sup(out); st != 200 || out["removed"].(float64) != 1 || s["removed_at"] == nil || s["active"] != false || s["removed_reason"] != "volvió a suscribirse" {
			t.Fatalf("talento remove: %d %v", st, out)
		}
		if st, out := f.call(t, "DELETE", "/v1/suppressions/"+luisTalento+"?why=x", f.talento, nil); st != 404 || code(out) != "not_found" {
			t.Fatalf("remove twice: %d %v", st, out)
		}
		if st, out := f.call(t, "DELETE", "/v1/suppressions/"+anaID, f.admin, map[string]any{"why": "error de digitación"}); st != 200 || sup(out)["removed_by"] == "" {
			t.Fatalf("admin remove with a body: %d %v", st, out)
		}
		if out := check(f.talento, "address=ana@example.org"); out["suppressed"] != false {
			t.Fatalf("a removed entry still stops mail: %v", out)
		}
		if l := list(f.admin, "?active=true"); len(l) != 1 {
			t.Fatalf("active entries: %v", l)
		}
		if n := count(t, db, "SELECT count(*) FROM mail_suppressions"); n != 3 {
			t.Fatalf("%d rows, want 3: rows are never deleted", n)
		}
		if n := count(t, db, "SELECT count(*) FROM audit_log WHERE action = 'suppression.add' AND actor LIKE 'token:%'"); n != 3 {
			t.Fatalf("%d additions audited, want 3", n)
		}
		if n := count(t, db, "SELECT count(*) FROM audit_log WHERE action = 'suppression.remove' AND actor LIKE 'token:%' AND detail LIKE '%volvió a suscribirse%'"); n != 1 {
			t.Fatalf("the removal's why is not in the audit log (%d)", n)
		}
	})
}

// POST /v1/messages says which recipients were stored suppressed (not
// charged): by address and reason for one message, by count for a batch.
func TestAPISendReportsSuppressed(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		if st, out := f.call(t, "POST", "/v1/suppressions", f.admin, map[string]any{"address": "ana@example.org", "why": "rebota"}); st != 201 {
			t.Fatalf("add: %d %v", st, out)
		}
		st, out := f.call(t, "POST", "/v1/messages", f.talento, msg("ana@example.org", "luis@example.org"))
		supp, _ := out["suppressed"].([]any)
		if st != 202 || len(supp) != 1 {
			t.Fatalf("send: %d %v", st, out)
		}
		if s := supp[0].(map[string]any); s["address"] != "ana@example.org" || !strings.HasPrefix(s["reason"].(string), "suppressed: manual (all mail)") {
			t.Fatalf("suppressed %v", s)
		}
		st, out = f.call(t, "POST", "/v1/messages", f.talento, map[string]any{"from": "avisos@servir.gob.pe", "subject": "Hola {{.Nombre}}",
			"text": "Prueba", "recipients": []map[string]any{{"address": "ana@example.org", "data": map[string]any{"Nombre": "Ana"}},
				{"address": "eva@example.org", "data": map[string]any{"Nombre": "Eva"}}}})
		if st != 202 || out["accepted"].(float64) != 1 || out["suppressed_count"].(float64) != 1 {
			t.Fatalf("batch: %d %v", st, out)
		}
	})
}
