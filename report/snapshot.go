package report

import (
	"context"
	"fmt"
	"time"

	"github.com/servir-pe/envios/quota"
)

// CounterTotal is one counter summed over all time: a monotonic count for
// monitoring (Prometheus).
type CounterTotal struct {
	Account string
	Origin  quota.Origin
	Kind    string // accepted, sent, deferred, bounced, failed, suppressed, cancelled
	N       int64
}

// Queue is what waits to be delivered.
type Queue struct {
	ByStatus map[string]int64 // queued, scheduled, deferred, sending
	// OldestDue is the earliest due time of a recipient due now (queued or
	// deferred); zero when none is.
	OldestDue time.Time
}

// CounterTotals sums every counter over all time, by account, origin and
// kind.
func (r *Reporter) CounterTotals(ctx context.Context) ([]CounterTotal, error) {
	var rows []struct {
		AccountID int64
		Origin    quota.Origin
		Kind      string
		N         int64
	}
	if err := r.db.NewRaw("SELECT account_id, origin, kind, sum(n) AS n FROM mail_counters GROUP BY account_id, origin, kind ORDER BY account_id, origin, kind").
		Scan(ctx, &rows); err != nil {
		return nil, fmt.Errorf("report: counters: %w", err)
	}
	names, err := r.accountNames(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]CounterTotal, len(rows))
	for i, x := range rows {
		out[i] = CounterTotal{Account: names[x.AccountID], Origin: x.Origin, Kind: x.Kind, N: x.N}
	}
	return out, nil
}

// Queue counts the recipients not yet final (through the partial index of
// the due ones and the lease index) and finds the oldest due.
func (r *Reporter) Queue(ctx context.Context) (Queue, error) {
	q := Queue{ByStatus: map[string]int64{}}
	var rows []struct {
		Status string
		N      int64
	}
	if err := r.db.NewRaw("SELECT status, count(*) AS n FROM mail_recipients WHERE status IN ('queued', 'scheduled', 'deferred', 'sending') GROUP BY status").
		Scan(ctx, &rows); err != nil {
		return q, fmt.Errorf("report: queue: %w", err)
	}
	for _, x := range rows {
		q.ByStatus[x.Status] = x.N
	}
	var due []time.Time
	if err := r.db.NewRaw("SELECT due_at FROM mail_recipients WHERE status IN ('queued', 'scheduled', 'deferred') AND due_at <= ? ORDER BY priority, due_at LIMIT 1",
		r.now().UTC()).Scan(ctx, &due); err != nil {
		return q, fmt.Errorf("report: queue: %w", err)
	}
	if len(due) == 1 {
		q.OldestDue = due[0]
	}
	return q, nil
}
