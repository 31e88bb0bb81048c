package campaign

import (
	"context"
	"fmt"
	"strings"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/compose"
	"github.com/servir-pe/envios/mailing"
)

// Pause holds a scheduled or running campaign: the delivery engines claim
// none of its recipients, and materialising stops, until Resume.
func (s *Store) Pause(ctx context.Context, account string, id int64, actor string) (Campaign, error) {
	return s.transition(ctx, account, id, actor, "campaign.pause", func(r *row) (Status, error) {
		switch r.Status {
		case Scheduled, Running:
			return Paused, nil
		case Paused:
			return Paused, nil
		}
		return "", errorf(ErrState, "campaign %d is %s: only a scheduled or running campaign pauses", id, r.Status)
	})
}

// Resume continues a paused campaign: scheduled again if its send-at time
// is still to come, else running; materialising resumes where it stopped.
// The error a pool that ran out left is cleared (allocate first).
func (s *Store) Resume(ctx context.Context, account string, id int64, actor string) (Campaign, error) {
	c, err := s.transition(ctx, account, id, actor, "campaign.resume", func(r *row) (Status, error) {
		if r.Status != Paused {
			return "", errorf(ErrState, "campaign %d is %s: only a paused campaign resumes", id, r.Status)
		}
		if r.SendAt != nil && r.SendAt.After(s.now()) {
			return Scheduled, nil
		}
		return Running, nil
	})
	if err == nil {
		s.wake()
	}
	return c, err
}

// Cancel ends a campaign that has not finished: a draft is just marked
// cancelled; a started one has every recipient not yet sent cancelled and
// the charge of those never attempted released (mailing's Cancel), and
// its materialisation stops.
func (s *Store) Cancel(ctx context.Context, account string, id int64, actor string) (Campaign, error) {
	return s.transition(ctx, account, id, actor, "campaign.cancel", func(r *row) (Status, error) {
		switch r.Status {
		case Finished, Cancelled:
			return "", errorf(ErrState, "campaign %d is %s already", id, r.Status)
		}
		now := s.now()
		r.CancelledAt = &now
		return Cancelled, nil
	})
}

// transition moves a campaign to the status next decides, in one
// transaction with its audit entry, then makes its message follow.
func (s *Store) transition(ctx context.Context, account string, id int64, actor, action string, next func(*row) (Status, error)) (Campaign, error) {
	var r *row
	err := s.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if r, err = s.get(ctx, tx, account, id, true); err != nil {
			return err
		}
		to, err := next(r)
		if err != nil {
			return err
		}
		if to == r.Status {
			return nil
		}
		from, now := r.Status, s.now()
		r.Status, r.UpdatedAt, r.UpdatedBy = to, now, actor
		if to == Running || to == Scheduled {
			r.Error = ""
		}
		if _, err := tx.NewUpdate().Model(r).Column("status", "error", "updated_at", "updated_by", "cancelled_at").WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("campaign: %s: %w", action, err)
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: action, Subject: r.Account, Detail: fmt.Sprintf("campaign=%d %s->%s", id, from, to)})
	})
	if err != nil {
		return Campaign{}, err
	}
	if r.StartedAt != nil {
		if err := s.sync(ctx, r); err != nil {
			return r.campaign(), err
		}
	}
	return r.campaign(), nil
}

// Progress is where a campaign's recipients stand.
type Progress struct {
	Campaign Campaign               `json:"campaign"`
	Targets  int64                  `json:"targets"` // contacts snapshotted at the start
	Stored   int64                  `json:"stored"`  // recipients materialised so far
	Skipped  int64                  `json:"skipped"` // targets deleted or no longer active when materialised (once materialised)
	Counts   map[mailing.Status]int `json:"counts"`  // stored recipients per status (queued, sent, deferred, bounced, failed, suppressed…)
}

// Progress returns a campaign and its recipients counted by status.
func (s *Store) Progress(ctx context.Context, account string, id int64) (Progress, error) {
	r, err := s.get(ctx, s.cfg.DB, account, id, false)
	if err != nil {
		return Progress{}, err
	}
	p := Progress{Targets: r.Targets, Counts: map[mailing.Status]int{}}
	if r.StartedAt != nil {
		mid, err := s.messageID(ctx, s.cfg.DB, r)
		if err != nil {
			return p, err
		}
		if mid != "" {
			info, err := s.cfg.Mailer.Message(ctx, r.Account, mid)
			if err != nil {
				return p, err
			}
			p.Stored, p.Counts = int64(info.Recipients), info.Counts
		}
	}
	if r.MaterialisedAt != nil {
		p.Skipped = p.Targets - p.Stored
	}
	p.Campaign = r.campaign()
	return p, nil
}

