package report

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/quota"
)

// Cursor is a position in the event stream: the last recipient whose
// acceptance was seen and the last mail_events row seen. Its text form
// ("R.E") is the Server-Sent Events id a client resumes from.
type Cursor struct{ Recipient, Event int64 }

func (c Cursor) String() string { return fmt.Sprintf("%d.%d", c.Recipient, c.Event) }

// ParseCursor reads a cursor's text form; "" is the start.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	a, b, ok := strings.Cut(s, ".")
	r, err1 := strconv.ParseInt(a, 10, 64)
	e, err2 := strconv.ParseInt(b, 10, 64)
	if !ok || err1 != nil || err2 != nil || r < 0 || e < 0 {
		return Cursor{}, fmt.Errorf("%w: event id %q is not R.E", ErrInvalid, s)
	}
	return Cursor{r, e}, nil
}

// Event is one thing that happened to one recipient: accepted, or an
// attempt or final change (sent, deferred, bounced, failed, cancelled).
type Event struct {
	ID          string       `json:"id"` // the cursor just after this event
	Type        string       `json:"type"`
	At          time.Time    `json:"at"`
	RecipientID int64        `json:"recipient_id"`
	MessageID   string       `json:"message_id"`
	Account     string       `json:"account"`
	Origin      quota.Origin `json:"origin"`
	Address     string       `json:"address"`
	RemoteHost  string       `json:"remote_host,omitempty"`
	Reply       string       `json:"reply,omitempty"`
}

// EventsFilter selects events.
type EventsFilter struct {
	Account string // only this account's
	After   Cursor // resume after this position
	Limit   int    // per kind of source; default 500
	// Lag leaves out what happened in the last Lag: a transaction that
	// took its row ids earlier but commits later than others must not be
	// skipped by a cursor that moved past it. Default 2 seconds.
	Lag time.Duration
}

// Events returns the events after f.After, acceptances first, and the
// cursor after the last one (f.After when there are none). Each is read
// from rows written in the transaction of the change (the recipients, and
// mail_events), so none is lost: a consumer that resumes from the last id
// it saw gets every later event once.
func (r *Reporter) Events(ctx context.Context, f EventsFilter) ([]Event, Cursor, error) {
	if f.Limit <= 0 {
		f.Limit = 500
	}
	if f.Lag == 0 {
		f.Lag = 2 * time.Second
	}
	var accountID int64
	if f.Account != "" {
		id, err := r.accountID(ctx, f.Account)
		if err != nil {
			return nil, f.After, err
		}
		accountID = id
	}
	until := r.now().Add(-f.Lag).UTC()
	var acc []struct {
		ID         int64
		MessageID  string
		AccountID  int64
		Origin     quota.Origin
		Address    string
		AcceptedAt time.Time
	}
	q := r.db.NewSelect().TableExpr("mail_recipients AS r").ColumnExpr("r.id, r.message_id, r.account_id, r.origin, r.address, r.accepted_at").
		Where("r.id > ?", f.After.Recipient).Where("r.accepted_at <= ?", until).OrderExpr("r.id").Limit(int64(f.Limit))
	if accountID != 0 {
		q = q.Where("r.account_id = ?", accountID)
	}
	if err := q.Scan(ctx, &acc); err != nil {
		return nil, f.After, fmt.Errorf("report: events: %w", err)
	}
	var evs []struct {
		ID          int64
		RecipientID int64
		MessageID   string
		AccountID   int64
		Origin      quota.Origin
		At          time.Time
		Type        string
		RemoteHost  string
		Reply       string
		Address     string
	}
	q = r.db.NewSelect().TableExpr("mail_events AS e").Join("JOIN mail_recipients AS r ON r.id = e.recipient_id").
		ColumnExpr("e.id, e.recipient_id, e.message_id, e.account_id, e.origin, e.at, e.type, e.remote_host, e.reply, r.address").
		Where("e.id > ?", f.After.Event).Where("e.at <= ?", until).OrderExpr("e.id").Limit(int64(f.Limit))
	if accountID != 0 {
		q = q.Where("e.account_id = ?", accountID)
	}
	if err := q.Scan(ctx, &evs); err != nil {
		return nil, f.After, fmt.Errorf("report: events: %w", err)
	}
	cur := f.After
	if len(acc)+len(evs) == 0 { // an idle poll: the common case of a live stream
		return nil, cur, nil
	}
	names, err := r.accountNames(ctx)
	if err != nil {
		return nil, f.After, err
	}
	out := make([]Event, 0, len(acc)+len(evs))
	for _, x := range acc {
		cur.Recipient = x.ID
		out = append(out, Event{ID: cur.String(), Type: "accepted", At: x.AcceptedAt.In(r.loc), RecipientID: x.ID, MessageID: x.MessageID,
			Account: names[x.AccountID], Origin: x.Origin, Address: x.Address})
	}
	for _, x := range evs {
		cur.Event = x.ID
		out = append(out, Event{ID: cur.String(), Type: x.Type, At: x.At.In(r.loc), RecipientID: x.RecipientID, MessageID: x.MessageID,
			Account: names[x.AccountID], Origin: x.Origin, Address: x.Address, RemoteHost: x.RemoteHost, Reply: x.Reply})
	}
	return out, cur, nil
}

