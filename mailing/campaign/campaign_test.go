package campaign_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/quota"
)

type fixture struct {
	env      mailingtest.Env
	contacts *contacts.Store
	s        *campaign.Store
}

func setup(t *testing.T, db *bun.DB, allocation int64) fixture {
	t.Helper()
	e := mailingtest.Setup(t, db, map[string]int64{"enap/eventos": allocation, "sjti/talento": 100}, mailing.Config{ChunkSize: 7})
	cs := &contacts.Store{DB: db, Now: e.Clock.Now}
	s, err := campaign.New(campaign.Config{DB: db, Mailer: e.M, Segments: cs, Now: e.Clock.Now, Poll: 10 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []string{"enap/eventos", "sjti/talento"} {
		if _, err := cs.CreateList(context.Background(), a, "boletin", "", "test"); err != nil {
			t.Fatal(err)
		}
	}
	return fixture{e, cs, s}
}

// importN adds n contacts (c0…@example.org, cargo "Analista i") to a list.
func (f fixture) importN(t *testing.T, account string, from, n int) {
	t.Helper()
	var b strings.Builder
	b.WriteString("email,nombre,cargo\n")
	for i := from; i < from+n; i++ {
		fmt.Fprintf(&b, "c%d@example.org,Contacto %d,Analista %d\n", i, i, i)
	}
	im, err := f.contacts.Import(context.Background(), strings.NewReader(b.String()), contacts.ImportOptions{Account: account, List: "boletin", Actor: "test"})
	if err != nil || im.Added != int64(n) {
		t.Fatalf("import: %+v %v", im, err)
	}
}

func (f fixture) create(t *testing.T, sp campaign.Spec) campaign.Campaign {
	t.Helper()
	if sp.Account == "" {
		sp.Account = "enap/eventos"
	}
	if sp.Name == "" {
		sp.Name = "Boletín de diciembre"
	}
	if sp.From == "" {
		sp.From = "avisos@servir.gob.pe"
	}
	if sp.Lists == nil && sp.Segment == "" {
		sp.Lists = []string{"boletin"}
	}
	if sp.Subject == "" && sp.Template == "" {
		sp.Subject, sp.Text = "Hola {{.name}}", "Su cargo: {{.cargo}}"
	}
	c, err := f.s.Create(context.Background(), sp, "test")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f fixture) recipients(t *testing.T, c campaign.Campaign) (rows, distinct int) {
	t.Helper()
	got, err := f.s.Get(context.Background(), "", c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.env.DB.NewRaw("SELECT count(*), count(DISTINCT address) FROM mail_recipients WHERE message_id = ?", got.MessageID).
		Scan(context.Background(), &rows, &distinct); err != nil {
		t.Fatal(err)
	}
	return rows, distinct
}

// A campaign from a stored template: preflight, start, materialise (once,
// however often asked), the suppressed contact recorded but not charged.
func TestStartAndMaterialise(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := setup(t, db, 100)
		f.importN(t, "enap/eventos", 0, 20)
		if _, _, err := suppress.Insert(ctx, db, suppress.Add{Address: "c3@example.org", Scope: suppress.ScopeAll, Reason: suppress.ReasonHardBounce,
			Actor: "test", Now: f.env.Clock.Now()}); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.SaveTemplate(ctx, campaign.Template{Account: "enap/eventos", Name: "boletin", Subject: "Hola {{.name}}",
			HTML: "<p>{{.cargo}}</p>"}, "test"); err != nil {
			t.Fatal(err)
		}
		c := f.create(t, campaign.Spec{Template: "boletin"})
		if c.Status != campaign.Draft || c.HTML != "<p>{{.cargo}}</p>" || c.TemplateID == 0 || c.Topic != "boletin" {
			t.Fatalf("created %+v", c)
		}
		p, err := f.s.Preflight(ctx, "enap/eventos", c.ID)
		if err != nil || p.Recipients != 20 || p.Suppressed != 1 || p.Cost != 19 || p.Remaining != 100 || !p.Fits {
			t.Fatalf("preflight %+v %v", p, err)
		}
		started, _, err := f.s.Start(ctx, "enap/eventos", c.ID, "ana")
		if err != nil || started.Status != campaign.Running || started.Targets != 20 {
			t.Fatalf("start %+v %v", started, err)
		}
		if _, _, err := f.s.Start(ctx, "enap/eventos", c.ID, "ana"); !errors.Is(err, campaign.ErrState) {
			t.Fatalf("second start: %v", err)
		}
		f.importN(t, "enap/eventos", 20, 3) // after the start: not included
		for range 2 {
			if done, err := f.s.Materialise(ctx, c.ID); err != nil || !done {
				t.Fatalf("materialise: %v %v", done, err)
			}
		}
		pr, err := f.s.Progress(ctx, "enap/eventos", c.ID)
		if err != nil || pr.Stored != 20 || pr.Counts[mailing.StatusSuppressed] != 1 || pr.Counts[mailing.StatusQueued] != 19 {
			t.Fatalf("progress %+v %v", pr, err)
		}
		if used := f.env.Used(t, "enap/eventos"); used != 19 {
			t.Errorf("used %d, want 19", used)
		}
		html := ""
		if err := db.NewRaw("SELECT r.data FROM mail_recipients r WHERE r.message_id = ? AND r.address = 'c2@example.org'", pr.Campaign.MessageID).Scan(ctx, &html); err != nil ||
			!strings.Contains(html, `"cargo":"Analista 2"`) || !strings.Contains(html, `"email":"c2@example.org"`) {
			t.Errorf("stored data %q %v", html, err)
		}
		n, err := f.s.Extend(ctx, "enap/eventos", c.ID, "ana")
		if err != nil || n != 3 {
			t.Fatalf("extend %d %v", n, err)
		}
		if done, err := f.s.Materialise(ctx, c.ID); err != nil || !done {
			t.Fatalf("materialise after extend: %v %v", done, err)
		}
		if rows, distinct := f.recipients(t, c); rows != 23 || distinct != 23 {
			t.Errorf("%d recipient rows, %d addresses; want 23", rows, distinct)
		}
		mailingtest.Verify(t, f.env.M)
	})
}

// Two materialisers (two nodes) on one campaign: each contact one row,
// one charge.
func TestConcurrentMaterialisers(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := setup(t, db, 1000)
		f.importN(t, "enap/eventos", 0, 300)
		c := f.create(t, campaign.Spec{})
		if _, _, err := f.s.Start(ctx, "enap/eventos", c.ID, "ana"); err != nil {
			t.Fatal(err)
		}
		other, err := campaign.New(campaign.Config{DB: db, Mailer: f.env.M, Segments: f.contacts, Now: f.env.Clock.Now})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for _, s := range []*campaign.Store{f.s, other, f.s} {
			wg.Go(func() {
				if _, err := s.Materialise(ctx, c.ID); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if _, err := f.s.Materialise(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		if rows, distinct := f.recipients(t, c); rows != 300 || distinct != 300 {
			t.Errorf("%d rows for %d addresses, want 300", rows, distinct)
		}
		if used := f.env.Used(t, "enap/eventos"); used != 300 {
			t.Errorf("used %d, want 300", used)
		}
	})
}

// Refusals at save and at start, each with what is wrong.
func TestRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := setup(t, db, 5)
		f.importN(t, "enap/eventos", 0, 8)
		for _, tc := range []struct {
			name string
			sp   campaign.Spec
			want string
		}{
			{"unknown field", campaign.Spec{Subject: "Hola {{.nombre_completo}}", Text: "x"}, "merge fields the target's contacts do not have: nombre_completo"},
			{"bad template", campaign.Spec{Subject: "Hola {{.name", Text: "x"}, "subject template"},
			{"no body", campaign.Spec{Subject: "Hola"}, "a text or an HTML body is required"},
			{"no list", campaign.Spec{Lists: []string{"nada"}}, `enap/eventos has no list "nada"`},
			{"sender", campaign.Spec{From: "otro@example.org"}, `from "otro@example.org"`},
			{"template and body", campaign.Spec{Template: "x", Subject: "s", Text: "t"}, "not both"},
			{"no target", campaign.Spec{Lists: []string{}}, "needs a target"},
		} {
			sp := tc.sp
			sp.Account, sp.Name, sp.From = "enap/eventos", "x", "avisos@servir.gob.pe"
			if tc.sp.From != "" {
				sp.From = tc.sp.From
			}
			if sp.Lists == nil {
				sp.Lists = []string{"boletin"}
			}
			if sp.Subject == "" && sp.Template == "" && tc.name != "no body" {
				sp.Subject, sp.Text = "s", "t"
			}
			_, err := f.s.Create(ctx, sp, "test")
			if !errors.Is(err, campaign.ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%s: %v, want ErrInvalid with %q", tc.name, err, tc.want)
			}
		}
		c := f.create(t, campaign.Spec{})
		_, p, err := f.s.Start(ctx, "enap/eventos", c.ID, "ana")
		var ins *quota.InsufficientError
		if !errors.As(err, &ins) || ins.Requested != 8 || ins.Remaining != 5 || p.Cost != 8 {
			t.Fatalf("start beyond the allocation: %v %+v", err, p)
		}
		got, _ := f.s.Get(ctx, "enap/eventos", c.ID)
		if got.Status != campaign.Draft || got.Targets != 0 || f.env.Used(t, "enap/eventos") != 0 {
			t.Errorf("refused start left %+v, used %d", got, f.env.Used(t, "enap/eventos"))
		}
		if _, err := f.s.Get(ctx, "sjti/talento", c.ID); !errors.Is(err, campaign.ErrNotFound) {
			t.Errorf("another account's campaign: %v", err)
		}
	})
}

