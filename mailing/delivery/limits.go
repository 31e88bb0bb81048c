package delivery

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/servir-pe/envios/mailing/smtpout"
)

// Limits are how hard one destination may be pushed.
type Limits struct {
	Concurrency int     // transactions in flight at once (≈ connections)
	PerSecond   float64 // messages (transactions, whatever their recipients) per second
}

// DefaultLimits returns the fixed limits an engine applies with no
// Config.Limits: none. Destinations adapt instead (Config.Adaptive in
// direct delivery; Config.Smarthost through a smarthost). It used to
// return fixed figures per mailbox provider (gmail.com 20/s, "*" 50/s),
// which capped delivery through a smarthost too.
func DefaultLimits() map[string]Limits { return map[string]Limits{} }

// Adaptive shapes the limits of each destination of direct delivery that
// has no fixed Limits entry: a destination is a group of MX hosts
// (smtpout.MXGroup: gmail.com and every Google Workspace domain are one,
// google.com). It starts at Start and, while the destination accepts,
// grows additively up to Ceiling: concurrency by one per window of
// transactions that found every slot taken, the rate by Increase messages
// per second for each second of delivery that used it. A throttling reply
// (421, 4.7.x), a refused or timed-out connection multiplies both by
// Decrease, down to Floor, once: the replies of transactions begun before
// that cut, or within a second of it, do not cut again. Zero fields take
// the default their comment states.
type Adaptive struct {
	Start   Limits // default 5 at once, 20 per second (Postfix starts at 5 connections)
	Floor   Limits // default 1 at once, 0.1 per second (one message every 10 s)
	Ceiling Limits // default 20 at once (Postfix's default_destination_concurrency_limit), 200 per second; PerSecond +Inf: no ceiling
	// Increase is how many messages per second the rate gains for each
	// second of delivery at that rate without throttling. Default 2.
	Increase float64
	// Decrease is the factor a throttling signal multiplies rate and
	// concurrency by, between 0 and 1. Default 0.5.
	Decrease float64
}

// DefaultAdaptive is Adaptive with every default filled in.
func DefaultAdaptive() Adaptive { return Adaptive{}.withDefaults() }

func (a Adaptive) withDefaults() Adaptive {
	def := func(v *float64, d float64) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt := func(v *int, d int) {
		if *v <= 0 {
			*v = d
		}
	}
	defInt(&a.Start.Concurrency, 5)
	defInt(&a.Floor.Concurrency, 1)
	defInt(&a.Ceiling.Concurrency, 20)
	def(&a.Start.PerSecond, 20)
	def(&a.Floor.PerSecond, 0.1)
	def(&a.Ceiling.PerSecond, 200)
	def(&a.Increase, 2)
	if a.Decrease <= 0 || a.Decrease >= 1 {
		a.Decrease = 0.5
	}
	// Floor ≤ Start ≤ Ceiling.
	a.Ceiling.Concurrency = max(a.Ceiling.Concurrency, a.Floor.Concurrency)
	a.Ceiling.PerSecond = max(a.Ceiling.PerSecond, a.Floor.PerSecond)
	a.Start.Concurrency = min(max(a.Start.Concurrency, a.Floor.Concurrency), a.Ceiling.Concurrency)
	a.Start.PerSecond = min(max(a.Start.PerSecond, a.Floor.PerSecond), a.Ceiling.PerSecond)
	return a
}

// SmarthostLimits are the limits of a smarthost, the one destination of
// all mail when the transport is a *smtpout.Smarthost: the smarthost, not
// relayd, faces the recipient domains, so they get no limits of their own
// (only those Config.Limits names). A throttling reply from the smarthost
// (421, 4.7.x) or a failed connection to it halves its concurrency and
// its rate (from the rate it was being sent), which grow back as it
// accepts; an unlimited rate is unlimited again after a minute without
// throttling.
type SmarthostLimits struct {
	// Connections is how many transactions are in flight at once (each on
	// its own connection). Default 16; Config.Workers bounds it too.
	Connections int
	// PerSecond caps the messages per second. Default 0: unlimited.
	PerSecond float64
}

