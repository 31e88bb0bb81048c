package delivery

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing/smtpout"
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

	// Limits are fixed limits (concurrency, messages per second) by
	// recipient domain, in direct delivery also by MX group (google.com),
	// and "*" for every other domain (through a smarthost) or group
	// (direct), each on its own. Through a smarthost they apply on top of
	// Smarthost's; in direct delivery they replace Adaptive's for what they
	// name. A 421 or 4.7.x reply halves a fixed entry's rate, which
	// recovers by doubling each quiet minute. Default none.
	Limits map[string]Limits
	// Smarthost limits the smarthost, the one destination when Transport
	// is a *smtpout.Smarthost (see SmarthostLimits): by default 16
	// connections and no rate limit, recipient domains unlimited.
	Smarthost SmarthostLimits
	// Adaptive shapes the limits of each MX group in direct delivery (see
	// Adaptive): they start moderate and grow while the group accepts.
	Adaptive Adaptive
	// WarmUp, when set, caps each provider group's recipients a day on a
	// growing schedule (see WarmUp). Default none.
	WarmUp *WarmUp

	// Workers bounds concurrent deliveries. Default 8.
	Workers int
	// Batch is how many due recipients one claim takes. Default 100.
	Batch int
	// MaxRecipientsPerTransaction bounds how many recipients of one
	// message, at one domain, share an SMTP transaction (see Engine).
	// RFC 5321 §4.5.3.1.8 requires servers to take at least 100. Default
	// 100; 1 sends every recipient in a transaction of its own.
	MaxRecipientsPerTransaction int
	// Lease is how long a claim lasts before any engine may take the
	// recipient over, its engine presumed dead. It is the last resort, for
	// engines that hold no lock on their name (older versions): a stopped
	// engine's claims are taken back sooner (see Node and Run). Default 10
	// minutes.
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
	// Node names this node across restarts; default the host name. Run
	// holds a lock on it, so that the node, restarted, takes back its own
	// claims at once, and the other nodes can tell when it has died; two
	// engines running with one name at the same time are refused. It must
	// not contain "/".
	Node string
	// Owner names this engine in leases and in its lock, in place of Node.
	// Default Node. Set it only to run several engines in one process,
	// each with its own Owner: such engines may share a SQLite file, where
	// otherwise only one engine delivers (see Run).
	Owner string
	// LivenessCheck is how often Run looks for the claims of engines that
	// have stopped (their lock is free) to take them back. Default 10s.
	LivenessCheck time.Duration
}