// Pause holds the recipients from the delivery engines; resume releases
// them; cancel releases the charge of those never attempted.
func TestPauseResumeCancel(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := setup(t, db, 100)
		f.importN(t, "enap/eventos", 0, 10)
		c := f.create(t, campaign.Spec{})
		if _, _, err := f.s.Start(ctx, "enap/eventos", c.ID, "ana"); err != nil {
			t.Fatal(err)
		}
		if _, err := f.s.Materialise(ctx, c.ID); err != nil {
			t.Fatal(err)
		}
		claim := func() int {
			now := f.env.Clock.Now()
			items, err := mailstore.ClaimDue(ctx, db, "t", now, now.Add(time.Minute), 100)
			if err != nil {
				t.Fatal(err)
			}
			ids := make([]int64, len(items))
			for i, it := range items {
				ids[i] = it.ID
			}
			if err := mailstore.ReturnLeases(ctx, db, "t", ids); err != nil {
				t.Fatal(err)
			}
			return len(items)
		}
		if p, err := f.s.Pause(ctx, "enap/eventos", c.ID, "ana"); err != nil || p.Status != campaign.Paused {
			t.Fatalf("pause %+v %v", p, err)
		}
		if n := claim(); n != 0 {
			t.Errorf("claimed %d recipients of a paused campaign", n)
		}
		if p, err := f.s.Resume(ctx, "enap/eventos", c.ID, "ana"); err != nil || p.Status != campaign.Running {
			t.Fatalf("resume %+v %v", p, err)
		}
		if n := claim(); n != 10 {
			t.Errorf("claimed %d after resume, want 10", n)
		}
		if _, err := f.s.Resume(ctx, "enap/eventos", c.ID, "ana"); !errors.Is(err, campaign.ErrState) {
			t.Errorf("resume of a running campaign: %v", err)
		}
		if p, err := f.s.Cancel(ctx, "enap/eventos", c.ID, "ana"); err != nil || p.Status != campaign.Cancelled {
			t.Fatalf("cancel %+v %v", p, err)
		}
		pr, _ := f.s.Progress(ctx, "enap/eventos", c.ID)
		if pr.Counts[mailing.StatusCancelled] != 10 || f.env.Used(t, "enap/eventos") != 0 {
			t.Errorf("after cancel: %+v, used %d", pr.Counts, f.env.Used(t, "enap/eventos"))
		}
		mailingtest.Verify(t, f.env.M)
	})
}

