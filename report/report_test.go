package report_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// start is 12:00 in Lima.
var start = time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)

var lima = mustLoad("America/Lima")

func mustLoad(name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return loc
}

type fixture struct {
	db    *bun.DB
	m     *mailing.Mailer
	rep   *report.Reporter
	clock *clock
}

var accounts = []string{"enap/eventos", "sjci/imagen", "sjti/talento"}

// setup makes a mailer whose message ids are msg-01, msg-02, …, three
// accounts (allocation allocation each) that may send as
// avisos@servir.gob.pe, and a Reporter in America/Lima.
func setup(t testing.TB, db *bun.DB, allocation int64) fixture {
	t.Helper()
	ctx := context.Background()
	clk := &clock{t: start}
	var mu sync.Mutex
	n := 0
	m, err := mailing.New(mailing.Config{DB: db, Now: clk.Now, MessageIDDomain: "envios.servir.gob.pe",
		NewID: func() string { mu.Lock(); defer mu.Unlock(); n++; return fmt.Sprintf("msg-%02d", n) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	plan := quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 100_000_000, StartsAt: start.AddDate(0, -1, 0), EndsAt: start.AddDate(1, 0, 0)}}
	for _, a := range accounts {
		plan.Accounts = append(plan.Accounts, quota.AccountSpec{Name: a, Allocation: allocation})
	}
	if _, err := m.Ledger().Init(ctx, plan, "test"); err != nil {
		t.Fatal(err)
	}
	for _, a := range accounts {
		if _, err := m.AddSender(ctx, a, "avisos@servir.gob.pe", "test"); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := m.AddDomainKey(ctx, "servir.gob.pe", "ed25519"); err != nil {
		t.Fatal(err)
	}
	return fixture{db: db, m: m, rep: report.New(db, report.Config{Now: clk.Now}), clock: clk}
}

// history stores five messages and delivers them through a sink that
// bounces nobody@ and defers later@:
//
//	msg-01 sjti/talento library 26 Nov 12:00 Lima  Ana@Example.com (sent), bob@ (sent), cc carla@ (sent); campaign convocatoria, tag cas
//	msg-02 enap/eventos campaign 26 Nov 12:00     batch: ana@ (sent), nobody@ (bounced), later@ (deferred); campaign semana
//	msg-03 sjci/imagen http     26 Nov 23:30      ANA@example.com (sent)
//	msg-04 enap/eventos library 27 Nov 00:30      dave@ (scheduled for the 28th); campaign semana
//	msg-05 sjti/talento library 27 Nov 00:30      erin@ (cancelled)
func history(t testing.TB, f fixture) {
	t.Helper()
	ctx := context.Background()
	send := func(msg mailing.Message) {
		t.Helper()
		msg.From = "SERVIR <avisos@servir.gob.pe>"
		if msg.Text == "" {
			msg.Text = "Cuerpo"
		}
		if _, err := f.m.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
	send(mailing.Message{Account: "sjti/talento", To: []string{"Ana <Ana@Example.com>", "bob@example.com"}, Cc: []string{"carla@example.com"},
		Subject: "Convocatoria CAS", Campaign: "convocatoria", Tags: []string{"cas"}})
	_, err := f.m.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "Hola {{.N}}",
		Text: "Hola {{.N}}", Campaign: "semana", Origin: quota.OriginCampaign, Recipients: mailing.List(
			mailing.Recipient{Address: "ana@example.com", Data: map[string]string{"N": "Ana"}},
			mailing.Recipient{Address: "nobody@example.com", Data: map[string]string{"N": "Nadie"}},
			mailing.Recipient{Address: "later@example.com", Data: map[string]string{"N": "Luego"}})})
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Set(time.Date(2026, 11, 27, 4, 30, 0, 0, time.UTC))
	send(mailing.Message{Account: "sjci/imagen", To: []string{"ANA@example.com"}, Subject: "Boletín", Origin: quota.OriginHTTP})
	f.clock.Set(time.Date(2026, 11, 27, 5, 30, 0, 0, time.UTC))
	send(mailing.Message{Account: "enap/eventos", To: []string{"dave@example.com"}, Subject: "Recordatorio", Campaign: "semana",
		SendAt: time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC)})
	send(mailing.Message{Account: "sjti/talento", To: []string{"erin@example.com"}, Subject: "Aviso"})
	if _, err := f.m.Cancel(ctx, "sjti/talento", "msg-05", "test"); err != nil {
		t.Fatal(err)
	}

	sink := mailtest.NewSink(t)
	sink.Reply = func(rcpt string) error {
		switch {
		case strings.HasPrefix(rcpt, "nobody@"):
			return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
		case strings.HasPrefix(rcpt, "later@"):
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 7, 1}, Message: "try again later"}
		}
		return nil
	}
	eng, err := f.m.NewEngine(ctx, mailing.EngineConfig{Workers: 1, ReturnPathDomain: "envios.servir.gob.pe",
		Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS(), Timeout: 10 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if n, err := eng.RunOnce(ctx); err != nil || n != 7 {
		t.Fatalf("RunOnce delivered %d, %v; want 7", n, err)
	}
}

// brief renders rows as "address status account message".
func brief(rows []report.Row) []string {
	out := []string{}
	for _, r := range rows {
		out = append(out, fmt.Sprintf("%s %s %s %s", r.Address, r.Status, r.Account, r.MessageID))
	}
	return out
}

func TestRows(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		history(t, f)
		ctx := context.Background()
		nov27 := time.Date(2026, 11, 27, 0, 0, 0, 0, lima)
		tests := []struct {
			name   string
			filter report.Filter
			want   []string
		}{
			{"address any case", report.Filter{Address: "ana@EXAMPLE.com"}, []string{
				"Ana@example.com sent sjti/talento msg-01", "ana@example.com sent enap/eventos msg-02", "ANA@example.com sent sjci/imagen msg-03"}},
			{"address with a display name", report.Filter{Address: " Ana García <ANA@example.COM> "}, []string{
				"Ana@example.com sent sjti/talento msg-01", "ana@example.com sent enap/eventos msg-02", "ANA@example.com sent sjci/imagen msg-03"}},
			{"address of one account", report.Filter{Account: "SJCI/Imagen", Address: "ana@example.com"}, []string{"ANA@example.com sent sjci/imagen msg-03"}},
			{"address nobody wrote to", report.Filter{Address: "zoe@example.com"}, []string{}},
			{"message", report.Filter{MessageID: "msg-02"}, []string{
				"ana@example.com sent enap/eventos msg-02", "nobody@example.com bounced enap/eventos msg-02", "later@example.com deferred enap/eventos msg-02"}},
			{"message of another account", report.Filter{Account: "sjti/talento", MessageID: "msg-02"}, []string{}},
			{"campaign", report.Filter{Campaign: "semana"}, []string{
				"ana@example.com sent enap/eventos msg-02", "nobody@example.com bounced enap/eventos msg-02",
				"later@example.com deferred enap/eventos msg-02", "dave@example.com scheduled enap/eventos msg-04"}},
			{"campaign of another account", report.Filter{Account: "sjci/imagen", Campaign: "semana"}, []string{}},
			{"tag", report.Filter{Tag: "cas"}, []string{
				"Ana@example.com sent sjti/talento msg-01", "bob@example.com sent sjti/talento msg-01", "carla@example.com sent sjti/talento msg-01"}},
			{"account and period", report.Filter{Account: "sjti/talento", From: nov27, To: nov27.AddDate(0, 0, 1)}, []string{
				"erin@example.com cancelled sjti/talento msg-05"}},
			{"period ends before 27 Nov in Lima", report.Filter{To: nov27}, []string{
				"Ana@example.com sent sjti/talento msg-01", "bob@example.com sent sjti/talento msg-01", "carla@example.com sent sjti/talento msg-01",
				"ana@example.com sent enap/eventos msg-02", "nobody@example.com bounced enap/eventos msg-02",
				"later@example.com deferred enap/eventos msg-02", "ANA@example.com sent sjci/imagen msg-03"}},
			{"origin", report.Filter{Origin: quota.OriginHTTP}, []string{"ANA@example.com sent sjci/imagen msg-03"}},
			{"status", report.Filter{Status: mailing.StatusBounced}, []string{"nobody@example.com bounced enap/eventos msg-02"}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				p, err := f.rep.Rows(ctx, tc.filter)
				if err != nil {
					t.Fatal(err)
				}
				if got := brief(p.Rows); !slices.Equal(got, tc.want) {
					t.Fatalf("got  %q\nwant %q", got, tc.want)
				}
				if p.Next != 0 {
					t.Fatalf("Next = %d on the only page", p.Next)
				}
			})
		}

		// The fields of one row.
		p, err := f.rep.Recipient(ctx, report.Filter{Address: "nobody@example.com"})
		if err != nil || len(p.Rows) != 1 {
			t.Fatalf("%v %v", p, err)
		}
		x := p.Rows[0]
		if x.Origin != quota.OriginCampaign || x.Campaign != "semana" || x.Subject != "Hola {{.N}}" || x.Kind != "to" ||
			x.Attempts != 1 || x.RemoteHost != "127.0.0.1" || x.Reply != "550 5.1.1 no such user" ||
			!x.AcceptedAt.Equal(start) || x.AcceptedAt.Location().String() != "America/Lima" || x.FinalAt.IsZero() || x.LastAttemptAt.IsZero() ||
			!strings.HasSuffix(x.RFCMessageID, "@envios.servir.gob.pe") {
			t.Fatalf("row %+v", x)
		}
		p, _ = f.rep.Recipient(ctx, report.Filter{Address: "dave@example.com"})
		if d := p.Rows[0]; d.Attempts != 0 || !d.LastAttemptAt.IsZero() || !d.FinalAt.IsZero() {
			t.Fatalf("a scheduled row has attempt times: %+v", d)
		}

		// Keyset pages.
		var all []string
		next, pages := int64(0), 0
		for ; ; pages++ {
			p, err := f.rep.Rows(ctx, report.Filter{Limit: 4, After: next})
			if err != nil || pages > 5 {
				t.Fatalf("page %d: %v", pages, err)
			}
			all = append(all, brief(p.Rows)...)
			if next = p.Next; next == 0 {
				break
			}
		}
		if len(all) != 9 || pages != 2 || len(slices.Compact(slices.Sorted(slices.Values(all)))) != 9 {
			t.Fatalf("paged through %d rows in %d pages, want 9 distinct in 3: %q", len(all), pages+1, all)
		}

		// Mistakes.
		for _, tc := range []struct {
			filter report.Filter
			want   error
		}{
			{report.Filter{Account: "nadie/nadie"}, report.ErrNotFound},
			{report.Filter{Account: "not an account"}, report.ErrInvalid},
			{report.Filter{Origin: "fax"}, report.ErrInvalid},
			{report.Filter{Status: "lost"}, report.ErrInvalid},
		} {
			if _, err := f.rep.Rows(ctx, tc.filter); !errors.Is(err, tc.want) {
				t.Errorf("Rows(%+v) = %v, want %v", tc.filter, err, tc.want)
			}
		}
		if _, err := f.rep.Recipient(ctx, report.Filter{Account: "sjti/talento"}); !errors.Is(err, report.ErrInvalid) {
			t.Errorf("Recipient without an address: %v", err)
		}
	})
}

