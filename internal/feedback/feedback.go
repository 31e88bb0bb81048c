// Package feedback acts on what the MX of the sending domain stored
// (internal/inbound): it reads each message with internal/bounce and turns
// a failure report into a bounce of the recipient its token names (and a
// suppression when the class says so), a delay into an event, a complaint
// into a bulk suppression, and mail to u+TOKEN@ into an unsubscribe. The
// effects and the row's "processed" mark commit in one transaction, so a
// message is acted on exactly once.
package feedback

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/bounce"
	"github.com/servir-pe/envios/internal/inbound"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/suppress"
)

// Actor is who feedback's changes are recorded as made by.
const Actor = "mx"

// Kinds a processed row gets besides bounce's (dsn, delayed, complaint,
// auto-reply, feedback, unknown).
const KindUnsubscribe = "unsubscribe"

// Processor processes stored inbound messages. DB and Tokens are
// required.
type Processor struct {
	DB     *bun.DB
	Tokens *rcpttoken.Keyring
	Now    func() time.Time // default time.Now
	Logger *slog.Logger     // default slog.Default()
	// OnPolicy, when set, is told of every policy bounce a DSN reports
	// (the recipient's domain, the reporting host, the status and
	// diagnostic), after it committed: relayd pauses the delivery
	// engine's bulk mail to the domain (delivery.Engine.PauseBulk).
	OnPolicy func(domain, host, reply string)

	bounced, delayed, complaints, unsubscribes, policy, ignored atomic.Int64
}

var _ inbound.Processor = (*Processor)(nil)

// Stats are what a Processor did since it started.
type Stats struct {
	Bounced, Delayed, Complaints, Unsubscribes, Ignored int64
	// Policy counts failures of class policy (reputation, DMARC, PTR):
	// they name our configuration, not the recipient, and suppress nothing.
	Policy int64
}

// Stats returns the counters.
func (p *Processor) Stats() Stats {
	return Stats{Bounced: p.bounced.Load(), Delayed: p.delayed.Load(), Complaints: p.complaints.Load(),
		Unsubscribes: p.unsubscribes.Load(), Ignored: p.ignored.Load(), Policy: p.policy.Load()}
}

func (p *Processor) now() time.Time {
	if p.Now == nil {
		return time.Now().UTC()
	}
	return p.Now().UTC()
}

func (p *Processor) log() *slog.Logger {
	if p.Logger == nil {
		return slog.Default()
	}
	return p.Logger
}

// Pending lists the rows not processed yet, oldest first.
func (p *Processor) Pending(ctx context.Context, limit int) ([]int64, error) {
	var ids []int64
	err := p.DB.NewSelect().Model((*mailstore.InboundRow)(nil)).Column("id").Where("kind = ''").Order("id").Limit(int64(limit)).Scan(ctx, &ids)
	if err != nil {
		return nil, fmt.Errorf("feedback: pending: %w", err)
	}
	return ids, nil
}

// Process acts on row id and marks it processed with its kind and a line
// saying what was done. A row already processed is left alone.
func (p *Processor) Process(ctx context.Context, id int64) error {
	var post run
	err := p.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		post = run{} // a try may run again
		var rows []mailstore.InboundRow
		q := tx.NewSelect().Model(&rows).Where("id = ? AND kind = ''", id)
		if mailstore.IsPG(p.DB) {
			// Several relayd on one database each run an MX: the row is
			// processed by whichever locks it first, once.
			q = q.For("UPDATE SKIP LOCKED")
		}
		if err := q.Scan(ctx); err != nil {
			return fmt.Errorf("feedback: read inbound %d: %w", id, err)
		}
		if len(rows) == 0 {
			return nil
		}
		kind, result, err := p.act(ctx, tx, &rows[0], &post)
		if err != nil {
			return err
		}
		_, err = tx.NewUpdate().Model((*mailstore.InboundRow)(nil)).Set("kind = ?", kind).Set("result = ?", mailstore.Truncate(result, 1000)).
			Where("id = ?", id).Exec(ctx)
		if err != nil {
			return fmt.Errorf("feedback: mark inbound %d: %w", id, err)
		}
		p.log().Info("mx: processed", "inbound", id, "mailbox", rows[0].Mailbox, "kind", kind, "result", result)
		return nil
	})
	if err == nil {
		for _, f := range post.after {
			f()
		}
	}
	return err
}

