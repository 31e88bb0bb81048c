package mailstore

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/quota"
)

// Counters and events: every change of a recipient's status that reports
// count is written with it, in its transaction — the recipient row, an
// event (mail_events) for a delivery attempt or a final change, and the
// hourly counter (mail_counters) of its kind. Reports read the counters,
// never a scan of the recipients; report.Verify recounts them.

// Counter kinds: "accepted" and the event types.
const KindAccepted = "accepted"

// Hour is the counters' time bucket: whole hours since 1970, UTC.
func Hour(t time.Time) int64 { return t.Unix() / 3600 }

// CounterKey is one counter: an account, an origin, an hour and a kind.
type CounterKey struct {
	Account int64
	Origin  quota.Origin
	Hour    int64
	Kind    string
}

// Counts accumulates counter increments for one transaction.
type Counts map[CounterKey]int64

// Add counts n of kind at the hour of at.
func (c Counts) Add(account int64, origin quota.Origin, at time.Time, kind string, n int64) {
	if n != 0 {
		c[CounterKey{account, origin, Hour(at), kind}] += n
	}
}

// Write adds the increments with one statement.
func (c Counts) Write(ctx context.Context, idb bun.IDB) error {
	if len(c) == 0 {
		return nil
	}
	if _, err := c.Upsert(idb).Exec(ctx); err != nil {
		return fmt.Errorf("mailstore: count: %w", err)
	}
	return nil
}

// Keys are c's keys in order: two transactions lock the counters they
// share in the same order.
func (c Counts) Keys() []CounterKey {
	return slices.SortedFunc(maps.Keys(c), func(a, b CounterKey) int {
		return cmp.Or(cmp.Compare(a.Account, b.Account), cmp.Compare(a.Origin, b.Origin), cmp.Compare(a.Hour, b.Hour), cmp.Compare(a.Kind, b.Kind))
	})
}

// Upsert is the statement that adds the increments (c must not be empty),
// rows in key order.
func (c Counts) Upsert(idb bun.IDB) *bun.RawQuery {
	values := make([]string, 0, len(c))
	args := make([]any, 0, 5*len(c))
	for _, k := range c.Keys() {
		values = append(values, "(?, ?, ?, ?, ?)")
		args = append(args, k.Account, k.Origin, k.Hour, k.Kind, c[k])
	}
	return idb.NewRaw("INSERT INTO mail_counters (account_id, origin, hour, kind, n) VALUES "+strings.Join(values, ", ")+
		" ON CONFLICT (account_id, origin, hour, kind) DO UPDATE SET n = mail_counters.n + excluded.n", args...)
}

// EventRow is one event of one recipient (mail_events).
type EventRow struct {
	bun.BaseModel `bun:"table:mail_events"`
	ID            int64 `bun:",pk,autoincrement"`
	RecipientID   int64
	MessageID     string
	AccountID     int64
	Origin        quota.Origin
	At            time.Time
	Type          Status
	Attempt       bool
	RemoteHost    string
	Reply         string
	Class         string // a failure's class (internal/bounce): hard, transient, policy…
	Detail        string // JSON: status, diagnostic, reporting MTA, method, scope, sync or async
}

// InsertEvents appends events.
func InsertEvents(ctx context.Context, idb bun.IDB, events []EventRow) error {
	if len(events) == 0 {
		return nil
	}
	if _, err := idb.NewInsert().Model(&events).Exec(ctx); err != nil {
		return fmt.Errorf("mailstore: record events: %w", err)
	}
	return nil
}
