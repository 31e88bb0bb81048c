package httpapi_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
)

// campaignFixture is the API fixture with a list "boletin" of n contacts
// in each account.
func campaignFixture(t *testing.T, db *bun.DB, n int) (*fixture, *campaign.Store) {
	t.Helper()
	f := newFullFixture(t, db)
	ctx := context.Background()
	cs := &contacts.Store{DB: db}
	for _, a := range []string{"enap/eventos", "sjti/talento"} {
		if _, err := cs.CreateList(ctx, a, "boletin", "", "test"); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString("email,name,cargo\n")
		for i := range n {
			fmt.Fprintf(&b, "p%d@example.org,Persona %d,Cargo %d\n", i, i, i)
		}
		if _, err := cs.Import(ctx, strings.NewReader(b.String()), contacts.ImportOptions{Account: a, List: "boletin", Actor: "test"}); err != nil {
			t.Fatal(err)
		}
	}
	return f, f.campaigns
}

func TestCampaignRoutes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f, s := campaignFixture(t, db, 12)
		body := map[string]any{"name": "Boletín", "from": "eventos@servir.gob.pe", "subject": "Hola {{.name}}", "text": "{{.cargo}}", "lists": []string{"boletin"}}
		st, out := f.call(t, "POST", "/v1/campaigns", f.eventos, body)
		if st != 201 || out["status"] != "draft" {
			t.Fatalf("create: %d %v", st, out)
		}
		id := int64(out["id"].(float64))
		path := fmt.Sprintf("/v1/campaigns/%d", id)
		for _, tc := range []struct {
			method, path, token string
			body                any
			status              int
			code, contains      string
		}{
			{"GET", path, f.talento, nil, 404, "not_found", ""}, // another account's id
			{"POST", path + "/pause", f.talento, nil, 404, "not_found", ""},
			{"POST", "/v1/campaigns", f.talento, map[string]any{"account": "enap/eventos", "name": "x"}, 404, "not_found", ""},
			{"POST", "/v1/campaigns", f.admin, map[string]any{"name": "x"}, 422, "invalid", "must name the account"},
			{"POST", "/v1/campaigns", f.eventos, map[string]any{"name": "x", "from": "eventos@servir.gob.pe", "subject": "{{.puesto}}", "text": "t",
				"lists": []string{"boletin"}}, 422, "invalid", "merge fields the target's contacts do not have: puesto"},
			{"GET", path + "/preflight", f.eventos, nil, 200, "", `"cost":12`},
			{"GET", path + "/preview?as=p3@example.org", f.eventos, nil, 200, "", `"subject":"Hola Persona 3"`},
			{"GET", path + "/preview?as=nadie@example.org", f.eventos, nil, 404, "not_found", ""},
			{"POST", path + "/pause", f.eventos, nil, 409, "conflict", "only a scheduled or running campaign pauses"},
			{"POST", path + "/start", f.eventos, nil, 200, "", `"recipients":12`},
			{"POST", path + "/start", f.eventos, nil, 409, "conflict", "only a draft starts"},
			{"POST", path + "/pause", f.eventos, nil, 200, "", `"status":"paused"`},
			{"POST", path + "/resume", f.admin, nil, 200, "", `"status":"running"`},
			{"POST", path + "/fly", f.eventos, nil, 404, "not_found", "no campaign action"},
			{"POST", path + "/test", f.eventos, map[string]any{"to": "revisora@example.org", "as": "p1@example.org"}, 200, "", `"Accepted":1`},
			{"POST", path + "/test", f.eventos, map[string]any{}, 422, "invalid", "to:"},
			{"POST", path + "/clone", f.eventos, map[string]any{"name": "Boletín 2"}, 200, "", `"status":"draft"`},
			{"POST", "/v1/templates", f.eventos, map[string]any{"name": "t", "shared": true, "subject": "s", "text": "x"}, 403, "forbidden", ""},
			{"POST", "/v1/templates", f.eventos, map[string]any{"name": "t", "subject": "Hola {{.name}}", "html": "<p>{{.cargo}}</p>"}, 200, "", `"fields":["cargo","name"]`},
			{"POST", "/v1/templates", f.admin, map[string]any{"name": "comun", "shared": true, "subject": "s", "text": "x"}, 200, "", `"account":""`},
			{"GET", "/v1/templates", f.eventos, nil, 200, "", `"name":"comun"`},
			{"GET", "/v1/campaigns?limit=1", f.eventos, nil, 200, "", `"name":"Boletín 2"`},
			{"GET", "/v1/campaigns", f.talento, nil, 200, "", `"campaigns":[]`},
		} {
			st, out := f.call(t, tc.method, tc.path, tc.token, tc.body)
			j := fmt.Sprint(out)
			if b, err := jsonOf(out); err == nil {
				j = b
			}
			if st != tc.status || code(out) != tc.code || !strings.Contains(j, tc.contains) {
				t.Errorf("%s %s: %d %s, want %d %q containing %q", tc.method, tc.path, st, j, tc.status, tc.code, tc.contains)
			}
		}
		if _, err := s.Materialise(context.Background(), id); err != nil {
			t.Fatal(err)
		}
		st, out = f.call(t, "GET", path, f.eventos, nil)
		if j, _ := jsonOf(out); st != 200 || !strings.Contains(j, `"stored":12`) || !strings.Contains(j, `"queued":12`) {
			t.Errorf("progress: %d %s", st, j)
		}
		st, out = f.call(t, "GET", path+"/recipients?limit=2", f.eventos, nil)
		if j, _ := jsonOf(out); st != 200 || strings.Count(j, `"address"`) != 2 {
			t.Errorf("recipients: %d %s", st, j)
		}
		// sjti/talento has 10 messages and 12 contacts: refused whole.
		body["from"] = "avisos@servir.gob.pe"
		_, out = f.call(t, "POST", "/v1/campaigns", f.talento, body)
		st, out = f.call(t, "POST", fmt.Sprintf("/v1/campaigns/%v/start", out["id"]), f.talento, nil)
		if j, _ := jsonOf(out); st != 409 || code(out) != "pool_exhausted" || !strings.Contains(j, `"remaining":10`) || !strings.Contains(j, `"requested":12`) {
			t.Errorf("start beyond the allocation: %d %s", st, j)
		}
	})
}

func jsonOf(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
