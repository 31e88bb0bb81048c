package httpapi_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
)

// bulkTokens sends one bulk message of enap/eventos, campaign "boletin",
// to addrs, and returns each recipient's unsubscribe token, made with the
// installation's keyring as the delivery engine makes it.
func bulkTokens(t *testing.T, f *fixture, addrs ...string) map[string]string {
	t.Helper()
	ctx := context.Background()
	rc, err := f.m.Send(ctx, mailing.Message{Account: "enap/eventos", From: "Eventos SERVIR <eventos@servir.gob.pe>", To: addrs,
		Subject: "Boletín", Text: "Novedades", Priority: mailing.Bulk, Campaign: "boletin"})
	if err != nil {
		t.Fatal(err)
	}
	keys, err := rcpttoken.Load(ctx, f.db, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for i, id := range rc.RecipientIDs {
		out[addrs[i]] = keys.Token(id)
	}
	return out
}

// state is what an unsubscribe changes: the suppressions, the unsubscribed
// events, the audit log.
func state(t *testing.T, db *bun.DB) [3]int {
	t.Helper()
	return [3]int{count(t, db, "SELECT count(*) FROM mail_suppressions"),
		count(t, db, "SELECT count(*) FROM mail_events WHERE type = 'unsubscribed'"),
		count(t, db, "SELECT count(*) FROM audit_log")}
}

// page requests path without following redirects and without a token, and
// checks what every answer of an unsubscribe link must be: never a 3xx,
// never a cookie, an HTML page that is not cached, indexed, framed or
// scripted.
func (f *fixture) page(t *testing.T, method, path, contentType string, body io.Reader) (int, string) {
	t.Helper()
	c := *f.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Jar = nil
	req, _ := http.NewRequest(method, f.srv.URL+path, body)
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	h := resp.Header
	switch {
	case resp.StatusCode >= 300 && resp.StatusCode < 400:
		t.Errorf("%s %s: a redirect (%d to %q)", method, path, resp.StatusCode, h.Get("Location"))
	case h.Get("Set-Cookie") != "":
		t.Errorf("%s %s: sets a cookie %q", method, path, h.Get("Set-Cookie"))
	case resp.StatusCode == http.StatusMethodNotAllowed:
	case !strings.HasPrefix(h.Get("Content-Type"), "text/html"), h.Get("Cache-Control") != "no-store",
		!strings.Contains(h.Get("X-Robots-Tag"), "noindex"), h.Get("X-Frame-Options") != "DENY",
		!strings.HasPrefix(h.Get("Content-Security-Policy"), "default-src 'none'"), strings.Contains(h.Get("Content-Security-Policy"), "script"):
		t.Errorf("%s %s: headers %v", method, path, h)
	case strings.Contains(strings.ToLower(string(b)), "<script"):
		t.Errorf("%s %s: a script in the page", method, path)
	}
	return resp.StatusCode, string(b)
}

// pageHeader is a header of GET path's answer.
func (f *fixture) pageHeader(t *testing.T, path, name string) string {
	t.Helper()
	resp, err := f.client.Get(f.srv.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.Header.Get(name)
}

// One-click unsubscribe: each body form a mailbox provider may send is
// 200 and records one suppression (scope account, reason unsubscribe, the
// message's campaign) and one unsubscribed event; again, nothing changes;
// GET and HEAD change nothing; a forged token is 404 and changes nothing.
// The next bulk message of that campaign is suppressed at acceptance, a
// transactional one is not.
func TestUnsubscribe(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		ctx := context.Background()
		addrs := []string{"form@example.org", "multi@example.org", "empty@example.org", "page@example.org"}
		toks := bulkTokens(t, f, addrs...)
		before := state(t, db)

		// GET and HEAD: the confirmation page, Spanish first; nothing changes.
		st, body := f.page(t, "GET", "/u/"+toks["form@example.org"], "", nil)
		for _, want := range []string{`<html lang="es-PE">`, "ya no recibirá correos masivos de <strong>Eventos SERVIR</strong> sobre «boletin»",
			`<section lang="en">`, "you will no longer receive bulk mail from <strong>Eventos SERVIR</strong>", `<form method="post">`,
			`name="source" value="page"`, "enap/eventos"} {
			if st != 200 || !strings.Contains(body, want) {
				t.Fatalf("GET: %d, the page lacks %q:\n%s", st, want, body)
			}
		}
		if i, j := strings.Index(body, "ya no recibirá"), strings.Index(body, "no longer receive"); i < 0 || j < i {
			t.Fatal("the Spanish text must come first")
		}
		if strings.Contains(body, "form@example.org") {
			t.Fatal("the page shows the address")
		}
		if _, css, ok := strings.Cut(body, "<style>"); ok {
			css, _, _ = strings.Cut(css, "</style>")
			sum := sha256.Sum256([]byte(css))
			if csp := f.pageHeader(t, "/u/"+toks["form@example.org"], "Content-Security-Policy"); !strings.Contains(csp, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'") {
				t.Fatalf("the page's style is not the one its Content-Security-Policy allows: %s", csp)
			}
		}
		if st, body := f.page(t, "HEAD", "/u/"+toks["form@example.org"], "", nil); st != 200 || body != "" {
			t.Fatalf("HEAD: %d %q", st, body)
		}
		if got := state(t, db); got != before {
			t.Fatalf("GET and HEAD changed %v to %v", before, got)
		}

		// POST, in each form a mailbox provider (or our page) sends.
		var mp bytes.Buffer
		mw := multipart.NewWriter(&mp)
		_ = mw.WriteField("List-Unsubscribe", "One-Click")
		mw.Close()
		for _, c := range []struct {
			addr, contentType, body, method string
		}{
			{"form@example.org", "application/x-www-form-urlencoded", "List-Unsubscribe=One-Click", "one-click"},
			{"multi@example.org", mw.FormDataContentType(), mp.String(), "one-click"},
			{"empty@example.org", "", "", "one-click"},
			{"page@example.org", "application/x-www-form-urlencoded", "source=page", "page"},
		} {
			for try := range 2 { // the second POST changes nothing
				st, body := f.page(t, "POST", "/u/"+toks[c.addr], c.contentType, strings.NewReader(c.body))
				if st != 200 || !strings.Contains(body, "Se anuló su suscripción") || !strings.Contains(body, "You have been unsubscribed") {
					t.Fatalf("POST %s (try %d): %d\n%s", c.addr, try, st, body)
				}
			}
			var row struct {
				Scope, Topic, Reason, Evidence string
				Account                        string
				N                              int
			}
			err := db.NewRaw("SELECT s.scope, s.topic, s.reason, s.evidence, a.name AS account, count(*) OVER () AS n FROM mail_suppressions AS s "+
				"JOIN quota_accounts AS a ON a.id = s.account_id WHERE s.address = ?", c.addr).Scan(ctx, &row)
			if err != nil || row.N != 1 || row.Scope != "account" || row.Reason != "unsubscribe" || row.Topic != "boletin" || row.Account != "enap/eventos" ||
				!strings.Contains(row.Evidence, `"method":"`+c.method+`"`) {
				t.Fatalf("%s: suppression %+v, %v", c.addr, row, err)
			}
			if n := count(t, db, "SELECT count(*) FROM mail_events AS e JOIN mail_recipients AS r ON r.id = e.recipient_id "+
				"WHERE e.type = 'unsubscribed' AND r.address = ?", c.addr); n != 1 {
				t.Fatalf("%s: %d unsubscribed events, want 1", c.addr, n)
			}
		}
		after := state(t, db)
		if after[0] != before[0]+4 || after[1] != before[1]+4 {
			t.Fatalf("state %v → %v: want 4 suppressions and 4 events more", before, after)
		}
		// Then GET says so, and still changes nothing.
		if st, body := f.page(t, "GET", "/u/"+toks["form@example.org"], "", nil); st != 200 || !strings.Contains(body, "Su suscripción ya está anulada") || strings.Contains(body, "<form") {
			t.Fatalf("GET after: %d\n%s", st, body)
		}

		// Forged and broken links: 404, the same page whatever they name.
		keys, _ := rcpttoken.Load(ctx, db, nil, time.Now())
		good := toks["form@example.org"]
		forged := good[:len(good)-1] + map[bool]string{true: "b", false: "a"}[strings.HasSuffix(good, "a")]
		for _, path := range []string{"/u/" + forged, "/u/" + strings.ToUpper(good[:2]) + "-aaaaaaaaaaaaaaaa", "/u/nonsense", "/u/" + keys.Token(987654321),
			"/u/", "/u/a/b", "/u/..%2fv1%2fquota", "/u/" + good + "/", "/u//" + good} {
			var invalid string
			for _, m := range []string{"GET", "POST", "HEAD"} {
				var rb io.Reader
				if m == "POST" {
					rb = strings.NewReader("List-Unsubscribe=One-Click")
				}
				st, body := f.page(t, m, path, "application/x-www-form-urlencoded", rb)
				if st != 404 || (m != "HEAD" && !strings.Contains(body, "Enlace no válido")) {
					t.Errorf("%s %s: %d\n%s", m, path, st, body)
				}
				if m == "GET" {
					invalid = body
				} else if m == "POST" && body != invalid {
					t.Errorf("POST %s: another page than GET's", path)
				}
			}
		}
		if st, _ := f.page(t, "PUT", "/u/"+good, "", nil); st != http.StatusMethodNotAllowed {
			t.Errorf("PUT: %d", st)
		}
		if got := state(t, db); got != after {
			t.Fatalf("forged links changed %v to %v", after, got)
		}

		// The next boletin is suppressed at acceptance, uncharged; a
		// transactional message and another campaign still go.
		for _, c := range []struct {
			priority mailing.Priority
			campaign string
			want     mailing.Status
		}{{mailing.Bulk, "boletin", mailing.StatusSuppressed}, {mailing.Transactional, "boletin", mailing.StatusQueued}, {mailing.Bulk, "otro", mailing.StatusQueued}} {
			rc, err := f.m.Send(ctx, mailing.Message{Account: "enap/eventos", From: "eventos@servir.gob.pe", To: []string{"form@example.org"},
				Subject: "s", Text: "t", Priority: c.priority, Campaign: c.campaign})
			if err != nil || rc.Status != c.want {
				t.Errorf("%s %s after the unsubscribe: %v %v, want %s", c.priority, c.campaign, rc.Status, err, c.want)
			}
		}
	})
}

