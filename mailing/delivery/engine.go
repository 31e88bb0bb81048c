package delivery

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"math"
	mathrand "math/rand/v2"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing/smtpout"
	"github.com/servir-pe/envios/quota"
)

// Config configures delivery. Transport and ReturnPathDomain are
// required; every other zero value has the default its comment states.
type Config struct {
	// Transport hands messages to the next hop (a *Smarthost).
	Transport smtpout.Transport

	// ReturnPathDomain is the dedicated sending domain: envelope senders are
	// per-recipient addresses there (b+TOKEN@domain), so a bounce maps back
	// to a recipient (see Engine for transactions carrying several), and the
	// mailto: unsubscribe address too.
	ReturnPathDomain string

	// UnsubscribeURL is the base of the one-click unsubscribe link bulk mail
	// carries (RFC 8058): UnsubscribeURL + TOKEN. Default
	// "https://" + ReturnPathDomain + "/u/".
	UnsubscribeURL string

	// UnsignedDomains may send without a DKIM key. Default none: mail from
	// a domain without a key is deferred (and fails at MaxAge), never sent
	// unsigned silently.
	UnsignedDomains []string

	// SignatureTTL, when set, gives signatures an expiry (x=). Default none.
	SignatureTTL time.Duration

	// Limits caps each destination domain (concurrency, messages per
	// second), over DefaultLimits; "*" is everyone not listed. A 421 or
	// 4.7.x reply halves the destination's rate, which recovers by
	// doubling each quiet minute.
	Limits map[string]Limits

	// Workers bounds concurrent deliveries. Default 8.
	Workers int
	// Batch is how many due recipients one claim takes. Default 100.
	Batch int
	// MaxRecipientsPerTransaction bounds how many recipients of one
	// message, at one domain, share an SMTP transaction (see Engine).
	// RFC 5321 §4.5.3.1.8 requires servers to take at least 100. Default
	// 100; 1 sends every recipient in a transaction of its own.
	MaxRecipientsPerTransaction int
	// Lease is how long a claim lasts before another engine may take the
	// recipient over (its engine presumed dead). Default 10 minutes.
	Lease time.Duration
	// Poll is how long an idle engine waits before looking again. Default 1s.
	Poll time.Duration
	// RetryBase and RetryMax shape the backoff after a temporary failure:
	// RetryBase·2^(attempts−1), at most RetryMax, with ±20% jitter.
	// Defaults 1 minute and 1 hour.
	RetryBase, RetryMax time.Duration
	// MaxAge is how long after acceptance a recipient is retried before it
	// fails. Default 5 days.
	MaxAge time.Duration
	// Owner names this engine in leases. Default host name, pid and a
	// random suffix.
	Owner string
}

// Engine delivers due recipients: it claims them with a lease, renders,
// signs and sends their messages, and records each recipient's outcome.
// Several engines may share one PostgreSQL database (claims use FOR UPDATE
// SKIP LOCKED).
//
// Recipients of one transactional message sent with Send (its To, Cc and
// Bcc: they all get the same bytes, as Bcc never appear in the headers)
// that are claimed together and share a domain go in one SMTP transaction,
// up to MaxRecipientsPerTransaction, taking one slot and one message of the
// destination's Limits. Batch recipients (each its own personalised
// message) and bulk mail (a List-Unsubscribe token per recipient) always go
// one per transaction. Each recipient's RCPT reply, or the reply to the
// message for those RCPT accepted, is recorded on its own row: partial
// success is normal.
//
// The envelope sender is b+TOKEN@ReturnPathDomain with the token of the
// transaction's first (lowest id) recipient: for a transaction of one it
// names exactly that recipient (VERP); for several it names the message,
// and the recipient a bounce is about is the Final-Recipient of its DSN
// (RFC 3464).
type Engine struct {
	st       *mailstore.Store
	cfg      Config
	tokens   *rcpttoken.Keyring
	unsigned map[string]bool

	cacheMu  sync.Mutex
	cache    map[string]*mailstore.Source
	keyCache map[string]cachedKeys
	limits   *limiter
	stats    engineStats
}

