package report

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/quota"
)

// Counts are recipients by status. Accepted is all of them.
type Counts struct {
	Accepted   int64 `json:"accepted"`
	Queued     int64 `json:"queued"`
	Scheduled  int64 `json:"scheduled"`
	Sending    int64 `json:"sending"`
	Deferred   int64 `json:"deferred"`
	Sent       int64 `json:"sent"`
	Bounced    int64 `json:"bounced"`
	Failed     int64 `json:"failed"`
	Suppressed int64 `json:"suppressed"`
	Cancelled  int64 `json:"cancelled"`
}

// Add counts n recipients with status s.
func (c *Counts) Add(s mailstore.Status, n int64) {
	c.Accepted += n
	switch s {
	case mailstore.StatusQueued:
		c.Queued += n
	case mailstore.StatusScheduled:
		c.Scheduled += n
	case mailstore.StatusSending:
		c.Sending += n
	case mailstore.StatusDeferred:
		c.Deferred += n
	case mailstore.StatusSent:
		c.Sent += n
	case mailstore.StatusBounced:
		c.Bounced += n
	case mailstore.StatusFailed:
		c.Failed += n
	case mailstore.StatusSuppressed:
		c.Suppressed += n
	case mailstore.StatusCancelled:
		c.Cancelled += n
	}
}

// Plus returns the sum of c and d.
func (c Counts) Plus(d Counts) Counts {
	return Counts{c.Accepted + d.Accepted, c.Queued + d.Queued, c.Scheduled + d.Scheduled, c.Sending + d.Sending,
		c.Deferred + d.Deferred, c.Sent + d.Sent, c.Bounced + d.Bounced, c.Failed + d.Failed,
		c.Suppressed + d.Suppressed, c.Cancelled + d.Cancelled}
}

// Message is one stored message and its recipients counted by status.
type Message struct {
	ID          string       `json:"id"`
	Account     string       `json:"account"`
	Origin      quota.Origin `json:"origin"`
	Kind        string       `json:"kind"` // single or batch
	Campaign    string       `json:"campaign"`
	Tags        []string     `json:"tags"`
	From        string       `json:"from"`
	Subject     string       `json:"subject"` // for a batch, the subject template
	AcceptedAt  time.Time    `json:"accepted_at"`
	SendAt      time.Time    `json:"send_at,omitzero"`
	CancelledAt time.Time    `json:"cancelled_at,omitzero"`
	Counts      Counts       `json:"counts"`
}

type messageScan struct {
	ID          string
	Account     string
	Origin      quota.Origin
	Kind        string
	Campaign    string
	FromAddr    string
	FromName    string
	Subject     string
	AcceptedAt  time.Time
	SendAt      *time.Time
	CancelledAt *time.Time
}

func (r *Reporter) message(s messageScan) Message {
	m := Message{ID: s.ID, Account: s.Account, Origin: s.Origin, Kind: s.Kind, Campaign: s.Campaign, Tags: []string{},
		From: address.Address{Name: s.FromName, Addr: s.FromAddr}.String(), Subject: s.Subject, AcceptedAt: r.in(s.AcceptedAt)}
	if s.SendAt != nil {
		m.SendAt = r.in(*s.SendAt)
	}
	if s.CancelledAt != nil {
		m.CancelledAt = r.in(*s.CancelledAt)
	}
	return m
}

func (r *Reporter) messageQuery(ctx context.Context, f Filter) (*bun.SelectQuery, error) {
	q := r.db.NewSelect().TableExpr("mail_messages AS m").
		ColumnExpr("m.id, a.name AS account, m.origin, m.kind, m.campaign, m.from_addr, m.from_name, m.subject, m.accepted_at, m.send_at, m.cancelled_at").
		Join("JOIN quota_accounts AS a ON a.id = m.account_id")
	return r.where(ctx, q, f, onMessages)
}

// table names the columns a Filter constrains in one table of a query:
// messages (alias m) or recipient rows (alias r, joined to their message
// as m).
type table struct {
	alias     string // the table's alias: its account_id, origin and accepted_at
	messageID string // the message id column
}

