package httpapi_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/report"
)

// newContactsFixture is newFixture's API with the contacts and imports
// routes on, its jobs running until the test ends, and a list "boletin"
// in both accounts.
func newContactsFixture(t *testing.T, db *bun.DB, maxFile int64) (*fixture, *contacts.Jobs) {
	t.Helper()
	base := newFixture(t, db) // the accounts, senders and tokens
	cs := &contacts.Store{DB: db}
	jobs := &contacts.Jobs{Store: cs, Dir: filepath.Join(t.TempDir(), "imports"), MaxFileSize: maxFile}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- jobs.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("jobs: %v", err)
		}
	})
	api, err := httpapi.New(httpapi.Config{Mailer: base.m, Tokens: apitoken.NewStore(db, nil), Reports: report.New(db, report.Config{}),
		MaxBody: 64 << 10, DB: db, Contacts: cs, Imports: jobs})
	if err != nil {
		t.Fatal(err)
	}
	f := *base
	f.srv = httptest.NewTLSServer(api.Handler())
	t.Cleanup(f.srv.Close)
	f.client = f.srv.Client()
	for _, tok := range []string{f.talento, f.eventos} {
		if st, out := f.call(t, "POST", "/v1/lists", tok, map[string]string{"name": "boletin", "description": "novedades"}); st != 201 {
			t.Fatalf("list: %d %v", st, out)
		}
	}
	return &f, jobs
}

// upload posts a file to /v1/imports?query as text/csv; size -1 sends it
// chunked (no Content-Length).
func (f *fixture) upload(t *testing.T, token, query string, body io.Reader, size int64) (int, map[string]any, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("POST", f.srv.URL+"/v1/imports?"+query, body)
	req.ContentLength = size
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("upload: answer is not JSON: %v", err)
	}
	return resp.StatusCode, out, resp.Header
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name string
	job  map[string]any
}

// follow reads an import's event stream to its end.
func (f *fixture) follow(t *testing.T, token, path string) []sseEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("events: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var evs []sseEvent
	var name string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if v, ok := strings.CutPrefix(line, "event: "); ok {
			name = v
		}
		if v, ok := strings.CutPrefix(line, "data: "); ok {
			ev := sseEvent{name: name}
			if err := json.Unmarshal([]byte(v), &ev.job); err != nil {
				t.Fatalf("event data %q: %v", v, err)
			}
			evs = append(evs, ev)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("stream: %v", err)
	}
	return evs
}

