package report

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/uptrace/bun/dialect"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/quota"
)

// Period is the calendar period Totals are grouped by.
type Period string

// The periods.
const (
	Day   Period = "day"
	Month Period = "month"
	Year  Period = "year"
)

// TotalsFilter selects what Totals counts. Zero fields select everything.
type TotalsFilter struct {
	Account  string
	Origin   quota.Origin
	From, To time.Time // accepted in [From, To)
	By       Period    // default Day
}

// Total is the recipients one account accepted through one origin in one
// period, by the status they have now.
type Total struct {
	Period  time.Time    `json:"period"` // the first instant of the day, month or year, in the Reporter's Location
	Account string       `json:"account"`
	Origin  quota.Origin `json:"origin"`
	Counts
}

// Totals counts recipients by their current status per period of
// acceptance × account × origin, ordered that way.
//
// It is a query-time aggregate: one GROUP BY over the recipient rows of
// the period (mail_recipients_account_idx serves an account's), run when
// called, so it costs in proportion to the rows counted. Rows are grouped
// by hour in the database and the hours summed into the calendar periods
// of the Reporter's Location here, so a day is exact in any zone whose
// offset does not change within an hour.
func (r *Reporter) Totals(ctx context.Context, f TotalsFilter) ([]Total, error) {
	by := f.By
	switch by {
	case "":
		by = Day
	case Day, Month, Year:
	default:
		return nil, fmt.Errorf("%w: totals by %q (day, month or year)", ErrInvalid, f.By)
	}
	// shift aligns the hourly buckets with the hours of the Location: 0 for
	// whole-hour offsets, 1800 for India's +05:30.
	_, off := r.now().In(r.loc).Zone()
	shift := ((off % 3600) + 3600) % 3600
	epoch := "CAST(strftime('%s', r.accepted_at) AS INTEGER)"
	if r.db.Dialect().Name() == dialect.PG {
		epoch = "CAST(floor(extract(epoch FROM r.accepted_at)) AS BIGINT)"
	}
	q := r.db.NewSelect().TableExpr("mail_recipients AS r").
		ColumnExpr("r.account_id, r.origin, r.status, ("+epoch+" + ?) / 3600 AS hour, count(*) AS n", shift).
		GroupExpr("r.account_id, r.origin, r.status, hour")
	if f.Account != "" {
		id, err := r.accountID(ctx, f.Account)
		if err != nil {
			return nil, err
		}
		q = q.Where("r.account_id = ?", id)
	}
	if f.Origin != "" {
		if !f.Origin.Valid() {
			return nil, fmt.Errorf("%w: unknown origin %q (library, smtp, http, campaign, cli)", ErrInvalid, f.Origin)
		}
		q = q.Where("r.origin = ?", f.Origin)
	}
	if !f.From.IsZero() {
		q = q.Where("r.accepted_at >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		q = q.Where("r.accepted_at < ?", f.To.UTC())
	}
	var rows []struct {
		AccountID int64
		Origin    quota.Origin
		Status    mailstore.Status
		Hour      int64
		N         int64
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: totals: %w", err)
	}
	names, err := r.accountNames(ctx)
	if err != nil {
		return nil, err
	}
	type key struct {
		period  time.Time
		account int64
		origin  quota.Origin
	}
	sums := map[key]*Total{}
	for _, x := range rows {
		p := periodStart(time.Unix(x.Hour*3600-int64(shift), 0).In(r.loc), by)
		k := key{p, x.AccountID, x.Origin}
		s := sums[k]
		if s == nil {
			s = &Total{Period: p, Account: names[x.AccountID], Origin: x.Origin}
			sums[k] = s
		}
		s.Add(x.Status, x.N)
	}
	out := make([]Total, 0, len(sums))
	for _, s := range sums {
		out = append(out, *s)
	}
	sort.Slice(out, func(i, j int) bool {
		return periodLess(out[i].Period, out[i].Account, out[i].Origin, out[j].Period, out[j].Account, out[j].Origin)
	})
	return out, nil
}

// periodStart is the first instant of the day, month or year t is in, in
// t's location.
func periodStart(t time.Time, by Period) time.Time {
	switch by {
	case Month:
		return time.Date(t.Year(), t.Month(), 1, 0, 0, 0, 0, t.Location())
	case Year:
		return time.Date(t.Year(), 1, 1, 0, 0, 0, 0, t.Location())
	}
	return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, t.Location())
}

// nextPeriod is the first instant of the period after the one starting at t.
func nextPeriod(t time.Time, by Period) time.Time {
	switch by {
	case Month:
		return t.AddDate(0, 1, 0)
	case Year:
		return t.AddDate(1, 0, 0)
	}
	return t.AddDate(0, 0, 1)
}

// periodLess orders rows by period, then account, then origin.
func periodLess(p1 time.Time, a1 string, o1 quota.Origin, p2 time.Time, a2 string, o2 quota.Origin) bool {
	if !p1.Equal(p2) {
		return p1.Before(p2)
	}
	if a1 != a2 {
		return a1 < a2
	}
	return o1 < o2
}

func (r *Reporter) accountNames(ctx context.Context) (map[int64]string, error) {
	var rows []struct {
		ID   int64
		Name string
	}
	if err := r.db.NewSelect().TableExpr("quota_accounts").Column("id", "name").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: read accounts: %w", err)
	}
	names := make(map[int64]string, len(rows))
	for _, x := range rows {
		names[x.ID] = x.Name
	}
	return names, nil
}