// New returns an Engine delivering the queue of st. Programs get one from
// mailing.Mailer.NewEngine.
func New(ctx context.Context, st *mailstore.Store, cfg Config) (*Engine, error) {
	if cfg.Transport == nil {
		return nil, errors.New("delivery: Config.Transport is required")
	}
	if cfg.ReturnPathDomain == "" {
		return nil, errors.New("delivery: Config.ReturnPathDomain is required")
	}
	if cfg.UnsubscribeURL == "" {
		cfg.UnsubscribeURL = "https://" + cfg.ReturnPathDomain + "/u/"
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.Lease, 10*time.Minute)
	def(&cfg.Poll, time.Second)
	def(&cfg.RetryBase, time.Minute)
	def(&cfg.RetryMax, time.Hour)
	def(&cfg.MaxAge, 5*24*time.Hour)
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.MaxRecipientsPerTransaction <= 0 {
		cfg.MaxRecipientsPerTransaction = 100
	}
	if cfg.Owner == "" {
		host, _ := os.Hostname()
		b := make([]byte, 4)
		_, _ = rand.Read(b)
		cfg.Owner = fmt.Sprintf("%s/%d/%x", host, os.Getpid(), b)
	}
	tokens, err := rcpttoken.Load(ctx, st.DB, st.Sealer, st.Now())
	if err != nil {
		return nil, err
	}
	e := &Engine{st: st, cfg: cfg, tokens: tokens, unsigned: map[string]bool{}, cache: map[string]*mailstore.Source{}, keyCache: map[string]cachedKeys{},
		limits: newLimiter(cfg.Limits)}
	for _, d := range cfg.UnsignedDomains {
		e.unsigned[strings.ToLower(d)] = true
	}
	return e, nil
}

// Token is the recipient's opaque, unforgeable token: its row id and an
// HMAC of it. It names the recipient in the envelope sender (bounces) and
// in unsubscribe links.
func (e *Engine) Token(recipientID int64) string { return e.tokens.Token(recipientID) }

// RecipientOfToken checks a token and returns the recipient it names.
func (e *Engine) RecipientOfToken(tok string) (int64, bool) { return e.tokens.Recipient(tok) }

// ReturnPath is the envelope sender for a recipient, and for a transaction
// whose first recipient it is.
func (e *Engine) ReturnPath(recipientID int64) string {
	return "b+" + e.Token(recipientID) + "@" + e.cfg.ReturnPathDomain
}

// Run delivers until ctx ends, then finishes the deliveries in flight,
// returns the leases of what it claimed but did not start, and returns nil.
// Its claim rounds overlap: the next batch is claimed as soon as the last
// transaction of the current one is taken by a worker, so the workers do
// not wait for the slowest delivery of a round.
func (e *Engine) Run(ctx context.Context) error {
	if c, ok := e.cfg.Transport.(interface{ Close() error }); ok {
		defer c.Close() // idle connections
	}
	c := e.startCrew(context.WithoutCancel(ctx))
	defer c.stop()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		n, err := e.round(ctx, c)
		if err != nil && ctx.Err() == nil {
			e.st.Logger.Error("delivery round failed", "err", err)
		}
		wait := e.cfg.Poll
		if n > 0 && err == nil {
			wait = 0 // more may be due
		}
		timer.Reset(wait)
	}
}

// RunOnce claims up to Batch due recipients (transactional first, then by
// due time), groups them into transactions, delivers those with up to
// Workers at once, and returns how many recipients it handled once every
// outcome is recorded.
func (e *Engine) RunOnce(ctx context.Context) (int, error) {
	c := e.startCrew(context.WithoutCancel(ctx))
	n, err := e.round(ctx, c)
	c.stop()
	return n, err
}

// claimTimeout bounds a claim, which a shutdown does not interrupt.
const claimTimeout = 30 * time.Second

// crew is the workers that deliver transactions and the recorder that
// writes their outcomes, shared by the claim rounds of one Run.
type crew struct {
	work     chan []mailstore.Claimed
	workers  sync.WaitGroup
	outcomes chan outcome
	recorded chan struct{}
}

