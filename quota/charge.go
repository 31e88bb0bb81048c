package quota

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Charge spends messages from an account: one per accepted recipient.
type Charge struct {
	Account   string // "area/name"
	Amount    int64  // recipients
	Origin    Origin // required
	Reference string // what is charged for (a message id); required, ≤ 200 bytes
	Actor     string // who asked: a credential, token or program; required
}

// Charge spends c.Amount messages of c.Account, all or nothing, inside idb:
// pass the transaction that stores what is charged for, so the two commit
// together. (Given a *bun.DB, Charge runs in a transaction of its own.)
//
// The spend is one conditional UPDATE (used + n <= allocation) on the
// account row, so concurrent charges can never overdraw it. When the
// account cannot cover the whole amount nothing is written and the error is
// an *InsufficientError (errors.Is(err, ErrInsufficient)) carrying what
// remains; outside the pool's validity period it is a *PeriodError
// (ErrOutsidePeriod); a disabled account gives ErrDisabled, an unknown one
// ErrNotFound. Any other error comes from the database, and the caller must
// roll its transaction back.
//
// It returns the account as it stands after the charge.
func (l *Ledger) Charge(ctx context.Context, idb bun.IDB, c Charge) (Account, error) {
	name, err := validateCharge(c)
	if err != nil {
		return Account{}, err
	}
	now := l.clock()
	var a Account
	err = inTx(ctx, idb, func(ctx context.Context, tx bun.IDB) error {
		var poolID int64
		err := tx.NewRaw("UPDATE quota_accounts SET used = used + ? "+
			"WHERE name = ? AND NOT disabled AND used + ? <= allocation "+
			"AND EXISTS (SELECT 1 FROM quota_pools AS p WHERE p.id = quota_accounts.pool_id AND p.starts_at <= ? AND p.ends_at > ?) "+
			"RETURNING id, pool_id, allocation, used",
			c.Amount, name, c.Amount, now, now).Scan(ctx, &a.ID, &poolID, &a.Allocation, &a.Used)
		if errors.Is(err, sql.ErrNoRows) {
			return l.whyNot(ctx, tx, name, c.Amount, now)
		}
		if err != nil {
			return fmt.Errorf("quota: charge: %w", err)
		}
		a.Name = name
		e := entryRow{PoolID: poolID, Kind: KindCharge, AccountID: a.ID, Amount: c.Amount,
			Origin: c.Origin, Actor: c.Actor, Reference: c.Reference, CreatedAt: now}
		if err := l.insertEntry(ctx, tx, &e); err != nil {
			return err
		}
		if _, err := tx.NewRaw("INSERT INTO quota_refs (account_id, reference, charged, released) VALUES (?, ?, ?, 0) "+
			"ON CONFLICT (account_id, reference) DO UPDATE SET charged = quota_refs.charged + excluded.charged",
			a.ID, c.Reference, c.Amount).Exec(ctx); err != nil {
			return fmt.Errorf("quota: charge: %w", err)
		}
		return addUsage(ctx, tx, a.ID, c.Origin, now, c.Amount, 0)
	})
	return a, err
}

// whyNot explains a charge the conditional update refused.
func (l *Ledger) whyNot(ctx context.Context, tx bun.IDB, name string, n int64, now time.Time) error {
	a, err := l.account(ctx, tx, name)
	if err != nil {
		return err
	}
	if a.Disabled {
		return fmt.Errorf("%w: %s is disabled", ErrDisabled, name)
	}
	p, err := l.pool(ctx, tx, a.Pool)
	if err != nil {
		return err
	}
	if !p.ValidAt(now) {
		return &PeriodError{Pool: p.Name, StartsAt: p.StartsAt, EndsAt: p.EndsAt, At: now}
	}
	return &InsufficientError{Account: name, Requested: n, Remaining: max(0, a.Remaining())}
}

// addUsage adds to the hourly usage counters of an account and origin.
func addUsage(ctx context.Context, tx bun.IDB, accountID int64, o Origin, at time.Time, charged, released int64) error {
	_, err := tx.NewRaw("INSERT INTO quota_usage (account_id, origin, hour, charged, released) VALUES (?, ?, ?, ?, ?) "+
		"ON CONFLICT (account_id, origin, hour) DO UPDATE SET "+
		"charged = quota_usage.charged + excluded.charged, released = quota_usage.released + excluded.released",
		accountID, o, at.UTC().Truncate(time.Hour), charged, released).Exec(ctx)
	if err != nil {
		return fmt.Errorf("quota: usage counters: %w", err)
	}
	return nil
}

// Release returns messages of an earlier charge.
type Release struct {
	Account   string
	Amount    int64
	Origin    Origin // required
	Reference string // the charge's reference
	Actor     string // required
	Reason    string // e.g. "cancelled", "suppressed"
}

// Release gives back r.Amount messages charged under r.Reference, for
// recipients that ended without any delivery attempt. It never returns
// more than the reference was charged and has not yet had released
// (ErrOverRelease). Releases are allowed on disabled accounts and after
// the pool's period. Like Charge, it joins the caller's transaction.
func (l *Ledger) Release(ctx context.Context, idb bun.IDB, r Release) (Account, error) {
	name, _, err := ParseAccountName(r.Account)
	if err != nil {
		return Account{}, err
	}
	if err := checkAmount(r.Amount); err != nil {
		return Account{}, err
	}
	if !r.Origin.Valid() {
		return Account{}, fmt.Errorf("%w: unknown origin %q", ErrInvalid, r.Origin)
	}
	now := l.clock()
	var a Account
	err = inTx(ctx, idb, func(ctx context.Context, tx bun.IDB) error {
		// Lock the account row first, as Charge does, so a charge and a
		// release of one reference cannot deadlock on PostgreSQL.
		var rows []accountRow
		if err := tx.NewRaw("SELECT id, pool_id FROM quota_accounts WHERE name = ?"+forUpdate(tx), name).Scan(ctx, &rows); err != nil {
			return fmt.Errorf("quota: release: %w", err)
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: no account %s", ErrNotFound, name)
		}
		a.ID, a.Name = rows[0].ID, name
		res, err := tx.NewRaw("UPDATE quota_refs SET released = released + ? "+
			"WHERE account_id = ? AND reference = ? AND released + ? <= charged",
			r.Amount, a.ID, r.Reference, r.Amount).Exec(ctx)
		if err != nil {
			return fmt.Errorf("quota: release: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n != 1 {
			var charged, released int64
			_ = tx.NewRaw("SELECT charged, released FROM quota_refs WHERE account_id = ? AND reference = ?",
				a.ID, r.Reference).Scan(ctx, &charged, &released)
			return fmt.Errorf("%w: %s reference %q has %d releasable, %d requested",
				ErrOverRelease, name, r.Reference, charged-released, r.Amount)
		}
		err = tx.NewRaw("UPDATE quota_accounts SET used = used - ? WHERE id = ? RETURNING allocation, used",
			r.Amount, a.ID).Scan(ctx, &a.Allocation, &a.Used)
		if err != nil {
			return fmt.Errorf("quota: release: %w", err)
		}
		e := entryRow{PoolID: rows[0].PoolID, Kind: KindRelease, AccountID: a.ID, Amount: r.Amount,
			Origin: r.Origin, Actor: r.Actor, Reason: r.Reason, Reference: r.Reference, CreatedAt: now}
		if err := l.insertEntry(ctx, tx, &e); err != nil {
			return err
		}
		return addUsage(ctx, tx, a.ID, r.Origin, now, 0, r.Amount)
	})
	return a, err
}
