package campaign

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"iter"
	"strconv"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// pageSize is how many targets the materialiser reads at a time.
const pageSize = 2000

// errStopped ends a materialisation whose campaign was paused or
// cancelled meanwhile.
var errStopped = errors.New("campaign: paused or cancelled while materialising")

// idempotencyKey is the key of a campaign's SendBatch.
func idempotencyKey(id int64) string { return "campaign:" + strconv.FormatInt(id, 10) }

// lockName is the lock a materialiser holds: one per campaign on
// PostgreSQL, where several nodes share the work; one for all on SQLite,
// which has one writer anyway (and a lock file per campaign would pile up
// beside the database).
func (s *Store) lockName(id int64) string {
	if s.pg() {
		return "campaign.materialise." + strconv.FormatInt(id, 10)
	}
	return "campaign.materialise"
}

// Materialise stores and charges the recipients of started campaign id
// that are not stored yet, through SendBatch with the campaign's
// idempotency key, so what an earlier, interrupted run stored is neither
// stored nor charged again. It returns at once (false, nil) if another
// process or goroutine is materialising it; (true, nil) when every target
// is stored. A pause or cancel stops it; a pool that runs out pauses the
// campaign with the reason in its Error.
func (s *Store) Materialise(ctx context.Context, id int64) (bool, error) {
	release, ok, err := store.TryLock(ctx, s.cfg.DB, s.lockName(id))
	if err != nil || !ok {
		return false, err
	}
	defer release()
	r, err := s.get(ctx, s.cfg.DB, "", id, false)
	if err != nil {
		return false, err
	}
	if (r.Status != Scheduled && r.Status != Running) || r.MaterialisedAt != nil {
		return r.MaterialisedAt != nil, nil
	}
	b := mailing.Batch{Account: r.Account, From: r.FromAddr, ReplyTo: strs(r.ReplyTo), Subject: r.Subject, Text: deref(r.TextBody), HTML: deref(r.HTMLBody),
		Tags: strs(r.Tags), Campaign: r.Topic, Priority: mailing.Bulk, IdempotencyKey: idempotencyKey(id), Origin: origin, Actor: r.StartedBy}
	if r.SendAt != nil {
		b.SendAt = *r.SendAt
	}
	var seen int64
	b.Recipients = s.targets(ctx, r, &seen)
	rec, err := s.cfg.Mailer.SendBatch(ctx, b)
	s.cfg.Logger.Info("campaign materialised", "campaign", id, "accepted", rec.Accepted, "suppressed", rec.Suppressed,
		"resumed", rec.Resumed, "rejected", rec.NRejected, "err", err)
	if serr := s.sync(ctx, r); serr != nil && err == nil {
		err = serr
	}
	switch {
	case err == nil:
		res, err := s.cfg.DB.NewRaw("UPDATE campaigns SET materialised_at = ?, error = '' WHERE id = ? AND materialised_at IS NULL AND targets = ?",
			s.now(), id, seen).Exec(ctx)
		if err != nil {
			return false, fmt.Errorf("campaign: record materialisation: %w", err)
		}
		n, _ := res.RowsAffected()
		return n == 1, nil // 0: extended meanwhile; the next run takes the rest
	case errors.Is(err, errStopped), errors.Is(err, mailing.ErrCancelled):
		return false, nil
	case errors.Is(err, mailing.ErrNoRecipients):
		// Every target was deleted or left since the start.
		return true, s.stop(ctx, id, Finished, "no recipient could be stored: "+err.Error())
	case errors.Is(err, quota.ErrInsufficient), isDecided(err):
		return false, s.stop(ctx, id, Paused, err.Error())
	}
	return false, err
}

// isDecided reports an error that comes again if materialising is retried
// unchanged (the content, the From identity, the account): the campaign
// is paused with it rather than retried.
func isDecided(err error) bool {
	var me *mailing.Error
	return errors.As(err, &me) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded)
}