// Engine delivers due recipients: it claims them with a lease, renders,
// signs and sends their messages, and records each recipient's outcome.
// Several engines may share one PostgreSQL database (claims use FOR UPDATE
// SKIP LOCKED), each with its own Node; on SQLite one engine delivers. An
// engine that stops without returning its claims (kill -9) has them taken
// back within seconds: when it restarts, or by another node (see Run).
//
// Recipients of one transactional message sent with Send (its To, Cc and
// Bcc: they all get the same bytes, as Bcc never appear in the headers)
// that are claimed together and share a domain go in one SMTP transaction,
// up to MaxRecipientsPerTransaction, taking one slot and one message of the
// destination's limits. Batch recipients (each its own personalised
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
	warm     *warmUp // nil: no warm-up plan
	stats    engineStats
	// sole is set for the one engine that delivers from a SQLite file (its
	// Owner is its Node): Run takes the file's delivery lock.
	sole bool
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
	def(&cfg.LivenessCheck, 10*time.Second)
	if cfg.Workers <= 0 {
		cfg.Workers = 8
	}
	if cfg.Batch <= 0 {
		cfg.Batch = 100
	}
	if cfg.MaxRecipientsPerTransaction <= 0 {
		cfg.MaxRecipientsPerTransaction = 100
	}
	if cfg.Node == "" {
		if cfg.Node, _ = os.Hostname(); cfg.Node == "" {
			cfg.Node = "localhost"
		}
	}
	if strings.Contains(cfg.Node, "/") {
		return nil, fmt.Errorf("delivery: node name %q must not contain \"/\"", cfg.Node)
	}
	sole := cfg.Owner == "" && store.EngineOfDB(st.DB) == store.SQLite
	if cfg.Owner == "" {
		cfg.Owner = cfg.Node
	}
	tokens, err := rcpttoken.Load(ctx, st.DB, st.Sealer, st.Now())
	if err != nil {
		return nil, err
	}
	e := &Engine{st: st, cfg: cfg, tokens: tokens, unsigned: map[string]bool{}, cache: map[string]*mailstore.Source{}, keyCache: map[string]cachedKeys{},
		limits: newLimiter(cfg), sole: sole}
	if cfg.WarmUp != nil {
		if e.warm, err = newWarmUp(*cfg.WarmUp); err != nil {
			return nil, err
		}
	}
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
//
// Run first takes the lock of its name (Owner: by default Node;
// internal/store.TryLock, which the database or the kernel drops when the
// process ends, kill -9 included) and holds it until it returns. If a live
// engine holds it, Run fails (within a few seconds) with an error matching
// ErrAlreadyRunning. It then takes back, at once, the claims its name left
// behind when it last stopped (mailstore.ExpireOwner: deferred, counted as
// attempted, due now). At the start and every LivenessCheck it lists the
// other names that hold claims and tries each one's lock: a name whose
// lock it gets has stopped, and its claims are taken back then; a live
// one's stay. Claims whose owner's name contains "/" (engines of older
// versions, which hold no lock) are left to their Lease. On SQLite one
// engine delivers: Run also takes the file's delivery lock (refused:
// ErrAlreadyRunning), and as it starts takes back the claims of every name
// whose lock is free, those with "/" too. RunOnce takes back none of this.
func (e *Engine) Run(ctx context.Context) error {
	l, err := e.lock(ctx)
	if err != nil || l == nil {
		return err // nil: ctx ended first
	}
	defer l.release() // last: after every outcome is recorded
	if err := e.takeBack(ctx, e.cfg.Owner); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	next := e.checkLiveness(ctx, l, true)
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
		if !e.st.Now().Before(next) {
			next = e.checkLiveness(ctx, l, false)
		}
		n, err := e.round(ctx, c)
		if err != nil && ctx.Err() == nil {
			e.st.Logger.Error("delivery round failed", "err", err)
		}
		wait := e.cfg.Poll
		if n > 0 && err == nil {
			wait = 0 // more may be due
		} else if wait > limitPoll && e.limits.backlogged() {
			wait = limitPoll // recipients deferred for a destination's limits come due in small steps
		}
		timer.Reset(wait)
	}
}

// RunOnce claims up to Batch due recipients (transactional first, then by
// due time), groups them into transactions, delivers those with up to
// Workers at once, and returns how many recipients it handled once every
// outcome is recorded. For that time it holds the lock of its name if it
// is free (held, an engine of this name is running, which keeps the claims
// as safe), so that no Run takes its claims for a stopped engine's. It
// takes back only the claims whose lease is over: taking back a stopped
// engine's sooner is Run's.
func (e *Engine) RunOnce(ctx context.Context) (int, error) {
	release, ok, err := e.tryLock(ctx, nodeLock(e.cfg.Owner))
	if err != nil {
		return 0, fmt.Errorf("delivery: lock node %q: %w", e.cfg.Owner, err)
	}
	if ok {
		defer release() // last: after every outcome is recorded
	}
	c := e.startCrew(context.WithoutCancel(ctx))
	n, err := e.round(ctx, c)
	c.stop()
	return n, err
}

// limitPoll is how often Run looks for due recipients while some that a
// destination's limits deferred are coming due.
const limitPoll = 100 * time.Millisecond

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
	items, ended := e.resuppress(bg, items)
	groups := e.group(bg, items)
	done, started := ended, 0
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