// Recipients returns a started campaign's recipients after seq afterSeq
// (-1: from the first), limit at a time: each with its status, attempts,
// remote server and reply.
func (s *Store) Recipients(ctx context.Context, account string, id int64, afterSeq, limit int) ([]mailing.RecipientInfo, error) {
	r, err := s.get(ctx, s.cfg.DB, account, id, false)
	if err != nil {
		return nil, err
	}
	mid, err := s.messageID(ctx, s.cfg.DB, r)
	if err != nil || mid == "" {
		return nil, err
	}
	return s.cfg.Mailer.Recipients(ctx, r.Account, mid, afterSeq, limit)
}

// Rendered is a campaign's content as one contact gets it.
type Rendered struct {
	To      string `json:"to"`
	Subject string `json:"subject"`
	Text    string `json:"text,omitempty"`
	HTML    string `json:"html,omitempty"`
}

// contactData is the template data of an account's contact: its
// attributes with .email and .name. Address "" takes the target's first
// contact.
func (s *Store) contactData(ctx context.Context, r *row, address string) (map[string]string, error) {
	var rows []struct {
		Address, Name, Attrs string
	}
	q := "SELECT c.address, c.name, c.attrs FROM contacts c WHERE c.account_id = ? AND c.address = ?"
	args := []any{r.AccountID, strings.ToLower(strings.TrimSpace(address))}
	if address == "" {
		where, wargs, err := s.targetSQL(ctx, s.cfg.DB, r)
		if err != nil {
			return nil, err
		}
		q, args = "SELECT c.address, c.name, c.attrs FROM contacts c WHERE "+where+" ORDER BY c.id LIMIT 1", wargs
	}
	if err := s.cfg.DB.NewRaw(q, args...).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("campaign: read contact: %w", err)
	}
	if len(rows) == 0 {
		if address == "" {
			return nil, errorf(ErrInvalid, "the campaign's target has no contact to preview with")
		}
		return nil, errorf(ErrNotFound, "%s has no contact %s", r.Account, address)
	}
	return decodeAttrs(rows[0].Attrs, rows[0].Address, rows[0].Name)
}

// Preview renders a campaign's subject, text and HTML with the data of
// the account's contact at address ("" for the target's first contact),
// exactly as its recipients' messages will be rendered.
func (s *Store) Preview(ctx context.Context, account string, id int64, address string) (Rendered, error) {
	r, err := s.get(ctx, s.cfg.DB, account, id, false)
	if err != nil {
		return Rendered{}, err
	}
	data, err := s.contactData(ctx, r, address)
	if err != nil {
		return Rendered{}, err
	}
	tpl, err := compose.ParseTemplates(r.Subject, r.TextBody, r.HTMLBody, maxPreview)
	if err != nil {
		return Rendered{}, errorf(ErrInvalid, "%v", err)
	}
	m := make(map[string]any, len(data))
	for k, v := range data {
		m[k] = v
	}
	out, err := tpl.Render(m)
	if err != nil {
		return Rendered{}, errorf(ErrInvalid, "contact %s: %v", data["email"], err)
	}
	p := Rendered{To: data["email"], Subject: out.Subject}
	if out.Text != nil {
		p.Text = *out.Text
	}
	if out.HTML != nil {
		p.HTML = *out.HTML
	}
	return p, nil
}

// Test sends the campaign's content to one address, rendered with the data
// of the account's contact at as ("" for the target's first contact): a
// transactional message of its own, charged like any other, tagged
// "test". It works in every status, so a draft can be checked before it
// starts.
func (s *Store) Test(ctx context.Context, account string, id int64, to, as, actor string) (mailing.BatchReceipt, error) {
	r, err := s.get(ctx, s.cfg.DB, account, id, false)
	if err != nil {
		return mailing.BatchReceipt{}, err
	}
	data, err := s.contactData(ctx, r, as)
	if err != nil {
		return mailing.BatchReceipt{}, err
	}
	b := mailing.Batch{Account: r.Account, From: r.FromAddr, ReplyTo: strs(r.ReplyTo), Subject: r.Subject, Text: deref(r.TextBody), HTML: deref(r.HTMLBody),
		Tags: append(strs(r.Tags), "test"), Campaign: r.Topic, Priority: mailing.Transactional, Origin: origin, Actor: actor,
		Recipients: mailing.List(mailing.Recipient{Address: to, Data: data})}
	rec, err := s.cfg.Mailer.SendBatch(ctx, b)
	if err == nil && rec.NRejected > 0 {
		err = errorf(ErrInvalid, "test to %s: %v", to, rec.Rejected[0].Err)
	}
	return rec, err
}

// maxPreview bounds a preview's rendered output, as the message size
// limit bounds delivery's.
const maxPreview = 25 << 20
