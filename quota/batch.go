package quota

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
)

// ChargeBatch charges many messages in one transaction with a handful of
// statements, for callers that group acceptances into one commit (the
// relay's and the library's group commit). Each charge still stands alone:
// errs[i] is nil when cs[i] was charged, or the error Charge would have
// returned for it (*InsufficientError, *PeriodError, ErrDisabled,
// ErrNotFound, ErrInvalid). Charges of one account are taken in order, so a
// later, smaller message may fit where an earlier one did not.
//
// The accounts involved are locked first, in id order (as Transfer locks
// them), and read; the messages that fit are decided under that lock and
// each account is then charged once, for their sum, with the same
// conditional update Charge uses, so the pool is never overdrawn. The
// entries, the per-reference rows and the hourly counters are written with
// one multi-row statement each. On PostgreSQL, the accounts whose charges
// all fit (the usual case) are charged first by one statement that does all
// of that (chargeWhole); only the others are then decided one by one.
//
// A non-nil err is a database failure: nothing may be assumed charged and
// the caller must roll back its transaction.
func (l *Ledger) ChargeBatch(ctx context.Context, idb bun.IDB, cs []Charge) (errs []error, err error) {
	errs = make([]error, len(cs))
	names := make([]string, len(cs))
	byAccount := map[string][]int{}
	for i, c := range cs {
		names[i], errs[i] = validateCharge(c)
		if errs[i] == nil {
			byAccount[names[i]] = append(byAccount[names[i]], i)
		}
	}
	if len(byAccount) == 0 {
		return errs, nil
	}
	now := l.clock()
	err = inTx(ctx, idb, func(ctx context.Context, tx bun.IDB) error {
		byAccount := byAccount
		if isPG(tx) {
			done, err := chargeWhole(ctx, tx, cs, byAccount, now)
			if err != nil {
				return err
			}
			byAccount = without(byAccount, done)
			if len(byAccount) == 0 {
				return nil
			}
		}
		accounts, err := lockForCharge(ctx, tx, keys(byAccount))
		if err != nil {
			return err
		}
		var entries []entryRow
		refs := map[refKey]int64{}
		usage := map[usageKey]int64{}
		for _, a := range accounts {
			idx := byAccount[a.Name]
			var refuse error
			switch {
			case a.Disabled:
				refuse = fmt.Errorf("%w: %s is disabled", ErrDisabled, a.Name)
			case now.Before(a.StartsAt.UTC()) || !now.Before(a.EndsAt.UTC()):
				refuse = &PeriodError{Pool: a.PoolName, StartsAt: a.StartsAt.UTC(), EndsAt: a.EndsAt.UTC(), At: now}
			}
			left := a.Allocation - a.Used
			var sum int64
			for _, i := range idx {
				c := cs[i]
				switch {
				case refuse != nil:
					errs[i] = refuse
				case c.Amount > left:
					errs[i] = &InsufficientError{Account: a.Name, Requested: c.Amount, Remaining: max(0, left)}
				default:
					left -= c.Amount
					sum += c.Amount
					entries = append(entries, entryRow{PoolID: a.PoolID, Kind: KindCharge, AccountID: a.ID, Amount: c.Amount,
						Origin: c.Origin, Actor: c.Actor, Reference: c.Reference, CreatedAt: now})
					refs[refKey{a.ID, c.Reference}] += c.Amount
					usage[usageKey{a.ID, c.Origin}] += c.Amount
				}
			}
			if sum == 0 {
				continue
			}
			res, err := tx.NewRaw("UPDATE quota_accounts SET used = used + ? WHERE id = ? AND NOT disabled AND used + ? <= allocation",
				sum, a.ID, sum).Exec(ctx)
			if err != nil {
				return fmt.Errorf("quota: charge batch: %w", err)
			}
			if n, err := res.RowsAffected(); err != nil || n != 1 {
				// The row is locked and was just read: this cannot happen
				// unless another writer ignores the lock. Refuse the batch.
				return fmt.Errorf("quota: charge batch: account %s changed under its lock", a.Name)
			}
		}
		for name, idx := range byAccount {
			if !containsAccount(accounts, name) {
				for _, i := range idx {
					errs[i] = fmt.Errorf("%w: no account %s", ErrNotFound, name)
				}
			}
		}
		if len(entries) == 0 {
			return nil
		}
		if _, err := tx.NewInsert().Model(&entries).Exec(ctx); err != nil {
			return fmt.Errorf("quota: charge batch: ledger entries: %w", err)
		}
		if err := upsertRefs(ctx, tx, refs); err != nil {
			return err
		}
		return upsertUsage(ctx, tx, usage, now)
	})
	if err != nil {
		return nil, err
	}
	return errs, nil
}