// The modes of a destination.
const (
	modeFixed     = "fixed"     // a Config.Limits entry
	modeAdaptive  = "adaptive"  // a group of MX hosts, under Config.Adaptive
	modeSmarthost = "smarthost" // the smarthost, under Config.Smarthost
)

// limiter holds the live state of every destination's limits.
type limiter struct {
	now       func() time.Time // monotonic: rates and cuts are measured on it, not on the store's clock
	fixed     map[string]Limits
	adaptive  Adaptive
	smarthost Adaptive // the smarthost's control: it starts at its ceiling
	viaRelay  bool     // the transport is a *smtpout.Smarthost

	mu     sync.Mutex
	dests  map[string]*destination   // by mode and name
	routes map[string][]*destination // by recipient domain: what its last transaction took
	paused map[string]time.Time      // by recipient domain: bulk mail waits until then
}

func newLimiter(cfg Config) *limiter {
	l := &limiter{now: time.Now, fixed: map[string]Limits{}, adaptive: cfg.Adaptive.withDefaults(),
		dests: map[string]*destination{}, routes: map[string][]*destination{}, paused: map[string]time.Time{}}
	for k, v := range cfg.Limits {
		v.Concurrency = max(1, v.Concurrency)
		if v.PerSecond <= 0 {
			v.PerSecond = 1
		}
		l.fixed[strings.ToLower(k)] = v
	}
	sh := cfg.Smarthost
	if sh.Connections <= 0 {
		sh.Connections = 16
	}
	top := Limits{Concurrency: sh.Connections, PerSecond: math.Inf(1)}
	if sh.PerSecond > 0 {
		top.PerSecond = sh.PerSecond
	}
	floor := Limits{Concurrency: 1, PerSecond: min(l.adaptive.Floor.PerSecond, top.PerSecond)}
	_, l.viaRelay = cfg.Transport.(*smtpout.Smarthost)
	l.smarthost = Adaptive{Start: top, Floor: floor, Ceiling: top, Increase: l.adaptive.Increase, Decrease: l.adaptive.Decrease}
	return l
}

// fixedFor finds the fixed Limits entry of a transaction to domain along
// rt: the domain's own, else (direct delivery) its MX group's, else "*"'s,
// which each group (direct) or domain (smarthost) gets for itself.
func (l *limiter) fixedFor(rt smtpout.Route, domain string) (string, Limits, bool) {
	if lim, ok := l.fixed[domain]; ok {
		return domain, lim, true
	}
	if lim, ok := l.fixed[rt.Key]; ok && !rt.Smarthost {
		return rt.Key, lim, true
	}
	if lim, ok := l.fixed["*"]; ok {
		if rt.Smarthost {
			return domain, lim, true
		}
		return rt.Key, lim, true
	}
	return "", Limits{}, false
}

// destinations are what a transaction to domain along rt takes a slot of:
// its fixed entry, if any, and, through a smarthost, the smarthost; in
// direct delivery without a fixed entry, its adaptive MX group.
func (l *limiter) destinations(rt smtpout.Route, domain string) []*destination {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ds []*destination
	key, lim, fixed := l.fixedFor(rt, domain)
	if fixed {
		ds = append(ds, l.get(modeFixed, key, func() controller { return newFixedCtl(lim) }))
	}
	switch {
	case rt.Smarthost:
		ds = append(ds, l.get(modeSmarthost, rt.Key, func() controller { return newAIMD(l.smarthost) }))
	case !fixed:
		ds = append(ds, l.get(modeAdaptive, rt.Key, func() controller { return newAIMD(l.adaptive) }))
	}
	if len(l.routes) >= 100_000 {
		clear(l.routes) // bounded: it serves DestinationRate only
	}
	l.routes[domain] = ds
	return ds
}

