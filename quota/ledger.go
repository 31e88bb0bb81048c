package quota

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/store"
)

// Config configures a Ledger. The zero value is ready to use.
type Config struct {
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Ledger is the message-pool ledger on one database. It is safe for
// concurrent use.
type Ledger struct {
	db  *bun.DB
	now func() time.Time
}

// New returns a Ledger on db, which must be migrated (store.Migrate).
func New(db *bun.DB, cfg Config) *Ledger {
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Ledger{db: db, now: now}
}

func (l *Ledger) clock() time.Time { return l.now().UTC() }

// inTx runs fn in idb if idb is already a transaction, else in a new one.
func inTx(ctx context.Context, idb bun.IDB, fn func(ctx context.Context, tx bun.IDB) error) error {
	switch idb.(type) {
	case bun.Tx, *bun.Tx:
		return fn(ctx, idb)
	}
	return idb.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error { return fn(ctx, tx) })
}

func isPG(idb bun.IDB) bool { return idb.Dialect().Name() == dialect.PG }

// forUpdate is the row-locking suffix on PostgreSQL. SQLite needs none:
// every transaction holds the database write lock from BEGIN.
func forUpdate(idb bun.IDB) string {
	if isPG(idb) {
		return " FOR UPDATE"
	}
	return ""
}

// PoolSpec describes a pool to create.
type PoolSpec struct {
	Name     string
	Total    int64
	StartsAt time.Time // inclusive
	EndsAt   time.Time // exclusive
}

func (s PoolSpec) validate() error {
	if err := ValidatePoolName(s.Name); err != nil {
		return err
	}
	if err := checkAmount(s.Total); err != nil {
		return fmt.Errorf("pool total: %w", err)
	}
	if s.StartsAt.IsZero() || !s.EndsAt.After(s.StartsAt) {
		return fmt.Errorf("%w: pool %s must end after it starts", ErrInvalid, s.Name)
	}
	return nil
}

// CreatePool creates an empty pool.
func (l *Ledger) CreatePool(ctx context.Context, s PoolSpec, actor string) (Pool, error) {
	if err := s.validate(); err != nil {
		return Pool{}, err
	}
	var p Pool
	err := l.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		p, err = l.createPool(ctx, tx, s, actor)
		return err
	})
	return p, err
}

func (l *Ledger) createPool(ctx context.Context, tx bun.IDB, s PoolSpec, actor string) (Pool, error) {
	now := l.clock()
	row := poolRow{Name: s.Name, Total: s.Total, StartsAt: s.StartsAt.UTC(), EndsAt: s.EndsAt.UTC(), CreatedAt: now}
	if _, err := tx.NewInsert().Model(&row).Returning("id").Exec(ctx); err != nil {
		if store.IsUniqueViolation(err) {
			return Pool{}, fmt.Errorf("%w: pool %s already exists", ErrExists, s.Name)
		}
		return Pool{}, fmt.Errorf("quota: create pool: %w", err)
	}
	detail := fmt.Sprintf("total=%d starts=%s ends=%s", s.Total, row.StartsAt.Format(time.RFC3339), row.EndsAt.Format(time.RFC3339))
	if err := audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "pool.create", Subject: s.Name, Detail: detail}); err != nil {
		return Pool{}, err
	}
	return row.pool(), nil
}

// Pools returns every pool, oldest first.
func (l *Ledger) Pools(ctx context.Context) ([]Pool, error) {
	var rows []poolRow
	if err := l.db.NewSelect().Model(&rows).Order("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("quota: list pools: %w", err)
	}
	ps := make([]Pool, len(rows))
	for i, r := range rows {
		ps[i] = r.pool()
	}
	return ps, nil
}

// Pool returns the pool named name; an empty name selects the default pool:
// the only one, or else the one valid now.
func (l *Ledger) Pool(ctx context.Context, name string) (Pool, error) {
	return l.pool(ctx, l.db, name)
}