// get reads a path's raw answer.
func (f *fixture) get(t *testing.T, token, path string) (int, string, http.Header) {
	t.Helper()
	req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// contactsFile is a file of n rows, line 3 and every 5,000th after it
// rejected, and a formula-like reject on the last line.
func contactsFile(n int) (body string, rejects []string) {
	var b strings.Builder
	b.WriteString("Correo;Nombre\n")
	for i := range n - 1 {
		line := i + 2
		if line%5000 == 3 {
			fmt.Fprintf(&b, "no-es-correo-%d;Fila %d\n", line, line)
			rejects = append(rejects, fmt.Sprintf(`%d,"invalid address: ""no-es-correo-%d"": missing '@' or angle-addr",no-es-correo-%d;Fila %d`, line, line, line, line))
			continue
		}
		fmt.Fprintf(&b, "socio%06d@example.org;Socio %d\n", i, i)
	}
	b.WriteString("=1+2;Fórmula\n")
	rejects = append(rejects, fmt.Sprintf(`%d,"invalid address: ""=1+2"": missing '@' or angle-addr",'=1+2;Fórmula`, n+1))
	return b.String(), rejects
}

func num(v any) int64 { f, _ := v.(float64); return int64(f) }

// An upload over real HTTP is queued (202, Location), followed on its
// event stream to done — the progress never goes back and ends with every
// row read — and its reject report is exact; other accounts see none of it.
func TestAPIImport(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f, _ := newContactsFixture(t, db, 0)
		const rows = 60_000
		body, rejects := contactsFile(rows)
		st, out, h := f.upload(t, f.eventos, "list=boletin&mode=add&map=email=Correo,name=Nombre&dry_run=false&file_name=socios.csv",
			strings.NewReader(body), int64(len(body)))
		id := num(out["id"])
		if st != 202 || id == 0 || h.Get("Location") != fmt.Sprintf("/v1/imports/%d", id) || out["status"] != "queued" ||
			num(out["bytes_total"]) != int64(len(body)) || out["file_name"] != "socios.csv" || out["account"] != "enap/eventos" {
			t.Fatalf("upload: %d %v %v", st, h, out)
		}
		evs := f.follow(t, f.eventos, h.Get("Location")+"/events")
		var read, bytesRead int64
		for i, ev := range evs {
			if r, b := num(ev.job["read"]), num(ev.job["bytes_read"]); r < read || b < bytesRead {
				t.Errorf("event %d went back: read %d bytes %d after %d %d", i, r, b, read, bytesRead)
			} else {
				read, bytesRead = r, b
			}
			if (ev.name == "progress") == (i == len(evs)-1) {
				t.Errorf("event %d is %s", i, ev.name)
			}
		}
		last := evs[len(evs)-1].job
		if evs[len(evs)-1].name != "done" || num(last["read"]) != rows || num(last["rejected"]) != int64(len(rejects)) ||
			num(last["added"]) != rows-int64(len(rejects)) || num(last["bytes_read"]) != int64(len(body)) {
			t.Fatalf("last event %s %v", evs[len(evs)-1].name, last)
		}
		t.Logf("%d events", len(evs))

		st, csvText, hh := f.get(t, f.eventos, fmt.Sprintf("/v1/imports/%d/rejects", id))
		if want := "line,reason,raw\n" + strings.Join(rejects, "\n") + "\n"; st != 200 || csvText != want || !strings.HasPrefix(hh.Get("Content-Type"), "text/csv") {
			t.Fatalf("rejects: %d %s\n%q\nwant\n%q", st, hh.Get("Content-Type"), csvText, want)
		}
		st, page := f.call(t, "GET", fmt.Sprintf("/v1/imports/%d/rejects?format=json&limit=2", id), f.eventos, nil)
		rs, _ := page["rejects"].([]any)
		if st != 200 || len(rs) != 2 || num(page["next"]) != 5003 {
			t.Fatalf("rejects page: %d %v", st, page)
		}
		st, page = f.call(t, "GET", fmt.Sprintf("/v1/imports/%d/rejects?format=json&limit=100&after=%d", id, num(page["next"])), f.eventos, nil)
		if rs, _ := page["rejects"].([]any); st != 200 || len(rs) != len(rejects)-2 || num(page["next"]) != 0 {
			t.Fatalf("last page: %d %v", st, page)
		}

		// Another account's token: 404 everywhere, never 403.
		for _, c := range []struct{ method, path string }{{"GET", ""}, {"DELETE", ""}, {"GET", "/events"}, {"GET", "/rejects"}} {
			if st, out := f.call(t, c.method, fmt.Sprintf("/v1/imports/%d%s", id, c.path), f.talento, nil); st != 404 || code(out) != "not_found" {
				t.Errorf("%s %s by another account: %d %v", c.method, c.path, st, out)
			}
		}
		if st, out := f.call(t, "GET", "/v1/imports", f.talento, nil); st != 200 || len(out["imports"].([]any)) != 0 {
			t.Errorf("another account's list: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/imports", f.admin, nil); st != 200 || len(out["imports"].([]any)) != 1 {
			t.Errorf("admin's list: %d %v", st, out)
		}
		st, out = f.call(t, "GET", fmt.Sprintf("/v1/imports/%d?account=enap/eventos", id), f.admin, nil)
		if st != 200 || out["status"] != "done" {
			t.Errorf("admin reads it: %d %v", st, out)
		}
		if st, out := f.call(t, "DELETE", fmt.Sprintf("/v1/imports/%d", id), f.eventos, nil); st != 422 ||
			out["error"].(map[string]any)["message"] != fmt.Sprintf("import %d is already done", id) {
			t.Errorf("cancel a done import: %d %v", st, out)
		}
		if st, out := f.call(t, "GET", "/v1/lists", f.eventos, nil); st != 200 || num(out["lists"].([]any)[0].(map[string]any)["subscribed"]) != rows-int64(len(rejects)) {
			t.Errorf("lists: %d %v", st, out)
		}
	})
}