// run is one Process call's state: what to do once its transaction
// committed.
type run struct{ after []func() }

// act does what row asks for and says what it was.
func (p *Processor) act(ctx context.Context, tx bun.Tx, row *mailstore.InboundRow, run *run) (kind, result string, err error) {
	now := p.now()
	if row.Mailbox == inbound.MailboxUnsubscribe {
		return p.unsubscribe(ctx, tx, row, now)
	}
	rep, err := bounce.Read(row.Raw)
	if err != nil {
		p.ignored.Add(1)
		return string(bounce.KindUnknown), "not a message: " + err.Error(), nil
	}
	kind = string(rep.Kind)
	rid := p.recipientOf(row, rep)
	switch rep.Kind {
	case bounce.KindDSN, bounce.KindDelayed, bounce.KindComplaint:
		if rid == 0 {
			return kind, "kept for an admin: no token of ours names a recipient", nil
		}
	default:
		p.ignored.Add(1)
		return kind, "kept; nothing to do", nil
	}
	r, err := readRecipient(ctx, tx, rid)
	if errors.Is(err, suppress.ErrNotFound) {
		return kind, fmt.Sprintf("kept: recipient %d does not exist", rid), nil
	}
	if err != nil {
		return "", "", err
	}
	ev := evidence{"source": "async", "inbound": strconv.FormatInt(row.ID, 10), "reporting_mta": rep.ReportingMTA}
	switch rep.Kind {
	case bounce.KindComplaint:
		ev["feedback_type"] = rep.FeedbackType
		_, added, err := suppress.Complain(ctx, tx, rid, ev.clean(), Actor, now)
		if err != nil {
			return "", "", err
		}
		if !added {
			return kind, "complaint about " + r.Address + ": already suppressed for bulk mail", nil
		}
		p.complaints.Add(1)
		return kind, "complaint (" + rep.FeedbackType + ") about " + r.Address + ": suppressed for bulk mail", nil
	case bounce.KindDelayed:
		g, _ := pick(rep, r.Address, "delayed")
		ev.add(g)
		if err := delayedEvent(ctx, tx, r, now, ev.clean()); err != nil {
			return "", "", err
		}
		p.delayed.Add(1)
		return kind, "delayed: " + reply(g), nil
	}
	return p.bounce(ctx, tx, rep, r, ev, now, run)
}

// recipientOf is the recipient the row's token names, or else the first
// verified token in the returned message (a complaint or DSN sent to
// postmaster@, abuse@ or fbl@); 0 when none.
func (p *Processor) recipientOf(row *mailstore.InboundRow, rep *bounce.Report) int64 {
	if row.RecipientID != nil {
		return *row.RecipientID
	}
	for _, t := range rep.Tokens {
		if id, ok := p.Tokens.Recipient(t); ok {
			return id
		}
	}
	return 0
}

// bounce records a failure report: each failed recipient group, matched
// by address to the recipient it is about (the token's recipient or
// another of its message that went in the same transaction — never a
// recipient the report does not name), bounced after delivery and fed to
// the suppression rules.
func (p *Processor) bounce(ctx context.Context, tx bun.Tx, rep *bounce.Report, r mailstore.RecipientRow, ev evidence, now time.Time, run *run) (string, string, error) {
	kind := string(rep.Kind)
	var failed []bounce.Recipient
	for _, g := range rep.Recipients {
		if g.Action == "failed" {
			failed = append(failed, g)
		}
	}
	if len(failed) == 0 {
		return kind, "kept: the report names no failed recipient", nil
	}
	var results []string
	for _, g := range failed {
		target, ok, err := p.target(ctx, tx, r, g, len(failed))
		if err != nil {
			return "", "", err
		}
		if !ok {
			results = append(results, "no recipient of the message is "+cmp.Or(g.Final, g.Original, "named"))
			continue
		}
		res, err := p.bounceOne(ctx, tx, rep, target, g, maps.Clone(ev), now, run)
		if err != nil {
			return "", "", err
		}
		results = append(results, res)
	}
	return kind, strings.Join(results, "; "), nil
}

