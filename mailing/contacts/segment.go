package contacts

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/segment"
)

// Segment is an account's saved filter expression (internal/segment's
// grammar), stored in its canonical form.
type Segment struct {
	ID         int64     `json:"id"`
	Account    string    `json:"account"`
	Name       string    `json:"name"`
	Expression string    `json:"expression"`
	CreatedAt  time.Time `json:"created_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	CreatedBy  string    `json:"created_by"`
}

// segmentColumns are the columns of a Segment, over contact_segments sg
// joined to quota_accounts a.
const segmentColumns = "SELECT sg.id, a.name AS account, sg.name, sg.expression, sg.created_at, sg.updated_at, sg.created_by " +
	"FROM contact_segments AS sg JOIN quota_accounts AS a ON a.id = sg.account_id"

// SaveSegment creates an account's segment, or replaces the expression
// of the one of that name (its creator and creation time stay). The
// expression must parse and every list it names must be the account's.
func (s *Store) SaveSegment(ctx context.Context, account, name, expression, actor string) (Segment, error) {
	name = strings.TrimSpace(name)
	if name == "" || len(name) > 200 {
		return Segment{}, errorf(ErrInvalid, "a segment needs a name of 1 to 200 characters")
	}
	e, err := segment.Parse(expression)
	if err != nil {
		return Segment{}, errorf(ErrInvalid, "%v", err)
	}
	sg := Segment{Account: account, Name: name, Expression: e.String(), CreatedBy: actor}
	err = s.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		id, err := accountID(ctx, tx, account)
		if err != nil {
			return err
		}
		for _, l := range e.Lists() {
			if _, err := segmentList(ctx, tx, account, l); err != nil {
				return err
			}
		}
		now := s.now()
		// One statement, so two saves of one new name cannot both insert.
		err = tx.NewRaw(`INSERT INTO contact_segments (account_id, name, expression, created_at, created_by, updated_at) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (account_id, name) DO UPDATE SET expression = excluded.expression, updated_at = excluded.updated_at
			RETURNING id, created_at, created_by, updated_at`, id, name, sg.Expression, now, actor, now).
			Scan(ctx, &sg.ID, &sg.CreatedAt, &sg.CreatedBy, &sg.UpdatedAt)
		if err != nil {
			return fmt.Errorf("contacts: save segment: %w", err)
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "segment.save", Subject: account, Detail: name + ": " + sg.Expression})
	})
	if err != nil {
		return Segment{}, err
	}
	sg.CreatedAt, sg.UpdatedAt = sg.CreatedAt.UTC(), sg.UpdatedAt.UTC()
	return sg, nil
}

// segmentList resolves a list a segment names; a missing one makes the
// expression invalid.
func segmentList(ctx context.Context, idb bun.IDB, account, name string) (int64, error) {
	l, err := list(ctx, idb, account, name)
	if errors.Is(err, ErrNotFound) {
		if _, aerr := accountID(ctx, idb, account); aerr != nil {
			return 0, aerr
		}
		return 0, errorf(ErrInvalid, "the expression names the list %q, which %s does not have", name, account)
	}
	if err != nil {
		return 0, err
	}
	return l.ID, nil
}

// Segments returns an account's segments (every account's when account
// is ""), by name.
func (s *Store) Segments(ctx context.Context, account string) ([]Segment, error) {
	q, args := segmentColumns, []any{}
	if account != "" {
		if _, err := accountID(ctx, s.DB, account); err != nil {
			return nil, err
		}
		q += " WHERE a.name = ?"
		args = append(args, account)
	}
	var sgs []Segment
	if err := s.DB.NewRaw(q+" ORDER BY a.name, sg.name", args...).Scan(ctx, &sgs); err != nil {
		return nil, fmt.Errorf("contacts: segments: %w", err)
	}
	for i := range sgs {
		sgs[i].CreatedAt, sgs[i].UpdatedAt = sgs[i].CreatedAt.UTC(), sgs[i].UpdatedAt.UTC()
	}
	return sgs, nil
}

// Segment returns an account's segment by name.
func (s *Store) Segment(ctx context.Context, account, name string) (Segment, error) {
	var sgs []Segment
	if err := s.DB.NewRaw(segmentColumns+" WHERE a.name = ? AND sg.name = ?", account, name).Scan(ctx, &sgs); err != nil {
		return Segment{}, fmt.Errorf("contacts: read segment: %w", err)
	}
	if len(sgs) == 0 {
		if _, err := accountID(ctx, s.DB, account); err != nil {
			return Segment{}, err
		}
		return Segment{}, errorf(ErrNotFound, "%s has no segment %q", account, name)
	}
	sg := sgs[0]
	sg.CreatedAt, sg.UpdatedAt = sg.CreatedAt.UTC(), sg.UpdatedAt.UTC()
	return sg, nil
}

// DeleteSegment removes an account's segment, recording who did it.
func (s *Store) DeleteSegment(ctx context.Context, account, name, actor string) error {
	return s.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		id, err := accountID(ctx, tx, account)
		if err != nil {
			return err
		}
		res, err := tx.NewRaw("DELETE FROM contact_segments WHERE account_id = ? AND name = ?", id, name).Exec(ctx)
		if err != nil {
			return fmt.Errorf("contacts: delete segment: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil || n == 0 {
			return errorf(ErrNotFound, "%s has no segment %q", account, name)
		}
		return audit.Record(ctx, tx, audit.Event{At: s.now(), Actor: actor, Action: "segment.delete", Subject: account, Detail: name})
	})
}

// Match compiles an expression (a saved segment's, or any) for an
// account: a condition over contacts c, with its args, for callers that
// select contacts. The condition includes c.account_id = the account's
// id, so it never matches another account's contacts; it does not look
// at c.status (CountSegment and campaigns select the active ones). Every
// list the expression names must be the account's (ErrInvalid).
func (s *Store) Match(ctx context.Context, idb bun.IDB, account, expression string) (where string, args []any, err error) {
	e, err := segment.Parse(expression)
	if err != nil {
		return "", nil, errorf(ErrInvalid, "%v", err)
	}
	id, err := accountID(ctx, idb, account)
	if err != nil {
		return "", nil, err
	}
	d := segment.SQLite
	if idb.Dialect().Name() == dialect.PG {
		d = segment.PostgreSQL
	}
	cond, cargs, err := e.SQL(d, "c", func(name string) (int64, error) { return segmentList(ctx, idb, account, name) })
	if err != nil {
		return "", nil, err
	}
	return "(c.account_id = ? AND " + cond + ")", append([]any{id}, cargs...), nil
}

// CountSegment counts an account's active contacts that match an
// expression.
func (s *Store) CountSegment(ctx context.Context, account, expression string) (int64, error) {
	where, args, err := s.Match(ctx, s.DB, account, expression)
	if err != nil {
		return 0, err
	}
	var n int64
	if err := s.DB.NewRaw("SELECT count(*) FROM contacts AS c WHERE c.status = 'active' AND "+where, args...).Scan(ctx, &n); err != nil {
		return 0, fmt.Errorf("contacts: count segment: %w", err)
	}
	return n, nil
}