// The one-click POST as a mailbox provider sends it, with the real curl:
// 200, no redirect, no cookie, and the address unsubscribed; curl -I
// (HEAD) and a plain GET change nothing.
func TestUnsubscribeCurl(t *testing.T) {
	requireCurl(t)
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db)
		tok := bulkTokens(t, f, "ana@example.org")["ana@example.org"]
		ca := filepath.Join(t.TempDir(), "ca.pem")
		if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o644); err != nil {
			t.Fatal(err)
		}
		url := f.srv.URL + "/u/" + tok
		curl := func(args ...string) (status, headers string) {
			t.Helper()
			hdr := filepath.Join(t.TempDir(), "headers")
			args = append([]string{"-q", "-sS", "--cacert", ca, "-D", hdr, "-o", os.DevNull, "-w", "%{http_code}"}, args...)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, "curl", args...).Output()
			if err != nil {
				t.Fatalf("curl %v: %v", args, err)
			}
			h, _ := os.ReadFile(hdr)
			return string(out), strings.ToLower(string(h))
		}
		before := state(t, db)
		for _, args := range [][]string{{url}, {"-I", url}} {
			if st, _ := curl(args...); st != "200" {
				t.Fatalf("curl %v: %s", args, st)
			}
		}
		if got := state(t, db); got != before {
			t.Fatalf("GET and HEAD changed %v to %v", before, got)
		}
		st, headers := curl("-X", "POST", "-H", "Content-Type: application/x-www-form-urlencoded", "--data", "List-Unsubscribe=One-Click", url)
		if st != "200" || strings.Contains(headers, "set-cookie:") || strings.Contains(headers, "location:") {
			t.Fatalf("curl -X POST: %s\n%s", st, headers)
		}
		if n := count(t, db, "SELECT count(*) FROM mail_suppressions WHERE address = 'ana@example.org' AND reason = 'unsubscribe' AND scope = 'account' AND removed_at IS NULL"); n != 1 {
			t.Fatalf("%d suppressions after the POST, want 1", n)
		}
	})
}
