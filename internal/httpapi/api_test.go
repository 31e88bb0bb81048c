package httpapi_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/httpapi"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

type fixture struct {
	srv              *httptest.Server
	m                *mailing.Mailer
	db               *bun.DB
	talento, eventos string // account tokens
	admin            string
	client           *http.Client
	campaigns        *campaign.Store
}

func newFixture(t *testing.T, db *bun.DB) *fixture {
	t.Helper()
	ctx := context.Background()
	m, err := mailing.New(mailing.Config{DB: db, MessageIDDomain: "envios.servir.gob.pe", UnsignedDomains: []string{"servir.gob.pe"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	now := time.Now()
	plan := quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 1000, StartsAt: now.AddDate(0, -1, 0), EndsAt: now.AddDate(1, 0, 0)},
		Accounts: []quota.AccountSpec{{Name: "sjti/talento", Allocation: 10}, {Name: "enap/eventos", Allocation: 100}}}
	if _, err := m.Ledger().Init(ctx, plan, "test"); err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"sjti/talento", "enap/eventos"} {
		if _, err := m.AddSender(ctx, a, "@servir.gob.pe", "test"); err != nil {
			t.Fatal(err)
		}
	}
	tokens := apitoken.NewStore(db, nil)
	f := &fixture{m: m, db: db}
	for _, x := range []struct {
		account string
		dst     *string
	}{{"sjti/talento", &f.talento}, {"enap/eventos", &f.eventos}, {"", &f.admin}} {
		if _, *x.dst, err = tokens.Add(ctx, x.account, "test", "test"); err != nil {
			t.Fatal(err)
		}
	}
	api, err := httpapi.New(httpapi.Config{Mailer: m, Tokens: tokens, Reports: report.New(db, report.Config{}), MaxBody: 64 << 10,
		EventPoll: 50 * time.Millisecond, EventLag: -1, Metrics: func(w io.Writer) { fmt.Fprintln(w, "envios_test_process_metric 7") }, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewTLSServer(api.Handler())
	t.Cleanup(f.srv.Close)
	f.client = f.srv.Client()
	return f
}

// newFullFixture is newFixture with every route on: the contacts, their
// imports (run until the test ends) and the campaigns.
func newFullFixture(t *testing.T, db *bun.DB) *fixture {
	t.Helper()
	f := newFixture(t, db)
	cs := &contacts.Store{DB: db}
	jobs := &contacts.Jobs{Store: cs, Dir: filepath.Join(t.TempDir(), "imports"), Logger: slog.New(slog.DiscardHandler)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jobs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("jobs: %v", err)
		}
	})
	var err error
	if f.campaigns, err = campaign.New(campaign.Config{Mailer: f.m, Segments: cs, Logger: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{Mailer: f.m, Tokens: apitoken.NewStore(db, nil), Reports: report.New(db, report.Config{}), MaxBody: 64 << 10,
		DB: db, Contacts: cs, Imports: jobs, Campaigns: f.campaigns})
	if err != nil {
		t.Fatal(err)
	}
	f.srv.Close()
	f.srv = httptest.NewTLSServer(api.Handler())
	t.Cleanup(f.srv.Close)
	f.client = f.srv.Client()
	return f
}

// call sends a request and decodes the JSON answer.
func (f *fixture) call(t *testing.T, method, path, token string, body any, header ...string) (int, map[string]any) {
	t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, r)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("%s %s: answer is not JSON: %v", method, path, err)
	}
	return resp.StatusCode, out
}

func code(out map[string]any) string {
	e, _ := out["error"].(map[string]any)
	c, _ := e["code"].(string)
	return c
}

func msg(to ...string) map[string]any {
	return map[string]any{"from": "avisos@servir.gob.pe", "to": to, "subject": "Hola", "text": "Prueba"}
}

