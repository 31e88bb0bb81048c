package delivery

import (
	"context"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/servir-pe/envios/mailing/smtpout"
)

// Limits are how hard one destination domain may be pushed.
type Limits struct {
	Concurrency int     // transactions in flight at once (≈ connections)
	PerSecond   float64 // messages (transactions, whatever their recipients) per second
}

// DefaultLimits returns conservative figures for the big mailbox providers
// and everyone else ("*"). EngineConfig.Limits overrides them by domain.
func DefaultLimits() map[string]Limits {
	return map[string]Limits{
		"gmail.com":      {Concurrency: 10, PerSecond: 20},
		"googlemail.com": {Concurrency: 10, PerSecond: 20},
		"outlook.com":    {Concurrency: 5, PerSecond: 10},
		"hotmail.com":    {Concurrency: 5, PerSecond: 10},
		"live.com":       {Concurrency: 5, PerSecond: 10},
		"yahoo.com":      {Concurrency: 5, PerSecond: 5},
		"*":              {Concurrency: 10, PerSecond: 50},
	}
}

// destination is the live state of one domain's limits.
type destination struct {
	sem     chan struct{}
	limiter *rate.Limiter
	max     rate.Limit
	slowed  time.Time // last throttling reply
	// bulkUntil: after a policy refusal (5.7.x: reputation, DMARC, PTR)
	// bulk mail to the destination waits until then; transactional goes on.
	bulkUntil time.Time
}

type limiter struct {
	mu     sync.Mutex
	limits map[string]Limits
	dests  map[string]*destination
}

func newLimiter(overrides map[string]Limits) *limiter {
	l := &limiter{limits: map[string]Limits{}, dests: map[string]*destination{}}
	for k, v := range DefaultLimits() {
		l.limits[k] = v
	}
	for k, v := range overrides {
		l.limits[strings.ToLower(k)] = v
	}
	return l
}

func (l *limiter) dest(domain string) *destination {
	l.mu.Lock()
	defer l.mu.Unlock()
	if d, ok := l.dests[domain]; ok {
		return d
	}
	lim, ok := l.limits[domain]
	if !ok {
		lim = l.limits["*"]
	}
	lim.Concurrency = max(1, lim.Concurrency)
	if lim.PerSecond <= 0 {
		lim.PerSecond = 1
	}
	d := &destination{sem: make(chan struct{}, lim.Concurrency), max: rate.Limit(lim.PerSecond),
		limiter: rate.NewLimiter(rate.Limit(lim.PerSecond), max(1, int(lim.PerSecond)))}
	l.dests[domain] = d
	return d
}

// acquire waits, at most patience, for a delivery slot to domain. When it
// would wait longer it returns how long, and the caller defers the
// recipient instead of holding a worker (no head-of-line blocking).
func (l *limiter) acquire(ctx context.Context, domain string, patience time.Duration) (release func(), wait time.Duration) {
	d := l.dest(domain)
	l.recover(d)
	r := d.limiter.Reserve()
	if delay := r.Delay(); delay > patience {
		r.Cancel()
		return nil, delay
	} else if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			r.Cancel()
			return nil, time.Second
		}
	}
	t := time.NewTimer(patience)
	defer t.Stop()
	select {
	case d.sem <- struct{}{}:
		return func() { <-d.sem }, 0
	case <-t.C:
		return nil, patience
	case <-ctx.Done():
		return nil, time.Second
	}
}

// throttled halves a destination's rate after a 421 or 4.7.x reply, down
// to one message every ten seconds.
func (l *limiter) throttled(domain string) {
	d := l.dest(domain)
	l.mu.Lock()
	defer l.mu.Unlock()
	d.slowed = time.Now()
	d.limiter.SetLimit(max(d.limiter.Limit()/2, 0.1))
}

// recover doubles a slowed destination's rate back towards its limit once
// a minute passes without throttling.
func (l *limiter) recover(d *destination) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if cur := d.limiter.Limit(); cur < d.max && time.Since(d.slowed) > time.Minute {
		d.limiter.SetLimit(min(cur*2, d.max))
		d.slowed = time.Now()
	}
}

// pauseBulk holds bulk mail to domain for d after a policy refusal.
func (l *limiter) pauseBulk(domain string, until time.Time) {
	d := l.dest(domain)
	l.mu.Lock()
	defer l.mu.Unlock()
	d.bulkUntil = until
}

// bulkPaused reports how long bulk mail to domain still waits at now (0:
// it goes).
func (l *limiter) bulkPaused(domain string, now time.Time) time.Duration {
	d := l.dest(domain)
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(0, d.bulkUntil.Sub(now))
}

// rate reports a destination's current messages per second.
func (l *limiter) rate(domain string) float64 { return float64(l.dest(domain).limiter.Limit()) }

// isThrottling reports a reply that asks us to slow down: 421, or an
// enhanced code 4.7.x (e.g. 4.7.28, Gmail's rate limit).
func isThrottling(r smtpout.Result) bool {
	return r.Code == 421 || (r.Code >= 400 && r.Code < 500 && strings.HasPrefix(r.Enhanced, "4.7."))
}
