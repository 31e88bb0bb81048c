package delivery

import (
	"context"
	"math"
	"sync"
	"time"

	"golang.org/x/time/rate"

	"github.com/servir-pe/envios/mailing/smtpout"
)

// A destination's limits are a window of transactions in flight (its
// concurrency) and a token bucket (golang.org/x/time/rate, its messages
// per second), both set by its controller from the feedback of each
// transaction: additive increase while the destination accepts,
// multiplicative decrease when it throttles (TCP's AIMD; Postfix's
// feedback-controlled concurrency, which reacts to failed connections
// only, with the rate left to a fixed *_destination_rate_delay).

// controller sets a destination's limits from feedback. Every method is
// called with the destination's lock held, and now from a monotonic clock.
type controller interface {
	// limits are the concurrency and messages per second allowed now
	// (+Inf: unlimited).
	limits(now time.Time) (concurrency int, perSecond float64)
	// sent notes a transaction taking a slot.
	sent(now time.Time)
	// projected is the rate it expects to allow in, from now, if the
	// destination keeps accepting.
	projected(now time.Time, in time.Duration) float64
	// ok notes a transaction begun at started that the destination
	// answered without throttling; full: it took the window's last slot.
	ok(now, started time.Time, full bool)
	// throttled notes a throttling signal of a transaction begun at
	// started; conn: a failed connection (refused, timed out, lost)
	// rather than a reply.
	throttled(now, started time.Time, conn bool)
}

// Timings of the adaptive control.
const (
	estTau    = time.Second // the send rate is an average over about this long
	holdoff   = time.Second // after a rate cut, replies neither cut the rate again nor grow it for this long
	liftAfter = time.Minute // an unlimited destination slowed down is unlimited again after this long without throttling
	// probeAfter: after a cut the window grows back at once to one less
	// than where it was cut, and past that only this long after the cut, so
	// a destination that takes K connections is tried with K+1 once in a
	// while, not with every window of successes.
	probeAfter = 10 * time.Second
)

// cutBase is the least rate a cut starts from: what little traffic sent
// says nothing of the rate a destination takes (a 4.7.1 to one recipient
// of a quiet hour does not bring the smarthost down to a message every
// few seconds).
const cutBase = 20.0

// aimd is the additive-increase, multiplicative-decrease control of an
// adaptive destination (Adaptive) and of the smarthost. Like TCP's, it
// cuts once per window: the answers of transactions begun before a cut
// neither cut again nor grow the limits, as they were sent under the old
// ones. The rate also waits holdoff after its cut: a destination that
// counts what it accepted over a second still refuses for a while.
type aimd struct {
	p        Adaptive // defaults applied; Ceiling.PerSecond may be +Inf
	conc     float64
	rate     float64 // +Inf: unlimited
	est      float64 // transactions per second lately: an exponential average over estTau
	estAt    time.Time
	concCut  time.Time // the last decrease of the window
	peak     float64   // the window before the last failed connection cut it…
	peakAt   time.Time // …then
	rateCut  time.Time // the last decrease of the rate
	signalAt time.Time // the last throttling signal, whether it cut or not
}

func newAIMD(p Adaptive) *aimd {
	return &aimd{p: p, conc: float64(p.Start.Concurrency), rate: p.Start.PerSecond}
}

// estimate is the send rate at now.
func (a *aimd) estimate(now time.Time) float64 {
	if a.estAt.IsZero() {
		return 0
	}
	return a.est * math.Exp(-now.Sub(a.estAt).Seconds()/estTau.Seconds())
}

func (a *aimd) sent(now time.Time) {
	a.est = a.estimate(now) + 1/estTau.Seconds()
	a.estAt = now
}

func (a *aimd) limits(now time.Time) (int, float64) {
	if math.IsInf(a.p.Start.PerSecond, 1) && !math.IsInf(a.rate, 1) && now.Sub(a.signalAt) >= liftAfter {
		a.rate = math.Inf(1)
	}
	return max(1, int(a.conc)), a.rate
}

func (a *aimd) projected(now time.Time, in time.Duration) float64 {
	_, r := a.limits(now)
	return min(a.p.Ceiling.PerSecond, r+a.p.Increase*in.Seconds())
}

