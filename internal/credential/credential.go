// Package credential keeps the SMTP submission credentials of the relay:
// each belongs to exactly one account, its password is generated, shown
// once and stored only as an argon2id hash (RFC 9106), and it can be
// revoked. relayd's `credential` commands and the relay use it.
package credential

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/quota"
)

// Errors callers branch on.
var (
	// ErrNotFound: no such credential (or account).
	ErrNotFound = errors.New("credential: not found")
	// ErrInvalid: an argument is malformed.
	ErrInvalid = errors.New("credential: invalid")
	// ErrBadCredentials: unknown username, wrong password or a revoked
	// credential. Which one is deliberately not said.
	ErrBadCredentials = errors.New("credential: bad username or password")
)

// Credential is one stored credential (never its password).
type Credential struct {
	ID        int64
	Account   string // "area/name"
	AccountID int64
	Username  string
	Name      string // a label for people: which system uses it
	CreatedAt time.Time
	RevokedAt time.Time // zero: active
}

type row struct {
	bun.BaseModel `bun:"table:relay_credentials,alias:c"`
	ID            int64 `bun:",pk,autoincrement"`
	AccountID     int64
	Username      string
	Name          string
	Hash          string
	CreatedAt     time.Time
	RevokedAt     *time.Time
}

// Store reads and writes credentials in the envios database.
type Store struct {
	db  *bun.DB
	now func() time.Time
}

// NewStore returns a Store on a migrated database; now is the clock
// (nil: time.Now).
func NewStore(db *bun.DB, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now}
}

const alphabet = "abcdefghijkmnpqrstuvwxyz23456789" // no 0/o, 1/l: read aloud, typed by hand

func pick(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	for i := range b {
		b[i] = alphabet[b[i]%32] // 256 is a multiple of 32: no bias
	}
	return string(b)
}

// Add creates a credential for account and returns it with its password,
// which is not stored and cannot be shown again. The username is the
// account's short name and a random suffix ("eventos.k3x9q2").
func (s *Store) Add(ctx context.Context, account, name, actor string) (Credential, string, error) {
	acct, _, err := quota.ParseAccountName(account)
	if err != nil {
		return Credential{}, "", fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(name) > 100 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return Credential{}, "", fmt.Errorf("%w: name must be at most 100 printable characters", ErrInvalid)
	}
	password := pick(24) // 24 of 32 symbols: 120 bits
	hash, err := Hash(password)
	if err != nil {
		return Credential{}, "", err
	}
	short := acct[strings.IndexByte(acct, '/')+1:]
	now := s.now().UTC()
	var c Credential
	err = s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var ids []int64
		if err := tx.NewRaw("SELECT id FROM quota_accounts WHERE name = ?", acct).Scan(ctx, &ids); err != nil {
			return fmt.Errorf("credential: read account: %w", err)
		}
		if len(ids) == 0 {
			return fmt.Errorf("%w: no account %s", ErrNotFound, acct)
		}
		r := row{AccountID: ids[0], Username: short + "." + pick(6), Name: name, Hash: hash, CreatedAt: now}
		if _, err := tx.NewInsert().Model(&r).Returning("id").Exec(ctx); err != nil {
			return fmt.Errorf("credential: store: %w", err)
		}
		c = Credential{ID: r.ID, Account: acct, AccountID: r.AccountID, Username: r.Username, Name: name, CreatedAt: now}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "credential.add", Subject: acct, Detail: r.Username})
	})
	if err != nil {
		return Credential{}, "", err
	}
	return c, password, nil
}

// List returns the credentials of account, or of every account when account
// is empty, oldest first.
func (s *Store) List(ctx context.Context, account string) ([]Credential, error) {
	q := s.db.NewSelect().TableExpr("relay_credentials AS c").Join("JOIN quota_accounts AS a ON a.id = c.account_id").
		ColumnExpr("c.id, a.name AS account, c.account_id, c.username, c.name, c.created_at, c.revoked_at").OrderExpr("c.id")
	if account != "" {
		acct, _, err := quota.ParseAccountName(account)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		q = q.Where("a.name = ?", acct)
	}
	var rows []struct {
		ID        int64
		Account   string
		AccountID int64
		Username  string
		Name      string
		CreatedAt time.Time
		RevokedAt *time.Time
	}
	if err := q.Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("credential: list: %w", err)
	}
	out := make([]Credential, len(rows))
	for i, r := range rows {
		out[i] = Credential{ID: r.ID, Account: r.Account, AccountID: r.AccountID, Username: r.Username, Name: r.Name, CreatedAt: r.CreatedAt.UTC()}
		if r.RevokedAt != nil {
			out[i].RevokedAt = r.RevokedAt.UTC()
		}
	}
	return out, nil
}

