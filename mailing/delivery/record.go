package delivery

import (
	"context"
	"encoding/json"
	"math"
	mathrand "math/rand/v2"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/bounce"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing/smtpout"
	"github.com/servir-pe/envios/quota"
)

// outcome is what happened to one claimed recipient, waiting to be recorded.
type outcome struct {
	it        mailstore.Claimed
	res       smtpout.Result
	attempted bool          // something was sent, or tried to be, to a server
	failed    string        // set: the message could not be built; fail without attempt
	retryIn   time.Duration // set: not attempted (local limits); due again after this
}

// recorder writes outcomes in batches: one transaction (one fsync) for up
// to recordBatchSize outcomes or whatever arrived within 20 ms. One batch
// is written at a time, in its own goroutine, while the next one gathers:
// a worker hands over its outcome and goes on delivering instead of
// waiting for a commit (that wait left a quarter of the CPU idle). Past
// recordBacklog outcomes waiting, the workers wait after all. A crash
// before a batch commits leaves its rows leased; they are retried after
// the lease, so delivery is at least once and nothing is lost.
func (e *Engine) recorder(ctx context.Context, in <-chan outcome) {
	var batch []outcome
	writing := make(chan struct{}, 1) // held while a batch is written
	var wg sync.WaitGroup
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	flush := func(wait bool) {
		if len(batch) == 0 {
			return
		}
		select {
		case writing <- struct{}{}:
		default:
			if !wait {
				return // the batch keeps gathering
			}
			writing <- struct{}{}
		}
		b := batch
		batch = nil
		wg.Go(func() {
			defer func() { <-writing }()
			for len(b) > 0 {
				n := min(len(b), recordBatchSize)
				e.recordBatch(ctx, b[:n])
				b = b[n:]
			}
		})
	}
	for {
		select {
		case o, ok := <-in:
			if !ok {
				flush(true)
				wg.Wait()
				return
			}
			batch = append(batch, o)
			if len(batch) >= recordBatchSize {
				flush(len(batch) >= recordBacklog)
			}
		case <-tick.C:
			flush(false)
		}
	}
}

// recordBatchSize is the most outcomes one transaction records, and
// recordBacklog the most that wait while one is being written.
const (
	recordBatchSize = 500
	recordBacklog   = 4 * recordBatchSize
)

// backoff is the wait before attempt n+1 after n failed attempts.
func (e *Engine) backoff(attempts int) time.Duration {
	d := float64(e.cfg.RetryBase) * math.Pow(2, float64(max(0, attempts-1)))
	d = math.Min(d, float64(e.cfg.RetryMax))
	return time.Duration(d * (0.8 + 0.4*mathrand.Float64()))
}

// recordBatch stores outcomes in one transaction. Each row is updated
// only if it is still leased to this engine.
func (e *Engine) recordBatch(ctx context.Context, batch []outcome) {
	now := e.st.Now()
	var done []counted
	// A batch is what every delivery of it turns into a row: one that loses
	// its connection (a database restart) is seen through by
	// store.RunInTx, or the leases would expire and the recipients be
	// delivered twice.
	err := store.RunInTx(ctx, e.st.DB, func(ctx context.Context, tx bun.Tx) error {
		var err error
		done, err = e.recordMany(ctx, tx, batch, now)
		return err
	})
	if err != nil {
		e.st.Logger.Error("recording delivery outcomes failed; the leases will expire and they will be retried",
			"recipients", len(batch), "err", err)
		return
	}
	for _, c := range done { // only what committed counts
		e.stats.record(c.status, c.accepted, now)
	}
}

// counted is an outcome recorded by recordMany, for the engine's Stats.
type counted struct {
	status   mailstore.Status
	accepted time.Time
}

// row is the new state of one recipient after an outcome.
type outcomeRow struct {
	status   mailstore.Status
	attempts int
	last     *time.Time
	final    *time.Time
	due      time.Time
	host     string
	reply    string
	class    bounce.Class // of a failure reply (4xx, 5xx) the server gave; "" otherwise
}

