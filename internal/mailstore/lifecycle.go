package mailstore

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/quota"
)

// The recipient lifecycle. Every change of a recipient's status is one of
// these named transitions, and the statements below are the only ones
// that change mail_recipients.status: each updates a row only if its
// status is one of the transition's From (and, for a claimed row, only
// if it is still leased to the caller), so a refused transition changes
// nothing.
//
//	accept:        (new)                       → queued | scheduled
//	promote:       scheduled (due)             → queued
//	claim:         queued | scheduled | deferred (due, message not paused) → sending
//	expire lease:  sending (lease over)        → deferred
//	take back:     sending (an owner that stopped: restarted, or its lock free) → deferred, due now
//	unclaim:       sending (this owner)        → queued (never attempted) | deferred
//	record:        sending (this owner)        → sent | bounced | deferred | failed
//	fail unbuilt:  sending (this owner)        → failed
//	cancel:        queued | scheduled | deferred → cancelled
//	suppress:      sending (this owner)        → suppressed (its address was suppressed since acceptance)
//	bounce later:  sent                        → bounced (a DSN after the next hop took it)
//
// sent, bounced, failed, suppressed and cancelled are final: nothing
// leaves them, but for a DSN that reports a sent recipient bounced after
// all. A recipient that ends with no delivery attempt (attempts =
// 0: cancelled, failed before trying, expired while waiting for a
// destination's limits) has its charge released in the same transaction.
type Transition struct {
	Name string
	From []Status
	To   []Status
}

// The transitions.
var (
	Accept      = Transition{"accept", nil, []Status{StatusQueued, StatusScheduled, StatusSuppressed}}
	Promote     = Transition{"promote", []Status{StatusScheduled}, []Status{StatusQueued}}
	Claim       = Transition{"claim", []Status{StatusQueued, StatusScheduled, StatusDeferred}, []Status{StatusSending}}
	ExpireLease = Transition{"expire lease", []Status{StatusSending}, []Status{StatusDeferred}}
	TakeBack    = Transition{"take back", []Status{StatusSending}, []Status{StatusDeferred}}
	Unclaim     = Transition{"unclaim", []Status{StatusSending}, []Status{StatusQueued, StatusDeferred}}
	Record      = Transition{"record", []Status{StatusSending}, []Status{StatusSent, StatusBounced, StatusDeferred, StatusFailed}}
	FailUnbuilt = Transition{"fail unbuilt", []Status{StatusSending}, []Status{StatusFailed}}
	Cancel      = Transition{"cancel", []Status{StatusQueued, StatusScheduled, StatusDeferred}, []Status{StatusCancelled}}
	Suppress    = Transition{"suppress", []Status{StatusSending}, []Status{StatusSuppressed}}
	BounceLater = Transition{"bounce later", []Status{StatusSent}, []Status{StatusBounced}}
)

// Transitions lists every transition.
var Transitions = []Transition{Accept, Promote, Claim, ExpireLease, TakeBack, Unclaim, Record, FailUnbuilt, Cancel, Suppress, BounceLater}

// Statuses lists every status.
var Statuses = []Status{StatusQueued, StatusScheduled, StatusSending, StatusDeferred, StatusSent, StatusBounced,
	StatusFailed, StatusSuppressed, StatusCancelled}

// Final reports a status nothing leaves.
func (s Status) Final() bool {
	switch s {
	case StatusSent, StatusBounced, StatusFailed, StatusSuppressed, StatusCancelled:
		return true
	}
	return false
}

// Allows reports whether t may move a recipient from one status to another.
func (t Transition) Allows(from, to Status) bool {
	return slices.Contains(t.From, from) && slices.Contains(t.To, to)
}

// from is t's From as an SQL list: status IN (…).
func (t Transition) from() string {
	q := make([]string, len(t.From))
	for i, s := range t.From {
		q[i] = "'" + string(s) + "'"
	}
	return "status IN (" + strings.Join(q, ", ") + ")"
}

// PromoteDue marks scheduled recipients whose time has come as queued and
// returns how many changed.
func PromoteDue(ctx context.Context, idb bun.IDB, now time.Time) (int, error) {
	r, err := idb.NewRaw("UPDATE mail_recipients SET status = 'queued' WHERE "+Promote.from()+" AND due_at <= ?", now).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("mailstore: promote due recipients: %w", err)
	}
	n, _ := r.RowsAffected()
	return int(n), nil
}

