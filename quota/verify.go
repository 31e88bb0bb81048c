package quota

import (
	"context"
	"fmt"
	"sort"

	"github.com/uptrace/bun"
)

// Verify recomputes every invariant of the ledger from one consistent
// snapshot and returns the violations found, one sentence each; none means
// the counters agree with the ledger:
//
//   - a pool's allocated equals the sum of its accounts' allocations and is
//     at most its total;
//   - an account's allocation equals its allocations plus transfers in minus
//     transfers out, and its used equals its charges minus its releases, with
//     0 <= used <= allocation;
//   - the hourly usage counters and the per-reference charges sum to the
//     same charges and releases.
func (l *Ledger) Verify(ctx context.Context) ([]string, error) {
	var problems []string
	err := l.db.RunInTx(ctx, readSnapshot, func(ctx context.Context, tx bun.Tx) error {
		var err error
		problems, err = verify(ctx, tx)
		return err
	})
	return problems, err
}

func verify(ctx context.Context, tx bun.IDB) ([]string, error) {
	var pools []poolRow
	if err := tx.NewSelect().Model(&pools).Order("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("quota: verify: %w", err)
	}
	var accounts []accountRow
	if err := tx.NewSelect().Model(&accounts).Order("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("quota: verify: %w", err)
	}
	type sums struct{ allocated, in, out, charged, released, usageCharged, usageReleased, refCharged, refReleased int64 }
	per := map[int64]*sums{}
	for _, a := range accounts {
		per[a.ID] = &sums{}
	}
	at := func(id int64) *sums {
		if s, ok := per[id]; ok {
			return s
		}
		s := &sums{}
		per[id] = s
		return s
	}
	var byKind []struct {
		AccountID int64
		Kind      Kind
		Total     int64
	}
	if err := tx.NewRaw("SELECT account_id, kind, SUM(amount) AS total FROM quota_entries GROUP BY account_id, kind").Scan(ctx, &byKind); err != nil {
		return nil, fmt.Errorf("quota: verify: %w", err)
	}
	for _, r := range byKind {
		s := at(r.AccountID)
		switch r.Kind {
		case KindAllocate:
			s.allocated = r.Total
		case KindTransfer:
			s.in = r.Total
		case KindCharge:
			s.charged = r.Total
		case KindRelease:
			s.released = r.Total
		}
	}
	var outs []struct {
		FromAccountID int64
		Total         int64
	}
	if err := tx.NewRaw("SELECT from_account_id, SUM(amount) AS total FROM quota_entries WHERE kind = 'transfer' GROUP BY from_account_id").Scan(ctx, &outs); err != nil {
		return nil, fmt.Errorf("quota: verify: %w", err)
	}
	for _, r := range outs {
		at(r.FromAccountID).out = r.Total
	}
	var counters []struct {
		AccountID int64
		Charged   int64
		Released  int64
	}
	if err := tx.NewRaw("SELECT account_id, SUM(charged) AS charged, SUM(released) AS released FROM quota_usage GROUP BY account_id").Scan(ctx, &counters); err != nil {
		return nil, fmt.Errorf("quota: verify: %w", err)
	}
	for _, r := range counters {
		s := at(r.AccountID)
		s.usageCharged, s.usageReleased = r.Charged, r.Released
	}
	counters = counters[:0]
	if err := tx.NewRaw("SELECT account_id, SUM(charged) AS charged, SUM(released) AS released FROM quota_refs GROUP BY account_id").Scan(ctx, &counters); err != nil {
		return nil, fmt.Errorf("quota: verify: %w", err)
	}
	for _, r := range counters {
		s := at(r.AccountID)
		s.refCharged, s.refReleased = r.Charged, r.Released
	}

	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	poolAlloc := map[int64]int64{}
	known := map[int64]bool{}
	for _, a := range accounts {
		known[a.ID] = true
		s := per[a.ID]
		poolAlloc[a.PoolID] += a.Allocation
		if want := s.allocated + s.in - s.out; a.Allocation != want {
			bad("account %s: allocation %d, ledger says %d (allocated %d + in %d - out %d)", a.Name, a.Allocation, want, s.allocated, s.in, s.out)
		}
		if want := s.charged - s.released; a.Used != want {
			bad("account %s: used %d, ledger says %d (charged %d - released %d)", a.Name, a.Used, want, s.charged, s.released)
		}
		if a.Used < 0 || a.Used > a.Allocation {
			bad("account %s: used %d outside 0..allocation %d", a.Name, a.Used, a.Allocation)
		}
		if s.usageCharged != s.charged || s.usageReleased != s.released {
			bad("account %s: usage counters charged %d released %d, ledger charged %d released %d", a.Name, s.usageCharged, s.usageReleased, s.charged, s.released)
		}
		if s.refCharged != s.charged || s.refReleased != s.released {
			bad("account %s: per-reference charged %d released %d, ledger charged %d released %d", a.Name, s.refCharged, s.refReleased, s.charged, s.released)
		}
	}
	var orphans []int64
	for id := range per {
		if !known[id] {
			orphans = append(orphans, id)
		}
	}
	sort.Slice(orphans, func(i, j int) bool { return orphans[i] < orphans[j] })
	for _, id := range orphans {
		bad("ledger rows for unknown account id %d", id)
	}
	for _, p := range pools {
		if p.Allocated != poolAlloc[p.ID] {
			bad("pool %s: allocated %d, accounts hold %d", p.Name, p.Allocated, poolAlloc[p.ID])
		}
		if p.Allocated > p.Total {
			bad("pool %s: allocated %d exceeds total %d", p.Name, p.Allocated, p.Total)
		}
	}
	return problems, nil
}
