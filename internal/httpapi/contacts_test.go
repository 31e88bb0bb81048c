package httpapi_test

import (
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
)

// The lists and the deletion of a contact: an account token acts on its
// own account, an admin token names one; each contacts error kind has its
// status.
func TestAPIListsAndContacts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f, _ := newContactsFixture(t, db, 0) // boletin in both accounts
		st, out := f.call(t, "POST", "/v1/lists", f.eventos, map[string]string{"name": "boletin"})
		if st != 409 || code(out) != "exists" || out["error"].(map[string]any)["message"] != `enap/eventos already has a list "boletin"` {
			t.Errorf("same name: %d %v", st, out)
		}
		if st, out := f.call(t, "POST", "/v1/lists", f.eventos, map[string]string{"name": " "}); st != 422 || code(out) != "invalid" {
			t.Errorf("no name: %d %v", st, out)
		}
		if st, out := f.call(t, "POST", "/v1/lists", f.admin, map[string]string{"name": "cursos"}); st != 422 || fields(out)["account"] == nil {
			t.Errorf("admin without account: %d %v", st, out)
		}
		if st, out := f.call(t, "POST", "/v1/lists?account=sjti/talento", f.admin, map[string]string{"name": "cursos"}); st != 201 ||
			out["account"] != "sjti/talento" || out["name"] != "cursos" || out["created_by"] == "" {
			t.Errorf("admin adds: %d %v", st, out)
		}
		if st, out := f.call(t, "POST", "/v1/lists?account=enap/nadie", f.admin, map[string]string{"name": "x"}); st != 404 || code(out) != "not_found" {
			t.Errorf("unknown account: %d %v", st, out)
		}
		if st, out := f.call(t, "POST", "/v1/lists?account=enap/eventos", f.talento, map[string]string{"name": "x"}); st != 404 {
			t.Errorf("another account's: %d %v", st, out)
		}
		names := func(token, query string) string {
			st, out := f.call(t, "GET", "/v1/lists"+query, token, nil)
			if st != 200 {
				t.Fatalf("lists: %d %v", st, out)
			}
			var ns []string
			for _, l := range out["lists"].([]any) {
				ns = append(ns, l.(map[string]any)["account"].(string)+":"+l.(map[string]any)["name"].(string))
			}
			return strings.Join(ns, " ")
		}
		if got := names(f.talento, "?account=enap/eventos"); got != "sjti/talento:boletin sjti/talento:cursos" {
			t.Errorf("talento's lists: %s", got)
		}
		if got := names(f.admin, ""); got != "enap/eventos:boletin sjti/talento:boletin sjti/talento:cursos" {
			t.Errorf("every list: %s", got)
		}
		if got := names(f.admin, "?account=enap/eventos"); got != "enap/eventos:boletin" {
			t.Errorf("eventos' lists: %s", got)
		}

		// Deleting a contact needs why; the contact and its memberships go.
		st, _, h := f.upload(t, f.eventos, "list=boletin", strings.NewReader("email\nana@example.org\n"), -1)
		if st != 202 {
			t.Fatal(st)
		}
		if evs := f.follow(t, f.eventos, h.Get("Location")+"/events"); evs[len(evs)-1].name != "done" {
			t.Fatalf("import: %v", evs[len(evs)-1])
		}
		if st, out := f.call(t, "DELETE", "/v1/contacts/ana@example.org", f.eventos, nil); st != 422 || fields(out)["why"] == nil {
			t.Errorf("no why: %d %v", st, out)
		}
		if st, out := f.call(t, "DELETE", "/v1/contacts/ana@example.org?why=pedido+del+titular", f.talento, nil); st != 404 {
			t.Errorf("another account's contact: %d %v", st, out)
		}
		if st, out := f.call(t, "DELETE", "/v1/contacts/Ana@Example.org?why=pedido+del+titular", f.eventos, nil); st != 200 || out["deleted"] != "ana@example.org" {
			t.Errorf("delete: %d %v", st, out)
		}
		if n := count(t, db, "SELECT count(*) FROM contacts") + count(t, db, "SELECT count(*) FROM contact_memberships"); n != 0 {
			t.Errorf("%d rows left", n)
		}
		if n := count(t, db, "SELECT count(*) FROM audit_log WHERE action = 'contact.delete' AND detail = 'ana@example.org: pedido del titular'"); n != 1 {
			t.Errorf("audit: %d", n)
		}
		if st, out := f.call(t, "DELETE", "/v1/contacts/ana@example.org", f.eventos, map[string]string{"why": "otra vez"}); st != 404 || code(out) != "not_found" {
			t.Errorf("deleted twice: %d %v", st, out)
		}
	})
}

// Without Config.Contacts and Imports the routes answer 503.
func TestAPIContactsUnavailable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		for _, c := range []struct{ method, path string }{{"GET", "/v1/lists"}, {"POST", "/v1/lists"}, {"DELETE", "/v1/contacts/a@example.org?why=x"},
			{"GET", "/v1/imports"}, {"POST", "/v1/imports?list=x"}, {"GET", "/v1/imports/1"}, {"GET", "/v1/imports/1/events"}} {
			body := any(nil)
			if c.method == "POST" {
				body = map[string]string{"name": "x"}
			}
			if st, out := f.call(t, c.method, c.path, f.eventos, body); st != 503 || code(out) != "unavailable" {
				t.Errorf("%s %s: %d %v", c.method, c.path, st, out)
			}
		}
	})
}
