package report

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun/dialect"

	"github.com/servir-pe/envios/internal/mailstore"
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
	// Feedback after delivery: DSNs saying a message is delayed,
	// complaints (ARF, JMRP), unsubscribes (one-click, the page, mailto).
	Delayed      int64 `json:"delayed"`
	Complained   int64 `json:"complained"`
	Unsubscribed int64 `json:"unsubscribed"`
	// BounceRate is Bounced / (Sent + Bounced) and ComplaintRate
	// Complained / Sent, in the period (0 when nothing was sent). Mailbox
	// providers act at a few percent of bounces and 0.1–0.3% of
	// complaints.
	BounceRate    float64 `json:"bounce_rate"`
	ComplaintRate float64 `json:"complaint_rate"`
}

// rates sets the rates from the counts.
func (a *Activity) rates() {
	a.BounceRate, a.ComplaintRate = 0, 0
	if a.Sent+a.Bounced > 0 {
		a.BounceRate = float64(a.Bounced) / float64(a.Sent+a.Bounced)
	}
	if a.Sent > 0 {
		a.ComplaintRate = float64(a.Complained) / float64(a.Sent)
	}
}

// Sum adds b's counts to a's and sets a's rates: a TOTAL row.
func (a *Activity) Sum(b Activity) {
	a.Accepted += b.Accepted
	a.Sent += b.Sent
	a.Deferred += b.Deferred
	a.Bounced += b.Bounced
	a.Failed += b.Failed
	a.Suppressed += b.Suppressed
	a.Cancelled += b.Cancelled
	a.Delayed += b.Delayed
	a.Complained += b.Complained
	a.Unsubscribed += b.Unsubscribed
	a.rates()
}