// startCrew starts Workers workers and a recorder. Deliveries run under
// bg, which is not cancelled: one that started finishes and is recorded.
func (e *Engine) startCrew(bg context.Context) *crew {
	c := &crew{work: make(chan []mailstore.Claimed), outcomes: make(chan outcome, e.cfg.Workers), recorded: make(chan struct{})}
	go func() { defer close(c.recorded); e.recorder(bg, c.outcomes) }()
	for range e.cfg.Workers {
		c.workers.Go(func() {
			for g := range c.work {
				for _, o := range e.deliver(bg, g) {
					c.outcomes <- o
				}
			}
		})
	}
	return c
}

// stop waits for the deliveries in flight and the recording of every
// outcome.
func (c *crew) stop() {
	close(c.work)
	c.workers.Wait()
	close(c.outcomes)
	<-c.recorded
}

// round claims due recipients and hands their transactions to c's
// workers. It returns when a worker has taken the last one (its delivery
// may still be running), or when ctx ends: then the leases of the
// transactions no worker took are returned.
func (e *Engine) round(ctx context.Context, c *crew) (int, error) {
	if _, err := e.st.PromoteDue(ctx); err != nil {
		return 0, err
	}
	// The claim is not cancelled halfway: a claim the database committed
	// while its caller gave up would leave rows leased until the lease
	// expires. A shutdown that comes meanwhile returns them below.
	bg := context.WithoutCancel(ctx)
	cctx, cancel := context.WithTimeout(bg, claimTimeout)
	items, err := e.claim(cctx)
	cancel()
	if err != nil || len(items) == 0 {
		return 0, err
	}
	groups := e.group(bg, items)
	done, started := 0, 0
feed:
	for _, g := range groups {
		select {
		case c.work <- g:
			done += len(g)
			started++
		case <-ctx.Done():
			break feed
		}
	}
	if started < len(groups) {
		var rest []mailstore.Claimed
		for _, g := range groups[started:] {
			rest = append(rest, g...)
		}
		e.unclaim(bg, rest)
	}
	return done, nil
}

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

// deliver builds and signs the message of a group of recipients (one
// message, one domain; see group), sends it in one transaction and says
// what happened to each recipient. A panic is recovered: every recipient
// of the group is deferred, none is lost.
func (e *Engine) deliver(ctx context.Context, g []mailstore.Claimed) (out []outcome) {
	out = make([]outcome, len(g))
	for i, it := range g {
		out[i].it = it
	}
	every := func(res smtpout.Result) []outcome {
		for i := range out {
			out[i].res = res
		}
		return out
	}
	defer func() {
		if p := recover(); p != nil {
			e.st.Logger.Error("delivery panicked", "recipient", g[0].ID, "recipients", len(g), "panic", p)
			out = make([]outcome, len(g))
			for i, it := range g {
				out[i] = outcome{it: it, res: smtpout.Result{Text: fmt.Sprintf("internal error: %v", p)}}
			}
		}
	}()
	first := g[0]
	src, err := e.source(ctx, first.MessageID)
	if err != nil {
		return every(smtpout.Result{Text: "reading the message: " + err.Error()}) // the database: try again later
	}
	raw, err := src.Render(mailstore.RecipientRow{ID: first.ID, Address: first.Address, Name: first.Name, Data: first.Data, RFCMessageID: first.RFCMessageID})
	if err != nil {
		for i := range out {
			out[i].failed = "message could not be built: " + err.Error()
		}
		return out
	}
	raw, err = e.prepare(ctx, first, src.From().Domain(), raw)
	if err != nil {
		return every(smtpout.Result{Text: err.Error()})
	}
	domain := domainOf(first.Address)
	release, wait := e.limits.acquire(ctx, domain, 250*time.Millisecond)
	if release == nil {
		// The destination's limits are full: try again when they are not,
		// without counting an attempt or holding a worker.
		every(smtpout.Result{Text: "waiting for " + domain + "'s delivery rate limit"})
		for i := range out {
			out[i].retryIn = wait
		}
		return out
	}
	defer release()
	to := make([]string, len(g))
	for i, it := range g {
		to[i] = it.Address
	}
	results := e.cfg.Transport.Deliver(ctx, e.ReturnPath(first.ID), to, raw)
	throttled := false
	for i := range out {
		out[i].res, out[i].attempted = results[i], true
		throttled = throttled || isThrottling(results[i])
	}
	if throttled {
		e.limits.throttled(domain)
	}
	return out
}

