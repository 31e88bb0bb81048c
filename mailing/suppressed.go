package mailing

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/quota"
)

// Suppressed is a recipient that was on the suppression list: stored with
// status suppressed, not charged, never sent.
type Suppressed struct {
	Address string
	Reason  string // "suppressed: hard_bounce (all mail) since 2026-12-03"
}

// suppressed reads the suppression list once for every recipient of the
// group's messages, notes in each pending message which recipients are
// stopped, and lowers its charge by as many.
func (m *Mailer) suppressed(ctx context.Context, tx bun.IDB, chk *checker, group []*pending, charges []quota.Charge) error {
	var addrs []string
	for _, p := range group {
		for _, r := range p.rcpts {
			addrs = append(addrs, r.addr.Addr)
		}
	}
	set, err := suppress.Lookup(ctx, tx, addrs, m.now())
	if err != nil || len(set) == 0 {
		return err
	}
	for i, p := range group {
		mail := suppress.Mail{AccountID: chk.accounts[p.c.account].ID, Bulk: p.c.priority > 0, Topic: p.c.campaign}
		for j, r := range p.rcpts {
			if e, ok := set.Stops(r.addr.Addr, mail); ok {
				if p.stopped == nil {
					p.stopped = map[int]suppress.Entry{}
				}
				p.stopped[j] = e
			}
		}
		charges[i].Amount -= int64(len(p.stopped))
	}
	return nil
}

// chargeGroup charges what is to be charged: a message whose every
// recipient is suppressed costs nothing and is not charged at all.
func (m *Mailer) chargeGroup(ctx context.Context, tx bun.IDB, charges []quota.Charge) ([]error, error) {
	var some []quota.Charge
	var at []int
	for i, c := range charges {
		if c.Amount > 0 {
			some = append(some, c)
			at = append(at, i)
		}
	}
	errs := make([]error, len(charges))
	if len(some) == 0 {
		return errs, nil
	}
	got, err := m.ledger.ChargeBatch(ctx, tx, some)
	if err != nil {
		return nil, err
	}
	for k, i := range at {
		errs[i] = got[k]
	}
	return errs, nil
}

// suppressRow makes row a suppressed recipient: final at acceptance, with
// the suppression's reason and id.
func suppressRow(row *mailstore.RecipientRow, e suppress.Entry, now time.Time) {
	row.Status = mailstore.StatusSuppressed
	row.FinalAt = &now
	row.Reply = suppress.Describe(e)
	id := e.ID
	row.SuppressedBy = &id
}

// recordSuppressed writes, for the suppressed rows just inserted (their
// ids known), what the insert could not carry on PostgreSQL (final time,
// reason, suppression), their suppressed events and counters.
func recordSuppressed(ctx context.Context, tx bun.IDB, pg bool, rows []mailstore.RecipientRow) error {
	var events []mailstore.EventRow
	c := mailstore.Counts{}
	for _, r := range rows {
		if r.Status != mailstore.StatusSuppressed {
			continue
		}
		if pg { // the array insert writes the common columns only
			if _, err := tx.NewRaw("UPDATE mail_recipients SET final_at = ?, reply = ?, suppressed_by = ? WHERE id = ?",
				r.FinalAt, r.Reply, r.SuppressedBy, r.ID).Exec(ctx); err != nil {
				return fmt.Errorf("mailing: store suppressed recipient: %w", err)
			}
		}
		events = append(events, mailstore.EventRow{RecipientID: r.ID, MessageID: r.MessageID, AccountID: r.AccountID, Origin: r.Origin,
			At: *r.FinalAt, Type: mailstore.StatusSuppressed, Reply: r.Reply})
		c.Add(r.AccountID, r.Origin, *r.FinalAt, string(mailstore.StatusSuppressed), 1)
	}
	if err := mailstore.InsertEvents(ctx, tx, events); err != nil {
		return err
	}
	return c.Write(ctx, tx)
}

// stopped marks the rows of a batch chunk whose address is on the
// suppression list for this batch (one query for the chunk) and returns
// their seqs.
func (s *batchState) stopped(ctx context.Context, tx bun.IDB, chunk []mailstore.RecipientRow, now time.Time) (map[int]*mailstore.RecipientRow, error) {
	addrs := make([]string, len(chunk))
	for i, r := range chunk {
		addrs[i] = r.Address
	}
	set, err := suppress.Lookup(ctx, tx, addrs, now)
	if err != nil || len(set) == 0 {
		return nil, err
	}
	mail := suppress.Mail{AccountID: s.acct.ID, Bulk: s.c.priority > 0, Topic: s.c.campaign}
	stopped := map[int]*mailstore.RecipientRow{}
	for i := range chunk {
		if e, ok := set.Stops(chunk[i].Address, mail); ok {
			suppressRow(&chunk[i], e, now)
			stopped[chunk[i].Seq] = &chunk[i]
		}
	}
	return stopped, nil
}

// onlySeqs keeps the rows of stopped whose seq is in seqs.
func onlySeqs(stopped map[int]*mailstore.RecipientRow, seqs []int) map[int]*mailstore.RecipientRow {
	if len(stopped) == 0 {
		return nil
	}
	out := map[int]*mailstore.RecipientRow{}
	for _, q := range seqs {
		if r, ok := stopped[q]; ok {
			out[q] = r
		}
	}
	return out
}

// recordBatchSuppressed reads the ids of a chunk's suppressed rows just
// stored and writes their events and counters.
func recordBatchSuppressed(ctx context.Context, tx bun.IDB, messageID string, stopped map[int]*mailstore.RecipientRow) error {
	if len(stopped) == 0 {
		return nil
	}
	seqs := make([]int, 0, len(stopped))
	for q := range stopped {
		seqs = append(seqs, q)
	}
	var ids []struct {
		ID  int64
		Seq int
	}
	if err := tx.NewRaw("SELECT id, seq FROM mail_recipients WHERE message_id = ? AND seq IN (?)", messageID, bun.List(seqs)).Scan(ctx, &ids); err != nil {
		return fmt.Errorf("mailing: read suppressed recipients: %w", err)
	}
	rows := make([]mailstore.RecipientRow, 0, len(ids))
	for _, x := range ids {
		r := *stopped[x.Seq]
		r.ID = x.ID
		rows = append(rows, r)
	}
	return recordSuppressed(ctx, tx, false, rows)
}