func (a *Activity) add(kind string, n int64) {
	switch kind {
	case "accepted":
		a.Accepted += n
	case string(mailstore.StatusSent):
		a.Sent += n
	case string(mailstore.StatusDeferred):
		a.Deferred += n
	case string(mailstore.StatusBounced):
		a.Bounced += n
	case string(mailstore.StatusFailed):
		a.Failed += n
	case string(mailstore.StatusSuppressed):
		a.Suppressed += n
	case string(mailstore.StatusCancelled):
		a.Cancelled += n
	case string(mailstore.EventDelayed):
		a.Delayed += n
	case string(mailstore.EventComplained):
		a.Complained += n
	case string(mailstore.EventUnsubscribed):
		a.Unsubscribed += n
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
	// The database sums the hours into periods (a year of counters is
	// tens of thousands of rows; their sums by period, account, origin and
	// kind a few hundred): bucket is a CASE over the periods' first hours,
	// computed here in the Location's calendar, so months and years are
	// exact in any zone; days use arithmetic when the zone's offset is the
	// same all through the range, else the hours come back one by one.
	var accountID int64
	if f.Account != "" {
		id, err := r.accountID(ctx, f.Account)
		if err != nil {
			return nil, err
		}
		accountID = id
	}
	if f.Origin != "" && !f.Origin.Valid() {
		return nil, fmt.Errorf("%w: unknown origin %q (library, smtp, http, campaign, cli)", ErrInvalid, f.Origin)
	}
	lo, hi, err := r.counterRange(ctx, f)
	if err != nil {
		return nil, err
	}
	if lo > hi {
		return []Activity{}, nil
	}
	bucket, starts := r.buckets(by, lo, hi)
	q := r.db.NewSelect().TableExpr("mail_counters AS c").
		ColumnExpr("c.account_id, c.origin, c.kind, "+bucket+" AS hour, sum(c.n) AS n").
		Where("c.hour >= ? AND c.hour <= ?", lo, hi).GroupExpr("c.account_id, c.origin, c.kind, 4")
	if accountID != 0 {
		q = q.Where("c.account_id = ?", accountID)
	}
	if f.Origin != "" {
		q = q.Where("c.origin = ?", f.Origin)
	}
	var rows []struct {
		AccountID int64
		Origin    quota.Origin
		Hour      int64 // a bucket's first hour (or an index into starts)
		Kind      string
		N         int64
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: activity: %w", err)
	}
	if starts != nil {
		for i := range rows {
			rows[i].Hour = starts[rows[i].Hour]
		}
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
		switch by {
		case Day, Month, Year:
			k.period = periodStart(time.Unix(x.Hour*3600, 0).In(r.loc), by)
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
		a.rates()
		out = append(out, *a)
	}
	sort.Slice(out, func(i, j int) bool {
		return periodLess(out[i].Period, out[i].Account, out[i].Origin, out[j].Period, out[j].Account, out[j].Origin)
	})
	return out, nil
}

// counterRange is the span of hours f covers, narrowed to the counters
// that exist.
func (r *Reporter) counterRange(ctx context.Context, f ActivityFilter) (lo, hi int64, err error) {
	var span struct {
		Lo, Hi *int64
	}
	if err := r.db.NewRaw("SELECT min(hour) AS lo, max(hour) AS hi FROM mail_counters").Scan(ctx, &span); err != nil {
		return 0, 0, fmt.Errorf("report: activity: %w", err)
	}
	if span.Lo == nil {
		return 1, 0, nil
	}
	lo, hi = *span.Lo, *span.Hi
	if !f.From.IsZero() {
		lo = max(lo, mailstore.Hour(f.From))
	}
	if !f.To.IsZero() {
		hi = min(hi, (f.To.Unix()+3599)/3600-1)
	}
	return lo, hi, nil
}

// buckets returns the SQL expression that maps c.hour to its period and,
// when that expression yields an index, the first hour of each period.
func (r *Reporter) buckets(by Period, lo, hi int64) (string, []int64) {
	if by == "account" || by == "origin" {
		return "0", []int64{lo}
	}
	from, to := time.Unix(lo*3600, 0).In(r.loc), time.Unix(hi*3600, 0).In(r.loc)
	if by == Day {
		_, off1 := from.Zone()
		_, off2 := to.Zone()
		if off1 == off2 && off1%3600 == 0 && !zoneChanges(from, to) {
			// Days of a fixed whole-hour offset: (hour + offset) / 24.
			shift := int64(off1 / 3600)
			return fmt.Sprintf("((c.hour + %d) / 24) * 24 - %d", shift, shift), nil
		}
		return "c.hour", nil // each hour; summed into days in Go
	}
	var starts []int64
	var b strings.Builder
	b.WriteString("CASE")
	// An hour belongs to the period its first instant falls in: the first
	// hour of a period starting at s is ceil(s / 3600) (a half-hour zone's
	// period starts mid-hour).
	ceil := func(t time.Time) int64 { return (t.Unix() + 3599) / 3600 }
	for t := periodStart(from, by); !t.After(to); t = nextPeriod(t, by) {
		fmt.Fprintf(&b, " WHEN c.hour < %d THEN %d", ceil(nextPeriod(t, by)), len(starts))
		starts = append(starts, ceil(t))
	}
	fmt.Fprintf(&b, " ELSE %d END", max(len(starts)-1, 0))
	return b.String(), starts
}

// zoneChanges reports whether the zone's offset changes between from and
// to (daylight saving), checked day by day.
func zoneChanges(from, to time.Time) bool {
	_, off := from.Zone()
	for t := from; t.Before(to); t = t.Add(24 * time.Hour) {
		if _, o := t.Zone(); o != off {
			return true
		}
	}
	return false
}

// Verify recounts every counter from the rows it summarises — accepted
// from the recipients' acceptance times; sent, bounced, failed, suppressed
// and cancelled from the recipients in that final status by their final
// time; deferred, delayed, complained and unsubscribed from their events
// in mail_events — and returns
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
		"SELECT account_id, origin, " + hour("at") + " AS hour, type AS kind, count(*) AS n FROM mail_events " +
			"WHERE type IN ('deferred', 'delayed', 'complained', 'unsubscribed') GROUP BY 1, 2, 3, 4",
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
