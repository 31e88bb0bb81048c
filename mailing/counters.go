package mailing

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
const kindAccepted = "accepted"

// Hour is the counters' time bucket: whole hours since 1970, UTC.
func Hour(t time.Time) int64 { return t.Unix() / 3600 }

type counterKey struct {
	account int64
	origin  quota.Origin
	hour    int64
	kind    string
}

// counts accumulates counter increments for one transaction.
type counts map[counterKey]int64

func (c counts) add(account int64, origin quota.Origin, at time.Time, kind string, n int64) {
	if n != 0 {
		c[counterKey{account, origin, Hour(at), kind}] += n
	}
}

// write adds the increments with one statement.
func (c counts) write(ctx context.Context, idb bun.IDB) error {
	if len(c) == 0 {
		return nil
	}
	if _, err := c.upsert(idb).Exec(ctx); err != nil {
		return fmt.Errorf("mailing: count: %w", err)
	}
	return nil
}

// keys are c's keys in order: two transactions lock the counters they
// share in the same order.
func (c counts) keys() []counterKey {
	return slices.SortedFunc(maps.Keys(c), func(a, b counterKey) int {
		return cmp.Or(cmp.Compare(a.account, b.account), cmp.Compare(a.origin, b.origin), cmp.Compare(a.hour, b.hour), cmp.Compare(a.kind, b.kind))
	})
}

// upsert is the statement that adds the increments (c must not be empty),
// rows in key order.
func (c counts) upsert(idb bun.IDB) *bun.RawQuery {
	values := make([]string, 0, len(c))
	args := make([]any, 0, 5*len(c))
	for _, k := range c.keys() {
		values = append(values, "(?, ?, ?, ?, ?)")
		args = append(args, k.account, k.origin, k.hour, k.kind, c[k])
	}
	return idb.NewRaw("INSERT INTO mail_counters (account_id, origin, hour, kind, n) VALUES "+strings.Join(values, ", ")+
		" ON CONFLICT (account_id, origin, hour, kind) DO UPDATE SET n = mail_counters.n + excluded.n", args...)
}

// eventRow is one event of one recipient (mail_events).
type eventRow struct {
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
}

func insertEvents(ctx context.Context, idb bun.IDB, events []eventRow) error {
	if len(events) == 0 {
		return nil
	}
	if _, err := idb.NewInsert().Model(&events).Exec(ctx); err != nil {
		return fmt.Errorf("mailing: record events: %w", err)
	}
	return nil
}
