package mailing

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/quota"
)

// MessageInfo is a stored message and where its recipients stand.
type MessageInfo struct {
	ID          string
	Account     string
	Origin      quota.Origin
	Kind        string // "single" or "batch"
	Priority    Priority
	Campaign    string
	Tags        []string
	From        string
	Subject     string // for a batch, the subject template
	AcceptedAt  time.Time
	SendAt      time.Time // zero: immediately
	CancelledAt time.Time // zero: not cancelled
	PausedAt    time.Time // zero: not paused (Mailer.Pause)
	Recipients  int
	Counts      map[Status]int // recipients per status
}

// RecipientInfo is one recipient's row: the log of what happened to it.
type RecipientInfo struct {
	ID            int64
	MessageID     string
	Seq           int
	Address       string
	Name          string
	Kind          string // to, cc, bcc
	Status        Status
	RFCMessageID  string
	AcceptedAt    time.Time
	DueAt         time.Time
	Attempts      int
	LastAttemptAt time.Time // zero: never tried
	FinalAt       time.Time // zero: not final
	RemoteHost    string
	Reply         string
}

type messageView struct {
	mailstore.MessageRow `bun:",extend"`
	Account              string `bun:",scanonly"`
}

func priorityName(rank int16) Priority {
	if rank == 0 {
		return Transactional
	}
	return Bulk
}

func (v messageView) info() MessageInfo {
	i := MessageInfo{ID: v.ID, Account: v.Account, Origin: v.Origin, Kind: v.Kind, Priority: priorityName(v.Priority),
		Campaign: v.Campaign, From: Address{Name: v.FromName, Addr: v.FromAddr}.String(), Subject: v.Subject,
		AcceptedAt: v.AcceptedAt.UTC(), Recipients: v.Recipients, Counts: map[Status]int{}}
	if v.SendAt != nil {
		i.SendAt = v.SendAt.UTC()
	}
	if v.CancelledAt != nil {
		i.CancelledAt = v.CancelledAt.UTC()
	}
	if v.PausedAt != nil {
		i.PausedAt = v.PausedAt.UTC()
	}
	return i
}

// Message returns message id with its recipients counted by status. A
// non-empty account restricts the lookup to that account's messages (a
// message of another account is ErrNotFound).
func (m *Mailer) Message(ctx context.Context, account, id string) (MessageInfo, error) {
	var rows []messageView
	q := m.db.NewSelect().Model(&rows).ColumnExpr("msg.*").ColumnExpr("a.name AS account").
		Join("JOIN quota_accounts AS a ON a.id = msg.account_id").Where("msg.id = ?", id)
	if account != "" {
		q = q.Where("a.name = ?", strings.ToLower(account))
	}
	if err := q.Scan(ctx); err != nil {
		return MessageInfo{}, fmt.Errorf("mailing: read message: %w", err)
	}
	if len(rows) == 0 {
		return MessageInfo{}, mailerr.New(ErrNotFound, "id", "no message %s", id)
	}
	info := rows[0].info()
	var counts []struct {
		Status Status
		N      int
	}
	if err := m.db.NewRaw("SELECT status, count(*) AS n FROM mail_recipients WHERE message_id = ? GROUP BY status", id).Scan(ctx, &counts); err != nil {
		return MessageInfo{}, fmt.Errorf("mailing: count recipients: %w", err)
	}
	for _, c := range counts {
		info.Counts[c.Status] = c.N
	}
	if err := m.db.NewRaw("SELECT tag FROM mail_tags WHERE message_id = ? ORDER BY tag", id).Scan(ctx, &info.Tags); err != nil {
		return MessageInfo{}, fmt.Errorf("mailing: read tags: %w", err)
	}
	return info, nil
}

// MessageFilter selects messages. Zero fields select everything.
type MessageFilter struct {
	Account  string
	Campaign string
	Tag      string
	Limit    int // default 100
}

