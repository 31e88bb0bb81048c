package report

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun/dialect"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// Activity is what happened in one period for one account and origin:
// recipients accepted, and the deliveries, deferrals (attempts), bounces,
// failures and cancellations that happened then. It is read from the
// counters mailing keeps in the transaction of each change, never from a
// scan of the recipients, so a year of an account costs a few thousand
// rows at most. The sum of Sent over a period is the total sent log.
type Activity struct {
	Period     time.Time    `json:"period"` // the first instant of the day, month or year, in the Reporter's Location
	Account    string       `json:"account"`
	Origin     quota.Origin `json:"origin"`
	Accepted   int64        `json:"accepted"`
	Sent       int64        `json:"sent"`
	Deferred   int64        `json:"deferred"` // deferring attempts
	Bounced    int64        `json:"bounced"`
	Failed     int64        `json:"failed"`
	Suppressed int64        `json:"suppressed"`
	Cancelled  int64        `json:"cancelled"`
}

func (a *Activity) add(kind string, n int64) {
	switch kind {
	case "accepted":
		a.Accepted += n
	case string(mailing.StatusSent):
		a.Sent += n
	case string(mailing.StatusDeferred):
		a.Deferred += n
	case string(mailing.StatusBounced):
		a.Bounced += n
	case string(mailing.StatusFailed):
		a.Failed += n
	case string(mailing.StatusSuppressed):
		a.Suppressed += n
	case string(mailing.StatusCancelled):
		a.Cancelled += n
	}
}

// ActivityFilter selects what Activity counts. Zero fields select all.
type ActivityFilter struct {
	Account  string
	Origin   quota.Origin
	From, To time.Time // events in [From, To), to the hour
	By       Period    // day (default), month, year; or "account" / "origin": one row per account or origin over the range
}

// Activity sums the counters by period (or by account or origin alone),
// account and origin. Hours are UTC hours: a day of the Location is exact
// when its offset is a whole number of hours (America/Lima: −5).
func (r *Reporter) Activity(ctx context.Context, f ActivityFilter) ([]Activity, error) {
	by := f.By
	switch by {
	case "":
		by = Day
	case Day, Month, Year, "account", "origin":
	default:
		return nil, fmt.Errorf("%w: by %q (day, month, year, account or origin)", ErrInvalid, f.By)
	}
	q := r.db.NewSelect().TableExpr("mail_counters AS c").ColumnExpr("c.account_id, c.origin, c.hour, c.kind, c.n")
	if f.Account != "" {
		id, err := r.accountID(ctx, f.Account)
		if err != nil {
			return nil, err
		}
		q = q.Where("c.account_id = ?", id)
	}
	if f.Origin != "" {
		if !f.Origin.Valid() {
			return nil, fmt.Errorf("%w: unknown origin %q (library, smtp, http, campaign, cli)", ErrInvalid, f.Origin)
		}
		q = q.Where("c.origin = ?", f.Origin)
	}
	if !f.From.IsZero() {
		q = q.Where("c.hour >= ?", mailing.Hour(f.From))
	}
	if !f.To.IsZero() {
		q = q.Where("c.hour < ?", (f.To.Unix()+3599)/3600)
	}
	var rows []struct {
		AccountID int64
		Origin    quota.Origin
		Hour      int64
		Kind      string
		N         int64
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: activity: %w", err)
	}
	names, err := r.accountNames(ctx)
	if err != nil {
		return nil, err
	}
	type key struct {
		period  time.Time
		account string
		origin  quota.Origin
	}
	sums := map[key]*Activity{}
	for _, x := range rows {
		k := key{account: names[x.AccountID], origin: x.Origin}
		t := time.Unix(x.Hour*3600, 0).In(r.loc)
		switch by {
		case Day:
			k.period = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, r.loc)
		case Month:
			k.period = time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, r.loc)
		case Year:
			k.period = time.Date(t.Year(), 1, 1, 0, 0, 0, 0, r.loc)
		case "account":
			k.origin = ""
		case "origin":
			k.account = ""
		}
		a := sums[k]
		if a == nil {
			a = &Activity{Period: k.period, Account: k.account, Origin: k.origin}
			sums[k] = a
		}
		a.add(x.Kind, x.N)
	}
	out := make([]Activity, 0, len(sums))
	for _, a := range sums {
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Period.Equal(b.Period) {
			return a.Period.Before(b.Period)
		}
		if a.Account != b.Account {
			return a.Account < b.Account
		}
		return a.Origin < b.Origin
	})
	return out, nil
}

// Verify recounts every counter from the rows it summarises — accepted
// from the recipients' acceptance times; sent, bounced, failed, suppressed
// and cancelled from the recipients in that final status by their final
// time; deferred from the deferring attempts in mail_events — and returns
// one line per counter that differs (none: all equal).
func (r *Reporter) Verify(ctx context.Context) ([]string, error) {
	hour := func(col string) string {
		if r.db.Dialect().Name() == dialect.PG {
			return "CAST(floor(extract(epoch FROM " + col + ") / 3600) AS BIGINT)"
		}
		return "(CAST(strftime('%s', " + col + ") AS INTEGER) / 3600)"
	}
	type row struct {
		AccountID int64
		Origin    string
		Hour      int64
		Kind      string
		N         int64
	}
	var recount []row
	queries := []string{
		"SELECT account_id, origin, " + hour("accepted_at") + " AS hour, 'accepted' AS kind, count(*) AS n FROM mail_recipients GROUP BY 1, 2, 3",
		"SELECT account_id, origin, " + hour("final_at") + " AS hour, status AS kind, count(*) AS n FROM mail_recipients " +
			"WHERE status IN ('sent', 'bounced', 'failed', 'suppressed', 'cancelled') GROUP BY 1, 2, 3, 4",
		"SELECT account_id, origin, " + hour("at") + " AS hour, type AS kind, count(*) AS n FROM mail_events WHERE type = 'deferred' GROUP BY 1, 2, 3, 4",
	}
	for _, q := range queries {
		var rs []row
		if err := r.db.NewRaw(q).Scan(ctx, &rs); err != nil {
			return nil, fmt.Errorf("report: recount: %w", err)
		}
		recount = append(recount, rs...)
	}
	var stored []row
	if err := r.db.NewRaw("SELECT account_id, origin, hour, kind, n FROM mail_counters").Scan(ctx, &stored); err != nil {
		return nil, fmt.Errorf("report: read counters: %w", err)
	}
	key := func(x row) string { return fmt.Sprint(x.AccountID, "|", x.Origin, "|", x.Hour, "|", x.Kind) }
	want := map[string]int64{}
	for _, x := range recount {
		want[key(x)] += x.N
	}
	got := map[string]int64{}
	for _, x := range stored {
		got[key(x)] += x.N
	}
	var problems []string
	for k, n := range want {
		if got[k] != n {
			problems = append(problems, describeCounter(k, got[k], n))
		}
	}
	for k, n := range got {
		if _, ok := want[k]; !ok && n != 0 {
			problems = append(problems, describeCounter(k, n, 0))
		}
	}
	sort.Strings(problems)
	return problems, nil
}

func describeCounter(k string, got, want int64) string {
	f := strings.Split(k, "|")
	h, _ := strconv.ParseInt(f[2], 10, 64)
	return fmt.Sprintf("account %s origin %s hour %s %s: counter %d, recount %d", f[0], f[1],
		time.Unix(h*3600, 0).UTC().Format("2006-01-02T15Z"), f[3], got, want)
}