// ExpireLeases makes due again the recipients claimed by an engine that
// never finished them (it died) once their lease is over. The dead engine
// may have sent them before it died, so each counts as attempted: a
// cancellation then keeps its charge, as for any recipient that may have
// been delivered, rather than release a message the pool may have paid
// for.
func ExpireLeases(ctx context.Context, idb bun.IDB, now time.Time) (int, error) {
	r, err := idb.NewRaw("UPDATE mail_recipients SET status = 'deferred', attempts = attempts + 1, "+
		"reply = 'lease expired: the engine that claimed it stopped, perhaps after sending it', lease_until = NULL, lease_owner = '' "+
		"WHERE "+ExpireLease.from()+" AND lease_until < ?", now).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("mailstore: expire leases: %w", err)
	}
	n, _ := r.RowsAffected()
	return int(n), nil
}

// ExpireOwner takes back, whatever their lease, the recipients owner
// claimed and never finished because it stopped: an engine restarted
// under the same name takes back its own claims of before, and one that
// finds another engine's lock free (it died) takes back that engine's.
// As for ExpireLeases, each counts as attempted (it may have been sent
// before the stop) and becomes deferred, due now, with a "lease expired"
// reply; unlike it, each gets a deferred attempt event (and its counter),
// so its history shows why it may arrive twice. Call it in a transaction:
// the rows, events and counters belong together. It returns how many
// recipients it took back.
func ExpireOwner(ctx context.Context, idb bun.IDB, owner string, now time.Time) (int, error) {
	reply := Truncate("lease expired: its engine ("+owner+") stopped while it held the recipient, perhaps after sending it", 2000)
	var rows []struct {
		ID        int64
		MessageID string
		AccountID int64
		Origin    quota.Origin
	}
	if err := idb.NewRaw("UPDATE mail_recipients SET status = 'deferred', attempts = attempts + 1, reply = ?, "+
		"due_at = CASE WHEN due_at > ? THEN ? ELSE due_at END, lease_until = NULL, lease_owner = '' "+
		"WHERE "+TakeBack.from()+" AND lease_owner = ? RETURNING id, message_id, account_id, origin",
		reply, now, now, owner).Scan(ctx, &rows); err != nil {
		return 0, fmt.Errorf("mailstore: take back the claims of %s: %w", owner, err)
	}
	events := make([]EventRow, len(rows))
	c := Counts{}
	for i, r := range rows {
		events[i] = EventRow{RecipientID: r.ID, MessageID: r.MessageID, AccountID: r.AccountID, Origin: r.Origin, At: now,
			Type: StatusDeferred, Attempt: true, Reply: reply}
		c.Add(r.AccountID, r.Origin, now, string(StatusDeferred), 1)
	}
	if err := InsertEvents(ctx, idb, events); err != nil {
		return 0, err
	}
	return len(rows), c.Write(ctx, idb)
}

// ClaimOwners lists the owners of the recipients being sent (claimed),
// each once, in order.
func ClaimOwners(ctx context.Context, idb bun.IDB) ([]string, error) {
	var owners []string
	if err := idb.NewRaw("SELECT DISTINCT lease_owner FROM mail_recipients WHERE status = 'sending' ORDER BY lease_owner").Scan(ctx, &owners); err != nil {
		return nil, fmt.Errorf("mailstore: list claim owners: %w", err)
	}
	return owners, nil
}

// Claimed is a recipient leased for delivery.
type Claimed struct {
	ID           int64
	MessageID    string
	Address      string
	Name         string
	Data         *string
	RFCMessageID string `bun:"rfc_message_id"`
	Attempts     int
	AcceptedAt   time.Time
	Priority     int16
	AccountID    int64
	Origin       quota.Origin
}

// Row is the part of a recipient row that rendering reads.
func (c Claimed) Row() RecipientRow {
	return RecipientRow{ID: c.ID, Address: c.Address, Name: c.Name, Data: c.Data, RFCMessageID: c.RFCMessageID}
}