func validateCharge(c Charge) (string, error) {
	name, _, err := ParseAccountName(c.Account)
	if err != nil {
		return "", err
	}
	if err := checkAmount(c.Amount); err != nil {
		return "", err
	}
	if !c.Origin.Valid() {
		return "", fmt.Errorf("%w: unknown origin %q", ErrInvalid, c.Origin)
	}
	if c.Reference == "" || len(c.Reference) > 200 {
		return "", fmt.Errorf("%w: a charge needs a reference of 1 to 200 bytes", ErrInvalid)
	}
	if c.Actor == "" {
		return "", fmt.Errorf("%w: a charge needs an actor", ErrInvalid)
	}
	return name, nil
}

type lockedAccount struct {
	ID, PoolID       int64
	Name             string
	Allocation, Used int64
	Disabled         bool
	PoolName         string
	StartsAt, EndsAt time.Time
}

// chargeWhole is ChargeBatch's first step on PostgreSQL, one statement
// where the general way takes five round trips: each account whose charges
// all fit is locked (in id order, as lockForCharge does), charged their sum
// with the conditional update, and given its entries, per-reference rows
// and hourly counters. It returns the accounts it charged; the others
// (short of pool, disabled, out of their pool's period, unknown) are left
// untouched for the general way, which decides their charges one by one.
func chargeWhole(ctx context.Context, tx bun.IDB, cs []Charge, byAccount map[string][]int, now time.Time) (map[string]bool, error) {
	var names, cNames, origins, actors, refs []string
	var totals, ords, amounts []int64
	for _, name := range keys(byAccount) {
		var sum int64
		for _, i := range byAccount[name] {
			c := cs[i]
			sum += c.Amount
			ords, cNames, amounts = append(ords, int64(i)), append(cNames, name), append(amounts, c.Amount)
			origins, actors, refs = append(origins, string(c.Origin)), append(actors, c.Actor), append(refs, c.Reference)
		}
		names, totals = append(names, name), append(totals, sum)
	}
	at, hour := now.UTC(), now.UTC().Truncate(time.Hour)
	rows, err := store.QueryIDBCached(ctx, tx, chargeWholeSQL, names, totals, ords, cNames, amounts, origins, actors, refs, at, at, at, hour)
	if err != nil {
		return nil, fmt.Errorf("quota: charge batch: %w", err)
	}
	defer rows.Close()
	done := map[string]bool{}
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			return nil, fmt.Errorf("quota: charge batch: %w", err)
		}
		done[name] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("quota: charge batch: %w", err)
	}
	return done, nil
}

// chargeWholeSQL is chargeWhole's statement: the accounts and their totals,
// then the charges, come as arrays, so that it is one prepared statement
// whatever the batch.
const chargeWholeSQL = `WITH t (name, total) AS (SELECT * FROM unnest(?::text[], ?::bigint[])),
c (ord, name, amount, origin, actor, reference) AS (SELECT * FROM unnest(?::bigint[], ?::text[], ?::bigint[], ?::text[], ?::text[], ?::text[])),
lk AS MATERIALIZED (SELECT a.id FROM quota_accounts AS a JOIN t ON t.name = a.name ORDER BY a.id FOR NO KEY UPDATE OF a),
upd AS (UPDATE quota_accounts AS a SET used = a.used + t.total FROM t, lk, quota_pools AS p
	WHERE lk.id = a.id AND t.name = a.name AND p.id = a.pool_id AND NOT a.disabled AND a.used + t.total <= a.allocation
	AND p.starts_at <= ?::timestamptz AND ?::timestamptz < p.ends_at
	RETURNING a.id, a.pool_id, a.name),
e AS (INSERT INTO quota_entries (pool_id, kind, account_id, amount, origin, actor, reference, created_at)
	SELECT upd.pool_id, 'charge', upd.id, c.amount, c.origin, c.actor, c.reference, ?::timestamptz
	FROM upd JOIN c ON c.name = upd.name ORDER BY c.ord),
r AS (INSERT INTO quota_refs (account_id, reference, charged)
	SELECT upd.id, c.reference, sum(c.amount) FROM upd JOIN c ON c.name = upd.name GROUP BY upd.id, c.reference
	ON CONFLICT (account_id, reference) DO UPDATE SET charged = quota_refs.charged + EXCLUDED.charged),
u AS (INSERT INTO quota_usage (account_id, origin, hour, charged)
	SELECT upd.id, c.origin, ?::timestamptz, sum(c.amount) FROM upd JOIN c ON c.name = upd.name GROUP BY upd.id, c.origin
	ON CONFLICT (account_id, origin, hour) DO UPDATE SET charged = quota_usage.charged + EXCLUDED.charged)
SELECT name FROM upd`

