package campaign

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/quota"
)

// targetSQL is the condition on contacts c that selects a campaign's
// recipients: the account's active contacts subscribed to one of its
// lists (if it names lists) and matching its segment (if it has one).
func (s *Store) targetSQL(ctx context.Context, idb bun.IDB, r *row) (string, []any, error) {
	where := "c.account_id = ? AND c.status = 'active'"
	args := []any{r.AccountID}
	if lists := strs(r.Lists); len(lists) > 0 {
		where += " AND EXISTS (SELECT 1 FROM contact_memberships m JOIN contact_lists l ON l.id = m.list_id " +
			"WHERE m.contact_id = c.id AND m.status = 'subscribed' AND l.account_id = ? AND l.name IN (?))"
		args = append(args, r.AccountID, bun.List(lists))
	}
	if r.Segment != "" {
		seg, sargs, err := s.cfg.Segments.Match(ctx, idb, r.Account, r.Segment)
		if err != nil {
			return "", nil, errorf(ErrInvalid, "segment: %v", err)
		}
		where += " AND (" + seg + ")"
		args = append(args, sargs...)
	}
	return where, args, nil
}

// suppressedSQL is the condition that a contact c's address is on the
// suppression list for a campaign's bulk mail (as suppress.Set.Stops
// decides at acceptance): everything, all bulk mail, or the account's
// mail of every topic or of the campaign's.
const suppressedSQL = `EXISTS (SELECT 1 FROM mail_suppressions s WHERE s.address = c.address AND s.removed_at IS NULL
	AND (s.expires_at IS NULL OR s.expires_at > ?)
	AND (s.scope IN ('all', 'bulk') OR (s.scope = 'account' AND s.account_id = ? AND (s.topic = '' OR s.topic = ?))))`

// Preflight is what starting a campaign would do.
type Preflight struct {
	Recipients int64    `json:"recipients"` // contacts the target selects (after the start: those snapshotted)
	Suppressed int64    `json:"suppressed"` // of those, on the suppression list: recorded as suppressed, never sent, not charged
	Cost       int64    `json:"cost"`       // messages it charges: Recipients - Suppressed
	Remaining  int64    `json:"remaining"`  // what the account has left of its allocation
	Fits       bool     `json:"fits"`       // Cost <= Remaining
	Fields     []string `json:"fields"`     // the merge fields the content uses
}

// Preflight counts what starting campaign id would send and charge, and
// checks its merge fields against its target's contacts.
func (s *Store) Preflight(ctx context.Context, account string, id int64) (Preflight, error) {
	r, err := s.get(ctx, s.cfg.DB, account, id, false)
	if err != nil {
		return Preflight{}, err
	}
	return s.preflight(ctx, s.cfg.DB, r)
}

func (s *Store) preflight(ctx context.Context, idb bun.IDB, r *row) (Preflight, error) {
	var p Preflight
	fields, err := parseContent(r.Subject, deref(r.TextBody), deref(r.HTMLBody))
	if err != nil {
		return p, err
	}
	p.Fields = fields
	if err := s.cfg.Mailer.MaySendSigned(ctx, r.Account, r.FromAddr); err != nil {
		return p, errorf(ErrInvalid, "from %q: %v", r.FromAddr, err)
	}
	if err := s.checkFields(ctx, idb, r); err != nil {
		return p, err
	}
	where, args, err := s.targetSQL(ctx, idb, r)
	if err != nil {
		return p, err
	}
	from := "FROM contacts c WHERE " + where
	if r.Status != Draft { // started: its snapshot
		from, args = "FROM campaign_targets t JOIN contacts c ON c.id = t.contact_id WHERE t.campaign_id = ?", []any{r.ID}
	}
	q := "SELECT count(*), COALESCE(sum(CASE WHEN " + suppressedSQL + " THEN 1 ELSE 0 END), 0) " + from
	qargs := append([]any{s.now(), r.AccountID, r.Topic}, args...)
	if err := idb.NewRaw(q, qargs...).Scan(ctx, &p.Recipients, &p.Suppressed); err != nil {
		return p, fmt.Errorf("campaign: preflight: %w", err)
	}
	a, err := s.cfg.Mailer.Ledger().Account(ctx, r.Account)
	if err != nil {
		return p, err
	}
	p.Cost, p.Remaining = p.Recipients-p.Suppressed, max(0, a.Remaining())
	p.Fits = p.Cost <= p.Remaining
	return p, nil
}