// ClaimDue leases up to limit due recipients to owner until leaseUntil,
// transactional first, then by due time, returned in that order; the
// recipients of a paused message (mail_messages.paused_at) wait. On
// PostgreSQL the rows are locked FOR UPDATE SKIP LOCKED, so engines never
// claim the same row.
func ClaimDue(ctx context.Context, idb bun.IDB, owner string, now, leaseUntil time.Time, limit int) ([]Claimed, error) {
	lock := ""
	if IsPG(idb) {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	var items []Claimed
	err := idb.NewRaw("UPDATE mail_recipients SET status = 'sending', lease_until = ?, lease_owner = ? "+
		"WHERE id IN (SELECT id FROM mail_recipients WHERE "+Claim.from()+" AND due_at <= ? "+
		"AND message_id NOT IN (SELECT id FROM mail_messages WHERE paused_at IS NOT NULL) "+
		"ORDER BY priority, due_at LIMIT ?"+lock+") "+
		"RETURNING id, message_id, address, name, data, rfc_message_id, attempts, accepted_at, priority, account_id, origin",
		leaseUntil, owner, now, limit).Scan(ctx, &items)
	if err != nil {
		return nil, fmt.Errorf("mailstore: claim: %w", err)
	}
	// RETURNING does not keep the subquery's order.
	slices.SortFunc(items, func(a, b Claimed) int {
		return cmp.Or(cmp.Compare(a.Priority, b.Priority), cmp.Compare(a.ID, b.ID))
	})
	return items, nil
}

// ReturnLeases gives back recipients owner claimed and did not start:
// queued again if never attempted, else deferred.
func ReturnLeases(ctx context.Context, idb bun.IDB, owner string, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	_, err := idb.NewRaw("UPDATE mail_recipients SET status = CASE WHEN attempts = 0 THEN 'queued' ELSE 'deferred' END, "+
		"lease_until = NULL, lease_owner = '' WHERE id IN (?) AND "+Unclaim.from()+" AND lease_owner = ?", bun.List(ids), owner).Exec(ctx)
	if err != nil {
		return fmt.Errorf("mailstore: return leases: %w", err)
	}
	return nil
}

// Outcome is the new state of one claimed recipient after a delivery
// attempt, or after waiting for a destination's limits (Last nil).
type Outcome struct {
	ID       int64
	Status   Status // sent, bounced, deferred or failed
	Attempts int
	Last     *time.Time // the attempt's time; nil: not attempted now
	Final    *time.Time // set for a final status
	Due      time.Time
	Host     string
	Reply    string
}

// RecordOutcomes writes outcomes with one statement (on PostgreSQL a
// statement costs a round trip, on SQLite a parse and a plan), each row
// only if it is still sending and leased to owner; the lease is cleared.
// It returns the ids it updated.
func RecordOutcomes(ctx context.Context, idb bun.IDB, owner string, outs []Outcome) ([]int64, error) {
	if len(outs) == 0 {
		return nil, nil
	}
	// SQLite takes the values as they come; PostgreSQL needs their types
	// (a NULL time is otherwise text).
	value := "(?, ?, ?, ?, ?, ?, ?, ?)"
	if IsPG(idb) {
		value = "(CAST(? AS BIGINT), CAST(? AS TEXT), CAST(? AS INTEGER), CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ), CAST(? AS TIMESTAMPTZ), CAST(? AS TEXT), CAST(? AS TEXT))"
	}
	values := make([]string, 0, len(outs))
	args := make([]any, 0, 8*len(outs)+1)
	for _, o := range outs {
		if !slices.Contains(Record.To, o.Status) {
			return nil, fmt.Errorf("mailstore: record: %s is not an outcome", o.Status)
		}
		values = append(values, value)
		args = append(args, o.ID, o.Status, o.Attempts, o.Last, o.Final, o.Due, o.Host, o.Reply)
	}
	args = append(args, owner)
	var updated []int64
	err := idb.NewRaw("WITH v(vid, vstatus, vattempts, vlast, vfinal, vdue, vhost, vreply) AS (VALUES "+strings.Join(values, ", ")+") "+
		"UPDATE mail_recipients SET status = v.vstatus, attempts = v.vattempts, "+
		"last_attempt_at = COALESCE(v.vlast, last_attempt_at), final_at = v.vfinal, due_at = v.vdue, "+
		"remote_host = v.vhost, reply = v.vreply, lease_until = NULL, lease_owner = '' "+
		"FROM v WHERE mail_recipients.id = v.vid AND mail_recipients."+Record.from()+" AND mail_recipients.lease_owner = ? RETURNING id", args...).Scan(ctx, &updated)
	if err != nil {
		return nil, fmt.Errorf("mailstore: record outcomes: %w", err)
	}
	return updated, nil
}

// FailUnbuiltRecipient fails a claimed recipient whose message could not
// be built (no attempt was made). It reports whether the row was still
// leased to owner.
func FailUnbuiltRecipient(ctx context.Context, idb bun.IDB, owner string, id int64, now time.Time, reply string) (bool, error) {
	res, err := idb.NewRaw("UPDATE mail_recipients SET status = 'failed', final_at = ?, reply = ?, lease_until = NULL, lease_owner = '' "+
		"WHERE id = ? AND "+FailUnbuilt.from()+" AND lease_owner = ?", now, Truncate(reply, 2000), id, owner).Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("mailstore: fail recipient: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// Stopped is a recipient a cancellation ended.
type Stopped struct {
	ID        int64
	AccountID int64
	Origin    quota.Origin
	Attempts  int
}

// CancelRecipients ends every recipient of message id that is not yet
// sent or being sent and returns them; those with no attempt are the ones
// whose charge the caller releases, in the same transaction.
func CancelRecipients(ctx context.Context, idb bun.IDB, messageID string, now time.Time) ([]Stopped, error) {
	var out []Stopped
	if err := idb.NewRaw("UPDATE mail_recipients SET status = 'cancelled', final_at = ? "+
		"WHERE message_id = ? AND "+Cancel.from()+" RETURNING id, account_id, origin, attempts", now, messageID).Scan(ctx, &out); err != nil {
		return nil, fmt.Errorf("mailstore: cancel: %w", err)
	}
	slices.SortFunc(out, func(a, b Stopped) int { return cmp.Compare(a.ID, b.ID) })
	return out, nil
}

// SuppressClaimed ends claimed recipients whose address was suppressed
// after their acceptance: suppressed, final, the reason as their reply
// and the suppression's id. It returns the ids it changed (only those
// still leased to owner).
func SuppressClaimed(ctx context.Context, idb bun.IDB, owner string, now time.Time, ids []int64, suppressionID []int64, reply []string) ([]int64, error) {
	var changed []int64
	for i, id := range ids {
		var got []int64
		if err := idb.NewRaw("UPDATE mail_recipients SET status = 'suppressed', final_at = ?, reply = ?, suppressed_by = ?, lease_until = NULL, lease_owner = '' "+
			"WHERE id = ? AND "+Suppress.from()+" AND lease_owner = ? RETURNING id", now, Truncate(reply[i], 2000), suppressionID[i], id, owner).Scan(ctx, &got); err != nil {
			return nil, fmt.Errorf("mailstore: suppress recipient: %w", err)
		}
		changed = append(changed, got...)
	}
	return changed, nil
}

// BounceAfterDelivery records a bounce reported after the next hop took
// the message (a DSN), in idb (the caller's transaction): a sent recipient
// becomes bounced at now, with host and reply; its bounced event carries
// class and detail; the sent counter of the hour it was sent loses it and
// the bounced counter of now gains it. It reports whether the row changed
// (false: it was not sent — a second DSN for it, or one for a recipient
// never delivered — and nothing was written).
func BounceAfterDelivery(ctx context.Context, idb bun.IDB, id int64, now time.Time, host, reply, class, detail string) (bool, error) {
	var rows []RecipientRow
	if err := idb.NewSelect().Model(&rows).Where("id = ? AND "+BounceLater.from(), id).Scan(ctx); err != nil {
		return false, fmt.Errorf("mailstore: read recipient: %w", err)
	}
	if len(rows) == 0 || rows[0].FinalAt == nil {
		return false, nil
	}
	r := rows[0]
	res, err := idb.NewRaw("UPDATE mail_recipients SET status = 'bounced', final_at = ?, remote_host = ?, reply = ? WHERE id = ? AND "+BounceLater.from(),
		now, Truncate(host, 255), Truncate(reply, 2000), id).Exec(ctx)
	if err != nil {
		return false, fmt.Errorf("mailstore: bounce recipient: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return false, nil
	}
	ev := EventRow{RecipientID: r.ID, MessageID: r.MessageID, AccountID: r.AccountID, Origin: r.Origin, At: now,
		Type: StatusBounced, RemoteHost: Truncate(host, 255), Reply: Truncate(reply, 2000), Class: class, Detail: detail}
	if err := InsertEvents(ctx, idb, []EventRow{ev}); err != nil {
		return false, err
	}
	c := Counts{}
	c.Add(r.AccountID, r.Origin, *r.FinalAt, string(StatusSent), -1)
	c.Add(r.AccountID, r.Origin, now, string(StatusBounced), 1)
	return true, c.Write(ctx, idb)
}

// PromoteDue is PromoteDue on the store's database at the store's time.
func (s *Store) PromoteDue(ctx context.Context) (int, error) { return PromoteDue(ctx, s.DB, s.Now()) }