// ok grows the window by one per window of successes that found it full
// (after a failed connection up to one less than where it was cut, and
// past that only probeAfter later), and the rate by Increase per second of delivery that used at least half
// of it: a destination that is sent little does not earn a high limit it
// never proved.
func (a *aimd) ok(now, started time.Time, full bool) {
	if ceil := float64(a.p.Ceiling.Concurrency); full && a.conc < ceil && !started.Before(a.concCut) {
		next := min(ceil, a.conc+1/a.conc)
		if below := a.peak - 1; next > below && now.Sub(a.peakAt) < probeAfter {
			next = max(a.conc, below)
		}
		a.conc = next
	}
	if !math.IsInf(a.rate, 1) && !started.Before(a.rateCut) && now.Sub(a.rateCut) >= holdoff && a.estimate(now) >= a.rate/2 {
		a.rate = min(a.p.Ceiling.PerSecond, a.rate+a.p.Increase/max(a.rate, 1))
	}
}

// throttled cuts the window by Decrease and, for a throttling reply (not
// for a failed connection, which says "too many at once", or "down", not
// "too fast"), the rate too: from what was being sent when that is less
// than the limit (an unlimited one, too), but not from less than cutBase.
func (a *aimd) throttled(now, started time.Time, conn bool) {
	a.signalAt = now
	if !started.Before(a.concCut) {
		if conn {
			a.peak, a.peakAt = a.conc, now
		}
		a.conc = max(float64(a.p.Floor.Concurrency), a.conc*a.p.Decrease)
		a.concCut = now
	}
	if conn || started.Before(a.rateCut) || !a.rateCut.IsZero() && now.Sub(a.rateCut) < holdoff {
		return
	}
	base := min(a.rate, max(a.estimate(now), cutBase))
	a.rate = max(a.p.Floor.PerSecond, base*a.p.Decrease)
	a.rateCut = now
}

// fixedCtl keeps a Config.Limits entry: its concurrency always, its rate
// halved by each throttling reply (down to one message every ten
// seconds) and doubled back towards the entry each quiet minute.
type fixedCtl struct {
	l      Limits
	rate   float64
	slowed time.Time
}

func newFixedCtl(l Limits) *fixedCtl { return &fixedCtl{l: l, rate: l.PerSecond} }

func (f *fixedCtl) limits(now time.Time) (int, float64) {
	if f.rate < f.l.PerSecond && now.Sub(f.slowed) > time.Minute {
		f.rate = min(f.rate*2, f.l.PerSecond)
		f.slowed = now
	}
	return f.l.Concurrency, f.rate
}

func (f *fixedCtl) sent(time.Time) {}

func (f *fixedCtl) projected(now time.Time, _ time.Duration) float64 {
	_, r := f.limits(now)
	return r
}

func (f *fixedCtl) ok(time.Time, time.Time, bool) {}

func (f *fixedCtl) throttled(now, _ time.Time, conn bool) {
	if conn {
		return // a fixed entry reacts to replies only, as it always did
	}
	f.slowed = now
	f.rate = max(f.rate/2, 0.1)
}

// signal is what a transaction's results say to its destinations.
type signal int

const (
	signalNone     signal = iota // no server answered anything (a DNS failure, nothing sent)
	signalOK                     // answered, without throttling
	signalThrottle               // 421 or 4.7.x
	signalConn                   // a connection refused, timed out or lost
)

func signalOf(results []smtpout.Result) signal {
	for _, r := range results {
		if isThrottling(r) {
			return signalThrottle
		}
	}
	s := signalNone
	for _, r := range results {
		if r.Code == 0 && r.Host != "" {
			return signalConn
		}
		if r.Code >= 200 {
			s = signalOK
		}
	}
	return s
}

// destination is the live state of one destination's limits.
type destination struct {
	name, mode string

	mu       sync.Mutex
	ctl      controller
	lim      *rate.Limiter
	conc     int // the window
	inFlight int
	waiting  int
	freed    chan struct{} // closed (and replaced) when a slot frees while someone waits
	used     time.Time
	pace     float64   // transactions per second lately, as aimd.est
	paceT    time.Time // when pace was last updated
	horizon  time.Time // the refused wait until after it (see later)
	signals  int64     // throttling signals
	waits    int64     // transactions deferred, unattempted, for the limits
}

func newDestination(name, mode string, ctl controller, now time.Time) *destination {
	c, r := ctl.limits(now)
	burst := max(1, int(r)) // a fixed entry's burst: one second's worth, as it always was
	if mode != modeFixed {
		burst = burstOf(r)
	}
	return &destination{name: name, mode: mode, ctl: ctl, conc: c, freed: make(chan struct{}),
		lim: rate.NewLimiter(limitOf(r), burst)}
}

// limitOf is a rate for golang.org/x/time/rate, whose unlimited is rate.Inf.
func limitOf(perSecond float64) rate.Limit {
	if math.IsInf(perSecond, 1) {
		return rate.Inf
	}
	return rate.Limit(perSecond)
}