func TestAPI(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		ctx := context.Background()

		// Accepted: 202 after the commit, with the recipients' ids.
		st, out := f.call(t, "POST", "/v1/messages", f.talento, msg("ana@example.org", "luis@example.org"))
		if st != 202 || out["status"] != "queued" {
			t.Fatalf("send: %d %v", st, out)
		}
		id := out["id"].(string)
		rs := out["recipient_ids"].([]any)
		if len(rs) != 2 || rs[0].(float64) <= 0 || out["recipients"].(float64) != 2 {
			t.Fatalf("recipients %v", out)
		}
		// Idempotent retry: the same message, nothing charged twice.
		body := msg("pedro@example.org")
		st1, o1 := f.call(t, "POST", "/v1/messages", f.talento, body, "Idempotency-Key", "pedido-42")
		st2, o2 := f.call(t, "POST", "/v1/messages", f.talento, body, "Idempotency-Key", "pedido-42")
		if st1 != 202 || st2 != 202 || o1["id"] != o2["id"] || o2["duplicate"] != true || fmt.Sprint(o1["recipient_ids"]) != fmt.Sprint(o2["recipient_ids"]) {
			t.Fatalf("idempotent retry: %d %v / %d %v", st1, o1, st2, o2)
		}
		if a, _ := f.m.Ledger().Account(ctx, "sjti/talento"); a.Used != 3 {
			t.Fatalf("used %d, want 3", a.Used)
		}
		// Scoping: another account's token sees nothing of it.
		for _, c := range []struct{ method, path string }{
			{"GET", "/v1/messages/" + id}, {"DELETE", "/v1/messages/" + id},
			{"GET", "/v1/messages/" + id + "/recipients/1/attempts"},
		} {
			if st, out := f.call(t, c.method, c.path, f.eventos, nil); st != 404 || code(out) != "not_found" {
				t.Errorf("%s %s with another account's token: %d %v", c.method, c.path, st, out)
			}
		}
		other := msg("x@example.org")
		other["account"] = "sjti/talento"
		if st, out := f.call(t, "POST", "/v1/messages", f.eventos, other); st != 404 {
			t.Errorf("sending as another account: %d %v", st, out)
		}
		// The owner and an admin see it.
		if st, out := f.call(t, "GET", "/v1/messages/"+id, f.talento, nil); st != 200 || out["recipient_count"].(float64) != 2 {
			t.Fatalf("get: %d %v", st, out)
		}
		if st, _ := f.call(t, "GET", "/v1/messages/"+id, f.admin, nil); st != 200 {
			t.Fatalf("admin get: %d", st)
		}
		rid := fmt.Sprint(int64(rs[0].(float64)))
		if st, out := f.call(t, "GET", "/v1/messages/"+id+"/recipients/"+rid+"/attempts", f.talento, nil); st != 200 || len(out["attempts"].([]any)) != 0 {
			t.Fatalf("attempts before delivery: %d %v", st, out)
		}
		if st, _ := f.call(t, "GET", "/v1/messages/nope/recipients/"+rid+"/attempts", f.talento, nil); st != 404 {
			t.Fatalf("attempts under another message id: %d", st)
		}
		// An admin must name the account.
		if st, out := f.call(t, "POST", "/v1/messages", f.admin, msg("a@example.org")); st != 422 || out["error"].(map[string]any)["fields"] == nil {
			t.Fatalf("admin without account: %d %v", st, out)
		}
		// Pool exhausted: 409 with what remains (10 - 3 = 7 left).
		many := []string{}
		for _, a := range "abcdefgh" {
			many = append(many, string(a)+"@example.org")
		}
		st, out = f.call(t, "POST", "/v1/messages", f.talento, msg(many...))
		if e := out["error"].(map[string]any); st != 409 || e["code"] != "pool_exhausted" || e["remaining"].(float64) != 7 {
			t.Fatalf("exhausted: %d %v", st, out)
		}
		// Invalid input: 422 naming the field.
		st, out = f.call(t, "POST", "/v1/messages", f.talento, msg("not an address"))
		if fields, _ := out["error"].(map[string]any)["fields"].(map[string]any); st != 422 || fields["to"] == nil {
			t.Fatalf("bad address: %d %v", st, out)
		}
		st, out = f.call(t, "POST", "/v1/messages", f.talento, map[string]any{"from": "jefe@otro.pe", "to": []string{"a@example.org"}, "subject": "s", "text": "t"})
		if fields, _ := out["error"].(map[string]any)["fields"].(map[string]any); st != 422 || fields["from"] == nil {
			t.Fatalf("sender not allowed: %d %v", st, out)
		}
		// Malformed, unknown fields, too big, wrong type, no token, bad token.
		for _, c := range []struct {
			body, token string
			status      int
			code        string
		}{
			{`{"from": `, f.talento, 400, "malformed_json"},
			{`{"form": "x"}`, f.talento, 400, "malformed_json"},
			{`{"to": "not-a-list"}`, f.talento, 400, "malformed_json"},
			{`{} {}`, f.talento, 400, "malformed_json"},
			{`{"text": "` + strings.Repeat("x", 70<<10) + `"}`, f.talento, 413, "body_too_large"},
			{`{}`, "", 401, "unauthorized"},
			{`{}`, "envios_nope", 401, "unauthorized"},
			{`{}`, "Basic abc", 401, "unauthorized"},
		} {
			st, out := f.call(t, "POST", "/v1/messages", c.token, c.body)
			if st != c.status || code(out) != c.code {
				t.Errorf("%.30q: %d %v, want %d %s", c.body, st, out, c.status, c.code)
			}
		}
		// A batch with per-recipient data.
		st, out = f.call(t, "POST", "/v1/messages", f.eventos, map[string]any{"from": "eventos@servir.gob.pe", "subject": "Hola {{.nombre}}",
			"text": "Te esperamos, {{.nombre}}.", "recipients": []map[string]any{{"address": "a@example.org", "data": map[string]any{"nombre": "Ana"}},
				{"address": "b@example.org", "data": map[string]any{"nombre": "Beto"}}, {"address": "bad", "data": map[string]any{"nombre": "X"}}}})
		if st != 202 || out["accepted"].(float64) != 2 || out["rejected_count"].(float64) != 1 {
			t.Fatalf("batch: %d %v", st, out)
		}
		// Cancel: the never-attempted recipients go back to the account.
		st, out = f.call(t, "DELETE", "/v1/messages/"+id, f.talento, nil)
		if st != 200 || out["cancelled"].(float64) != 2 || out["released"].(float64) != 2 {
			t.Fatalf("cancel: %d %v", st, out)
		}
		// Quota: the account's own, or the whole pool for an admin.
		if st, out := f.call(t, "GET", "/v1/quota", f.talento, nil); st != 200 || out["account"].(map[string]any)["used"].(float64) != 1 {
			t.Fatalf("quota: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/quota", f.admin, nil); st != 200 || len(out["accounts"].([]any)) != 2 {
			t.Fatalf("admin quota: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/healthz", "", nil); st != 200 || out["status"] != "ok" {
			t.Fatalf("healthz: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/nothing", f.admin, nil); st != 404 || code(out) != "not_found" {
			t.Fatalf("unknown route: %d %v", st, out)
		}
	})
}

// Every route the API serves is in its OpenAPI document, with its method.
func TestOpenAPIDescribesEveryRoute(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		st, doc := f.call(t, "GET", "/v1/openapi.json", "", nil)
		if st != 200 || !strings.HasPrefix(doc["openapi"].(string), "3.") {
			t.Fatalf("%d %v", st, doc["openapi"])
		}
		paths := doc["paths"].(map[string]any)
		for _, r := range httpapi.Routes() {
			p, ok := paths[r.Path].(map[string]any)
			if !ok || p[strings.ToLower(r.Method)] == nil {
				t.Errorf("%s %s is not described", r.Method, r.Path)
			}
		}
		if len(paths) != len(uniquePaths()) {
			t.Errorf("the document describes %d paths, the API serves %d", len(paths), len(uniquePaths()))
		}
	})
}