// get returns the destination of mode and name, made with ctl if new.
// l.mu is held.
func (l *limiter) get(mode, name string, ctl func() controller) *destination {
	k := mode + " " + name
	d, ok := l.dests[k]
	if !ok {
		d = newDestination(name, mode, ctl(), l.now())
		l.dests[k] = d
	}
	return d
}

// acquire waits, at most patience, for a slot of every destination a
// transaction to domain along rt takes. When it would wait longer it
// returns how long, and the caller defers the recipients instead of
// holding a worker (no head-of-line blocking).
func (l *limiter) acquire(ctx context.Context, rt smtpout.Route, domain string, patience time.Duration) (*slot, time.Duration) {
	ds := l.destinations(rt, domain)
	s := &slot{}
	for _, d := range ds {
		full, wait, ok := d.acquire(ctx, l.now, patience)
		if !ok {
			s.release()
			return nil, wait
		}
		s.dests, s.full = append(s.dests, d), append(s.full, full)
	}
	s.started, s.now = l.now(), l.now
	return s, 0
}

// slot is a transaction's place in its destinations' limits.
type slot struct {
	dests   []*destination
	full    []bool // the destination's window was full when the slot was taken
	started time.Time
	now     func() time.Time
}

// done tells the destinations how the transaction went and gives the
// slot back.
func (s *slot) done(results []smtpout.Result) {
	sig := signalOf(results)
	now := s.now()
	for i, d := range s.dests {
		d.feedback(sig, now, s.started, s.full[i])
	}
	s.release()
}

// release gives the slot back.
func (s *slot) release() {
	for _, d := range s.dests {
		d.release()
	}
}

// pauseBulk holds bulk mail to domain until until after a policy refusal.
func (l *limiter) pauseBulk(domain string, until time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.paused[domain] = until
}

// bulkPaused reports how long bulk mail to domain still waits at now (0:
// it goes).
func (l *limiter) bulkPaused(domain string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	return max(0, l.paused[domain].Sub(now))
}

// rate reports the messages per second domain's own destination allows
// now: its fixed entry's if it has one, else its MX group's or the
// smarthost's, as its last transaction found them; a domain not seen yet
// gets what its first would.
func (l *limiter) rate(domain string) float64 {
	l.mu.Lock()
	ds, ok := l.routes[domain]
	l.mu.Unlock()
	if ok && len(ds) > 0 {
		return ds[0].perSecond(l.now())
	}
	if key, lim, ok := l.fixedFor(smtpout.Route{Key: domain, Group: domain}, domain); ok && key == domain {
		return lim.PerSecond
	}
	if l.viaRelay {
		return l.smarthost.Start.PerSecond
	}
	return l.adaptive.Start.PerSecond
}

// backlogged reports whether recipients a destination's limits refused
// come due within the next second: Run then looks for due recipients
// more often than Poll, so they arrive spread as they were deferred
// (see destination.later), not in bursts the limits refuse again.
func (l *limiter) backlogged() bool {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, d := range l.dests {
		d.mu.Lock()
		h := d.horizon
		d.mu.Unlock()
		if h.After(now.Add(-time.Second)) {
			return true
		}
	}
	return false
}

// snapshot returns the state of every destination, by name.
func (l *limiter) snapshot() []DestinationStats {
	l.mu.Lock()
	ds := make([]*destination, 0, len(l.dests))
	for _, d := range l.dests {
		ds = append(ds, d)
	}
	l.mu.Unlock()
	out := make([]DestinationStats, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.stats(l.now()))
	}
	slices.SortFunc(out, func(a, b DestinationStats) int {
		return strings.Compare(a.Name+" "+a.Mode, b.Name+" "+b.Mode)
	})
	return out
}

// isThrottling reports a reply that asks us to slow down: 421, or an
// enhanced code 4.7.x (e.g. 4.7.28, Gmail's rate limit).
func isThrottling(r smtpout.Result) bool {
	return r.Code == 421 || (r.Code >= 400 && r.Code < 500 && strings.HasPrefix(r.Enhanced, "4.7."))
}