var (
	onMessages = table{alias: "m", messageID: "m.id"}
	onRows     = table{alias: "r", messageID: "r.message_id"}
)

// where adds to q the conditions of f that messages and rows share:
// account, message, campaign, tag, origin and period.
func (r *Reporter) where(ctx context.Context, q *bun.SelectQuery, f Filter, t table) (*bun.SelectQuery, error) {
	if f.Account != "" {
		id, err := r.accountID(ctx, f.Account)
		if err != nil {
			return nil, err
		}
		q = q.Where(t.alias+".account_id = ?", id)
	}
	if f.MessageID != "" {
		q = q.Where(t.messageID+" = ?", f.MessageID)
	}
	if f.Campaign != "" {
		q = q.Where("m.campaign = ?", f.Campaign)
	}
	if f.Tag != "" {
		q = q.Where("EXISTS (SELECT 1 FROM mail_tags AS t WHERE t.message_id = "+t.messageID+" AND t.tag = ?)", f.Tag)
	}
	if f.Origin != "" {
		if !f.Origin.Valid() {
			return nil, fmt.Errorf("%w: unknown origin %q (library, smtp, http, campaign, cli)", ErrInvalid, f.Origin)
		}
		q = q.Where(t.alias+".origin = ?", f.Origin)
	}
	if !f.From.IsZero() {
		q = q.Where(t.alias+".accepted_at >= ?", f.From.UTC())
	}
	if !f.To.IsZero() {
		q = q.Where(t.alias+".accepted_at < ?", f.To.UTC())
	}
	return q, nil
}

// Message returns message id with its recipients counted by status and
// its tags. With account set, a message of another account is
// ErrNotFound, like one that does not exist.
func (r *Reporter) Message(ctx context.Context, account, id string) (Message, error) {
	q, err := r.messageQuery(ctx, Filter{Account: account, MessageID: id})
	if err != nil {
		return Message{}, err
	}
	var rows []messageScan
	if err := q.Scan(ctx, &rows); err != nil {
		return Message{}, fmt.Errorf("report: read message: %w", err)
	}
	if len(rows) == 0 {
		return Message{}, fmt.Errorf("%w: no message %s", ErrNotFound, id)
	}
	ms := []Message{r.message(rows[0])}
	if err := r.fill(ctx, ms); err != nil {
		return Message{}, err
	}
	return ms[0], nil
}

// Messages lists the messages f selects (Account, MessageID, Campaign,
// Tag, Origin, From, To), newest first, at most f.Limit (default
// DefaultPage, at most MaxPage), each with its counts and tags.
func (r *Reporter) Messages(ctx context.Context, f Filter) ([]Message, error) {
	q, err := r.messageQuery(ctx, f)
	if err != nil {
		return nil, err
	}
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultPage
	}
	var rows []messageScan
	if err := q.OrderExpr("m.accepted_at DESC, m.id DESC").Limit(int64(min(limit, MaxPage))).Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: list messages: %w", err)
	}
	ms := make([]Message, len(rows))
	for i, s := range rows {
		ms[i] = r.message(s)
	}
	if err := r.fill(ctx, ms); err != nil {
		return nil, err
	}
	return ms, nil
}

// fill reads the counts and tags of ms in two queries.
func (r *Reporter) fill(ctx context.Context, ms []Message) error {
	if len(ms) == 0 {
		return nil
	}
	ids := make([]string, len(ms))
	at := make(map[string]*Message, len(ms))
	for i := range ms {
		ids[i] = ms[i].ID
		at[ms[i].ID] = &ms[i]
	}
	var counts []struct {
		MessageID string
		Status    mailstore.Status
		N         int64
	}
	err := r.db.NewSelect().TableExpr("mail_recipients").ColumnExpr("message_id, status, count(*) AS n").
		Where("message_id IN (?)", bun.List(ids)).GroupExpr("message_id, status").Scan(ctx, &counts)
	if err != nil {
		return fmt.Errorf("report: count recipients: %w", err)
	}
	for _, c := range counts {
		at[c.MessageID].Counts.Add(c.Status, c.N)
	}
	var tags []struct {
		MessageID string
		Tag       string
	}
	err = r.db.NewSelect().TableExpr("mail_tags").ColumnExpr("message_id, tag").
		Where("message_id IN (?)", bun.List(ids)).OrderExpr("message_id, tag").Scan(ctx, &tags)
	if err != nil {
		return fmt.Errorf("report: read tags: %w", err)
	}
	for _, t := range tags {
		m := at[t.MessageID]
		m.Tags = append(m.Tags, t.Tag)
	}
	return nil
}