// stop moves a campaign to status with why, pausing its message if it is
// paused.
func (s *Store) stop(ctx context.Context, id int64, status Status, why string) error {
	now := s.now()
	q := "UPDATE campaigns SET status = ?, error = ?, updated_at = ? WHERE id = ? AND status IN ('scheduled', 'running')"
	args := []any{status, why, now, id}
	if status == Finished {
		q = "UPDATE campaigns SET status = ?, error = ?, updated_at = ?, finished_at = ?, materialised_at = ? WHERE id = ? AND status IN ('scheduled', 'running')"
		args = []any{status, why, now, now, now, id}
	}
	if _, err := s.cfg.DB.NewRaw(q, args...).Exec(ctx); err != nil {
		return fmt.Errorf("campaign: stop: %w", err)
	}
	r, err := s.get(ctx, s.cfg.DB, "", id, false)
	if err != nil {
		return err
	}
	return s.sync(ctx, r)
}

// messageID is the id of the campaign's message, once its first
// recipients are stored ("" before).
func (s *Store) messageID(ctx context.Context, idb bun.IDB, r *row) (string, error) {
	if r.MessageID != "" {
		return r.MessageID, nil
	}
	var id string
	err := idb.NewRaw("SELECT id FROM mail_messages WHERE account_id = ? AND idempotency_key = ?", r.AccountID, idempotencyKey(r.ID)).Scan(ctx, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("campaign: find its message: %w", err)
	}
	if _, err := idb.NewRaw("UPDATE campaigns SET message_id = ? WHERE id = ? AND message_id = ''", id, r.ID).Exec(ctx); err != nil {
		return "", fmt.Errorf("campaign: record its message: %w", err)
	}
	r.MessageID = id
	return id, nil
}

// sync makes the campaign's message follow the campaign's status read
// again: paused while the campaign is, cancelled if it is.
func (s *Store) sync(ctx context.Context, r *row) error {
	ctx = context.WithoutCancel(ctx) // a pause must reach the message even while shutting down
	var st Status
	if err := s.cfg.DB.NewRaw("SELECT status FROM campaigns WHERE id = ?", r.ID).Scan(ctx, &st); err != nil {
		return fmt.Errorf("campaign: read status: %w", err)
	}
	mid, err := s.messageID(ctx, s.cfg.DB, r)
	if err != nil || mid == "" {
		return err
	}
	actor := "campaign:" + strconv.FormatInt(r.ID, 10)
	switch st {
	case Paused:
		return s.cfg.Mailer.Pause(ctx, r.Account, mid, actor)
	case Cancelled:
		_, err := s.cfg.Mailer.Cancel(ctx, r.Account, mid, actor)
		return err
	default:
		return s.cfg.Mailer.Resume(ctx, r.Account, mid, actor)
	}
}

