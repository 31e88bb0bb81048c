package mailing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"golang.org/x/sync/errgroup"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/compose"
	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/quota"
)

// Batch is one personalised message for many recipients: Subject and Text
// are text/template templates, HTML an html/template template, executed
// with each recipient's Data. Every recipient becomes a message of its own,
// with its own Message-ID.
type Batch struct {
	Account        string
	From           string
	ReplyTo        []string
	Subject        string // template
	Text, HTML     string // templates; at least one
	Headers        []Header
	Attachments    []Attachment
	Tags           []string
	Campaign       string
	Priority       Priority  // default Bulk
	SendAt         time.Time // zero or past: now
	IdempotencyKey string    // optional; the same key resumes the batch where it stopped
	Origin         quota.Origin
	Actor          string

	// Recipients streams the recipients; it is read once, in order, and
	// only a chunk is held in memory at a time. An error it yields stops
	// the batch (what was committed stays).
	Recipients iter.Seq2[Recipient, error]

	// Expected, when known (> 0), is how many recipients Recipients yields.
	// A batch whose Expected exceeds what the account has left is refused
	// whole before anything is stored or charged.
	Expected int
}

// Recipient is one batch recipient and the data its templates see: a map
// with string keys or a struct (field names, or their json tags). The data
// is stored as JSON and rendered from that JSON at delivery, so templates
// see exactly what was checked at acceptance. Data is never itself
// executed as a template.
type Recipient struct {
	Address string
	Data    any
}

// List makes a Recipients sequence from a slice.
func List(rs ...Recipient) iter.Seq2[Recipient, error] {
	return func(yield func(Recipient, error) bool) {
		for _, r := range rs {
			if !yield(r, nil) {
				return
			}
		}
	}
}

// Rejection is a recipient a batch skipped, and why.
type Rejection struct {
	Index   int // position in the Recipients sequence, from 0
	Address string
	Err     error
}

// BatchReceipt says what SendBatch stored.
type BatchReceipt struct {
	MessageID  string
	Accepted   int         // recipients stored and charged by this call
	Suppressed int         // recipients this call stored as suppressed (on the suppression list): not charged, never sent
	Resumed    int         // recipients an earlier call with the same key had already stored
	Rejected   []Rejection // the first 1,000 recipients refused for their address or data
	NRejected  int         // all of them
}

// SendBatch validates the batch and parses its templates once, then reads
// Recipients and stores them in chunks of Config.ChunkSize, each chunk
// committed in one transaction with its charge (one message per
// recipient). A recipient whose address is invalid, or whose data does not
// fill the templates (a missing field, a subject that would contain a line
// break), is rejected and reported, and costs nothing; the others go on.
//
// If a chunk cannot be charged (quota.ErrInsufficient and the like), the
// batch stops there: the chunks already committed stay queued, the receipt
// says how many, and the error is returned. Calling again with the same
// IdempotencyKey and the same recipients stores and charges only those not
// stored before (Resumed counts the others), so a retry never stores or
// charges a recipient twice.
//
// Recipients is read from a goroutine of SendBatch's own, while up to
// Config.Committers chunks commit concurrently.
func (m *Mailer) SendBatch(ctx context.Context, b Batch) (BatchReceipt, error) {
	r, err := m.sendBatch(ctx, b)
	return r, refusal(err)
}