func TestMessageAndCampaign(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		history(t, f)
		ctx := context.Background()

		m, err := f.rep.Message(ctx, "", "msg-01")
		if err != nil {
			t.Fatal(err)
		}
		if m.Account != "sjti/talento" || m.Origin != quota.OriginLibrary || m.Kind != "single" || m.Campaign != "convocatoria" ||
			!slices.Equal(m.Tags, []string{"cas"}) || m.From != `"SERVIR" <avisos@servir.gob.pe>` || m.Subject != "Convocatoria CAS" ||
			m.Counts != (report.Counts{Accepted: 3, Sent: 3}) || !m.AcceptedAt.Equal(start) {
			t.Fatalf("message %+v", m)
		}
		m, err = f.rep.Message(ctx, "enap/eventos", "msg-04")
		if err != nil || m.SendAt.IsZero() || m.Counts != (report.Counts{Accepted: 1, Scheduled: 1}) {
			t.Fatalf("scheduled message %+v %v", m, err)
		}
		m, err = f.rep.Message(ctx, "sjti/talento", "msg-05")
		if err != nil || m.CancelledAt.IsZero() || m.Counts != (report.Counts{Accepted: 1, Cancelled: 1}) {
			t.Fatalf("cancelled message %+v %v", m, err)
		}
		for _, tc := range []struct{ account, id string }{{"", "msg-99"}, {"sjci/imagen", "msg-01"}} {
			if _, err := f.rep.Message(ctx, tc.account, tc.id); !errors.Is(err, report.ErrNotFound) {
				t.Errorf("Message(%q, %q) = %v, want ErrNotFound", tc.account, tc.id, err)
			}
		}

		ms, err := f.rep.Messages(ctx, report.Filter{Campaign: "semana"})
		if err != nil || len(ms) != 2 || ms[0].ID != "msg-04" || ms[1].ID != "msg-02" ||
			ms[1].Counts != (report.Counts{Accepted: 3, Sent: 1, Bounced: 1, Deferred: 1}) {
			t.Fatalf("campaign messages %+v %v", ms, err)
		}

		ps, err := f.rep.Campaign(ctx, report.Filter{Campaign: "semana"})
		if err != nil {
			t.Fatal(err)
		}
		want := []report.CampaignPart{
			{Campaign: "semana", Account: "enap/eventos", Origin: quota.OriginCampaign, Messages: 1, Counts: report.Counts{Accepted: 3, Sent: 1, Bounced: 1, Deferred: 1}},
			{Campaign: "semana", Account: "enap/eventos", Origin: quota.OriginLibrary, Messages: 1, Counts: report.Counts{Accepted: 1, Scheduled: 1}},
		}
		if len(ps) != 2 {
			t.Fatalf("campaign parts %+v", ps)
		}
		for i := range want {
			got := ps[i]
			if !got.FirstAcceptedAt.Equal(got.LastAcceptedAt) || got.FirstAcceptedAt.Location().String() != "America/Lima" {
				t.Errorf("part %d times %v %v", i, got.FirstAcceptedAt, got.LastAcceptedAt)
			}
			got.FirstAcceptedAt, got.LastAcceptedAt = time.Time{}, time.Time{}
			if got != want[i] {
				t.Errorf("part %d = %+v, want %+v", i, got, want[i])
			}
		}
		if !ps[0].FirstAcceptedAt.Equal(start) || !ps[1].FirstAcceptedAt.Equal(time.Date(2026, 11, 27, 5, 30, 0, 0, time.UTC)) {
			t.Errorf("first accepted %v, %v", ps[0].FirstAcceptedAt, ps[1].FirstAcceptedAt)
		}
		for _, tc := range []report.Filter{{Campaign: "nope"}, {Campaign: "semana", Account: "sjti/talento"}} {
			if _, err := f.rep.Campaign(ctx, tc); !errors.Is(err, report.ErrNotFound) {
				t.Errorf("Campaign(%+v) = %v, want ErrNotFound", tc, err)
			}
		}
		if _, err := f.rep.Campaign(ctx, report.Filter{}); !errors.Is(err, report.ErrInvalid) {
			t.Errorf("Campaign without a name: %v", err)
		}
	})
}