// Revoke withdraws the credential with this username; sessions using it
// are refused from their next command. Revoking twice reports false.
func (s *Store) Revoke(ctx context.Context, username, actor string) (bool, error) {
	now := s.now().UTC()
	changed := false
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var rows []struct {
			Account   string
			RevokedAt *time.Time
		}
		if err := tx.NewRaw("SELECT a.name AS account, c.revoked_at FROM relay_credentials c JOIN quota_accounts a ON a.id = c.account_id WHERE c.username = ?",
			username).Scan(ctx, &rows); err != nil {
			return fmt.Errorf("credential: read: %w", err)
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: no credential %q", ErrNotFound, username)
		}
		if rows[0].RevokedAt != nil {
			return nil
		}
		if _, err := tx.NewRaw("UPDATE relay_credentials SET revoked_at = ? WHERE username = ? AND revoked_at IS NULL", now, username).Exec(ctx); err != nil {
			return fmt.Errorf("credential: revoke: %w", err)
		}
		changed = true
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "credential.revoke", Subject: rows[0].Account, Detail: username})
	})
	return changed, err
}

// Lookup returns the active credential named username with its hash, or
// ErrBadCredentials. Any other error is the database's.
func (s *Store) Lookup(ctx context.Context, username string) (Credential, string, error) {
	var rows []struct {
		ID        int64
		Account   string
		AccountID int64
		Hash      string
		CreatedAt time.Time
	}
	err := store.RetryConnLost(ctx, s.db, func() error {
		rows = rows[:0]
		return s.db.NewRaw("SELECT c.id, a.name AS account, c.account_id, c.hash, c.created_at FROM relay_credentials c "+
			"JOIN quota_accounts a ON a.id = c.account_id WHERE c.username = ? AND c.revoked_at IS NULL", username).Scan(ctx, &rows)
	})
	if err != nil {
		return Credential{}, "", fmt.Errorf("credential: lookup: %w", err)
	}
	if len(rows) == 0 {
		return Credential{}, "", ErrBadCredentials
	}
	r := rows[0]
	return Credential{ID: r.ID, Account: r.Account, AccountID: r.AccountID, Username: username, CreatedAt: r.CreatedAt.UTC()}, r.Hash, nil
}

// State is where a credential stands now: the relay asks before every
// transaction command (States, for many sessions at once).
type State struct {
	Active    bool  // not revoked
	Disabled  bool  // its account is disabled
	Remaining int64 // what its account may still send (allocation − used)
}

// States reads the state of several credentials in one query. An id that
// does not exist is absent from the result.
func (s *Store) States(ctx context.Context, ids []int64) (out map[int64]State, err error) {
	err = store.RetryConnLost(ctx, s.db, func() error {
		out, err = s.states(ctx, ids)
		return err
	})
	return out, err
}

func (s *Store) states(ctx context.Context, ids []int64) (map[int64]State, error) {
	var rows *sql.Rows
	var err error
	const q = "SELECT c.id, c.revoked_at IS NOT NULL, a.disabled, a.allocation - a.used " +
		"FROM relay_credentials c JOIN quota_accounts a ON a.id = c.account_id WHERE c.id "
	if store.EngineOfDB(s.db) == store.Postgres {
		// One statement whatever the number of ids: prepared once per connection.
		rows, err = store.QueryCached(ctx, s.db, q+"= ANY(?)", ids)
	} else {
		rows, err = s.db.QueryContext(ctx, q+"IN (?)", bun.List(ids))
	}
	if err != nil {
		return nil, fmt.Errorf("credential: check: %w", err)
	}
	defer rows.Close()
	out := make(map[int64]State, len(ids))
	for rows.Next() {
		var id int64
		var revoked bool
		var st State
		if err := rows.Scan(&id, &revoked, &st.Disabled, &st.Remaining); err != nil {
			return nil, fmt.Errorf("credential: check: %w", err)
		}
		st.Active = !revoked
		out[id] = st
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("credential: check: %w", err)
	}
	return out, nil
}