// DestinationRate is the messages per second the engine allows a domain
// now (lower than its limit after throttling replies).
func (e *Engine) DestinationRate(domain string) float64 {
	return e.limits.rate(strings.ToLower(domain))
}

// source returns the shared parts of a message, from a small cache: a
// batch's recipients are claimed together, so one read serves thousands.
func (e *Engine) source(ctx context.Context, messageID string) (*mailstore.Source, error) {
	e.cacheMu.Lock()
	src, ok := e.cache[messageID]
	e.cacheMu.Unlock()
	if ok {
		return src, nil
	}
	err := store.RetryConnLost(ctx, e.st.DB, func() (err error) {
		src, err = e.st.Load(ctx, messageID)
		return err
	})
	if err != nil {
		return nil, err
	}
	e.cacheMu.Lock()
	if len(e.cache) >= 256 {
		clear(e.cache) // messages are immutable: dropping them only costs a re-read
	}
	e.cache[messageID] = src
	e.cacheMu.Unlock()
	return src, nil
}

type cachedKeys struct {
	keys []dkimkey.Key
	err  error
	at   time.Time
}

// keys returns the signing keys of a domain, read at most every 30 seconds
// (a rotation or a new key takes effect within that).
func (e *Engine) keys(ctx context.Context, domain string) ([]dkimkey.Key, error) {
	e.cacheMu.Lock()
	c, ok := e.keyCache[domain]
	e.cacheMu.Unlock()
	if ok && time.Since(c.at) < 30*time.Second {
		return c.keys, c.err
	}
	var keys []dkimkey.Key
	err := store.RetryConnLost(ctx, e.st.DB, func() (err error) {
		keys, err = dkimkey.Signing(ctx, e.st.DB, e.st.Sealer, domain)
		return err
	})
	if err != nil && !errors.Is(err, dkimkey.ErrNotFound) {
		return nil, err // a database error is not cached
	}
	e.cacheMu.Lock()
	e.keyCache[domain] = cachedKeys{keys, err, time.Now()}
	e.cacheMu.Unlock()
	return keys, err
}

// prepare adds the per-recipient headers and the DKIM signatures for the
// From domain.
func (e *Engine) prepare(ctx context.Context, it mailstore.Claimed, from string, raw []byte) ([]byte, error) {
	var extra bytes.Buffer
	if it.Priority > 0 { // bulk: RFC 2369 + RFC 8058 one-click unsubscribe
		tok := e.Token(it.ID)
		fmt.Fprintf(&extra, "List-Unsubscribe: <%s%s>, <mailto:u+%s@%s>\r\n", e.cfg.UnsubscribeURL, tok, tok, e.cfg.ReturnPathDomain)
		extra.WriteString("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
	}
	msg := append(extra.Bytes(), raw...)
	keys, err := e.keys(ctx, from)
	if errors.Is(err, dkimkey.ErrNotFound) {
		if e.unsigned[from] {
			return msg, nil
		}
		return nil, fmt.Errorf("no DKIM key for %s: add one with `relayd domain add %s` (mail is not sent unsigned)", from, from)
	}
	if err != nil {
		return nil, err
	}
	return dkimkey.Sign(msg, keys, e.st.Now(), e.cfg.SignatureTTL)
}

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
	return mailstore.EventRow{RecipientID: o.it.ID, MessageID: o.it.MessageID, AccountID: o.it.AccountID, Origin: o.it.Origin, At: now,
		Type: r.status, Attempt: o.attempted, RemoteHost: r.host, Reply: r.reply}, true
}