func uniquePaths() map[string]bool {
	u := map[string]bool{}
	for _, r := range httpapi.Routes() {
		u[r.Path] = true
	}
	return u
}

// The report routes, scoped like the rest: recipients by address, totals
// and a streamed export see only the token's account.
func TestAPIReports(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		for _, c := range []struct{ token, from, to string }{
			{f.talento, "avisos@servir.gob.pe", "ana@example.org"},
			{f.eventos, "eventos@servir.gob.pe", "Ana@Example.org"},
			{f.eventos, "eventos@servir.gob.pe", "=cmd@example.org"},
		} {
			m := msg(c.to)
			m["from"] = c.from
			if st, out := f.call(t, "POST", "/v1/messages", c.token, m); st != 202 {
				t.Fatalf("send: %d %v", st, out)
			}
		}
		st, out := f.call(t, "GET", "/v1/recipients?address=ANA@example.org", f.talento, nil)
		if rs := out["recipients"].([]any); st != 200 || len(rs) != 1 || rs[0].(map[string]any)["account"] != "sjti/talento" {
			t.Fatalf("talento's recipients: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/recipients?address=ana@example.org", f.admin, nil); st != 200 || len(out["recipients"].([]any)) != 2 {
			t.Fatalf("admin's recipients: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/recipients", f.talento, nil); st != 422 {
			t.Fatalf("no address: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/reports/totals?from=2000-01-01&by=month", f.eventos, nil); st != 200 || len(out["totals"].([]any)) != 1 {
			t.Fatalf("totals: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/reports/totals?from=yesterday", f.eventos, nil); st != 422 {
			t.Fatalf("bad date: %d %v", st, out)
		}
		req, _ := http.NewRequest("GET", f.srv.URL+"/v1/export?format=csv", nil)
		req.Header.Set("Authorization", "Bearer "+f.eventos)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		lines := strings.Split(strings.TrimSpace(string(body)), "\n")
		if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") || len(lines) != 3 ||
			strings.Contains(string(body), "sjti/talento") || !strings.Contains(string(body), "'=cmd@example.org") {
			t.Fatalf("export: %d %s\n%s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
		if st, out := f.call(t, "GET", "/v1/export?format=xml", f.eventos, nil); st != 422 {
			t.Fatalf("bad format: %d %v", st, out)
		}
	})
}

// The event stream over SSE: the events of a send arrive with ids, and a
// client that reconnects with Last-Event-ID gets only what came after.
func TestAPIEventStreamResumes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		for _, to := range []string{"a@example.org", "b@example.org", "c@example.org"} {
			if st, out := f.call(t, "POST", "/v1/messages", f.talento, msg(to)); st != 202 {
				t.Fatalf("send: %d %v", st, out)
			}
		}
		if st, _ := f.call(t, "POST", "/v1/messages", f.eventos, map[string]any{"from": "e@servir.gob.pe", "to": []string{"z@example.org"}, "subject": "s", "text": "t"}); st != 202 {
			t.Fatal("eventos send")
		}
		// read opens the stream and returns the first n events' ids and data.
		read := func(lastID string, n int) (ids, data []string) {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+"/v1/events", nil)
			req.Header.Set("Authorization", "Bearer "+f.talento)
			if lastID != "" {
				req.Header.Set("Last-Event-ID", lastID)
			}
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
				t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
			}
			sc := bufio.NewScanner(resp.Body)
			for len(data) < n && sc.Scan() {
				line := sc.Text()
				if v, ok := strings.CutPrefix(line, "id: "); ok {
					ids = append(ids, v)
				}
				if v, ok := strings.CutPrefix(line, "data: "); ok {
					data = append(data, v)
				}
			}
			return ids, data
		}
		ids, data := read("", 2)
		if len(ids) != 2 || !strings.Contains(data[0], `"type":"accepted"`) || !strings.Contains(data[0], "a@example.org") {
			t.Fatalf("first two: %v %v", ids, data)
		}
		more, data := read(ids[1], 1)
		if len(more) != 1 || !strings.Contains(data[0], "c@example.org") || strings.Contains(strings.Join(data, ""), "z@example.org") {
			t.Fatalf("after %s: %v %v", ids[1], more, data)
		}
		if st, out := f.call(t, "GET", "/v1/events?after=nonsense", f.talento, nil); st != 422 {
			t.Fatalf("bad id: %d %v", st, out)
		}
	})
}