// Attempt is one delivery attempt of a recipient.
type Attempt struct {
	At         time.Time `json:"at"`
	RemoteHost string    `json:"remote_host"`
	Reply      string    `json:"reply"`
	Result     string    `json:"result"` // sent, deferred, bounced or failed
}

// Attempts returns every delivery attempt of the given recipients, oldest
// first, by recipient id (one query).
func (r *Reporter) Attempts(ctx context.Context, recipientIDs []int64) (map[int64][]Attempt, error) {
	out := map[int64][]Attempt{}
	if len(recipientIDs) == 0 {
		return out, nil
	}
	var rows []struct {
		RecipientID int64
		At          time.Time
		RemoteHost  string
		Reply       string
		Type        string
	}
	if err := r.db.NewSelect().TableExpr("mail_events").ColumnExpr("recipient_id, at, remote_host, reply, type").
		Where("recipient_id IN (?) AND attempt", bun.List(recipientIDs)).OrderExpr("id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: attempts: %w", err)
	}
	for _, x := range rows {
		out[x.RecipientID] = append(out[x.RecipientID], Attempt{At: x.At.In(r.loc), RemoteHost: x.RemoteHost, Reply: x.Reply, Result: x.Type})
	}
	return out, nil
}

// Feedback is what a recipient's address got back after delivery, or why
// it was not sent: a bounce reported by a DSN, a delay, a complaint, an
// unsubscribe, a suppression; and, for a failure, its class (hard,
// transient, policy…) and its evidence (status, diagnostic, remote and
// reporting MTA, method).
type Feedback struct {
	At     time.Time         `json:"at"`
	Type   string            `json:"type"` // bounced, delayed, complained, unsubscribed, suppressed
	Class  string            `json:"class,omitempty"`
	Reply  string            `json:"reply,omitempty"`
	Detail map[string]string `json:"detail,omitempty"`
}

// Feedback returns the feedback events of the given recipients (events
// that are not delivery attempts, but cancellations), oldest first, by
// recipient id (one query).
func (r *Reporter) Feedback(ctx context.Context, recipientIDs []int64) (map[int64][]Feedback, error) {
	out := map[int64][]Feedback{}
	if len(recipientIDs) == 0 {
		return out, nil
	}
	var rows []struct {
		RecipientID int64
		At          time.Time
		Type        string
		Class       string
		Reply       string
		Detail      string
	}
	if err := r.db.NewSelect().TableExpr("mail_events").ColumnExpr("recipient_id, at, type, class, reply, detail").
		Where("recipient_id IN (?) AND NOT attempt AND type IN ('bounced', 'delayed', 'complained', 'unsubscribed', 'suppressed')", bun.List(recipientIDs)).
		OrderExpr("id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: feedback: %w", err)
	}
	for _, x := range rows {
		f := Feedback{At: x.At.In(r.loc), Type: x.Type, Class: x.Class, Reply: x.Reply}
		if x.Detail != "" {
			_ = json.Unmarshal([]byte(x.Detail), &f.Detail) // written by envios as a JSON object; a bad one shows none
		}
		out[x.RecipientID] = append(out[x.RecipientID], f)
	}
	return out, nil
}

// Suppression is one entry of the suppression list for an address.
type Suppression struct {
	ID        int64     `json:"id"`
	Scope     string    `json:"scope"` // all, bulk, account
	Account   string    `json:"account,omitempty"`
	Topic     string    `json:"topic,omitempty"`
	Reason    string    `json:"reason"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at,omitzero"`
	RemovedAt time.Time `json:"removed_at,omitzero"`
	Actor     string    `json:"actor"`
	Evidence  string    `json:"evidence,omitempty"`
}

// Suppressions returns every suppression-list entry of address, removed
// and expired ones too, oldest first.
func (r *Reporter) Suppressions(ctx context.Context, address string) ([]Suppression, error) {
	var rows []struct {
		ID        int64
		Scope     string
		Account   *string
		Topic     string
		Reason    string
		CreatedAt time.Time
		ExpiresAt *time.Time
		RemovedAt *time.Time
		Actor     string
		Evidence  string
	}
	if err := r.db.NewSelect().TableExpr("mail_suppressions AS s").
		ColumnExpr("s.id, s.scope, a.name AS account, s.topic, s.reason, s.created_at, s.expires_at, s.removed_at, s.actor, s.evidence").
		Join("LEFT JOIN quota_accounts AS a ON a.id = s.account_id").
		Where("s.address = ?", NormalizeAddress(address)).OrderExpr("s.id").Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: suppressions: %w", err)
	}
	out := make([]Suppression, len(rows))
	for i, x := range rows {
		s := Suppression{ID: x.ID, Scope: x.Scope, Topic: x.Topic, Reason: x.Reason, CreatedAt: x.CreatedAt.In(r.loc), Actor: x.Actor}
		if x.Account != nil {
			s.Account = *x.Account
		}
		if x.ExpiresAt != nil {
			s.ExpiresAt = x.ExpiresAt.In(r.loc)
		}
		if x.RemovedAt != nil {
			s.RemovedAt = x.RemovedAt.In(r.loc)
		}
		if x.Evidence != "{}" {
			s.Evidence = x.Evidence
		}
		out[i] = s
	}
	return out, nil
}
