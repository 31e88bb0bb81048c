package mailing

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/mailerr"
)

// Pause holds message id (a batch or a campaign's message): the delivery
// engines claim none of its recipients until Resume. Recipients being
// delivered at that moment finish; those waiting keep their status and
// charge. A batch still being enqueued goes on taking recipients, which
// wait too. Pausing a paused message changes nothing; a cancelled one
// cannot be paused (ErrCancelled).
func (m *Mailer) Pause(ctx context.Context, account, id, actor string) error {
	return refusal(m.setPaused(ctx, account, id, actor, true))
}

// Resume lets the recipients of a paused message be claimed again, each
// when it is due. Resuming a message that is not paused changes nothing.
func (m *Mailer) Resume(ctx context.Context, account, id, actor string) error {
	return refusal(m.setPaused(ctx, account, id, actor, false))
}

func (m *Mailer) setPaused(ctx context.Context, account, id, actor string, pause bool) error {
	if err := m.enter(); err != nil {
		return err
	}
	defer m.inflight.Done()
	info, err := m.Message(ctx, account, id)
	if err != nil {
		return err
	}
	if pause && !info.CancelledAt.IsZero() {
		return mailerr.New(ErrCancelled, "", "the message was cancelled")
	}
	if actor == "" {
		actor = "library"
	}
	return m.write(ctx, "pause", func(ctx context.Context, tx bun.Tx, _ *bun.Conn) error {
		now := m.now()
		q, action := "UPDATE mail_messages SET paused_at = ? WHERE id = ? AND paused_at IS NULL", "message.pause"
		args := []any{now, id}
		if !pause {
			q, action, args = "UPDATE mail_messages SET paused_at = NULL WHERE id = ? AND paused_at IS NOT NULL", "message.resume", []any{id}
		}
		r, err := tx.NewRaw(q, args...).Exec(ctx)
		if err != nil {
			return fmt.Errorf("mailing: %s: %w", action, err)
		}
		if n, _ := r.RowsAffected(); n == 0 {
			return nil // already so
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: action, Subject: info.Account, Detail: id})
	})
}