// Messages lists messages, newest first, without recipient counts.
func (m *Mailer) Messages(ctx context.Context, f MessageFilter) ([]MessageInfo, error) {
	var rows []messageView
	q := m.db.NewSelect().Model(&rows).ColumnExpr("msg.*").ColumnExpr("a.name AS account").
		Join("JOIN quota_accounts AS a ON a.id = msg.account_id").Order("msg.accepted_at DESC", "msg.id DESC")
	if f.Account != "" {
		q = q.Where("a.name = ?", strings.ToLower(f.Account))
	}
	if f.Campaign != "" {
		q = q.Where("msg.campaign = ?", f.Campaign)
	}
	if f.Tag != "" {
		q = q.Where("EXISTS (SELECT 1 FROM mail_tags AS t WHERE t.message_id = msg.id AND t.tag = ?)", f.Tag)
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 100
	}
	if err := q.Limit(int64(limit)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("mailing: list messages: %w", err)
	}
	out := make([]MessageInfo, len(rows))
	for i, r := range rows {
		out[i] = r.info()
	}
	return out, nil
}

// Recipients returns the recipients of message id in order, those after
// seq afterSeq (-1: from the first), at most limit (default 1,000).
func (m *Mailer) Recipients(ctx context.Context, account, id string, afterSeq, limit int) ([]RecipientInfo, error) {
	if _, err := m.Message(ctx, account, id); err != nil {
		return nil, err
	}
	if limit <= 0 {
		limit = 1000
	}
	var rows []mailstore.RecipientRow
	err := m.db.NewSelect().Model(&rows).Where("message_id = ? AND seq > ?", id, afterSeq).
		Order("seq").Limit(int64(limit)).Scan(ctx)
	if err != nil {
		return nil, fmt.Errorf("mailing: list recipients: %w", err)
	}
	out := make([]RecipientInfo, len(rows))
	for i, r := range rows {
		out[i] = recipientInfo(r)
	}
	return out, nil
}

func recipientInfo(r mailstore.RecipientRow) RecipientInfo {
	i := RecipientInfo{ID: r.ID, MessageID: r.MessageID, Seq: r.Seq, Address: r.Address, Name: r.Name, Kind: r.Kind,
		Status: r.Status, RFCMessageID: r.RFCMessageID, AcceptedAt: r.AcceptedAt.UTC(), DueAt: r.DueAt.UTC(),
		Attempts: r.Attempts, RemoteHost: r.RemoteHost, Reply: r.Reply}
	if r.LastAttemptAt != nil {
		i.LastAttemptAt = r.LastAttemptAt.UTC()
	}
	if r.FinalAt != nil {
		i.FinalAt = r.FinalAt.UTC()
	}
	return i
}

// CancelResult says what Cancel changed.
type CancelResult struct {
	Cancelled int // recipients now cancelled
	Released  int // of those, the ones never attempted, whose charge went back to the account
}

// Cancel stops every recipient of message id that is not yet sent or being
// sent: queued, scheduled and deferred ones become cancelled, and the
// charge of those never attempted is released to the account, in one
// transaction. A batch still being enqueued stops taking recipients.
// Cancelling twice changes nothing the second time.
func (m *Mailer) Cancel(ctx context.Context, account, id, actor string) (CancelResult, error) {
	r, err := m.cancel(ctx, account, id, actor)
	return r, refusal(err)
}