func TestTotals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		history(t, f)
		ctx := context.Background()
		day := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, lima) }
		tests := []struct {
			name   string
			rep    *report.Reporter
			filter report.TotalsFilter
			want   []report.Total
		}{
			{"by day in Lima", f.rep, report.TotalsFilter{}, []report.Total{
				{Period: day(26), Account: "enap/eventos", Origin: "campaign", Counts: report.Counts{Accepted: 3, Sent: 1, Bounced: 1, Deferred: 1}},
				{Period: day(26), Account: "sjci/imagen", Origin: "http", Counts: report.Counts{Accepted: 1, Sent: 1}},
				{Period: day(26), Account: "sjti/talento", Origin: "library", Counts: report.Counts{Accepted: 3, Sent: 3}},
				{Period: day(27), Account: "enap/eventos", Origin: "library", Counts: report.Counts{Accepted: 1, Scheduled: 1}},
				{Period: day(27), Account: "sjti/talento", Origin: "library", Counts: report.Counts{Accepted: 1, Cancelled: 1}},
			}},
			{"by day in UTC", report.New(db, report.Config{Location: time.UTC}), report.TotalsFilter{Account: "sjci/imagen"}, []report.Total{
				{Period: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC), Account: "sjci/imagen", Origin: "http", Counts: report.Counts{Accepted: 1, Sent: 1}},
			}},
			{"by day in Kolkata (+05:30)", report.New(db, report.Config{Location: mustLoad("Asia/Kolkata")}), report.TotalsFilter{Account: "sjci/imagen"}, []report.Total{
				{Period: time.Date(2026, 11, 27, 0, 0, 0, 0, mustLoad("Asia/Kolkata")), Account: "sjci/imagen", Origin: "http", Counts: report.Counts{Accepted: 1, Sent: 1}},
			}},
			{"by month, one account", f.rep, report.TotalsFilter{Account: "sjti/talento", By: report.Month}, []report.Total{
				{Period: day(1), Account: "sjti/talento", Origin: "library", Counts: report.Counts{Accepted: 4, Sent: 3, Cancelled: 1}},
			}},
			{"by year, one origin", f.rep, report.TotalsFilter{Origin: quota.OriginLibrary, By: report.Year}, []report.Total{
				{Period: time.Date(2026, 1, 1, 0, 0, 0, 0, lima), Account: "enap/eventos", Origin: "library", Counts: report.Counts{Accepted: 1, Scheduled: 1}},
				{Period: time.Date(2026, 1, 1, 0, 0, 0, 0, lima), Account: "sjti/talento", Origin: "library", Counts: report.Counts{Accepted: 4, Sent: 3, Cancelled: 1}},
			}},
			{"one day", f.rep, report.TotalsFilter{From: day(27), To: day(28)}, []report.Total{
				{Period: day(27), Account: "enap/eventos", Origin: "library", Counts: report.Counts{Accepted: 1, Scheduled: 1}},
				{Period: day(27), Account: "sjti/talento", Origin: "library", Counts: report.Counts{Accepted: 1, Cancelled: 1}},
			}},
			{"nothing", f.rep, report.TotalsFilter{From: day(1), To: day(2)}, []report.Total{}},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				got, err := tc.rep.Totals(ctx, tc.filter)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(tc.want) {
					t.Fatalf("got %d totals, want %d: %+v", len(got), len(tc.want), got)
				}
				for i := range got {
					g, w := got[i], tc.want[i]
					if !g.Period.Equal(w.Period) || g.Period.Location().String() != w.Period.Location().String() ||
						g.Account != w.Account || g.Origin != w.Origin || g.Counts != w.Counts {
						t.Errorf("total %d = %v %+v\nwant       %v %+v", i, g.Period, g, w.Period, w)
					}
				}
			})
		}
		for _, tf := range []report.TotalsFilter{{By: "week"}, {Origin: "fax"}, {Account: "x"}} {
			if _, err := f.rep.Totals(ctx, tf); !errors.Is(err, report.ErrInvalid) {
				t.Errorf("Totals(%+v) = %v, want ErrInvalid", tf, err)
			}
		}
	})
}