// burstOf is an adaptive destination's burst: a tenth of a second's worth,
// so a destination that throttles above a rate is not sent bursts above it.
func burstOf(perSecond float64) int {
	if math.IsInf(perSecond, 1) {
		return 1
	}
	return max(1, int(perSecond/10))
}

// apply sets the window and the bucket from the controller. d.mu is held.
func (d *destination) apply(now time.Time) {
	c, r := d.ctl.limits(now)
	if c > d.conc && d.waiting > 0 {
		d.wake()
	}
	d.conc = c
	if l := limitOf(r); l != d.lim.Limit() {
		d.lim.SetLimitAt(now, l)
		if d.mode != modeFixed {
			d.lim.SetBurstAt(now, burstOf(r))
		}
	}
}

func (d *destination) wake() {
	close(d.freed)
	d.freed = make(chan struct{})
}

// acquire waits, at most patience, for the destination's rate and then
// for a place in its window. ok false: it would wait wait longer.
func (d *destination) acquire(ctx context.Context, clock func() time.Time, patience time.Duration) (full bool, wait time.Duration, ok bool) {
	now := clock()
	d.mu.Lock()
	d.apply(now)
	r := d.lim.ReserveN(now, 1)
	d.mu.Unlock()
	delay := r.DelayFrom(now)
	if !r.OK() || delay > patience {
		r.CancelAt(now)
		return false, max(delay, d.later(now, true)), false
	}
	t := time.NewTimer(patience)
	defer t.Stop()
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			r.Cancel()
			return false, time.Second, false
		}
	}
	for waited := false; ; waited = true {
		d.mu.Lock()
		if d.inFlight < d.conc {
			d.inFlight++
			full = waited || d.inFlight >= d.conc
			d.used = clock()
			d.ctl.sent(d.used)
			d.pace, d.paceT = d.paceAt(d.used)+1/estTau.Seconds(), d.used
			d.mu.Unlock()
			return full, 0, true
		}
		d.waiting++
		freed := d.freed
		d.mu.Unlock()
		select {
		case <-freed:
			d.mu.Lock()
			d.waiting--
			d.mu.Unlock()
		case <-t.C:
			d.mu.Lock()
			d.waiting--
			d.mu.Unlock()
			r.Cancel()
			return false, d.later(clock(), false), false
		case <-ctx.Done():
			d.mu.Lock()
			d.waiting--
			d.mu.Unlock()
			r.Cancel()
			return false, time.Second, false
		}
	}
}

// later is how long a transaction the destination's limits refused waits:
// the refused are spread out, each after the one before, at twice the
// rate the destination will allow by then (its rate growing as its
// controller projects), or, when its window is what is full, at twice the
// pace it is being sent; rather than all tried again in a moment (a queue
// of thousands for a destination that takes 20 a second would otherwise
// be claimed and deferred over and over). Those the limits refuse again
// go to the back.
func (d *destination) later(now time.Time, rateLimited bool) time.Duration {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.waits++
	if d.horizon.Before(now) {
		d.horizon = now
	}
	r := d.paceAt(now)
	if rateLimited {
		r = d.ctl.projected(now, d.horizon.Sub(now))
	}
	d.horizon = d.horizon.Add(time.Duration(float64(time.Second) / (2 * min(max(r, 0.1), 1e6))))
	return max(d.horizon.Sub(now), 50*time.Millisecond)
}

// paceAt is the transactions per second the destination was sent lately.
// d.mu is held.
func (d *destination) paceAt(now time.Time) float64 {
	if d.paceT.IsZero() {
		return 0
	}
	return d.pace * math.Exp(-now.Sub(d.paceT).Seconds()/estTau.Seconds())
}

func (d *destination) release() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.inFlight--
	if d.waiting > 0 {
		d.wake()
	}
}

// feedback hands a transaction's signal to the controller.
func (d *destination) feedback(sig signal, now, started time.Time, full bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch sig {
	case signalOK:
		d.ctl.ok(now, started, full)
	case signalThrottle, signalConn:
		d.signals++
		d.ctl.throttled(now, started, sig == signalConn)
	}
	d.apply(now)
}

func (d *destination) perSecond(now time.Time) float64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.apply(now)
	return perSecondOf(d.lim.Limit())
}

func perSecondOf(l rate.Limit) float64 {
	if l == rate.Inf {
		return math.Inf(1)
	}
	return float64(l)
}

func (d *destination) stats(now time.Time) DestinationStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.apply(now)
	return DestinationStats{Name: d.name, Mode: d.mode, Concurrency: d.conc, InFlight: d.inFlight, PerSecond: perSecondOf(d.lim.Limit()),
		Throttled: d.signals, Waited: d.waits, LastUsed: d.used}
}
