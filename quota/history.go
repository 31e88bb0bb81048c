package quota

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/uptrace/bun"
)

// HistoryFilter selects ledger entries. Zero fields select everything.
type HistoryFilter struct {
	Account string // entries of this account, as target or as transfer source
	Kind    Kind
	Origin  Origin
	From    time.Time // inclusive
	To      time.Time // exclusive
	AfterID int64     // entries with a larger id (for paging)
	Limit   int       // at most this many; 0: no limit
}

type entryView struct {
	ID          int64
	Pool        string
	Kind        Kind
	Account     string
	FromAccount string
	Amount      int64
	Origin      Origin
	Actor       string
	Reason      string
	Reference   string
	CreatedAt   time.Time
}

// History returns the ledger entries f selects, oldest first.
func (l *Ledger) History(ctx context.Context, f HistoryFilter) ([]Entry, error) {
	q := l.db.NewSelect().TableExpr("quota_entries AS e").
		ColumnExpr("e.id, p.name AS pool, e.kind, a.name AS account, COALESCE(s.name, '') AS from_account").
		ColumnExpr("e.amount, e.origin, e.actor, e.reason, e.reference, e.created_at").
		Join("JOIN quota_pools AS p ON p.id = e.pool_id").
		Join("JOIN quota_accounts AS a ON a.id = e.account_id").
		Join("LEFT JOIN quota_accounts AS s ON s.id = e.from_account_id").
		Order("e.id")
	if f.Account != "" {
		name, _, err := ParseAccountName(f.Account)
		if err != nil {
			return nil, err
		}
		if _, err := l.Account(ctx, name); err != nil {
			return nil, err
		}
		q = q.Where("(a.name = ? OR s.name = ?)", name, name)
	}
	if f.Kind != "" {
		if !f.Kind.Valid() {
			return nil, fmt.Errorf("%w: unknown entry kind %q (allocate, transfer, charge, release)", ErrInvalid, f.Kind)
		}
		q = q.Where("e.kind = ?", f.Kind)
	}
	if f.Origin != "" {
		if !f.Origin.Valid() {
			return nil, fmt.Errorf("%w: unknown origin %q (library, smtp, http, campaign, cli)", ErrInvalid, f.Origin)
		}
		q = q.Where("e.origin = ?", f.Origin)
	}
	if !f.From.IsZero() {
		q = q.Where("e.created_at >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		q = q.Where("e.created_at < ?", f.To.UTC())
	}
	if f.AfterID > 0 {
		q = q.Where("e.id > ?", f.AfterID)
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit))
	}
	var rows []entryView
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("quota: history: %w", err)
	}
	es := make([]Entry, len(rows))
	for i, r := range rows {
		es[i] = Entry{ID: r.ID, Pool: r.Pool, Kind: r.Kind, Account: r.Account, From: r.FromAccount,
			Amount: r.Amount, Origin: r.Origin, Actor: r.Actor, Reason: r.Reason, Reference: r.Reference,
			At: r.CreatedAt.UTC()}
	}
	return es, nil
}

// UsageFilter selects usage totals. Zero fields select everything.
type UsageFilter struct {
	Account  string
	Origin   Origin
	From, To time.Time      // [From, To), rounded to whole hours
	Location *time.Location // days are calendar days here; default UTC
}

// Usage is what one account spent through one origin on one day.
type Usage struct {
	Day      time.Time // midnight, in the filter's Location
	Account  string
	Origin   Origin
	Charged  int64
	Released int64
}

// Net is what the day cost the account.
func (u Usage) Net() int64 { return u.Charged - u.Released }

// Usage returns totals by day × account × origin, ordered that way. They
// are read from hourly counters kept in the same transaction as each
// charge and release, so the ledger itself is never scanned; days are
// exact in any time zone whose offset is a whole number of hours
// (America/Lima is UTC−5).
func (l *Ledger) Usage(ctx context.Context, f UsageFilter) ([]Usage, error) {
	return usage(ctx, l.db, f)
}

func usage(ctx context.Context, idb bun.IDB, f UsageFilter) ([]Usage, error) {
	loc := f.Location
	if loc == nil {
		loc = time.UTC
	}
	q := idb.NewSelect().TableExpr("quota_usage AS u").
		ColumnExpr("a.name AS account, u.origin, u.hour, u.charged, u.released").
		Join("JOIN quota_accounts AS a ON a.id = u.account_id")
	if f.Account != "" {
		name, _, err := ParseAccountName(f.Account)
		if err != nil {
			return nil, err
		}
		q = q.Where("a.name = ?", name)
	}
	if f.Origin != "" {
		if !f.Origin.Valid() {
			return nil, fmt.Errorf("%w: unknown origin %q", ErrInvalid, f.Origin)
		}
		q = q.Where("u.origin = ?", f.Origin)
	}
	if !f.From.IsZero() {
		q = q.Where("u.hour >= ?", f.From.UTC().Truncate(time.Hour))
	}
	if !f.To.IsZero() {
		q = q.Where("u.hour < ?", f.To.UTC().Truncate(time.Hour))
	}
	var rows []struct {
		Account  string
		Origin   Origin
		Hour     time.Time
		Charged  int64
		Released int64
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("quota: usage: %w", err)
	}
	type key struct {
		day     time.Time
		account string
		origin  Origin
	}
	sums := map[key]*Usage{}
	for _, r := range rows {
		t := r.Hour.In(loc)
		k := key{time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc), r.Account, r.Origin}
		u := sums[k]
		if u == nil {
			u = &Usage{Day: k.day, Account: k.account, Origin: k.origin}
			sums[k] = u
		}
		u.Charged += r.Charged
		u.Released += r.Released
	}
	out := make([]Usage, 0, len(sums))
	for _, u := range sums {
		out = append(out, *u)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.Day.Equal(b.Day) {
			return a.Day.Before(b.Day)
		}
		if a.Account != b.Account {
			return a.Account < b.Account
		}
		return a.Origin < b.Origin
	})
	return out, nil
}