func without(byAccount map[string][]int, done map[string]bool) map[string][]int {
	if len(done) == 0 {
		return byAccount
	}
	rest := map[string][]int{}
	for name, idx := range byAccount {
		if !done[name] {
			rest[name] = idx
		}
	}
	return rest
}

// lockForCharge reads (and on PostgreSQL locks, in id order) the accounts
// named, with their pool's period.
func lockForCharge(ctx context.Context, tx bun.IDB, names []string) ([]lockedAccount, error) {
	lock := ""
	if isPG(tx) {
		lock = " FOR NO KEY UPDATE OF a" // as chargeWhole: the charge changes no key, so inserts that reference the account need not wait
	}
	var rows []lockedAccount
	err := tx.NewRaw("SELECT a.id, a.pool_id, a.name, a.allocation, a.used, a.disabled, "+
		"p.name AS pool_name, p.starts_at, p.ends_at FROM quota_accounts AS a "+
		"JOIN quota_pools AS p ON p.id = a.pool_id WHERE a.name IN (?) ORDER BY a.id"+lock,
		bun.List(names)).Scan(ctx, &rows)
	if err != nil {
		return nil, fmt.Errorf("quota: charge batch: lock accounts: %w", err)
	}
	return rows, nil
}

type refKey struct {
	account   int64
	reference string
}

type usageKey struct {
	account int64
	origin  Origin
}

type refRow struct {
	bun.BaseModel `bun:"table:quota_refs,alias:r"`
	AccountID     int64
	Reference     string
	Charged       int64
	Released      int64
}

type usageRow struct {
	bun.BaseModel `bun:"table:quota_usage,alias:u"`
	AccountID     int64
	Origin        Origin
	Hour          time.Time
	Charged       int64
	Released      int64
}

func upsertRefs(ctx context.Context, tx bun.IDB, refs map[refKey]int64) error {
	rows := make([]refRow, 0, len(refs))
	for k, n := range refs {
		rows = append(rows, refRow{AccountID: k.account, Reference: k.reference, Charged: n})
	}
	sort.Slice(rows, func(i, j int) bool { // a stable order keeps PostgreSQL's row locks ordered
		if rows[i].AccountID != rows[j].AccountID {
			return rows[i].AccountID < rows[j].AccountID
		}
		return rows[i].Reference < rows[j].Reference
	})
	_, err := tx.NewInsert().Model(&rows).
		On("CONFLICT (account_id, reference) DO UPDATE").
		Set("charged = r.charged + EXCLUDED.charged").Exec(ctx)
	if err != nil {
		return fmt.Errorf("quota: charge batch: references: %w", err)
	}
	return nil
}

func upsertUsage(ctx context.Context, tx bun.IDB, usage map[usageKey]int64, now time.Time) error {
	rows := make([]usageRow, 0, len(usage))
	hour := now.UTC().Truncate(time.Hour)
	for k, n := range usage {
		rows = append(rows, usageRow{AccountID: k.account, Origin: k.origin, Hour: hour, Charged: n})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].AccountID != rows[j].AccountID {
			return rows[i].AccountID < rows[j].AccountID
		}
		return rows[i].Origin < rows[j].Origin
	})
	_, err := tx.NewInsert().Model(&rows).
		On("CONFLICT (account_id, origin, hour) DO UPDATE").
		Set("charged = u.charged + EXCLUDED.charged").Exec(ctx)
	if err != nil {
		return fmt.Errorf("quota: charge batch: usage counters: %w", err)
	}
	return nil
}

func keys(m map[string][]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func containsAccount(as []lockedAccount, name string) bool {
	for _, a := range as {
		if a.Name == name {
			return true
		}
	}
	return false
}