// A running import of 300,000 rows cancelled over the API rolls back
// whole: the stream ends with cancelled, and no contact landed.
func TestAPIImportCancel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f, _ := newContactsFixture(t, db, 0)
		var b strings.Builder
		b.WriteString("email,name\n")
		for i := range 300_000 {
			fmt.Fprintf(&b, "persona%07d@example.org,Persona %d\n", i, i)
		}
		st, out, h := f.upload(t, f.eventos, "list=boletin", strings.NewReader(b.String()), int64(b.Len()))
		if st != 202 {
			t.Fatalf("upload: %d %v", st, out)
		}
		for deadline := time.Now().Add(time.Minute); out["status"] == "queued"; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("never ran: %v", out)
			}
			_, out = f.call(t, "GET", h.Get("Location"), f.eventos, nil)
		}
		if out["status"] != "running" {
			t.Fatalf("not running: %v", out)
		}
		if st, out := f.call(t, "DELETE", h.Get("Location"), f.eventos, nil); st != 202 || out["status"] != "running" {
			t.Fatalf("cancel: %d %v", st, out)
		}
		evs := f.follow(t, f.eventos, h.Get("Location")+"/events")
		if last := evs[len(evs)-1]; last.name != "cancelled" || last.job["status"] != "cancelled" || !strings.HasPrefix(last.job["error"].(string), "cancelled by token:") ||
			num(last.job["added"]) != 0 {
			t.Fatalf("last event: %s %v", last.name, last.job)
		}
		if n := count(t, db, "SELECT count(*) FROM contacts"); n != 0 {
			t.Errorf("%d contacts landed", n)
		}
		if st, out := f.call(t, "DELETE", h.Get("Location"), f.eventos, nil); st != 422 || !strings.HasSuffix(out["error"].(map[string]any)["message"].(string), "is already cancelled") {
			t.Errorf("cancel again: %d %v", st, out)
		}
	})
}

// A file over the limit is refused with a clear error, whether its size
// is announced or not; the partial file is removed.
func TestAPIImportTooLarge(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f, jobs := newContactsFixture(t, db, 1<<10)
		body := "email,name\n" + strings.Repeat("persona@example.org,Persona\n", 100)
		for _, size := range []int64{int64(len(body)), -1} {
			st, out, _ := f.upload(t, f.eventos, "list=boletin", strings.NewReader(body), size)
			if st != 422 || code(out) != "invalid" || out["error"].(map[string]any)["message"] != "the file is larger than the limit of 1 KiB" {
				t.Errorf("size %d: %d %v", size, st, out)
			}
		}
		_, out := f.call(t, "GET", "/v1/imports", f.eventos, nil)
		if ims := out["imports"].([]any); len(ims) != 1 || ims[0].(map[string]any)["status"] != "failed" { // the chunked one was recorded
			t.Errorf("imports: %v", out)
		}
		if fs, _ := filepath.Glob(filepath.Join(jobs.Dir, "*")); len(fs) != 0 {
			t.Errorf("files left: %v", fs)
		}
		// What else an upload is refused for.
		for _, c := range []struct {
			query, ctype string
			status       int
			field        string
		}{
			{"", "text/csv", 422, "list"},
			{"list=nada", "text/csv", 404, ""},
			{"list=boletin&mode=borrar", "text/csv", 422, ""},
			{"list=boletin&dry_run=quizas", "text/csv", 422, "dry_run"},
			{"list=boletin", "application/x-www-form-urlencoded", 415, ""},
		} {
			st, out := f.call(t, "POST", "/v1/imports?"+c.query, f.eventos, "email\na@example.org\n", "Content-Type", c.ctype)
			if st != c.status || (c.field != "" && fields(out)[c.field] == nil) {
				t.Errorf("%s %s: %d %v", c.query, c.ctype, st, out)
			}
		}
	})
}
