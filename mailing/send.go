package mailing

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/compose"
	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/quota"
)

// Priority orders delivery: transactional mail always goes before bulk.
type Priority string

// The priorities.
const (
	Transactional Priority = "transactional" // default for Send
	Bulk          Priority = "bulk"          // default for SendBatch
)

func (p Priority) rank() (int16, error) {
	switch p {
	case Transactional:
		return 0, nil
	case Bulk:
		return 1, nil
	}
	return 0, contentErr("priority", "priority %q must be transactional or bulk", p)
}

// Status is where a recipient stands.
type Status = mailstore.Status

// The recipient statuses (DESIGN.md §3).
const (
	StatusQueued     = mailstore.StatusQueued
	StatusScheduled  = mailstore.StatusScheduled
	StatusSending    = mailstore.StatusSending
	StatusDeferred   = mailstore.StatusDeferred
	StatusSent       = mailstore.StatusSent
	StatusBounced    = mailstore.StatusBounced
	StatusFailed     = mailstore.StatusFailed
	StatusSuppressed = mailstore.StatusSuppressed
	StatusCancelled  = mailstore.StatusCancelled
)

// Message is one message to one or more recipients, sent as written (no
// templates: see Batch for personalised mail).
type Message struct {
	Account        string // "area/name"; required
	From           string // "Name <addr>" or "addr"; must be one of the account's sender identities
	ReplyTo        []string
	To, Cc, Bcc    []string // at least one recipient in all; Bcc never appear in the headers
	Subject        string
	Text, HTML     string // at least one
	Headers        []Header
	Attachments    []Attachment
	Tags           []string // up to 20 of [a-z0-9._-], 1–64 characters
	Campaign       string
	Priority       Priority     // default Transactional
	SendAt         time.Time    // zero or past: now; future: recipients stay scheduled until then
	IdempotencyKey string       // optional; the same key for the account returns the first message
	Origin         quota.Origin // default quota.OriginLibrary
	Actor          string       // who asks, for the ledger; default "library"
}

// Receipt says what an accepted Send stored.
type Receipt struct {
	MessageID  string
	Recipients int
	Status     Status // queued or scheduled; suppressed when every recipient is
	Duplicate  bool   // the idempotency key matched an earlier message; nothing new was stored or charged

	// Suppressed are the recipients stored as suppressed (on the
	// suppression list for this mail) and not charged, with why.
	Suppressed []Suppressed

	// RecipientIDs are the new recipient rows' ids, in the order of To,
	// Cc, Bcc (duplicates folded); nil for a Duplicate receipt.
	RecipientIDs []int64
}

var tagPattern = regexp.MustCompile(`^[a-z0-9._-]{1,64}$`)

// common are the fields Message and Batch share, validated.
type common struct {
	account  string
	from     Address
	replyTo  []Address
	subject  string
	text     *string
	html     *string
	headers  []Header
	attach   []Attachment
	tags     []string
	campaign string
	priority int16
	sendAt   time.Time
	key      string
	origin   quota.Origin
	actor    string
	size     int
}

func (m *Mailer) validateCommon(account, from string, replyTo []string, subject, text, html string,
	headers []Header, attach []Attachment, tags []string, campaign string, prio Priority,
	sendAt time.Time, key string, origin quota.Origin, actor string) (common, error) {
	var c common
	var err error
	if c.account, _, err = quota.ParseAccountName(account); err != nil {
		return c, err
	}
	if c.from, err = ParseAddress(from); err != nil {
		return c, mailerr.In("from", err)
	}
	for _, r := range replyTo {
		a, err := ParseAddress(r)
		if err != nil {
			return c, mailerr.In("reply_to", err)
		}
		c.replyTo = append(c.replyTo, a)
	}
	if err := compose.CheckHeaderValue("subject", "subject", subject); err != nil {
		return c, err
	}
	c.subject = subject
	if text == "" && html == "" {
		return c, contentErr("text", "a message needs a text or an HTML body")
	}
	for _, b := range []struct{ field, what, v string }{{"text", "the text body", text}, {"html", "the HTML body", html}} {
		// Stored as text (PostgreSQL refuses invalid UTF-8 and NUL there)
		// and sent as charset=utf-8.
		if !utf8.ValidString(b.v) || strings.IndexByte(b.v, 0) >= 0 {
			return c, contentErr(b.field, "%s is not valid UTF-8 text (or holds a NUL)", b.what)
		}
	}
	if text != "" {
		c.text = &text
	}
	if html != "" {
		c.html = &html
	}
	if err := validateHeaders(headers); err != nil {
		return c, err
	}
	c.headers = headers
	c.attach = append([]Attachment(nil), attach...)
	if err := validateAttachments(c.attach); err != nil {
		return c, err
	}
	if err := c.setOptions(tags, campaign, prio, sendAt, key, origin, actor); err != nil {
		return c, err
	}
	c.size = len(text) + len(html)
	for _, a := range attach {
		c.size += len(a.Data)
	}
	if c.size > m.cfg.MaxMessageSize {
		return c, mailerr.New(ErrTooBig, "", "%d bytes, the limit is %d", c.size, m.cfg.MaxMessageSize)
	}
	return c, nil
}

