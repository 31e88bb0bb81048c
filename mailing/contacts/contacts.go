// Package contacts keeps an account's contacts and lists and imports them
// from files without limit: every row of a file either lands or is listed,
// with its line and why, in the import's reject report; the suppression
// list always wins (an import never re-subscribes an address that
// bounced, complained or unsubscribed).
//
// A contact is one per (account, address), the address normalised (lower
// case, IDNA A-label domain), with a name and attributes (the merge fields
// of campaigns). Deleting a contact (the right to deletion of Ley 29733)
// removes it and its list memberships; the mail_recipients rows of mail
// already sent to it stay, as the agency's record.
package contacts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
)

// Errors.
var (
	ErrNotFound = errors.New("contacts: not found")
	ErrInvalid  = errors.New("contacts: invalid")
	ErrExists   = errors.New("contacts: already exists")
)

// kindError is an error of one of the kinds above whose text is only its
// message (errors.Is finds the kind).
type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind, fmt.Sprintf(format, args...)}
}

// Store is the contacts of every account in one database.
type Store struct {
	DB  *bun.DB
	Now func() time.Time // default time.Now
}

func (s *Store) now() time.Time {
	if s.Now == nil {
		return time.Now().UTC()
	}
	return s.Now().UTC()
}

// List is one of an account's lists.
type List struct {
	bun.BaseModel `bun:"table:contact_lists,alias:l"`
	ID            int64     `bun:",pk,autoincrement" json:"id"`
	AccountID     int64     `json:"-"`
	Account       string    `bun:",scanonly" json:"account"`
	Name          string    `json:"name"`
	Description   string    `json:"description"`
	CreatedAt     time.Time `json:"created_at"`
	CreatedBy     string    `json:"created_by"`
	Subscribed    int64     `bun:",scanonly" json:"subscribed"`   // contacts subscribed now
	Unsubscribed  int64     `bun:",scanonly" json:"unsubscribed"` // contacts who left it
}

// accountID resolves an account name.
func accountID(ctx context.Context, idb bun.IDB, account string) (int64, error) {
	var id int64
	err := idb.NewRaw("SELECT id FROM quota_accounts WHERE name = ?", account).Scan(ctx, &id)
	if err != nil || id == 0 {
		return 0, errorf(ErrNotFound, "no account %q", account)
	}
	return id, nil
}

// CreateList adds a list to an account; the name must be new there.
func (s *Store) CreateList(ctx context.Context, account, name, description, actor string) (List, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 200 {
		return List{}, errorf(ErrInvalid, "a list needs a name of 1 to 200 characters")
	}
	var l List
	err := s.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		id, err := accountID(ctx, tx, account)
		if err != nil {
			return err
		}
		n, err := tx.NewSelect().Model((*List)(nil)).Where("account_id = ? AND name = ?", id, name).Count(ctx)
		if err != nil {
			return fmt.Errorf("contacts: read lists: %w", err)
		}
		if n > 0 {
			return errorf(ErrExists, "%s already has a list %q", account, name)
		}
		l = List{AccountID: id, Account: account, Name: name, Description: description, CreatedAt: s.now(), CreatedBy: actor}
		if _, err := tx.NewInsert().Model(&l).Returning("id").Exec(ctx); err != nil {
			return fmt.Errorf("contacts: add list: %w", err)
		}
		return audit.Record(ctx, tx, audit.Event{At: l.CreatedAt, Actor: actor, Action: "list.add", Subject: account, Detail: name})
	})
	return l, err
}

// Lists returns an account's lists (every account's when account is ""),
// by name, with how many contacts each has subscribed and unsubscribed.
func (s *Store) Lists(ctx context.Context, account string) ([]List, error) {
	var ls []List
	q := s.DB.NewSelect().Model(&ls).ColumnExpr("l.*").ColumnExpr("a.name AS account").
		ColumnExpr("(SELECT count(*) FROM contact_memberships AS m WHERE m.list_id = l.id AND m.status = 'subscribed') AS subscribed").
		ColumnExpr("(SELECT count(*) FROM contact_memberships AS m WHERE m.list_id = l.id AND m.status = 'unsubscribed') AS unsubscribed").
		Join("JOIN quota_accounts AS a ON a.id = l.account_id").OrderExpr("a.name, l.name")
	if account != "" {
		q = q.Where("a.name = ?", account)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("contacts: lists: %w", err)
	}
	return ls, nil
}

// list finds an account's list by name.
func list(ctx context.Context, idb bun.IDB, account, name string) (List, error) {
	var ls []List
	err := idb.NewSelect().Model(&ls).ColumnExpr("l.*").ColumnExpr("a.name AS account").Join("JOIN quota_accounts AS a ON a.id = l.account_id").
		Where("a.name = ? AND l.name = ?", account, name).Scan(ctx)
	if err != nil {
		return List{}, fmt.Errorf("contacts: read list: %w", err)
	}
	if len(ls) == 0 {
		if _, err := accountID(ctx, idb, account); err != nil {
			return List{}, err
		}
		return List{}, errorf(ErrNotFound, "%s has no list %q (relayd list create)", account, name)
	}
	return ls[0], nil
}

// Delete removes an account's contact and its list memberships (the right
// to deletion of Ley 29733), recording who and why in the audit log. The
// mail_recipients rows of mail already sent to the address stay: they
// are the agency's record of what it sent.
func (s *Store) Delete(ctx context.Context, account, address, actor, why string) error {
	if strings.TrimSpace(why) == "" {
		return errorf(ErrInvalid, "deleting a contact needs a reason")
	}
	addr := strings.ToLower(strings.TrimSpace(address))
	return s.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		id, err := accountID(ctx, tx, account)
		if err != nil {
			return err
		}
		var cid int64
		if err := tx.NewRaw("SELECT id FROM contacts WHERE account_id = ? AND address = ?", id, addr).Scan(ctx, &cid); err != nil || cid == 0 {
			return errorf(ErrNotFound, "%s has no contact %s", account, addr)
		}
		// By the account's lists: the primary key (list_id, contact_id)
		// finds each membership.
		if _, err := tx.NewRaw("DELETE FROM contact_memberships WHERE list_id IN (SELECT id FROM contact_lists WHERE account_id = ?) AND contact_id = ?",
			id, cid).Exec(ctx); err != nil {
			return fmt.Errorf("contacts: delete: %w", err)
		}
		if _, err := tx.NewRaw("DELETE FROM contacts WHERE id = ?", cid).Exec(ctx); err != nil {
			return fmt.Errorf("contacts: delete: %w", err)
		}
		return audit.Record(ctx, tx, audit.Event{At: s.now(), Actor: actor, Action: "contact.delete", Subject: account, Detail: addr + ": " + why})
	})
}