func (e *Engine) outcomeRow(o outcome, now time.Time) outcomeRow {
	it, r := o.it, o.res
	status := mailstore.StatusDeferred
	switch {
	case r.Delivered() && !r.LostAfterData:
		status = mailstore.StatusSent
	case r.Permanent():
		status = mailstore.StatusBounced
	}
	row := outcomeRow{attempts: it.Attempts, host: r.Host, reply: mailstore.Truncate(r.Reply(), 2000)}
	if o.attempted && r.Code >= 400 {
		row.class = bounce.Classify(r.Code, r.Enhanced, r.Text)
	}
	if o.attempted {
		row.attempts++
		row.last = &now
	}
	row.due = now.Add(e.backoff(max(1, row.attempts)))
	if o.retryIn > 0 {
		row.due = now.Add(o.retryIn)
	}
	if status == mailstore.StatusDeferred && row.due.Sub(it.AcceptedAt) > e.cfg.MaxAge {
		status = mailstore.StatusFailed
	}
	if status != mailstore.StatusDeferred {
		row.final = &now
	}
	row.status = status
	return row
}

// recordMany writes a batch's outcomes with one statement
// (mailstore.RecordOutcomes); the rare build failures go one by one.
func (e *Engine) recordMany(ctx context.Context, tx bun.Tx, batch []outcome, now time.Time) ([]counted, error) {
	var done []counted
	var outs []mailstore.Outcome
	rows := map[int64]outcomeRow{}
	for _, o := range batch {
		if o.failed != "" {
			ok, err := e.recordUnbuilt(ctx, tx, o, now)
			if err != nil {
				return nil, err
			}
			if ok {
				done = append(done, counted{mailstore.StatusFailed, o.it.AcceptedAt})
			}
			continue
		}
		r := e.outcomeRow(o, now)
		rows[o.it.ID] = r
		outs = append(outs, mailstore.Outcome{ID: o.it.ID, Status: r.status, Attempts: r.attempts, Last: r.last, Final: r.final,
			Due: r.due, Host: r.host, Reply: r.reply})
	}
	if len(outs) == 0 {
		return done, nil
	}
	updated, err := mailstore.RecordOutcomes(ctx, tx, e.cfg.Owner, outs)
	if err != nil {
		return nil, err
	}
	if len(updated) != len(rows) {
		e.st.Logger.Warn("some recipients were no longer leased to this engine; their outcomes were not recorded",
			"outcomes", len(rows), "recorded", len(updated))
	}
	recorded := make(map[int64]bool, len(updated))
	for _, id := range updated {
		recorded[id] = true
	}
	// The events and counters of the recipients recorded.
	var events []mailstore.EventRow
	c := mailstore.Counts{}
	for _, o := range batch {
		if r, ok := rows[o.it.ID]; ok && recorded[o.it.ID] {
			done = append(done, counted{r.status, o.it.AcceptedAt})
			if ev, ok := e.event(o, r, now); ok {
				events = append(events, ev)
				c.Add(o.it.AccountID, o.it.Origin, now, string(ev.Type), 1)
			}
		}
	}
	if err := mailstore.InsertEvents(ctx, tx, events); err != nil {
		return nil, err
	}
	if err := c.Write(ctx, tx); err != nil {
		return nil, err
	}
	if err := e.feedSuppressions(ctx, tx, batch, rows, recorded, now); err != nil {
		return nil, err
	}
	for _, o := range batch {
		if r, ok := rows[o.it.ID]; ok && r.status == mailstore.StatusFailed && r.attempts == 0 && recorded[o.it.ID] {
			if err := e.release(ctx, tx, o.it, "failed before any attempt"); err != nil {
				return nil, err
			}
		}
	}
	return done, nil
}