// setOptions validates and sets what Message, Batch and Submission share
// besides content: tags, campaign, priority, schedule, idempotency key,
// origin and actor.
func (c *common) setOptions(tags []string, campaign string, prio Priority, sendAt time.Time, key string, origin quota.Origin, actor string) error {
	var err error
	if len(tags) > 20 {
		return contentErr("tags", "more than 20 tags")
	}
	seen := map[string]bool{}
	for _, t := range tags {
		if !tagPattern.MatchString(t) {
			return contentErr("tags", "tag %q must be 1–64 of a-z 0-9 . _ -", t)
		}
		if !seen[t] {
			seen[t] = true
			c.tags = append(c.tags, t)
		}
	}
	if err := compose.CheckHeaderValue("campaign", "campaign", campaign); err != nil || len(campaign) > 200 {
		return contentErr("campaign", "campaign must be at most 200 bytes on one line")
	}
	c.campaign = campaign
	if c.priority, err = prio.rank(); err != nil {
		return err
	}
	c.sendAt = sendAt.UTC()
	if key != "" {
		if len(key) > 200 || strings.ContainsFunc(key, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
			return contentErr("idempotency_key", "idempotency key must be 1–200 printable ASCII characters without spaces")
		}
	}
	c.key = key
	if origin == "" {
		origin = quota.OriginLibrary
	}
	if !origin.Valid() {
		return contentErr("campaign", "origin %q is not one of library, smtp, http, campaign, cli", origin)
	}
	c.origin = origin
	if actor == "" {
		actor = "library"
	}
	c.actor = actor
	return nil
}

// Send validates msg, then in one transaction charges its account one
// message per recipient and stores the message and a row per recipient.
// On any error nothing is stored or charged: quota errors (errors.Is
// quota.ErrInsufficient, quota.ErrDisabled, quota.ErrNotFound,
// quota.ErrOutsidePeriod) come back unchanged; ErrSenderNotAllowed,
// ErrAddress, ErrContent, ErrTooBig, ErrTooManyRecipients and
// ErrNoRecipients say what was wrong with the message.
func (m *Mailer) Send(ctx context.Context, msg Message) (Receipt, error) {
	r, err := m.send(ctx, msg)
	return r, refusal(err)
}

func (m *Mailer) send(ctx context.Context, msg Message) (Receipt, error) {
	if err := m.enter(); err != nil {
		return Receipt{}, err
	}
	defer m.inflight.Done()
	if msg.Priority == "" {
		msg.Priority = Transactional
	}
	c, err := m.validateCommon(msg.Account, msg.From, msg.ReplyTo, msg.Subject, msg.Text, msg.HTML,
		msg.Headers, msg.Attachments, msg.Tags, msg.Campaign, msg.Priority, msg.SendAt, msg.IdempotencyKey, msg.Origin, msg.Actor)
	if err != nil {
		return Receipt{}, err
	}
	var rcpts recipients
	for _, list := range []struct {
		kind  string
		addrs []string
	}{{"to", msg.To}, {"cc", msg.Cc}, {"bcc", msg.Bcc}} {
		for _, s := range list.addrs {
			a, err := ParseAddress(s)
			if err != nil {
				return Receipt{}, mailerr.In(list.kind, err)
			}
			rcpts.add(a, list.kind)
		}
	}
	if err := rcpts.check("to", m.cfg.MaxRecipients); err != nil {
		return Receipt{}, err
	}

	id := m.cfg.NewID()
	return m.commit(ctx, &pending{c: c, id: id, rfcID: id + "@" + m.cfg.MessageIDDomain, rcpts: rcpts.list, now: m.now()})
}

// checkAccount reads the account inside tx and checks that it is enabled
// and may send as c.from.
func (m *Mailer) checkAccount(ctx context.Context, tx bun.IDB, c common) (accountRef, error) {
	return newChecker(m, tx).check(ctx, c, nil)
}

// insertMessage stores the message row; false means the account already
// has a message with this idempotency key.
func (m *Mailer) insertMessage(ctx context.Context, tx bun.IDB, accountID int64, id, kind string, c common, now time.Time, n int) (bool, error) {
	row, err := newMessageRow(accountID, id, kind, c, now, n)
	if err != nil {
		return false, err
	}
	res, err := tx.NewInsert().Model(&row).On("CONFLICT DO NOTHING").Returning("NULL").Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("mailing: store message: %w", err)
	}
	affected, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("mailing: store message: %w", err)
	}
	return affected == 1, nil
}

func newMessageRow(accountID int64, id, kind string, c common, now time.Time, n int) (mailstore.MessageRow, error) {
	headers, err := json.Marshal(c.headers)
	if err != nil {
		return mailstore.MessageRow{}, fmt.Errorf("mailing: encode headers: %w", err)
	}
	var replyTo []string
	for _, a := range c.replyTo {
		replyTo = append(replyTo, a.String())
	}
	row := mailstore.MessageRow{ID: id, AccountID: accountID, Origin: c.origin, Actor: c.actor, Kind: kind, Priority: c.priority,
		Campaign: c.campaign, FromAddr: c.from.Addr, FromName: c.from.Name, ReplyTo: strings.Join(replyTo, ", "),
		Subject: c.subject, TextBody: c.text, HTMLBody: c.html, Headers: string(headers), AcceptedAt: now, Recipients: n}
	if c.key != "" {
		row.IdempotencyKey = &c.key
	}
	if !c.sendAt.IsZero() {
		row.SendAt = &c.sendAt
	}
	return row, nil
}

func (m *Mailer) duplicateReceipt(ctx context.Context, id string) (Receipt, error) {
	info, err := m.Message(ctx, "", id)
	if err != nil {
		return Receipt{}, err
	}
	st := StatusQueued
	if info.Counts[StatusScheduled] > 0 {
		st = StatusScheduled
	}
	return Receipt{MessageID: id, Recipients: info.Recipients, Status: st, Duplicate: true}, nil
}