// Preview and test send render one contact's data; a clone is a new draft.
func TestPreviewTestClone(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		f := setup(t, db, 100)
		f.importN(t, "enap/eventos", 0, 3)
		c := f.create(t, campaign.Spec{HTML: "<p>{{.cargo}} &amp; {{.email}}</p>", Tags: []string{"dic"}})
		p, err := f.s.Preview(ctx, "enap/eventos", c.ID, "C2@example.org")
		if err != nil || p.Subject != "Hola Contacto 2" || p.Text != "Su cargo: Analista 2" || p.HTML != "<p>Analista 2 &amp; c2@example.org</p>" {
			t.Fatalf("preview %+v %v", p, err)
		}
		if _, err := f.s.Preview(ctx, "enap/eventos", c.ID, "nadie@example.org"); !errors.Is(err, campaign.ErrNotFound) {
			t.Errorf("preview as a stranger: %v", err)
		}
		rec, err := f.s.Test(ctx, "enap/eventos", c.ID, "revisor@servir.gob.pe", "c1@example.org", "ana")
		if err != nil || rec.Accepted != 1 {
			t.Fatalf("test send %+v %v", rec, err)
		}
		info, err := f.env.M.Message(ctx, "enap/eventos", rec.MessageID)
		if err != nil || info.Priority != mailing.Transactional || !strings.Contains(strings.Join(info.Tags, ","), "test") {
			t.Errorf("test message %+v %v", info, err)
		}
		if f.env.Used(t, "enap/eventos") != 1 {
			t.Errorf("a test send is charged")
		}
		cl, err := f.s.Clone(ctx, "enap/eventos", c.ID, "", "ana")
		if err != nil || cl.ID == c.ID || cl.Name != c.Name+" (copia)" || cl.Status != campaign.Draft || cl.HTML != c.HTML {
			t.Errorf("clone %+v %v", cl, err)
		}
		list, err := f.s.List(ctx, "enap/eventos", campaign.ListOptions{})
		if err != nil || len(list) != 2 || list[0].ID != cl.ID {
			t.Errorf("list %v %v", list, err)
		}
	})
}