func (m *Mailer) sendBatch(ctx context.Context, b Batch) (BatchReceipt, error) {
	if err := m.enter(); err != nil {
		return BatchReceipt{}, err
	}
	defer m.inflight.Done()
	if b.Priority == "" {
		b.Priority = Bulk
	}
	c, err := m.validateCommon(b.Account, b.From, b.ReplyTo, b.Subject, b.Text, b.HTML,
		b.Headers, b.Attachments, b.Tags, b.Campaign, b.Priority, b.SendAt, b.IdempotencyKey, b.Origin, b.Actor)
	if err != nil {
		return BatchReceipt{}, err
	}
	if b.Recipients == nil {
		return BatchReceipt{}, mailerr.New(ErrNoRecipients, "recipients", "a batch needs recipients")
	}
	tpl, err := compose.ParseTemplates(c.subject, c.text, c.html, m.cfg.MaxMessageSize)
	if err != nil {
		return BatchReceipt{}, err
	}
	acct, err := m.checkAccount(ctx, m.db, c)
	if err != nil {
		return BatchReceipt{}, err
	}

	rec := BatchReceipt{MessageID: m.cfg.NewID()}
	created, stored := false, 0 // an earlier call with the key: its message and recipient count
	if c.key != "" {
		k, ok, err := byKey(ctx, m.db, acct.ID, c.key)
		if err != nil {
			return rec, err
		}
		if ok {
			rec.MessageID, created, stored = k.id, true, k.recipients
			if k.cancelled {
				return rec, mailerr.New(ErrCancelled, "", "the batch was cancelled")
			}
		}
	}
	if b.Expected > 0 {
		a, err := m.ledger.Account(ctx, c.account)
		if err != nil {
			return rec, err
		}
		if need := int64(b.Expected - stored); need > a.Remaining() {
			return rec, &quota.InsufficientError{Account: a.Name, Requested: need, Remaining: max(0, a.Remaining())}
		}
	}

	s := &batchState{m: m, c: c, acct: acct, id: rec.MessageID, now: m.now()}
	s.created.Store(created)
	s.noCopy.Store(created) // resuming: some rows may exist already
	// Recipients due at a fixed send-at time are scheduled; the others are
	// due when their chunk commits (the scheduler treats a past due_at as now).
	s.status, s.due = StatusQueued, s.now
	if c.sendAt.After(s.now) {
		s.status, s.due = StatusScheduled, c.sendAt
	}

	err = s.pipeline(ctx, b.Recipients, tpl, &rec)
	sort.Slice(rec.Rejected, func(i, j int) bool { return rec.Rejected[i].Index < rec.Rejected[j].Index })
	rec.MessageID = s.id
	rec.Accepted, rec.Resumed, rec.Suppressed = int(s.accepted.Load()), int(s.resumed.Load()), int(s.suppressed.Load())
	if err != nil {
		return rec, err
	}
	if !s.created.Load() {
		if rec.NRejected > 0 {
			return rec, mailerr.Wrap(ErrNoRecipients, "recipients", rec.Rejected[0].Err, fmt.Sprintf("all %d recipients were rejected (first: %v)", rec.NRejected, rec.Rejected[0].Err))
		}
		return rec, mailerr.New(ErrNoRecipients, "recipients", "a batch needs recipients")
	}
	return rec, nil
}

