package suppress

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
)

// The classes of failure (internal/bounce.Class) that feedback acts on.
const (
	classHard         = "hard"
	classDisabled     = "disabled"
	classTransient    = "transient"
	classUndetermined = "undetermined"
)

// The streak rules (design notes, RFC 3463 table).
const (
	softFailures = 3                   // transient failures …
	softSpan     = 14 * 24 * time.Hour // … spanning at least this, with no delivery between
	disabledGap  = 7 * 24 * time.Hour  // a second "account disabled" at least this after the first
)

// Failure is one delivery failure of an address, synchronous (a 4xx or
// 5xx during delivery) or asynchronous (a DSN).
type Failure struct {
	Address     string
	Class       string // internal/bounce.Class
	RecipientID int64
	Evidence    map[string]string // status, diagnostic, remote_mta, reporting_mta, sync|async
	Actor       string
	Now         time.Time
}

// Fail applies a failure: a hard one suppresses the address for all mail
// now; "account disabled" on its second occurrence at least 7 days after
// the first; transient and undetermined ones after a streak of 3 spanning
// 14 days with no delivery between (30 days); message-level and policy
// failures never suppress. It returns the suppression it added, if any.
func Fail(ctx context.Context, idb bun.IDB, f Failure) (*Entry, error) {
	addr := Normalize(f.Address)
	add := Add{Address: addr, Scope: ScopeAll, Actor: f.Actor, RecipientID: f.RecipientID, Evidence: f.Evidence, Now: f.Now}
	switch f.Class {
	case classHard:
		add.Reason = ReasonHardBounce
	case classDisabled, classTransient, classUndetermined:
		streak := f.Class
		if streak == classUndetermined {
			streak = classTransient
		}
		n, first, err := failed(ctx, idb, addr, streak, f.Now)
		if err != nil {
			return nil, err
		}
		span := f.Now.Sub(first)
		switch {
		case streak == classDisabled && n >= 2 && span >= disabledGap:
			add.Reason = ReasonHardBounce
		case streak == classTransient && n >= softFailures && span >= softSpan:
			add.Reason = ReasonSoftStreak
		default:
			return nil, nil
		}
	default:
		return nil, nil // message-level, policy: never the recipient's fault
	}
	e, added, err := Insert(ctx, idb, add)
	if err != nil || !added {
		return nil, err
	}
	return &e, nil
}

// failed counts a failure in the address's streak of class and returns
// the streak's length and start.
func failed(ctx context.Context, idb bun.IDB, addr, class string, now time.Time) (int, time.Time, error) {
	var row struct {
		N       int
		FirstAt time.Time
	}
	err := idb.NewRaw("INSERT INTO mail_failure_streaks (address, class, first_at, last_at, n) VALUES (?, ?, ?, ?, 1) "+
		"ON CONFLICT (address, class) DO UPDATE SET n = mail_failure_streaks.n + 1, last_at = excluded.last_at RETURNING n, first_at",
		addr, class, now.UTC(), now.UTC()).Scan(ctx, &row)
	if err != nil {
		return 0, time.Time{}, fmt.Errorf("suppress: count failure: %w", err)
	}
	return row.N, row.FirstAt, nil
}

// Delivered ends the failure streaks of addresses mail was delivered to.
func Delivered(ctx context.Context, idb bun.IDB, addrs []string) error {
	if len(addrs) == 0 {
		return nil
	}
	norm := make([]string, len(addrs))
	for i, a := range addrs {
		norm[i] = Normalize(a)
	}
	if _, err := idb.NewRaw("DELETE FROM mail_failure_streaks WHERE address IN (?)", bun.List(norm)).Exec(ctx); err != nil {
		return fmt.Errorf("suppress: end streaks: %w", err)
	}
	return nil
}

// recipient is what feedback reads of the recipient a token names.
type recipient struct {
	mailstore.RecipientRow `bun:",extend"`
	Campaign               string `bun:",scanonly"`
}

func readRecipient(ctx context.Context, idb bun.IDB, id int64) (recipient, error) {
	var r recipient
	err := idb.NewSelect().Model(&r).ColumnExpr("?TableColumns").ColumnExpr("m.campaign AS campaign").
		Join("JOIN mail_messages AS m ON m.id = r.message_id").Where("r.id = ?", id).Scan(ctx)
	if err != nil {
		return r, fmt.Errorf("%w: recipient %d: %v", ErrNotFound, id, err)
	}
	return r, nil
}

// Unsubscribe records that recipient id's address asks for no more bulk
// mail from the account that sent it, of the message's campaign label
// (or all of the account's bulk mail when the message had none), by
// method ("one-click", "page", "mailto"). Unsubscribing twice changes
// nothing the second time (added false). The recipient gets an
// unsubscribed event.
func Unsubscribe(ctx context.Context, idb bun.IDB, id int64, method, actor string, now time.Time) (e Entry, added bool, err error) {
	r, err := readRecipient(ctx, idb, id)
	if err != nil {
		return Entry{}, false, err
	}
	e, added, err = Insert(ctx, idb, Add{Address: r.Address, Scope: ScopeAccount, AccountID: r.AccountID, Topic: r.Campaign,
		Reason: ReasonUnsubscribe, Actor: actor, RecipientID: r.ID, Evidence: map[string]string{"method": method}, Now: now})
	if err != nil || !added {
		return e, added, err
	}
	ev := mailstore.EventRow{RecipientID: r.ID, MessageID: r.MessageID, AccountID: r.AccountID, Origin: r.Origin, At: now.UTC(),
		Type: mailstore.EventUnsubscribed, Detail: detail(map[string]string{"method": method, "scope": string(e.Scope), "topic": e.Topic})}
	if err := mailstore.InsertEvents(ctx, idb, []mailstore.EventRow{ev}); err != nil {
		return e, added, err
	}
	c := mailstore.Counts{}
	c.Add(r.AccountID, r.Origin, now, string(mailstore.EventUnsubscribed), 1)
	return e, added, c.Write(ctx, idb)
}

// Complain records a complaint (an ARF or JMRP report) about recipient
// id: a complained event and a suppression of all bulk mail to its
// address. Transactional mail still goes. A second complaint while the
// address is suppressed for bulk mail changes nothing (added false): a
// provider that reports one message twice is one complaint.
func Complain(ctx context.Context, idb bun.IDB, id int64, evidence map[string]string, actor string, now time.Time) (e Entry, added bool, err error) {
	r, err := readRecipient(ctx, idb, id)
	if err != nil {
		return Entry{}, false, err
	}
	e, added, err = Insert(ctx, idb, Add{Address: r.Address, Scope: ScopeBulk, Reason: ReasonComplaint, Actor: actor, RecipientID: r.ID,
		Evidence: evidence, Now: now})
	if err != nil || !added {
		return e, added, err
	}
	ev := mailstore.EventRow{RecipientID: r.ID, MessageID: r.MessageID, AccountID: r.AccountID, Origin: r.Origin, At: now.UTC(),
		Type: mailstore.EventComplained, Detail: detail(evidence)}
	if err := mailstore.InsertEvents(ctx, idb, []mailstore.EventRow{ev}); err != nil {
		return e, added, err
	}
	c := mailstore.Counts{}
	c.Add(r.AccountID, r.Origin, now, string(mailstore.EventComplained), 1)
	return e, added, c.Write(ctx, idb)
}

// detail is an event's detail: its evidence as a JSON object.
func detail(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	b, _ := json.Marshal(m)
	return string(b)
}