// target is the recipient a failed group is about: r when the group names
// r's address, else the recipient of r's message with that address; when
// nothing matches (a forwarded address) and the group is the report's
// only one, r — if r went alone in its transaction (bulk mail does, and a
// message with one recipient).
func (p *Processor) target(ctx context.Context, tx bun.Tx, r mailstore.RecipientRow, g bounce.Recipient, groups int) (mailstore.RecipientRow, bool, error) {
	names := func(addr string) bool {
		return addr != "" && (strings.EqualFold(g.Final, addr) || strings.EqualFold(g.Original, addr))
	}
	if names(r.Address) {
		return r, true, nil
	}
	for _, addr := range []string{g.Final, g.Original} {
		if addr == "" {
			continue
		}
		var rows []mailstore.RecipientRow
		if err := tx.NewSelect().Model(&rows).Where("lower(address) = ? AND message_id = ?", strings.ToLower(addr), r.MessageID).
			Order("id").Limit(1).Scan(ctx); err != nil {
			return r, false, fmt.Errorf("feedback: find recipient: %w", err)
		}
		if len(rows) == 1 {
			return rows[0], true, nil
		}
	}
	if groups != 1 {
		return r, false, nil
	}
	if r.Priority > 0 {
		return r, true, nil
	}
	n, err := tx.NewSelect().Model((*mailstore.RecipientRow)(nil)).Where("message_id = ?", r.MessageID).Limit(2).Count(ctx)
	if err != nil {
		return r, false, fmt.Errorf("feedback: count recipients: %w", err)
	}
	return r, n == 1, nil
}

// bounceOne records one failed group against its recipient.
func (p *Processor) bounceOne(ctx context.Context, tx bun.Tx, rep *bounce.Report, r mailstore.RecipientRow, g bounce.Recipient, ev evidence, now time.Time, run *run) (string, error) {
	ev.add(g)
	class := g.Class
	if class == "" {
		class = bounce.Undetermined
	}
	host := cmp.Or(g.RemoteMTA, rep.ReportingMTA)
	moved, err := mailstore.BounceAfterDelivery(ctx, tx, r.ID, now, host, reply(g), string(class), ev.json())
	if err != nil {
		return "", err
	}
	if !moved {
		return fmt.Sprintf("%s is %s, not sent: recorded nothing (%s)", r.Address, r.Status, reply(g)), nil
	}
	p.bounced.Add(1)
	result := r.Address + " bounced (" + string(class) + "): " + reply(g)
	if class == bounce.Policy {
		p.policy.Add(1)
		p.log().Warn("ALARM: a DSN reports a policy refusal: our configuration (reputation, DMARC, PTR), not the recipient; nothing suppressed",
			"recipient", r.ID, "reply", reply(g), "remote", host)
		if p.OnPolicy != nil {
			domain := r.Address[strings.LastIndexByte(r.Address, '@')+1:]
			text := reply(g)
			run.after = append(run.after, func() { p.OnPolicy(domain, host, text) })
		}
		return result + "; not suppressed", nil
	}
	if !class.Suppresses() {
		return result + "; not suppressed", nil
	}
	e, err := suppress.Fail(ctx, tx, suppress.Failure{Address: r.Address, Class: string(class), RecipientID: r.ID,
		Evidence: ev.clean(), Actor: Actor, Now: now})
	if err != nil {
		return "", err
	}
	if e != nil {
		result += "; suppressed (" + string(e.Reason) + ")"
	}
	return result, nil
}