func (l *Ledger) pool(ctx context.Context, idb bun.IDB, name string) (Pool, error) {
	var rows []poolRow
	q := idb.NewSelect().Model(&rows).Order("id")
	if name != "" {
		q = q.Where("name = ?", name)
	}
	if err := q.Scan(ctx); err != nil {
		return Pool{}, fmt.Errorf("quota: read pool: %w", err)
	}
	switch {
	case len(rows) == 0 && name != "":
		return Pool{}, fmt.Errorf("%w: no pool named %q", ErrNotFound, name)
	case len(rows) == 0:
		return Pool{}, fmt.Errorf("%w: no pool yet (create one with `relayd quota init`)", ErrNotFound)
	case len(rows) == 1:
		return rows[0].pool(), nil
	}
	now := l.clock()
	for _, r := range rows {
		if p := r.pool(); p.ValidAt(now) {
			return p, nil
		}
	}
	return Pool{}, fmt.Errorf("%w: %d pools and none valid now: name one", ErrNotFound, len(rows))
}

// AccountSpec describes an account to add.
type AccountSpec struct {
	Name        string // "area/name"
	Origin      string // "platform" or "system"; default "platform"
	Description string
	Allocation  int64 // allocated from the pool's remainder at creation; may be 0
}

// AccountOrigins are the labels an account's Origin may take.
var AccountOrigins = []string{"platform", "system"}

func (s *AccountSpec) normalise() (area string, err error) {
	s.Name, area, err = ParseAccountName(s.Name)
	if err != nil {
		return "", err
	}
	if s.Origin == "" {
		s.Origin = "platform"
	}
	if s.Origin != "platform" && s.Origin != "system" {
		return "", fmt.Errorf("%w: account origin %q must be platform or system", ErrInvalid, s.Origin)
	}
	if s.Allocation < 0 || s.Allocation > MaxAmount {
		return "", fmt.Errorf("%w: allocation must be between 0 and %d, got %d", ErrInvalid, int64(MaxAmount), s.Allocation)
	}
	return area, nil
}

// AddAccount adds an account to pool (empty: the default pool), allocating
// s.Allocation from the pool's remainder in the same transaction.
func (l *Ledger) AddAccount(ctx context.Context, pool string, s AccountSpec, actor string) (Account, error) {
	var a Account
	err := l.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		p, err := l.pool(ctx, tx, pool)
		if err != nil {
			return err
		}
		a, err = l.addAccount(ctx, tx, p, s, actor)
		return err
	})
	return a, err
}

func (l *Ledger) addAccount(ctx context.Context, tx bun.IDB, p Pool, s AccountSpec, actor string) (Account, error) {
	area, err := s.normalise()
	if err != nil {
		return Account{}, err
	}
	now := l.clock()
	row := accountRow{PoolID: p.ID, Name: s.Name, Area: area, Origin: s.Origin, Description: s.Description, CreatedAt: now}
	if _, err := tx.NewInsert().Model(&row).Returning("id").Exec(ctx); err != nil {
		if store.IsUniqueViolation(err) {
			return Account{}, fmt.Errorf("%w: account %s already exists", ErrExists, s.Name)
		}
		return Account{}, fmt.Errorf("quota: add account: %w", err)
	}
	if err := audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "account.add", Subject: s.Name,
		Detail: fmt.Sprintf("pool=%s origin=%s allocation=%d", p.Name, s.Origin, s.Allocation)}); err != nil {
		return Account{}, err
	}
	if s.Allocation > 0 {
		return l.allocate(ctx, tx, Allocation{Account: s.Name, Amount: s.Allocation, Actor: actor, Reason: "initial allocation"})
	}
	row.PoolName = p.Name
	return row.account(), nil
}

// Account returns the account named name ("area/name").
func (l *Ledger) Account(ctx context.Context, name string) (Account, error) {
	return l.account(ctx, l.db, name)
}

func (l *Ledger) account(ctx context.Context, idb bun.IDB, name string) (Account, error) {
	n, _, err := ParseAccountName(name)
	if err != nil {
		return Account{}, err
	}
	var rows []accountRow
	if err := l.selectAccounts(idb, &rows).Where("a.name = ?", n).Scan(ctx); err != nil {
		return Account{}, fmt.Errorf("quota: read account: %w", err)
	}
	if len(rows) == 0 {
		return Account{}, fmt.Errorf("%w: no account %s", ErrNotFound, n)
	}
	return rows[0].account(), nil
}

