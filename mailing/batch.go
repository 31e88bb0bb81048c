package mailing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/quota"
)

// Batch is one personalised message for many recipients: Subject and Text
// are text/template templates, HTML an html/template template, executed
// with each recipient's Data. Every recipient becomes a message of its own,
// with its own Message-ID.
type Batch struct {
	Account        string
	From           string
	ReplyTo        []string
	Subject        string // template
	Text, HTML     string // templates; at least one
	Headers        []Header
	Attachments    []Attachment
	Tags           []string
	Campaign       string
	Priority       Priority  // default Bulk
	SendAt         time.Time // zero or past: now
	IdempotencyKey string    // optional; the same key resumes the batch where it stopped
	Origin         quota.Origin
	Actor          string

	// Recipients streams the recipients; it is read once, in order, and
	// only a chunk is held in memory at a time. An error it yields stops
	// the batch (what was committed stays).
	Recipients iter.Seq2[Recipient, error]

	// Expected, when known (> 0), is how many recipients Recipients yields.
	// A batch whose Expected exceeds what the account has left is refused
	// whole before anything is stored or charged.
	Expected int
}

// Recipient is one batch recipient and the data its templates see: a map
// with string keys or a struct (field names, or their json tags). The data
// is stored as JSON and rendered from that JSON at delivery, so templates
// see exactly what was checked at acceptance. Data is never itself
// executed as a template.
type Recipient struct {
	Address string
	Data    any
}

// List makes a Recipients sequence from a slice.
func List(rs ...Recipient) iter.Seq2[Recipient, error] {
	return func(yield func(Recipient, error) bool) {
		for _, r := range rs {
			if !yield(r, nil) {
				return
			}
		}
	}
}

// Rejection is a recipient a batch skipped, and why.
type Rejection struct {
	Index   int // position in the Recipients sequence, from 0
	Address string
	Err     error
}

// BatchReceipt says what SendBatch stored.
type BatchReceipt struct {
	MessageID string
	Accepted  int         // recipients stored and charged by this call
	Resumed   int         // recipients skipped because an earlier call with the same key stored them
	Rejected  []Rejection // the first 1,000 recipients refused for their address or data
	NRejected int         // all of them
}

// ErrCancelled: the batch was cancelled while it was being enqueued.
var ErrCancelled = errors.New("mailing: batch cancelled")

// SendBatch validates the batch and parses its templates once, then reads
// Recipients and stores them in chunks of Config.ChunkSize, each chunk
// committed in one transaction with its charge (one message per
// recipient). A recipient whose address is invalid, or whose data does not
// fill the templates (a missing field, a subject that would contain a line
// break), is rejected and reported, and costs nothing; the others go on.
//
// If a chunk cannot be charged (quota.ErrInsufficient and the like), the
// batch stops there: the chunks already committed stay queued, the receipt
// says how many, and the error is returned. Calling again with the same
// IdempotencyKey and the same recipients resumes after the last committed
// chunk, so a retry never stores or charges a recipient twice.
func (m *Mailer) SendBatch(ctx context.Context, b Batch) (BatchReceipt, error) {
	if err := m.enter(); err != nil {
		return BatchReceipt{}, err
	}
	defer m.inflight.Done()
	if b.Priority == "" {
		b.Priority = Bulk
	}
	c, err := m.validateCommon(b.Account, b.From, b.ReplyTo, b.Subject, b.Text, b.HTML,
		b.Headers, b.Attachments, b.Tags, b.Campaign, b.Priority, b.SendAt, b.IdempotencyKey, b.Origin, b.Actor)
	if err != nil {
		return BatchReceipt{}, err
	}
	if b.Recipients == nil {
		return BatchReceipt{}, ErrNoRecipients
	}
	tpl, err := parseTemplates(c.subject, c.text, c.html, m.cfg.MaxMessageSize)
	if err != nil {
		return BatchReceipt{}, err
	}
	acct, err := m.checkAccount(ctx, m.db, c)
	if err != nil {
		return BatchReceipt{}, err
	}

	rec := BatchReceipt{MessageID: m.cfg.NewID()}
	stored := 0 // recipients of this message already in the database
	if c.key != "" {
		var rows []messageRow
		if err := m.db.NewSelect().Model(&rows).Where("account_id = ? AND idempotency_key = ?", acct.ID, c.key).Scan(ctx); err != nil {
			return rec, fmt.Errorf("mailing: read batch by idempotency key: %w", err)
		}
		if len(rows) == 1 {
			rec.MessageID, stored = rows[0].ID, rows[0].Recipients
		}
	}
	if b.Expected > 0 {
		a, err := m.ledger.Account(ctx, c.account)
		if err != nil {
			return rec, err
		}
		if need := int64(b.Expected - stored); need > a.Remaining() {
			return rec, &quota.InsufficientError{Account: a.Name, Requested: need, Remaining: max(0, a.Remaining())}
		}
	}

	s := &batchState{m: m, c: c, acct: acct, rec: &rec, created: stored > 0, now: m.now()}
	// Recipients due at a fixed send-at time are scheduled; the others are
	// due when their chunk commits (the scheduler treats a past due_at as now).
	s.status, s.due = StatusQueued, s.now
	if c.sendAt.After(s.now) {
		s.status, s.due = StatusScheduled, c.sendAt
	}
	chunk := make([]recipientRow, 0, m.cfg.ChunkSize)
	i := -1
	for r, err := range b.Recipients {
		i++
		if err != nil {
			return rec, fmt.Errorf("mailing: batch recipient %d: %w", i, err)
		}
		if err := ctx.Err(); err != nil {
			return rec, err
		}
		if i < stored {
			rec.Resumed++
			continue
		}
		row, err := m.batchRecipient(tpl, r)
		if err != nil {
			rec.NRejected++
			if len(rec.Rejected) < 1000 {
				rec.Rejected = append(rec.Rejected, Rejection{Index: i, Address: r.Address, Err: err})
			}
			continue
		}
		row.Seq = i
		chunk = append(chunk, row)
		if len(chunk) == cap(chunk) {
			if err := s.commit(ctx, chunk); err != nil {
				return rec, err
			}
			chunk = chunk[:0]
		}
	}
	if len(chunk) > 0 {
		if err := s.commit(ctx, chunk); err != nil {
			return rec, err
		}
	}
	if !s.created {
		if rec.NRejected > 0 {
			return rec, fmt.Errorf("%w: all %d recipients were rejected (first: %v)", ErrNoRecipients, rec.NRejected, rec.Rejected[0].Err)
		}
		return rec, ErrNoRecipients
	}
	return rec, nil
}

