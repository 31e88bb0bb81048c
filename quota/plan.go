package quota

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"
)

// Plan is a whole pool to create at once: the pool and its accounts with
// their initial allocations (examples/servir/pool.yaml is one).
type Plan struct {
	Pool     PoolSpec
	Accounts []AccountSpec
}

// Validate checks the plan without touching the database: names, amounts,
// no account twice, and allocations that fit the pool.
func (p *Plan) Validate() error {
	if err := p.Pool.validate(); err != nil {
		return err
	}
	seen := map[string]bool{}
	var sum int64
	for i := range p.Accounts {
		a := &p.Accounts[i]
		if _, err := a.normalise(); err != nil {
			return err
		}
		if seen[a.Name] {
			return fmt.Errorf("%w: account %s listed twice", ErrInvalid, a.Name)
		}
		seen[a.Name] = true
		sum += a.Allocation
	}
	if sum > p.Pool.Total {
		return fmt.Errorf("%w: accounts are allocated %d messages, the pool has %d", ErrInvalid, sum, p.Pool.Total)
	}
	return nil
}

// InitResult says what Init did.
type InitResult struct {
	Created  bool     // false: the pool already existed as planned and nothing changed
	Pool     Pool     // the pool as it stands
	Accounts int      // accounts in the plan
	Drift    []string // for an existing pool: accounts whose allocation has since moved from the plan
}

// Init creates the pool and accounts of a plan in one transaction. Running
// it again with the same plan changes nothing and says so (Created false);
// a plan that contradicts the pool already stored (another total or period,
// an account missing or in another pool, a different origin) fails with
// ErrConflict, listing every difference, and changes nothing. Allocations
// that transfers have since moved are not conflicts: they are reported in
// Drift and left alone.
func (l *Ledger) Init(ctx context.Context, plan Plan, actor string) (InitResult, error) {
	if err := plan.Validate(); err != nil {
		return InitResult{}, err
	}
	res := InitResult{Accounts: len(plan.Accounts)}
	err := l.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var existing []poolRow
		if err := tx.NewSelect().Model(&existing).Where("name = ?", plan.Pool.Name).Scan(ctx); err != nil {
			return fmt.Errorf("quota: init: %w", err)
		}
		if len(existing) == 1 {
			p := existing[0].pool()
			res.Pool = p
			drift, err := compare(ctx, tx, l, p, plan)
			res.Drift = drift
			return err
		}
		p, err := l.createPool(ctx, tx, plan.Pool, actor)
		if err != nil {
			return err
		}
		for _, a := range plan.Accounts {
			if _, err := l.addAccount(ctx, tx, p, a, actor); err != nil {
				return err
			}
		}
		res.Created = true
		res.Pool, err = l.pool(ctx, tx, p.Name)
		return err
	})
	return res, err
}

func compare(ctx context.Context, tx bun.IDB, l *Ledger, p Pool, plan Plan) (drift []string, err error) {
	var diffs []string
	if p.Total != plan.Pool.Total {
		diffs = append(diffs, fmt.Sprintf("total is %d in the database, %d in the plan", p.Total, plan.Pool.Total))
	}
	if !p.StartsAt.Equal(plan.Pool.StartsAt.UTC()) || !p.EndsAt.Equal(plan.Pool.EndsAt.UTC()) {
		diffs = append(diffs, fmt.Sprintf("period is %s–%s in the database, %s–%s in the plan",
			p.StartsAt.Format("2006-01-02T15:04Z07:00"), p.EndsAt.Format("2006-01-02T15:04Z07:00"),
			plan.Pool.StartsAt.UTC().Format("2006-01-02T15:04Z07:00"), plan.Pool.EndsAt.UTC().Format("2006-01-02T15:04Z07:00")))
	}
	for _, want := range plan.Accounts {
		got, err := l.account(ctx, tx, want.Name)
		if err != nil {
			diffs = append(diffs, fmt.Sprintf("account %s is not in the database", want.Name))
			continue
		}
		if got.Pool != p.Name {
			diffs = append(diffs, fmt.Sprintf("account %s belongs to pool %s", want.Name, got.Pool))
			continue
		}
		if got.Origin != want.Origin {
			diffs = append(diffs, fmt.Sprintf("account %s has origin %s in the database, %s in the plan", want.Name, got.Origin, want.Origin))
		}
		if got.Allocation != want.Allocation {
			drift = append(drift, fmt.Sprintf("%s: allocation %d, plan %d", want.Name, got.Allocation, want.Allocation))
		}
	}
	if len(diffs) > 0 {
		return nil, fmt.Errorf("%w: pool %s: %s", ErrConflict, p.Name, strings.Join(diffs, "; "))
	}
	return drift, nil
}
