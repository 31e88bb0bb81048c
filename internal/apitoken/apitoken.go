// Package apitoken keeps the bearer tokens of the HTTPS API: an account's
// token acts on that account only, an admin token on all. A token is shown
// once when created; only its SHA-256 is stored.
package apitoken

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/base32"
	"encoding/hex"
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
	ErrNotFound     = errors.New("apitoken: not found")
	ErrInvalid      = errors.New("apitoken: invalid")
	ErrUnauthorized = errors.New("apitoken: missing, unknown or revoked token")
)

// Token is a stored token (never its secret).
type Token struct {
	ID        int64
	Account   string // "" for an admin token
	Name      string
	CreatedAt time.Time
	RevokedAt time.Time // zero: active
}

// Admin reports an admin token.
func (t Token) Admin() bool { return t.Account == "" }

// Store reads and writes tokens.
type Store struct {
	db  *bun.DB
	now func() time.Time
}

// NewStore returns a Store on a migrated database (now nil: time.Now).
func NewStore(db *bun.DB, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now}
}

const prefix = "envios_"

func digest(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// Add creates a token for account, or an admin token when account is "",
// and returns it with its secret, which is not stored.
func (s *Store) Add(ctx context.Context, account, name, actor string) (Token, string, error) {
	if len(name) > 100 || strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return Token{}, "", fmt.Errorf("%w: name must be at most 100 printable characters", ErrInvalid)
	}
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	secret := prefix + strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(b))
	now := s.now().UTC()
	t := Token{Name: name, CreatedAt: now}
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var accountID *int64
		subject := "admin"
		if account != "" {
			n, _, err := quota.ParseAccountName(account)
			if err != nil {
				return fmt.Errorf("%w: %v", ErrInvalid, err)
			}
			var ids []int64
			if err := tx.NewRaw("SELECT id FROM quota_accounts WHERE name = ?", n).Scan(ctx, &ids); err != nil {
				return fmt.Errorf("apitoken: read account: %w", err)
			}
			if len(ids) == 0 {
				return fmt.Errorf("%w: no account %s", ErrNotFound, n)
			}
			accountID, t.Account, subject = &ids[0], n, n
		}
		if err := tx.NewRaw("INSERT INTO api_tokens (account_id, name, hash, created_at) VALUES (?, ?, ?, ?) RETURNING id",
			accountID, name, digest(secret), now).Scan(ctx, &t.ID); err != nil {
			return fmt.Errorf("apitoken: store: %w", err)
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "token.add", Subject: subject, Detail: fmt.Sprintf("token %d %s", t.ID, name)})
	})
	if err != nil {
		return Token{}, "", err
	}
	return t, secret, nil
}

type row struct {
	ID        int64
	Account   sql.NullString
	Name      string
	CreatedAt time.Time
	RevokedAt *time.Time
}

func (r row) token() Token {
	t := Token{ID: r.ID, Account: r.Account.String, Name: r.Name, CreatedAt: r.CreatedAt.UTC()}
	if r.RevokedAt != nil {
		t.RevokedAt = r.RevokedAt.UTC()
	}
	return t
}

const selectTokens = "SELECT t.id, a.name AS account, t.name, t.created_at, t.revoked_at FROM api_tokens t LEFT JOIN quota_accounts a ON a.id = t.account_id"

// List returns every token, oldest first.
func (s *Store) List(ctx context.Context) ([]Token, error) {
	var rows []row
	if err := s.db.NewRaw(selectTokens+" ORDER BY t.id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("apitoken: list: %w", err)
	}
	out := make([]Token, len(rows))
	for i, r := range rows {
		out[i] = r.token()
	}
	return out, nil
}

// Revoke withdraws token id; again reports false.
func (s *Store) Revoke(ctx context.Context, id int64, actor string) (bool, error) {
	now := s.now().UTC()
	changed := false
	err := s.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var rows []row
		if err := tx.NewRaw(selectTokens+" WHERE t.id = ?", id).Scan(ctx, &rows); err != nil {
			return fmt.Errorf("apitoken: read: %w", err)
		}
		if len(rows) == 0 {
			return fmt.Errorf("%w: no token %d", ErrNotFound, id)
		}
		if rows[0].RevokedAt != nil {
			return nil
		}
		if _, err := tx.NewRaw("UPDATE api_tokens SET revoked_at = ? WHERE id = ?", now, id).Exec(ctx); err != nil {
			return fmt.Errorf("apitoken: revoke: %w", err)
		}
		changed = true
		subject := rows[0].Account.String
		if subject == "" {
			subject = "admin"
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "token.revoke", Subject: subject, Detail: fmt.Sprintf("token %d", id)})
	})
	return changed, err
}

// Authenticate returns the active token whose secret this is, or
// ErrUnauthorized.
func (s *Store) Authenticate(ctx context.Context, secret string) (Token, error) {
	if !strings.HasPrefix(secret, prefix) || len(secret) > 200 {
		return Token{}, ErrUnauthorized
	}
	var r row
	var account sql.NullString
	err := store.RetryConnLost(ctx, s.db, func() error {
		return store.QueryRowCached(ctx, s.db, "SELECT t.id, a.name, t.name, t.created_at FROM api_tokens t "+
			"LEFT JOIN quota_accounts a ON a.id = t.account_id WHERE t.hash = ? AND t.revoked_at IS NULL", digest(secret)).
			Scan(&r.ID, &account, &r.Name, &r.CreatedAt)
	})
	if errors.Is(err, sql.ErrNoRows) {
		return Token{}, ErrUnauthorized
	}
	if err != nil {
		return Token{}, fmt.Errorf("apitoken: authenticate: %w", err)
	}
	r.Account = account
	return r.token(), nil
}

// Audit records an action an admin token took through the API in the
// audit log (actor "token:ID").
func (s *Store) Audit(ctx context.Context, t Token, action, subject, detail string) error {
	return audit.Record(ctx, s.db, audit.Event{At: s.now().UTC(), Actor: fmt.Sprintf("token:%d", t.ID), Action: action, Subject: subject, Detail: detail})
}