// Run starts a scheduled campaign at its time and finishes it once every
// recipient is final.
func TestRunSchedulesAndFinishes(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx, cancel := context.WithCancel(context.Background())
		f := setup(t, db, 100)
		f.importN(t, "enap/eventos", 0, 4)
		c := f.create(t, campaign.Spec{SendAt: f.env.Clock.Now().Add(time.Hour)})
		started, _, err := f.s.Start(ctx, "enap/eventos", c.ID, "ana")
		if err != nil || started.Status != campaign.Scheduled {
			t.Fatalf("start %+v %v", started, err)
		}
		done := make(chan error)
		go func() { done <- f.s.Run(ctx) }()
		wait := func(want campaign.Status) {
			t.Helper()
			for range 500 {
				if got, _ := f.s.Get(ctx, "", c.ID); got.Status == want && !got.MaterialisedAt.IsZero() {
					return
				}
				time.Sleep(10 * time.Millisecond)
			}
			got, _ := f.s.Get(ctx, "", c.ID)
			t.Fatalf("campaign %+v, want %s and materialised", got, want)
		}
		wait(campaign.Scheduled)
		f.env.Clock.Add(2 * time.Hour)
		wait(campaign.Running)
		got, _ := f.s.Get(ctx, "", c.ID)
		if _, err := db.NewRaw("UPDATE mail_recipients SET status = 'sent' WHERE message_id = ?", got.MessageID).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		wait(campaign.Finished)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

func TestFields(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{"Hola {{.name}}", "name"},
		{"{{if .vip}}{{.titulo}} {{end}}{{.name}}", "name,titulo,vip"},
		{"{{range .items}}{{.x}}{{end}}", "items"},
		{"{{with .a}}{{.b}}{{else}}{{.c}}{{end}}", "a,c"},
		{"{{printf \"%s\" .region | html}}", "region"},
		{"sin campos", ""},
		{`{{index . "Fecha de alta"}} {{.Región}}`, "Fecha de alta,Región"},
	} {
		got, err := campaign.Fields(tc.src)
		if err != nil || strings.Join(got, ",") != tc.want {
			t.Errorf("Fields(%q) = %v %v, want %s", tc.src, got, err, tc.want)
		}
	}
	if _, err := campaign.Fields("{{.a"); err == nil {
		t.Error("Fields of a broken template: no error")
	}
}