// /metrics: Prometheus text for admin tokens, with the counters and the
// queue and what the process adds; an account token gets 404.
func TestAPIMetrics(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		if st, _ := f.call(t, "POST", "/v1/messages", f.talento, msg("a@example.org", "b@example.org")); st != 202 {
			t.Fatal("send")
		}
		get := func(token string) (int, string) {
			req, _ := http.NewRequest("GET", f.srv.URL+"/metrics", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := f.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		if st, out := f.call(t, "POST", "/v1/suppressions", f.admin, map[string]any{"address": "c@example.org", "why": "rebota"}); st != 201 {
			t.Fatalf("add suppression: %d %v", st, out)
		}
		st, body := get(f.admin)
		for _, want := range []string{
			`envios_recipients_total{account="sjti/talento",origin="http",kind="accepted"} 2`,
			`envios_suppressions{reason="manual",scope="all"} 1`,
			`envios_queue_recipients{status="queued"} 2`,
			"# TYPE envios_queue_oldest_due_seconds gauge",
			"envios_test_process_metric 7",
		} {
			if st != 200 || !strings.Contains(body, want) {
				t.Fatalf("metrics lack %q:\n%s", want, body)
			}
		}
		if st, _ := get(f.talento); st != 404 {
			t.Fatalf("account token: %d", st)
		}
	})
}

