package delivery

import (
	"context"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
)

// resuppress checks the claimed recipients against the suppression list
// once more (an address may have bounced, complained or unsubscribed
// since its message was accepted): those it now stops end suppressed, not
// sent, their charge released if they were never attempted. It returns
// the others, and how many it ended. A list that cannot be read is logged
// and the recipients go on: acceptance checked them already.
func (e *Engine) resuppress(ctx context.Context, items []mailstore.Claimed) ([]mailstore.Claimed, int) {
	addrs := make([]string, len(items))
	for i, it := range items {
		addrs[i] = it.Address
	}
	now := e.st.Now()
	set, err := suppress.Lookup(ctx, e.st.DB, addrs, now)
	if err != nil {
		e.st.Logger.Error("reading the suppression list at claim failed; delivering the recipients checked at acceptance", "err", err)
		return items, 0
	}
	if len(set) == 0 {
		return items, 0
	}
	var keep, stop []mailstore.Claimed
	var entries []suppress.Entry
	for _, it := range items {
		topic := ""
		if src, err := e.source(ctx, it.MessageID); err == nil {
			topic = src.Msg.Campaign
		}
		if s, ok := set.Stops(it.Address, suppress.Mail{AccountID: it.AccountID, Bulk: it.Priority > 0, Topic: topic}); ok {
			stop = append(stop, it)
			entries = append(entries, s)
			continue
		}
		keep = append(keep, it)
	}
	if len(stop) == 0 {
		return items, 0
	}
	err = store.RunInTx(ctx, e.st.DB, func(ctx context.Context, tx bun.Tx) error {
		return e.recordSuppressed(ctx, tx, stop, entries, now)
	})
	if err != nil {
		e.st.Logger.Error("recording suppressed recipients failed; their leases will expire", "recipients", len(stop), "err", err)
		return keep, 0
	}
	for range stop {
		e.stats.record(mailstore.StatusSuppressed, now, now)
	}
	return keep, len(stop)
}

// recordSuppressed ends claimed recipients as suppressed by entries.
func (e *Engine) recordSuppressed(ctx context.Context, tx bun.IDB, stop []mailstore.Claimed, entries []suppress.Entry, now time.Time) error {
	ids := make([]int64, len(stop))
	by := make([]int64, len(stop))
	reply := make([]string, len(stop))
	for i, it := range stop {
		ids[i], by[i], reply[i] = it.ID, entries[i].ID, suppress.Describe(entries[i])
	}
	changed, err := mailstore.SuppressClaimed(ctx, tx, e.cfg.Owner, now, ids, by, reply)
	if err != nil {
		return err
	}
	done := map[int64]bool{}
	for _, id := range changed {
		done[id] = true
	}
	var events []mailstore.EventRow
	c := mailstore.Counts{}
	for i, it := range stop {
		if !done[it.ID] {
			continue
		}
		events = append(events, mailstore.EventRow{RecipientID: it.ID, MessageID: it.MessageID, AccountID: it.AccountID, Origin: it.Origin,
			At: now, Type: mailstore.StatusSuppressed, Reply: reply[i]})
		c.Add(it.AccountID, it.Origin, now, string(mailstore.StatusSuppressed), 1)
		if it.Attempts == 0 {
			if err := e.release(ctx, tx, it, "suppressed before any attempt"); err != nil {
				return err
			}
		}
	}
	if err := mailstore.InsertEvents(ctx, tx, events); err != nil {
		return err
	}
	return c.Write(ctx, tx)
}