func (l *Ledger) selectAccounts(idb bun.IDB, rows *[]accountRow) *bun.SelectQuery {
	return idb.NewSelect().Model(rows).ModelTableExpr("quota_accounts AS a").
		ColumnExpr("a.*").ColumnExpr("p.name AS pool_name").
		Join("JOIN quota_pools AS p ON p.id = a.pool_id")
}

// Accounts returns the accounts of pool (empty: every pool), by name.
func (l *Ledger) Accounts(ctx context.Context, pool string) ([]Account, error) {
	var rows []accountRow
	q := l.selectAccounts(l.db, &rows).Order("a.name")
	if pool != "" {
		q = q.Where("p.name = ?", pool)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("quota: list accounts: %w", err)
	}
	as := make([]Account, len(rows))
	for i, r := range rows {
		as[i] = r.account()
	}
	return as, nil
}

// SetDisabled disables (or enables) an account; a disabled account cannot
// be charged. It reports whether anything changed.
func (l *Ledger) SetDisabled(ctx context.Context, name string, disabled bool, actor string) (changed bool, err error) {
	n, _, err := ParseAccountName(name)
	if err != nil {
		return false, err
	}
	err = l.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		a, err := l.account(ctx, tx, n)
		if err != nil {
			return err
		}
		if a.Disabled == disabled {
			return nil
		}
		if _, err := tx.NewRaw("UPDATE quota_accounts SET disabled = ? WHERE id = ?", disabled, a.ID).Exec(ctx); err != nil {
			return fmt.Errorf("quota: update account: %w", err)
		}
		action := "account.enable"
		if disabled {
			action = "account.disable"
		}
		changed = true
		return audit.Record(ctx, tx, audit.Event{At: l.clock(), Actor: actor, Action: action, Subject: n})
	})
	return changed, err
}

// Balance returns pool (empty: the default pool) with its accounts.
func (l *Ledger) Balance(ctx context.Context, pool string) (Balance, error) {
	var b Balance
	err := l.db.RunInTx(ctx, readSnapshot, func(ctx context.Context, tx bun.Tx) error {
		p, err := l.pool(ctx, tx, pool)
		if err != nil {
			return err
		}
		var rows []accountRow
		if err := l.selectAccounts(tx, &rows).Where("a.pool_id = ?", p.ID).Order("a.name").Scan(ctx); err != nil {
			return fmt.Errorf("quota: list accounts: %w", err)
		}
		b = Balance{Pool: p, Accounts: make([]Account, len(rows))}
		for i, r := range rows {
			b.Accounts[i] = r.account()
			b.Used += r.Used
		}
		return nil
	})
	return b, err
}

// Allocation moves messages from a pool's unallocated remainder to an account.
type Allocation struct {
	Account string
	Amount  int64
	Origin  Origin // default OriginCLI
	Actor   string
	Reason  string
}

// Allocate gives an account more of its pool's unallocated remainder.
// Beyond the remainder it fails with an *UnallocatedError.
func (l *Ledger) Allocate(ctx context.Context, a Allocation) (Account, error) {
	var acct Account
	err := l.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		acct, err = l.allocate(ctx, tx, a)
		return err
	})
	return acct, err
}

func (l *Ledger) allocate(ctx context.Context, tx bun.IDB, a Allocation) (Account, error) {
	if err := checkAmount(a.Amount); err != nil {
		return Account{}, err
	}
	acct, err := l.account(ctx, tx, a.Account)
	if err != nil {
		return Account{}, err
	}
	var poolID int64
	err = tx.NewRaw("UPDATE quota_pools SET allocated = allocated + ? "+
		"WHERE name = ? AND allocated + ? <= total RETURNING id",
		a.Amount, acct.Pool, a.Amount).Scan(ctx, &poolID)
	if errors.Is(err, sql.ErrNoRows) {
		p, perr := l.pool(ctx, tx, acct.Pool)
		if perr != nil {
			return Account{}, perr
		}
		return Account{}, &UnallocatedError{Pool: p.Name, Requested: a.Amount, Unallocated: p.Unallocated()}
	}
	if err != nil {
		return Account{}, fmt.Errorf("quota: allocate: %w", err)
	}
	err = tx.NewRaw("UPDATE quota_accounts SET allocation = allocation + ? WHERE id = ? RETURNING allocation",
		a.Amount, acct.ID).Scan(ctx, &acct.Allocation)
	if err != nil {
		return Account{}, fmt.Errorf("quota: allocate: %w", err)
	}
	e := entryRow{PoolID: poolID, Kind: KindAllocate, AccountID: acct.ID, Amount: a.Amount,
		Origin: a.Origin, Actor: a.Actor, Reason: a.Reason}
	return acct, l.insertEntry(ctx, tx, &e)
}