// targets yields a started campaign's targets in seq order, each as its
// contact is now; a contact deleted since the start (or no longer active)
// is yielded without an address, so SendBatch rejects it and the seqs
// stay aligned. Every page checks that the campaign still runs. seen
// counts what was yielded.
func (s *Store) targets(ctx context.Context, r *row, seen *int64) iter.Seq2[mailing.Recipient, error] {
	type target struct {
		Seq     int64
		Address sql.NullString
		Name    sql.NullString
		Attrs   sql.NullString
		Status  sql.NullString
	}
	return func(yield func(mailing.Recipient, error) bool) {
		for {
			var st Status
			if err := s.cfg.DB.NewRaw("SELECT status FROM campaigns WHERE id = ?", r.ID).Scan(ctx, &st); err != nil {
				yield(mailing.Recipient{}, fmt.Errorf("campaign: read status: %w", err))
				return
			}
			if st != Running && st != Scheduled {
				yield(mailing.Recipient{}, errStopped)
				return
			}
			if *seen > 0 {
				if _, err := s.messageID(ctx, s.cfg.DB, r); err != nil {
					yield(mailing.Recipient{}, err)
					return
				}
			}
			var page []target
			err := s.cfg.DB.NewRaw("SELECT t.seq, c.address, c.name, c.attrs, c.status FROM campaign_targets t "+
				"LEFT JOIN contacts c ON c.id = t.contact_id WHERE t.campaign_id = ? AND t.seq >= ? ORDER BY t.seq LIMIT ?",
				r.ID, *seen, pageSize).Scan(ctx, &page)
			if err != nil {
				yield(mailing.Recipient{}, fmt.Errorf("campaign: read targets: %w", err))
				return
			}
			for _, t := range page {
				if t.Seq != *seen {
					yield(mailing.Recipient{}, fmt.Errorf("campaign: target %d missing from the snapshot", *seen))
					return
				}
				*seen++
				rc := mailing.Recipient{}
				if t.Address.Valid && t.Status.String == "active" {
					data, err := decodeAttrs(t.Attrs.String, t.Address.String, t.Name.String)
					if err != nil {
						yield(mailing.Recipient{}, err)
						return
					}
					rc = mailing.Recipient{Address: t.Address.String, Data: data}
				}
				if !yield(rc, nil) {
					return
				}
			}
			if len(page) < pageSize {
				return
			}
		}
	}
}

// Run materialises started campaigns (its own, and those whose
// materialiser died: the lock it held went with it), moves scheduled
// campaigns to running at their send-at time and finished ones to
// finished, every Config.Poll and whenever Start asks, until ctx ends; it
// then returns nil, once the materialisation in flight has stopped (what
// it committed stays, and the next run resumes after it).
func (s *Store) Run(ctx context.Context) error {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for n := 0; ; n++ {
		s.tick(ctx, n%5 == 0)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-s.kick:
		}
	}
}

func (s *Store) tick(ctx context.Context, finish bool) {
	var ids []int64
	err := s.cfg.DB.NewRaw("SELECT id FROM campaigns WHERE status IN ('scheduled', 'running') AND materialised_at IS NULL ORDER BY id").Scan(ctx, &ids)
	if err != nil && ctx.Err() == nil {
		s.cfg.Logger.Error("campaigns: find campaigns to materialise", "err", err)
	}
	for _, id := range ids {
		if _, err := s.Materialise(ctx, id); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("campaign: materialise", "campaign", id, "err", err)
		}
	}
	now := s.now()
	if _, err := s.cfg.DB.NewRaw("UPDATE campaigns SET status = 'running', updated_at = ? WHERE status = 'scheduled' AND send_at <= ?", now, now).Exec(ctx); err != nil && ctx.Err() == nil {
		s.cfg.Logger.Error("campaigns: start scheduled campaigns", "err", err)
	}
	if finish {
		if err := s.finish(ctx); err != nil && ctx.Err() == nil {
			s.cfg.Logger.Error("campaigns: finish campaigns", "err", err)
		}
	}
}

// finish marks finished the running, materialised campaigns whose every
// recipient has a final status.
func (s *Store) finish(ctx context.Context) error {
	var ids []int64
	err := s.cfg.DB.NewRaw("SELECT cp.id FROM campaigns cp WHERE cp.status = 'running' AND cp.materialised_at IS NOT NULL AND NOT EXISTS "+
		"(SELECT 1 FROM mail_recipients r WHERE r.message_id = cp.message_id AND r.status IN ('queued', 'scheduled', 'sending', 'deferred'))").Scan(ctx, &ids)
	if err != nil {
		return fmt.Errorf("campaign: find finished campaigns: %w", err)
	}
	for _, id := range ids {
		now := s.now()
		if _, err := s.cfg.DB.NewRaw("UPDATE campaigns SET status = 'finished', finished_at = ?, updated_at = ? WHERE id = ? AND status = 'running'", now, now, id).Exec(ctx); err != nil {
			return fmt.Errorf("campaign: finish: %w", err)
		}
	}
	return nil
}