// TestAccountScoping: with an account's filter, no question returns
// another account's rows, whatever else the filter names.
func TestAccountScoping(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		history(t, f)
		ctx := context.Background()
		addresses := []string{"ana@example.com", "bob@example.com", "carla@example.com", "nobody@example.com", "later@example.com", "dave@example.com", "erin@example.com"}
		messages := []string{"msg-01", "msg-02", "msg-03", "msg-04", "msg-05"}
		for _, acct := range accounts {
			seen := 0
			check := func(what string, rows []report.Row) {
				t.Helper()
				for _, r := range rows {
					if r.Account != acct {
						t.Errorf("%s for %s returned %s's row %d", what, acct, r.Account, r.ID)
					}
				}
				seen += len(rows)
			}
			filters := []report.Filter{{}, {Campaign: "semana"}, {Campaign: "convocatoria"}, {Tag: "cas"}, {Origin: quota.OriginHTTP}}
			for _, a := range addresses {
				filters = append(filters, report.Filter{Address: a})
			}
			for _, id := range messages {
				filters = append(filters, report.Filter{MessageID: id})
			}
			own := 0
			for i, flt := range filters {
				flt.Account = acct
				p, err := f.rep.Rows(ctx, flt)
				if err != nil {
					t.Fatal(err)
				}
				check(fmt.Sprintf("Rows(%+v)", flt), p.Rows)
				if i == 0 {
					own = len(p.Rows)
				}
				var n int64
				for x, err := range f.rep.All(ctx, flt) {
					if err != nil {
						t.Fatal(err)
					}
					check(fmt.Sprintf("All(%+v)", flt), []report.Row{x})
					n++
				}
				if n != int64(len(p.Rows)) {
					t.Errorf("All(%+v) gave %d rows, Rows %d", flt, n, len(p.Rows))
				}
				var sb strings.Builder
				if n2, err := f.rep.Export(ctx, &sb, report.JSONLines, flt); err != nil || n2 != n {
					t.Errorf("Export(%+v) = %d, %v; want %d rows", flt, n2, err, n)
				}
				if strings.Count(sb.String(), `"account":"`+acct+`"`) != int(n) {
					t.Errorf("Export(%+v) holds another account's rows:\n%s", flt, sb.String())
				}
			}
			if own == 0 || seen == 0 {
				t.Fatalf("%s has no rows: the test proves nothing", acct)
			}
			for _, id := range messages {
				m, err := f.rep.Message(ctx, acct, id)
				if err == nil && m.Account != acct {
					t.Errorf("Message(%s, %s) returned %s's message", acct, id, m.Account)
				} else if err != nil && !errors.Is(err, report.ErrNotFound) {
					t.Fatal(err)
				}
			}
			ms, err := f.rep.Messages(ctx, report.Filter{Account: acct})
			if err != nil {
				t.Fatal(err)
			}
			for _, m := range ms {
				if m.Account != acct {
					t.Errorf("Messages(%s) returned %s's message %s", acct, m.Account, m.ID)
				}
			}
			for _, c := range []string{"semana", "convocatoria"} {
				ps, err := f.rep.Campaign(ctx, report.Filter{Account: acct, Campaign: c})
				if err != nil && !errors.Is(err, report.ErrNotFound) {
					t.Fatal(err)
				}
				for _, p := range ps {
					if p.Account != acct {
						t.Errorf("Campaign(%s, %s) returned %s's part", acct, c, p.Account)
					}
				}
			}
			ts, err := f.rep.Totals(ctx, report.TotalsFilter{Account: acct})
			if err != nil {
				t.Fatal(err)
			}
			var sum int64
			for _, x := range ts {
				if x.Account != acct {
					t.Errorf("Totals(%s) returned %s's total", acct, x.Account)
				}
				sum += x.Accepted
			}
			if sum != int64(own) {
				t.Errorf("Totals(%s) counted %d recipients, Rows %d", acct, sum, own)
			}
		}
	})
}

// TestTotalsHalfHourZone: two recipients in the same UTC hour fall on
// different days in a zone half an hour off the hour.
func TestTotalsHalfHourZone(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		ctx := context.Background()
		for _, at := range []time.Time{time.Date(2026, 11, 26, 18, 15, 0, 0, time.UTC), time.Date(2026, 11, 26, 18, 45, 0, 0, time.UTC)} {
			f.clock.Set(at)
			_, err := f.m.Send(ctx, mailing.Message{Account: "sjci/imagen", From: "avisos@servir.gob.pe", To: []string{"a@example.com"}, Subject: "s", Text: "t"})
			if err != nil {
				t.Fatal(err)
			}
		}
		kolkata := mustLoad("Asia/Kolkata")
		ts, err := report.New(db, report.Config{Location: kolkata, Now: f.clock.Now}).Totals(ctx, report.TotalsFilter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(ts) != 2 || ts[0].Period.Day() != 26 || ts[1].Period.Day() != 27 || ts[0].Accepted != 1 || ts[1].Accepted != 1 {
			t.Fatalf("totals in Kolkata: %+v", ts)
		}
	})
}