// batchRecipient validates one recipient and renders its templates with
// the JSON form of its data, exactly as delivery will.
func (m *Mailer) batchRecipient(tpl *templates, r Recipient) (recipientRow, error) {
	a, err := ParseAddress(r.Address)
	if err != nil {
		return recipientRow{}, err
	}
	raw, err := json.Marshal(r.Data)
	if err != nil {
		return recipientRow{}, contentErr("data: %v", err)
	}
	var data map[string]any
	if string(raw) != "null" {
		if err := json.Unmarshal(raw, &data); err != nil {
			return recipientRow{}, contentErr("data must be a map or a struct, not %s", raw)
		}
	}
	if _, err := tpl.render(data); err != nil {
		return recipientRow{}, err
	}
	s := string(raw)
	return recipientRow{Address: a.Addr, Name: a.Name, Kind: "to", Data: &s}, nil
}

type batchState struct {
	m       *Mailer
	c       common
	acct    accountRef
	rec     *BatchReceipt
	created bool
	now     time.Time
	status  Status
	due     time.Time
}

// commit stores one chunk and charges it, in one transaction.
func (s *batchState) commit(ctx context.Context, chunk []recipientRow) error {
	m, c := s.m, s.c
	id := s.rec.MessageID
	now := m.now() // each chunk is accepted when it commits
	var stored int64
	err := m.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if !s.created {
			ok, err := m.insertMessage(ctx, tx, s.acct.ID, id, "batch", c, s.now, 0)
			if err != nil {
				return err
			}
			if !ok { // a concurrent call with the same key created it: join it
				id, err = existingMessage(ctx, tx, s.acct.ID, c.key)
				if err != nil {
					return err
				}
			} else if err := m.insertExtras(ctx, tx, id, c); err != nil {
				return err
			}
		}
		var cancelled bool
		if err := tx.NewRaw("SELECT cancelled_at IS NOT NULL FROM mail_messages WHERE id = ?", id).Scan(ctx, &cancelled); err != nil {
			return fmt.Errorf("mailing: read batch: %w", err)
		}
		if cancelled {
			return ErrCancelled
		}
		for i := range chunk {
			r := &chunk[i]
			r.MessageID = id
			r.AccountID = s.acct.ID
			r.Origin = c.origin
			r.RFCMessageID = fmt.Sprintf("%s.%d@%s", id, r.Seq, m.cfg.MessageIDDomain)
			r.Status, r.Priority, r.DueAt, r.AcceptedAt = s.status, c.priority, s.due, now
		}
		// ON CONFLICT DO NOTHING: a concurrent retry with the same key may
		// have stored some of these; only what this call stores is charged.
		res, err := tx.NewInsert().Model(&chunk).ExcludeColumn("id").On("CONFLICT (message_id, seq) DO NOTHING").
			Returning("NULL").Exec(ctx)
		if err != nil {
			return fmt.Errorf("mailing: store recipients: %w", err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return fmt.Errorf("mailing: store recipients: %w", err)
		}
		if n == 0 {
			return nil
		}
		if _, err := tx.NewRaw("UPDATE mail_messages SET recipients = recipients + ? WHERE id = ?", n, id).Exec(ctx); err != nil {
			return fmt.Errorf("mailing: count recipients: %w", err)
		}
		if _, err := m.ledger.Charge(ctx, tx, quota.Charge{Account: c.account, Amount: n, Origin: c.origin,
			Reference: id, Actor: c.actor}); err != nil {
			return err
		}
		stored = n
		return nil
	})
	if err != nil {
		return err
	}
	s.created, s.rec.MessageID = true, id
	s.rec.Accepted += int(stored)
	return nil
}