// CampaignPart is what one account sent through one origin in a campaign.
type CampaignPart struct {
	Campaign        string       `json:"campaign"`
	Account         string       `json:"account"`
	Origin          quota.Origin `json:"origin"`
	Messages        int64        `json:"messages"`
	FirstAcceptedAt time.Time    `json:"first_accepted_at"`
	LastAcceptedAt  time.Time    `json:"last_accepted_at"`
	Counts          Counts       `json:"counts"`
}

// Campaign returns campaign f.Campaign per account × origin: its messages,
// when the first and the last were accepted, and its recipients by status.
// f.Account, f.From and f.To narrow it; a campaign with no message in
// what remains is ErrNotFound.
func (r *Reporter) Campaign(ctx context.Context, f Filter) ([]CampaignPart, error) {
	if f.Campaign == "" {
		return nil, fmt.Errorf("%w: no campaign given", ErrInvalid)
	}
	mf := Filter{Account: f.Account, Campaign: f.Campaign, From: f.From, To: f.To}
	q, err := r.where(ctx, r.db.NewSelect().TableExpr("mail_messages AS m").
		ColumnExpr("a.name AS account, m.origin, count(*) AS n, min(m.accepted_at) AS first, max(m.accepted_at) AS last").
		Join("JOIN quota_accounts AS a ON a.id = m.account_id").GroupExpr("a.name, m.origin"), mf, onMessages)
	if err != nil {
		return nil, err
	}
	var msgs []struct {
		Account     string
		Origin      quota.Origin
		N           int64
		First, Last timeCell
	}
	if err := q.Scan(ctx, &msgs); err != nil {
		return nil, fmt.Errorf("report: read campaign: %w", err)
	}
	if len(msgs) == 0 {
		return nil, fmt.Errorf("%w: no campaign %q", ErrNotFound, f.Campaign)
	}
	type key struct {
		account string
		origin  quota.Origin
	}
	parts := make(map[key]*CampaignPart, len(msgs))
	out := make([]CampaignPart, len(msgs))
	for i, m := range msgs {
		out[i] = CampaignPart{Campaign: f.Campaign, Account: m.Account, Origin: m.Origin, Messages: m.N,
			FirstAcceptedAt: r.in(m.First.t), LastAcceptedAt: r.in(m.Last.t)}
		parts[key{m.Account, m.Origin}] = &out[i]
	}
	q, err = r.where(ctx, r.db.NewSelect().TableExpr("mail_recipients AS r").
		ColumnExpr("a.name AS account, m.origin, r.status, count(*) AS n").
		Join("JOIN mail_messages AS m ON m.id = r.message_id").
		Join("JOIN quota_accounts AS a ON a.id = m.account_id").GroupExpr("a.name, m.origin, r.status"), mf, onMessages)
	if err != nil {
		return nil, err
	}
	var counts []struct {
		Account string
		Origin  quota.Origin
		Status  mailstore.Status
		N       int64
	}
	if err := q.Scan(ctx, &counts); err != nil {
		return nil, fmt.Errorf("report: count campaign recipients: %w", err)
	}
	for _, c := range counts {
		if p := parts[key{c.Account, c.Origin}]; p != nil {
			p.Counts.Add(c.Status, c.N)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Account != out[j].Account {
			return out[i].Account < out[j].Account
		}
		return out[i].Origin < out[j].Origin
	})
	return out, nil
}