func (m *Mailer) cancel(ctx context.Context, account, id, actor string) (CancelResult, error) {
	if err := m.enter(); err != nil {
		return CancelResult{}, err
	}
	defer m.inflight.Done()
	info, err := m.Message(ctx, account, id)
	if err != nil {
		return CancelResult{}, err
	}
	if actor == "" {
		actor = "library"
	}
	var res CancelResult
	err = m.write(ctx, "cancel", func(ctx context.Context, tx bun.Tx, _ *bun.Conn) error {
		now := m.now()
		if _, err := tx.NewRaw("UPDATE mail_messages SET cancelled_at = ? WHERE id = ? AND cancelled_at IS NULL", now, id).Exec(ctx); err != nil {
			return fmt.Errorf("mailing: cancel: %w", err)
		}
		stopped, err := mailstore.CancelRecipients(ctx, tx, id, now)
		if err != nil {
			return err
		}
		// Never attempted, whatever the status it waited in (queued,
		// scheduled, or deferred by a destination's limits): released.
		var never int64
		events := make([]mailstore.EventRow, 0, len(stopped))
		c := mailstore.Counts{}
		for _, x := range stopped {
			if x.Attempts == 0 {
				never++
			}
			events = append(events, mailstore.EventRow{RecipientID: x.ID, MessageID: id, AccountID: x.AccountID, Origin: x.Origin, At: now, Type: StatusCancelled})
			c.Add(x.AccountID, x.Origin, now, string(StatusCancelled), 1)
		}
		res = CancelResult{Cancelled: len(stopped), Released: int(never)}
		if err := mailstore.InsertEvents(ctx, tx, events); err != nil {
			return err
		}
		if err := c.Write(ctx, tx); err != nil {
			return err
		}
		if never == 0 {
			return nil
		}
		_, err = m.ledger.Release(ctx, tx, quota.Release{Account: info.Account, Amount: never, Origin: info.Origin,
			Reference: id, Actor: actor, Reason: "cancelled"})
		return err
	})
	return res, err
}

// PromoteDue marks scheduled recipients whose time has come as queued and
// returns how many changed. The delivery engine calls it as it runs; the
// state it reads is only the database, so a restart loses nothing.
func (m *Mailer) PromoteDue(ctx context.Context) (int, error) { return m.st.PromoteDue(ctx) }

// Render builds the exact RFC 5322 message for recipient id, as the
// delivery engine will send it (before DKIM signing): a batch recipient's
// templates are rendered with its data; every recipient of a message sent
// with Send gets the same bytes. Building it twice gives the same bytes.
func (m *Mailer) Render(ctx context.Context, recipientID int64) ([]byte, error) {
	return m.st.Render(ctx, recipientID)
}

// Attempt is one delivery attempt of a recipient.
type Attempt struct {
	At         time.Time
	RemoteHost string
	Reply      string // the full reply, or what went wrong
	Status     Status // what the attempt made of the recipient: sent, deferred, bounced or failed
}

// Attempts returns every delivery attempt of recipient id, oldest first.
// A non-empty account restricts it to that account's recipients, and a
// non-empty messageID to that message's (anything else is ErrNotFound).
func (m *Mailer) Attempts(ctx context.Context, account, messageID string, recipientID int64) ([]Attempt, error) {
	q := m.db.NewSelect().TableExpr("mail_recipients AS r").ColumnExpr("r.id").Where("r.id = ?", recipientID)
	if messageID != "" {
		q = q.Where("r.message_id = ?", messageID)
	}
	if account != "" {
		q = q.Join("JOIN quota_accounts AS a ON a.id = r.account_id").Where("a.name = ?", account)
	}
	if n, err := q.Count(ctx); err != nil {
		return nil, fmt.Errorf("mailing: read recipient: %w", err)
	} else if n == 0 {
		return nil, mailerr.New(ErrNotFound, "recipient", "no recipient %d", recipientID)
	}
	var rows []mailstore.EventRow
	if err := m.db.NewSelect().Model(&rows).Where("recipient_id = ? AND attempt", recipientID).Order("id").Scan(ctx); err != nil {
		return nil, fmt.Errorf("mailing: read attempts: %w", err)
	}
	out := make([]Attempt, len(rows))
	for i, r := range rows {
		out[i] = Attempt{At: r.At.UTC(), RemoteHost: r.RemoteHost, Reply: r.Reply, Status: r.Type}
	}
	return out, nil
}
