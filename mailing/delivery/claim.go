package delivery

import (
	"context"
	"strings"

	"github.com/servir-pe/envios/internal/mailstore"
)

// group splits claimed recipients (in claim order) into transactions: the
// transactional recipients of one single message at one domain go
// together, up to MaxRecipientsPerTransaction; every other recipient goes
// alone. A group keeps the claim order, so its first recipient has the
// lowest id; the groups are ordered by their first recipient.
func (e *Engine) group(ctx context.Context, items []mailstore.Claimed) [][]mailstore.Claimed {
	type key struct{ message, domain string }
	open := map[key]int{}       // the group of each key still taking recipients
	shared := map[string]bool{} // per message: do its recipients get the same bytes?
	groups := make([][]mailstore.Claimed, 0, len(items))
	for _, it := range items {
		if it.Priority > 0 || e.cfg.MaxRecipientsPerTransaction < 2 {
			groups = append(groups, []mailstore.Claimed{it}) // bulk: a List-Unsubscribe token each
			continue
		}
		k := key{it.MessageID, domainOf(it.Address)}
		if i, ok := open[k]; ok && e.sameBytes(ctx, shared, it.MessageID) {
			groups[i] = append(groups[i], it)
			if len(groups[i]) >= e.cfg.MaxRecipientsPerTransaction {
				delete(open, k)
			}
			continue
		}
		open[k] = len(groups)
		groups = append(groups, []mailstore.Claimed{it})
	}
	return groups
}

// sameBytes reports whether every recipient of a message is sent the same
// bytes: a single message (Send), not a batch, whose recipients are each
// rendered from their own data. It is asked only for messages with
// several recipients claimed together, and remembers its answers in known.
// A message that cannot be read is not grouped (its delivery reports why).
func (e *Engine) sameBytes(ctx context.Context, known map[string]bool, messageID string) bool {
	same, ok := known[messageID]
	if !ok {
		src, err := e.source(ctx, messageID)
		same = err == nil && !src.Personal()
		known[messageID] = same
	}
	return same
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

func (e *Engine) claim(ctx context.Context) ([]mailstore.Claimed, error) {
	now := e.st.Now()
	if _, err := mailstore.ExpireLeases(ctx, e.st.DB, now); err != nil {
		return nil, err
	}
	return mailstore.ClaimDue(ctx, e.st.DB, e.cfg.Owner, now, now.Add(e.cfg.Lease), e.cfg.Batch)
}

func (e *Engine) unclaim(ctx context.Context, items []mailstore.Claimed) {
	ids := make([]int64, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	if err := mailstore.ReturnLeases(ctx, e.st.DB, e.cfg.Owner, ids); err != nil {
		e.st.Logger.Error("returning leases failed; they expire on their own", "err", err)
	}
}