// recordUnbuilt fails a recipient whose message could not be built (no
// attempt was made) and releases its charge if it never had one. It
// reports whether the row was still leased to this engine.
func (e *Engine) recordUnbuilt(ctx context.Context, tx bun.IDB, o outcome, now time.Time) (bool, error) {
	it := o.it
	if ok, err := mailstore.FailUnbuiltRecipient(ctx, tx, e.cfg.Owner, it.ID, now, o.failed); !ok || err != nil {
		return false, err
	}
	ev := mailstore.EventRow{RecipientID: it.ID, MessageID: it.MessageID, AccountID: it.AccountID, Origin: it.Origin, At: now,
		Type: mailstore.StatusFailed, Reply: mailstore.Truncate(o.failed, 2000)}
	if err := mailstore.InsertEvents(ctx, tx, []mailstore.EventRow{ev}); err != nil {
		return false, err
	}
	c := mailstore.Counts{}
	c.Add(it.AccountID, it.Origin, now, string(mailstore.StatusFailed), 1)
	if err := c.Write(ctx, tx); err != nil {
		return false, err
	}
	if it.Attempts == 0 {
		return true, e.release(ctx, tx, it, "message could not be built")
	}
	return true, nil
}

func (e *Engine) release(ctx context.Context, tx bun.IDB, it mailstore.Claimed, reason string) error {
	var acct struct {
		Name   string
		Origin quota.Origin
	}
	if err := tx.NewRaw("SELECT a.name, m.origin FROM mail_messages AS m JOIN quota_accounts AS a ON a.id = m.account_id WHERE m.id = ?",
		it.MessageID).Scan(ctx, &acct); err != nil {
		return err
	}
	_, err := e.st.Ledger.Release(ctx, tx, quota.Release{Account: acct.Name, Amount: 1, Origin: acct.Origin,
		Reference: it.MessageID, Actor: "engine:" + e.cfg.Owner, Reason: reason})
	return err
}

// event is what an outcome adds to mail_events: every attempt, and a final
// change without one (failing at MaxAge while waiting for a destination's
// limits). Waiting alone is no event.
func (e *Engine) event(o outcome, r outcomeRow, now time.Time) (mailstore.EventRow, bool) {
	if !o.attempted && r.status == mailstore.StatusDeferred {
		return mailstore.EventRow{}, false
	}
	ev := mailstore.EventRow{RecipientID: o.it.ID, MessageID: o.it.MessageID, AccountID: o.it.AccountID, Origin: o.it.Origin, At: now,
		Type: r.status, Attempt: o.attempted, RemoteHost: r.host, Reply: r.reply, Class: string(r.class)}
	if r.class != "" {
		b, _ := json.Marshal(syncEvidence(o.res))
		ev.Detail = string(b)
	}
	return ev, true
}

// syncEvidence is what a failure reply during delivery leaves as evidence
// (in its event and any suppression it causes).
func syncEvidence(r smtpout.Result) map[string]string {
	m := map[string]string{"source": "sync", "diagnostic": mailstore.Truncate(r.Reply(), 1000)}
	if r.Enhanced != "" {
		m["status"] = r.Enhanced
	}
	if r.Host != "" {
		m["remote_mta"] = r.Host
	}
	return m
}

// feedSuppressions gives the suppression list what the batch's replies
// say about their addresses (in the batch's transaction): a failure is
// fed to its streak rules (suppress.Fail: hard now, soft after a streak,
// policy and message-level never), a delivery ends the address's streaks.
func (e *Engine) feedSuppressions(ctx context.Context, tx bun.Tx, batch []outcome, rows map[int64]outcomeRow, recorded map[int64]bool, now time.Time) error {
	var delivered []string
	for _, o := range batch {
		r, ok := rows[o.it.ID]
		if !ok || !recorded[o.it.ID] {
			continue
		}
		if r.status == mailstore.StatusSent {
			delivered = append(delivered, o.it.Address)
			continue
		}
		if !r.class.Suppresses() {
			continue
		}
		_, err := suppress.Fail(ctx, tx, suppress.Failure{Address: o.it.Address, Class: string(r.class), RecipientID: o.it.ID,
			Evidence: syncEvidence(o.res), Actor: "engine:" + e.cfg.Owner, Now: now})
		if err != nil {
			return err
		}
	}
	if len(delivered) == 0 {
		return nil
	}
	return suppress.Delivered(ctx, tx, delivered)
}
