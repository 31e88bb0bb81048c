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
// acceptance was seen, the last mail_events row seen and the last
// suppression-list change (audit_log row) seen. Its text form ("R.E", or
// "R.E.A" once a suppression change was seen) is the Server-Sent Events id
// a client resumes from.
type Cursor struct{ Recipient, Event, Audit int64 }

func (c Cursor) String() string {
	if c.Audit == 0 {
		return fmt.Sprintf("%d.%d", c.Recipient, c.Event)
	}
	return fmt.Sprintf("%d.%d.%d", c.Recipient, c.Event, c.Audit)
}

// ParseCursor reads a cursor's text form; "" is the start.
func ParseCursor(s string) (Cursor, error) {
	if s == "" {
		return Cursor{}, nil
	}
	parts := strings.Split(s, ".")
	var n [3]int64
	ok := len(parts) == 2 || len(parts) == 3
	for i := 0; ok && i < len(parts); i++ {
		v, err := strconv.ParseInt(parts[i], 10, 64)
		ok = err == nil && v >= 0
		n[i] = v
	}
	if !ok {
		return Cursor{}, fmt.Errorf("%w: event id %q is not R.E (or R.E.A)", ErrInvalid, s)
	}
	return Cursor{n[0], n[1], n[2]}, nil
}

// Event is one thing that happened to one recipient: accepted, an
// attempt or final change (sent, deferred, bounced, failed, cancelled,
// suppressed), or feedback (bounced after delivery, delayed, complained,
// unsubscribed); or a change of the suppression list
// (suppression.added, suppression.removed: Address is the address,
// Reply the change's detail, RecipientID 0). A failure carries its class (hard, transient, policy…)
// and evidence (status, diagnostic, remote and reporting MTA, sync or
// async; an unsubscribe its method and scope).
type Event struct {
	ID          string            `json:"id"` // the cursor just after this event
	Type        string            `json:"type"`
	At          time.Time         `json:"at"`
	RecipientID int64             `json:"recipient_id"`
	MessageID   string            `json:"message_id"`
	Account     string            `json:"account"`
	Origin      quota.Origin      `json:"origin"`
	Address     string            `json:"address"`
	RemoteHost  string            `json:"remote_host,omitempty"`
	Reply       string            `json:"reply,omitempty"`
	Class       string            `json:"class,omitempty"`
	Detail      map[string]string `json:"detail,omitempty"`
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
		Class       string
		Detail      string
		Address     string
	}
	q = r.db.NewSelect().TableExpr("mail_events AS e").Join("JOIN mail_recipients AS r ON r.id = e.recipient_id").
		ColumnExpr("e.id, e.recipient_id, e.message_id, e.account_id, e.origin, e.at, e.type, e.remote_host, e.reply, e.class, e.detail, r.address").
		Where("e.id > ?", f.After.Event).Where("e.at <= ?", until).OrderExpr("e.id").Limit(int64(f.Limit))
	if accountID != 0 {
		q = q.Where("e.account_id = ?", accountID)
	}
	if err := q.Scan(ctx, &evs); err != nil {
		return nil, f.After, fmt.Errorf("report: events: %w", err)
	}
	changes, err := r.suppressionChanges(ctx, f, accountID, until)
	if err != nil {
		return nil, f.After, err
	}
	cur := f.After
	if len(acc)+len(evs)+len(changes) == 0 { // an idle poll: the common case of a live stream
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
		ev := Event{ID: cur.String(), Type: x.Type, At: x.At.In(r.loc), RecipientID: x.RecipientID, MessageID: x.MessageID,
			Account: names[x.AccountID], Origin: x.Origin, Address: x.Address, RemoteHost: x.RemoteHost, Reply: x.Reply, Class: x.Class}
		if x.Detail != "" {
			_ = json.Unmarshal([]byte(x.Detail), &ev.Detail) // written by envios as a JSON object; a bad one shows none
		}
		out = append(out, ev)
	}
	for _, x := range changes {
		cur.Audit = x.ID
		typ := map[string]string{"suppression.add": "suppression.added", "suppression.remove": "suppression.removed"}[x.Action]
		out = append(out, Event{ID: cur.String(), Type: typ, At: x.At.In(r.loc), Address: x.Subject, Reply: x.Detail,
			Detail: map[string]string{"actor": x.Actor}})
	}
	return out, cur, nil
}

// suppressionChange is one audit_log row of a suppression-list change.
type suppressionChange struct {
	ID                             int64
	At                             time.Time `bun:"created_at"`
	Actor, Action, Subject, Detail string
}

// suppressionChanges reads the suppression-list changes after the cursor:
// only for a stream of every account (an account's stream leaves them out:
// most entries are installation-wide and name other accounts' addresses).
func (r *Reporter) suppressionChanges(ctx context.Context, f EventsFilter, accountID int64, until time.Time) ([]suppressionChange, error) {
	if accountID != 0 {
		return nil, nil
	}
	var out []suppressionChange
	err := r.db.NewSelect().TableExpr("audit_log").ColumnExpr("id, created_at, actor, action, subject, detail").
		Where("id > ? AND action IN ('suppression.add', 'suppression.remove') AND created_at <= ?", f.After.Audit, until).
		OrderExpr("id").Limit(int64(f.Limit)).Scan(ctx, &out)
	if err != nil {
		return nil, fmt.Errorf("report: events: %w", err)
	}
	return out, nil
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