// pick is the recipient group of a report that is about addr with the
// given action: the one naming it, or the only one with that action.
func pick(rep *bounce.Report, addr, action string) (bounce.Recipient, bool) {
	var with []bounce.Recipient
	for _, g := range rep.Recipients {
		if g.Action == action {
			with = append(with, g)
		}
	}
	for _, g := range with {
		if strings.EqualFold(g.Final, addr) || strings.EqualFold(g.Original, addr) {
			return g, true
		}
	}
	if len(with) == 1 {
		return with[0], true
	}
	return bounce.Recipient{}, false
}

// reply is a group's status and diagnostic as one line.
func reply(g bounce.Recipient) string {
	return strings.TrimSpace(g.Status + " " + g.Diagnostic)
}

// unsubscribe acts on mail to u+TOKEN@: whatever it holds, it asks for no
// more bulk mail (RFC 2369 mailto).
func (p *Processor) unsubscribe(ctx context.Context, tx bun.Tx, row *mailstore.InboundRow, now time.Time) (string, string, error) {
	if row.RecipientID == nil {
		return KindUnsubscribe, "kept: no recipient", nil
	}
	e, added, err := suppress.Unsubscribe(ctx, tx, *row.RecipientID, "mailto", Actor, now)
	if errors.Is(err, suppress.ErrNotFound) {
		return KindUnsubscribe, fmt.Sprintf("kept: recipient %d does not exist", *row.RecipientID), nil
	}
	if err != nil {
		return "", "", err
	}
	if !added {
		return KindUnsubscribe, e.Address + " was already unsubscribed", nil
	}
	p.unsubscribes.Add(1)
	return KindUnsubscribe, e.Address + " unsubscribed", nil
}

// readRecipient reads the recipient row a token names.
func readRecipient(ctx context.Context, idb bun.IDB, id int64) (mailstore.RecipientRow, error) {
	var rows []mailstore.RecipientRow
	if err := idb.NewSelect().Model(&rows).Where("id = ?", id).Scan(ctx); err != nil {
		return mailstore.RecipientRow{}, fmt.Errorf("feedback: read recipient %d: %w", id, err)
	}
	if len(rows) == 0 {
		return mailstore.RecipientRow{}, suppress.ErrNotFound
	}
	return rows[0], nil
}

// delayedEvent records a DSN with Action: delayed: an event, no status
// change (the remote end still tries).
func delayedEvent(ctx context.Context, idb bun.IDB, r mailstore.RecipientRow, now time.Time, ev map[string]string) error {
	b, _ := json.Marshal(ev)
	e := mailstore.EventRow{RecipientID: r.ID, MessageID: r.MessageID, AccountID: r.AccountID, Origin: r.Origin, At: now,
		Type: mailstore.EventDelayed, RemoteHost: mailstore.Truncate(ev["remote_mta"], 255),
		Reply: mailstore.Truncate(strings.TrimSpace(ev["status"]+" "+ev["diagnostic"]), 2000), Class: ev["class"], Detail: string(b)}
	if err := mailstore.InsertEvents(ctx, idb, []mailstore.EventRow{e}); err != nil {
		return err
	}
	c := mailstore.Counts{}
	c.Add(r.AccountID, r.Origin, now, string(mailstore.EventDelayed), 1)
	return c.Write(ctx, idb)
}

// evidence is what a feedback event and suppression carry.
type evidence map[string]string

func (e evidence) add(g bounce.Recipient) {
	e["status"], e["diagnostic"], e["remote_mta"], e["class"] = g.Status, g.Diagnostic, g.RemoteMTA, string(g.Class)
	if !g.WillRetryUntil.IsZero() {
		e["will_retry_until"] = g.WillRetryUntil.UTC().Format(time.RFC3339)
	}
}

// clean drops the empty fields.
func (e evidence) clean() map[string]string {
	m := map[string]string{}
	for k, v := range e {
		if v != "" {
			m[k] = v
		}
	}
	return m
}

func (e evidence) json() string {
	b, _ := json.Marshal(e.clean())
	return string(b)
}