// What an admin token does goes to the audit log; an account token's
// actions (its owner's own) do not.
func TestAPIAdminActionsAreAudited(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		m := msg("a@example.org")
		m["account"] = "sjti/talento"
		st, out := f.call(t, "POST", "/v1/messages", f.admin, m)
		if st != 202 {
			t.Fatalf("admin send: %d %v", st, out)
		}
		if st, _ := f.call(t, "DELETE", "/v1/messages/"+out["id"].(string), f.admin, nil); st != 200 {
			t.Fatal("admin cancel")
		}
		if st, _ := f.call(t, "POST", "/v1/messages", f.talento, msg("b@example.org")); st != 202 {
			t.Fatal("account send")
		}
		var actions []string
		if err := db.NewRaw("SELECT action || ' ' || subject FROM audit_log WHERE actor LIKE 'token:%' ORDER BY id").Scan(context.Background(), &actions); err != nil {
			t.Fatal(err)
		}
		if strings.Join(actions, ",") != "api.send sjti/talento,api.cancel " {
			t.Fatalf("audit log %q", actions)
		}
	})
}

// PostgreSQL down: a request gets 503 "unavailable" (not 500), and
// once it is back the same request is accepted, stored and charged once.
func TestAPIDatabaseOutage(t *testing.T) {
	ctx := context.Background()
	db, proxy := storetest.OpenBehindProxy(t, 0)
	f := newFixture(t, db)
	proxy.Down()
	st, out := f.call(t, "POST", "/v1/messages", f.talento, msg("ana@example.org"))
	if st != 503 || code(out) != "unavailable" {
		t.Fatalf("database down: %d %v, want 503 unavailable", st, out)
	}
	proxy.Up()
	if st, out := f.call(t, "POST", "/v1/messages", f.talento, msg("ana@example.org")); st != 202 {
		t.Fatalf("database back: %d %v, want 202", st, out)
	}
	a, err := f.m.Ledger().Account(ctx, "sjti/talento")
	if err != nil || a.Used != 1 {
		t.Fatalf("charged %d, %v; want 1", a.Used, err)
	}
}