// Start runs the preflight and, if the campaign fits what its account has
// left, snapshots its recipients and marks it scheduled (a send-at time
// to come) or running; its recipients are then stored and charged by the
// materialiser ([Store.Run], or [Store.Materialise] directly). A campaign
// that does not fit is refused whole (*quota.InsufficientError), a
// target without contacts with ErrInvalid, and only a draft starts.
func (s *Store) Start(ctx context.Context, account string, id int64, actor string) (Campaign, Preflight, error) {
	var p Preflight
	var c Campaign
	err := s.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		r, err := s.get(ctx, tx, account, id, true)
		if err != nil {
			return err
		}
		if r.Status != Draft {
			return errorf(ErrState, "campaign %d is %s: only a draft starts", id, r.Status)
		}
		if p, err = s.preflight(ctx, tx, r); err != nil {
			return err
		}
		if p.Recipients == 0 {
			return errorf(ErrInvalid, "campaign %d has no recipients: its target selects no active contact", id)
		}
		if !p.Fits {
			return &quota.InsufficientError{Account: r.Account, Requested: p.Cost, Remaining: p.Remaining}
		}
		n, err := s.snapshot(ctx, tx, r, 0)
		if err != nil {
			return err
		}
		now := s.now()
		r.Status = Running
		if r.SendAt != nil && r.SendAt.After(now) {
			r.Status = Scheduled
		}
		r.Targets, r.StartedAt, r.StartedBy, r.UpdatedAt, r.UpdatedBy = n, &now, actor, now, actor
		if _, err := tx.NewUpdate().Model(r).Column("status", "targets", "started_at", "started_by", "updated_at", "updated_by").WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("campaign: start: %w", err)
		}
		c = r.campaign()
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "campaign.start", Subject: r.Account,
			Detail: fmt.Sprintf("campaign=%d recipients=%d suppressed=%d cost=%d", id, p.Recipients, p.Suppressed, p.Cost)})
	})
	if err == nil {
		s.wake()
	}
	return c, p, err
}

// snapshot numbers the contacts the target selects now, from seq from,
// leaving out those already in the snapshot, and returns how many.
func (s *Store) snapshot(ctx context.Context, tx bun.Tx, r *row, from int64) (int64, error) {
	where, args, err := s.targetSQL(ctx, tx, r)
	if err != nil {
		return 0, err
	}
	q := "INSERT INTO campaign_targets (campaign_id, seq, contact_id) " +
		"SELECT ?, ? + ROW_NUMBER() OVER (ORDER BY c.id) - 1, c.id FROM contacts c WHERE " + where
	args = append([]any{r.ID, from}, args...)
	if from > 0 {
		q += " AND NOT EXISTS (SELECT 1 FROM campaign_targets x WHERE x.campaign_id = ? AND x.contact_id = c.id)"
		args = append(args, r.ID)
	}
	res, err := tx.NewRaw(q, args...).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("campaign: snapshot recipients: %w", err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// Extend adds to a started campaign the contacts its target selects now
// that were not in its snapshot — contacts imported since the start — and
// materialises them too. The pool check applies to them as at the start.
func (s *Store) Extend(ctx context.Context, account string, id int64, actor string) (added int64, err error) {
	err = s.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		r, err := s.get(ctx, tx, account, id, true)
		if err != nil {
			return err
		}
		switch r.Status {
		case Scheduled, Running, Paused:
		default:
			return errorf(ErrState, "campaign %d is %s: only a started, unfinished campaign is extended", id, r.Status)
		}
		where, args, err := s.targetSQL(ctx, tx, r)
		if err != nil {
			return err
		}
		var cost int64
		q := "SELECT count(*) FROM contacts c WHERE " + where + " AND NOT " + suppressedSQL +
			" AND NOT EXISTS (SELECT 1 FROM campaign_targets x WHERE x.campaign_id = ? AND x.contact_id = c.id)"
		if err := tx.NewRaw(q, append(append(args, s.now(), r.AccountID, r.Topic), r.ID)...).Scan(ctx, &cost); err != nil {
			return fmt.Errorf("campaign: extend: %w", err)
		}
		a, err := s.cfg.Mailer.Ledger().Account(ctx, r.Account)
		if err != nil {
			return err
		}
		if cost > a.Remaining() {
			return &quota.InsufficientError{Account: r.Account, Requested: cost, Remaining: max(0, a.Remaining())}
		}
		if added, err = s.snapshot(ctx, tx, r, r.Targets); err != nil {
			return err
		}
		now := s.now()
		_, err = tx.NewRaw("UPDATE campaigns SET targets = targets + ?, materialised_at = CASE WHEN ? > 0 THEN NULL ELSE materialised_at END, "+
			"updated_at = ?, updated_by = ? WHERE id = ?", added, added, now, actor, id).Exec(ctx)
		if err != nil {
			return fmt.Errorf("campaign: extend: %w", err)
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "campaign.extend", Subject: r.Account, Detail: fmt.Sprintf("campaign=%d added=%d", id, added)})
	})
	if err == nil && added > 0 {
		s.wake()
	}
	return added, err
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default: // a wake-up is pending already
	}
}