// pipeline reads recipients into raw chunks, renders them and commits
// them, noting rejections in rec.
func (s *batchState) pipeline(ctx context.Context, recipients iter.Seq2[Recipient, error], tpl *compose.Templates, rec *BatchReceipt) error {
	m := s.m
	// The pipeline: one goroutine reads Recipients into raw chunks; one
	// worker per CPU validates and renders them (CPU-bound); up to
	// Config.Committers commit rendered chunks concurrently (database-bound).
	// Whichever chunk commits first creates the message row, alone.
	type rawChunk struct {
		start int
		recs  []Recipient
	}
	g, gctx := errgroup.WithContext(ctx)
	raw := make(chan rawChunk, 2)
	ready := make(chan []mailstore.RecipientRow, m.cfg.Committers)
	var rejMu sync.Mutex
	reject := func(i int, addr string, err error) {
		rejMu.Lock()
		defer rejMu.Unlock()
		rec.NRejected++
		if len(rec.Rejected) < 1000 {
			rec.Rejected = append(rec.Rejected, Rejection{Index: i, Address: addr, Err: err})
		}
	}
	g.Go(func() error {
		defer close(raw)
		send := func(c rawChunk) error {
			select {
			case raw <- c:
				return nil
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		cur := rawChunk{recs: make([]Recipient, 0, m.cfg.ChunkSize)}
		i := -1
		for r, err := range recipients {
			i++
			if err != nil {
				return fmt.Errorf("mailing: batch recipient %d: %w", i, err)
			}
			cur.recs = append(cur.recs, r)
			if len(cur.recs) == m.cfg.ChunkSize {
				if err := send(cur); err != nil {
					return err
				}
				cur = rawChunk{start: i + 1, recs: make([]Recipient, 0, m.cfg.ChunkSize)}
			}
		}
		if len(cur.recs) > 0 {
			return send(cur)
		}
		return nil
	})
	var workers sync.WaitGroup
	for range max(1, runtime.GOMAXPROCS(0)) {
		workers.Add(1)
		g.Go(func() error {
			defer workers.Done()
			for rc := range raw {
				rows := make([]mailstore.RecipientRow, 0, len(rc.recs))
				for j, r := range rc.recs {
					row, err := m.batchRecipient(tpl, r)
					if err != nil {
						reject(rc.start+j, r.Address, err)
						continue
					}
					row.Seq = rc.start + j
					rows = append(rows, row)
				}
				if len(rows) == 0 {
					continue
				}
				select {
				case ready <- rows:
				case <-gctx.Done():
					return gctx.Err()
				}
			}
			return nil
		})
	}
	go func() { workers.Wait(); close(ready) }()
	for range m.cfg.Committers {
		g.Go(func() error {
			// Commits use ctx, not gctx: when one chunk fails, the others
			// already committing finish (and are reported) rather than abort.
			for rows := range ready {
				if err := s.commit(ctx, rows); err != nil {
					return err
				}
			}
			return nil
		})
	}
	err := g.Wait()
	for range ready { // drain what a failed pipeline left, so the closer ends
	}
	return err
}

// batchRecipient validates one recipient and renders its templates with
// the JSON form of its data, exactly as delivery will.
func (m *Mailer) batchRecipient(tpl *compose.Templates, r Recipient) (mailstore.RecipientRow, error) {
	a, err := ParseAddress(r.Address)
	if err != nil {
		return mailstore.RecipientRow{}, mailerr.In("address", err)
	}
	raw, err := json.Marshal(r.Data)
	if err != nil {
		return mailstore.RecipientRow{}, contentErr("data", "data: %v", err)
	}
	var data map[string]any
	if flat, ok := r.Data.(map[string]string); ok && validUTF8(flat) {
		// Valid UTF-8 strings survive the JSON round trip unchanged: skip
		// decoding (the common case of data read from a CSV file).
		data = make(map[string]any, len(flat))
		for k, v := range flat {
			data[k] = v
		}
	} else {
		s := string(raw)
		if data, err = mailstore.DecodeData(&s); err != nil {
			return mailstore.RecipientRow{}, contentErr("data", "data must be a map or a struct, not %.40s", raw)
		}
	}
	if _, err := tpl.Render(data); err != nil {
		return mailstore.RecipientRow{}, err
	}
	stored := string(raw)
	return mailstore.RecipientRow{Address: a.Addr, Name: a.Name, Kind: "to", Data: &stored}, nil
}

func validUTF8(m map[string]string) bool {
	for k, v := range m {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

type batchState struct {
	m      *Mailer
	c      common
	acct   accountRef
	now    time.Time
	status Status
	due    time.Time

	// The first commit creates the message row and sets id; the others
	// wait on createMu until it has.
	createMu   sync.Mutex
	id         string
	created    atomic.Bool
	noCopy     atomic.Bool  // COPY met an existing row: insert with ON CONFLICT instead
	accepted   atomic.Int64 // recipients stored and charged
	suppressed atomic.Int64 // recipients stored as suppressed, not charged
	resumed    atomic.Int64 // recipients an earlier call had stored
}

// commit stores one chunk and charges it, in one transaction.
func (s *batchState) commit(ctx context.Context, chunk []mailstore.RecipientRow) error {
	if !s.created.Load() {
		s.createMu.Lock()
		if s.created.Load() {
			s.createMu.Unlock()
		} else {
			defer s.createMu.Unlock() // this commit creates the message
		}
	}
	err := s.commitOnce(ctx, chunk, !s.noCopy.Load())
	if errors.Is(err, errCopyConflict) {
		// A concurrent call with the same key stored some of these seqs:
		// from now on insert row by row, skipping what exists.
		s.noCopy.Store(true)
		err = s.commitOnce(ctx, chunk, false)
	}
	return err
}

var errCopyConflict = errors.New("copy conflict")

func (s *batchState) commitOnce(ctx context.Context, chunk []mailstore.RecipientRow, useCopy bool) error {
	m, c := s.m, s.c
	id := s.id
	now := m.now() // each chunk is accepted when it commits
	var stored, suppressedN int64
	creating := !s.created.Load()
	copyFirst := useCopy && mailstore.IsPG(m.db)
	err := m.write(ctx, "store recipients", func(ctx context.Context, tx bun.Tx, conn *bun.Conn) error {
		id, useCopy, stored, suppressedN = s.id, copyFirst, 0, 0 // a try may run again
		if creating {
			ok, err := m.insertMessage(ctx, tx, s.acct.ID, id, "batch", c, s.now, 0)
			if err != nil {
				return err
			}
			if !ok { // a concurrent call with the same key created it: join it
				k, _, err := byKey(ctx, tx, s.acct.ID, c.key)
				if err != nil {
					return err
				}
				id = k.id
				useCopy = false
				s.noCopy.Store(true)
			} else if err := insertExtras(ctx, tx, extras{id, &c}); err != nil {
				return err
			}
		}
		var cancelled bool
		if err := tx.NewRaw("SELECT cancelled_at IS NOT NULL FROM mail_messages WHERE id = ?", id).Scan(ctx, &cancelled); err != nil {
			return fmt.Errorf("mailing: read batch: %w", err)
		}
		if cancelled {
			return mailerr.New(ErrCancelled, "", "the batch was cancelled")
		}
		for i := range chunk {
			r := &chunk[i]
			r.MessageID = id
			r.AccountID = s.acct.ID
			r.Origin = c.origin
			r.RFCMessageID = fmt.Sprintf("%s.%d@%s", id, r.Seq, m.cfg.MessageIDDomain)
			r.Status, r.Priority, r.DueAt, r.AcceptedAt = s.status, c.priority, s.due, now
			r.FinalAt, r.Reply, r.SuppressedBy = nil, "", nil
		}
		stopped, err := s.stopped(ctx, tx, chunk, now)
		if err != nil {
			return err
		}
		var n int64
		inserted := stopped // the suppressed rows this try stored
		if useCopy {
			var err error
			if n, err = copyRecipients(ctx, *conn, chunk); err != nil {
				return err
			}
		} else {
			// ON CONFLICT DO NOTHING: an earlier or concurrent call with the
			// same key may have stored some of these; only what this call
			// stores is charged.
			var seqs []int
			if _, err := tx.NewInsert().Model(&chunk).ExcludeColumn("id").On("CONFLICT (message_id, seq) DO NOTHING").
				Returning("seq").Exec(ctx, &seqs); err != nil {
				return fmt.Errorf("mailing: store recipients: %w", err)
			}
			n = int64(len(seqs))
			inserted = onlySeqs(stopped, seqs)
		}
		stored = n
		if n == 0 {
			return nil
		}
		if err := recordBatchSuppressed(ctx, tx, id, inserted); err != nil {
			return err
		}
		if _, err := tx.NewRaw("UPDATE mail_messages SET recipients = recipients + ? WHERE id = ?", n, id).Exec(ctx); err != nil {
			return fmt.Errorf("mailing: count recipients: %w", err)
		}
		accepted := mailstore.Counts{}
		accepted.Add(s.acct.ID, c.origin, now, mailstore.KindAccepted, n)
		if err := accepted.Write(ctx, tx); err != nil {
			return err
		}
		suppressedN = int64(len(inserted))
		if n == suppressedN {
			return nil // every recipient stored was suppressed: nothing to charge
		}
		_, err = m.ledger.Charge(ctx, tx, quota.Charge{Account: c.account, Amount: n - suppressedN, Origin: c.origin,
			Reference: id, Actor: c.actor})
		return err
	})
	if err != nil {
		return err
	}
	if creating { // under createMu: no other commit runs
		s.id = id
		s.created.Store(true)
	}
	s.accepted.Add(stored - suppressedN)
	s.suppressed.Add(suppressedN)
	s.resumed.Add(int64(len(chunk)) - stored)
	return nil
}