// Transfer moves allocation between two accounts of one pool.
type Transfer struct {
	From, To string
	Amount   int64
	Origin   Origin // default OriginCLI
	Actor    string
	Reason   string
}

// Transfer moves allocation from t.From to t.To. It never takes the source
// below what it has already used: beyond that it fails with an
// *InsufficientError (Transfer set) saying how much is unused.
func (l *Ledger) Transfer(ctx context.Context, t Transfer) error {
	if err := checkAmount(t.Amount); err != nil {
		return err
	}
	from, _, err := ParseAccountName(t.From)
	if err != nil {
		return err
	}
	to, _, err := ParseAccountName(t.To)
	if err != nil {
		return err
	}
	if from == to {
		return fmt.Errorf("%w: cannot transfer from %s to itself", ErrInvalid, from)
	}
	return l.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		// Lock both rows in id order so two opposite transfers cannot deadlock.
		var rows []accountRow
		err := tx.NewRaw("SELECT id, pool_id, name, allocation, used FROM quota_accounts WHERE name IN (?, ?) ORDER BY id"+forUpdate(tx),
			from, to).Scan(ctx, &rows)
		if err != nil {
			return fmt.Errorf("quota: transfer: %w", err)
		}
		byName := map[string]accountRow{}
		for _, r := range rows {
			byName[r.Name] = r
		}
		src, ok := byName[from]
		if !ok {
			return fmt.Errorf("%w: no account %s", ErrNotFound, from)
		}
		dst, ok := byName[to]
		if !ok {
			return fmt.Errorf("%w: no account %s", ErrNotFound, to)
		}
		if src.PoolID != dst.PoolID {
			return fmt.Errorf("%w: %s and %s belong to different pools", ErrInvalid, from, to)
		}
		var left int64
		err = tx.NewRaw("UPDATE quota_accounts SET allocation = allocation - ? "+
			"WHERE id = ? AND allocation - ? >= used RETURNING allocation",
			t.Amount, src.ID, t.Amount).Scan(ctx, &left)
		if errors.Is(err, sql.ErrNoRows) {
			return &InsufficientError{Account: from, Requested: t.Amount, Remaining: src.Allocation - src.Used, Transfer: true}
		}
		if err != nil {
			return fmt.Errorf("quota: transfer: %w", err)
		}
		if _, err := tx.NewRaw("UPDATE quota_accounts SET allocation = allocation + ? WHERE id = ?", t.Amount, dst.ID).Exec(ctx); err != nil {
			return fmt.Errorf("quota: transfer: %w", err)
		}
		e := entryRow{PoolID: src.PoolID, Kind: KindTransfer, AccountID: dst.ID, FromAccountID: src.ID,
			Amount: t.Amount, Origin: t.Origin, Actor: t.Actor, Reason: t.Reason}
		return l.insertEntry(ctx, tx, &e)
	})
}

func (l *Ledger) insertEntry(ctx context.Context, tx bun.IDB, e *entryRow) error {
	if e.Actor == "" {
		return fmt.Errorf("%w: every ledger entry needs an actor", ErrInvalid)
	}
	if e.Origin == "" {
		e.Origin = OriginCLI
	}
	if !e.Origin.Valid() {
		return fmt.Errorf("%w: unknown origin %q", ErrInvalid, e.Origin)
	}
	if e.CreatedAt.IsZero() {
		e.CreatedAt = l.clock()
	}
	if _, err := tx.NewInsert().Model(e).Exec(ctx); err != nil {
		return fmt.Errorf("quota: record %s: %w", e.Kind, err)
	}
	return nil
}

// readSnapshot reads several statements from one consistent snapshot
// (PostgreSQL REPEATABLE READ; a deferred SQLite transaction in WAL mode).
var readSnapshot = &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead}
