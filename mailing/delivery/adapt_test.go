package delivery

import (
	"math"
	"testing"
	"time"

	"github.com/servir-pe/envios/mailing/smtpout"
)

// The control on a simulated clock: a destination that throttles above a
// rate, one that takes only so many connections at once, and their
// recovery. The engine's tests (adapt_engine_test.go) check the same
// against real sinks, with generous bounds.

// feedbackAt is a transaction's answer, due at a time.
type feedbackAt struct {
	at, started time.Time
	ok, full    bool
}

// A destination that refuses (421 4.7.28) whatever would exceed R
// accepted in the last second: the rate converges below R with few
// refusals, and grows back once the destination stops throttling.
func TestAIMDConvergesOnARateLimit(t *testing.T) {
	const R = 50.0
	a := newAIMD(Adaptive{Start: Limits{Concurrency: 5, PerSecond: 10}, Ceiling: Limits{Concurrency: 20, PerSecond: 1000}, Increase: 5}.withDefaults())
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var accepted []time.Time // the destination's window
	var pending []feedbackAt
	limit := true
	var sent, refused, sentLate, refusedLate int
	at := t0
	for at.Before(t0.Add(90 * time.Second)) {
		for len(pending) > 0 && !pending[0].at.After(at) {
			f := pending[0]
			pending = pending[1:]
			if f.ok {
				a.ok(f.at, f.started, f.full)
			} else {
				a.throttled(f.at, f.started, false)
			}
		}
		if at.After(t0.Add(60 * time.Second)) {
			limit = false // the destination stops throttling
		}
		a.sent(at)
		for len(accepted) > 0 && at.Sub(accepted[0]) >= time.Second {
			accepted = accepted[1:]
		}
		ok := !limit || float64(len(accepted)) < R
		if ok {
			accepted = append(accepted, at)
		}
		late := at.After(t0.Add(20*time.Second)) && limit
		switch {
		case ok && late:
			sent, sentLate = sent+1, sentLate+1
		case ok:
			sent++
		case late:
			refused, refusedLate = refused+1, refusedLate+1
		default:
			refused++
		}
		pending = append(pending, feedbackAt{at: at.Add(30 * time.Millisecond), started: at, ok: ok})
		_, r := a.limits(at)
		at = at.Add(time.Duration(float64(time.Second) / r))
		if at.After(t0.Add(60*time.Second)) && at.Before(t0.Add(61*time.Second)) {
			if r > 1.2*R {
				t.Fatalf("rate %.1f/s after a minute of throttling above %v/s", r, R)
			}
		}
	}
	rate := float64(sentLate) / 40
	t.Logf("sent %d, refused %d; from 20 s to 60 s: %.1f/s accepted, %d refused", sent, refused, rate, refusedLate)
	if rate < 0.6*R || rate > R {
		t.Errorf("converged to %.1f/s against a limit of %v/s", rate, R)
	}
	if refusedLate > sentLate/50 {
		t.Errorf("%d refused against %d accepted: more than 2%%", refusedLate, sentLate)
	}
	// 30 s without throttling: the rate grew back well past R.
	if _, r := a.limits(at); r < 2*R {
		t.Errorf("rate %.1f/s after 30 quiet seconds, want it to grow back past %v/s", r, 2*R)
	}
}

// A destination that takes K connections at once and refuses the next
// ones: the window settles at most K most of the time, with few refusals,
// and the destination is kept busy.
func TestAIMDSettlesOnAConnectionLimit(t *testing.T) {
	const K = 4
	const latency = 50 * time.Millisecond
	a := newAIMD(Adaptive{Start: Limits{Concurrency: 10, PerSecond: 1e6}, Ceiling: Limits{Concurrency: 20, PerSecond: 1e6}}.withDefaults())
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	var pending []feedbackAt
	inFlight, active, accepted, refused := 0, 0, 0, 0
	var within, samples int
	for at := t0; at.Before(t0.Add(60 * time.Second)); at = at.Add(time.Millisecond) {
		rest := pending[:0]
		for _, f := range pending {
			if f.at.After(at) {
				rest = append(rest, f)
				continue
			}
			inFlight--
			if f.ok {
				active--
				a.ok(f.at, f.started, f.full)
			} else {
				a.throttled(f.at, f.started, true)
			}
		}
		pending = rest
		c, _ := a.limits(at)
		for inFlight < c {
			inFlight++
			a.sent(at)
			full := inFlight >= c
			if active < K {
				active++
				accepted++
				pending = append(pending, feedbackAt{at: at.Add(latency), started: at, ok: true, full: full})
			} else {
				refused++
				pending = append(pending, feedbackAt{at: at.Add(time.Millisecond), started: at, full: full})
			}
		}
		if at.After(t0.Add(10 * time.Second)) {
			samples++
			if c <= K {
				within++
			}
		}
	}
	t.Logf("accepted %d, refused %d; window ≤ %d %.0f%% of the time", accepted, refused, K, 100*float64(within)/float64(samples))
	if float64(within) < 0.8*float64(samples) {
		t.Errorf("window ≤ %d only %d of %d samples", K, within, samples)
	}
	if refused > accepted/50 {
		t.Errorf("%d refused against %d accepted", refused, accepted)
	}
	if most := 60 * K * int(time.Second/latency); accepted < most/2 {
		t.Errorf("%d accepted in a minute, the destination takes %d", accepted, most)
	}
}

// An unlimited destination (the smarthost) throttled is cut from the rate
// it was being sent, and is unlimited again after a quiet minute.
func TestAIMDUnlimitedComesBack(t *testing.T) {
	top := Limits{Concurrency: 16, PerSecond: math.Inf(1)}
	a := newAIMD(Adaptive{Start: top, Ceiling: top, Floor: Limits{Concurrency: 1, PerSecond: 0.1}, Increase: 2, Decrease: 0.5})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	for i := range 1000 { // 500/s for two seconds
		a.sent(t0.Add(time.Duration(i) * 2 * time.Millisecond))
	}
	now := t0.Add(2 * time.Second)
	a.throttled(now, now.Add(-time.Millisecond), false)
	c, r := a.limits(now)
	if c != 8 || r < 200 || r > 260 {
		t.Fatalf("after a 421 at 500/s: %d at once, %.1f/s; want 8 and about 250/s", c, r)
	}
	a.throttled(now.Add(100*time.Millisecond), now.Add(-5*time.Millisecond), false) // sent before the cut
	if c2, r2 := a.limits(now); c2 != c || r2 != r {
		t.Fatalf("a transaction sent before the cut cut again: %d, %.1f/s", c2, r2)
	}
	a.throttled(now.Add(200*time.Millisecond), now.Add(50*time.Millisecond), false) // sent after it, within the rate's holdoff
	if c2, r2 := a.limits(now); c2 != c/2 || r2 != r {
		t.Fatalf("a transaction sent after the cut: %d, %.1f/s; want the window halved again, the rate kept", c2, r2)
	}
	if _, r := a.limits(now.Add(61 * time.Second)); !math.IsInf(r, 1) {
		t.Fatalf("rate %.1f/s a quiet minute later, want unlimited again", r)
	}
}

// A fixed entry keeps its concurrency, halves its rate on a throttling
// reply (not on a failed connection) and doubles back each quiet minute.
func TestFixedCtl(t *testing.T) {
	f := newFixedCtl(Limits{Concurrency: 3, PerSecond: 40})
	t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	f.throttled(t0, t0, true)
	if _, r := f.limits(t0); r != 40 {
		t.Fatalf("a failed connection changed the rate to %v", r)
	}
	f.throttled(t0, t0, false)
	f.throttled(t0, t0, false)
	if c, r := f.limits(t0); c != 3 || r != 10 {
		t.Fatalf("after two throttling replies: %d, %v; want 3, 10", c, r)
	}
	if _, r := f.limits(t0.Add(61 * time.Second)); r != 20 {
		t.Fatalf("a quiet minute later %v, want 20", r)
	}
}

func TestSignalOf(t *testing.T) {
	for _, tt := range []struct {
		name string
		rs   []smtpout.Result
		want signal
	}{
		{"delivered", []smtpout.Result{{Host: "mx", Code: 250}}, signalOK},
		{"a refused recipient is an answer", []smtpout.Result{{Host: "mx", Code: 550, Enhanced: "5.1.1"}, {Host: "mx", Code: 250}}, signalOK},
		{"421", []smtpout.Result{{Host: "mx", Code: 250}, {Host: "mx", Code: 421, Text: "closing"}}, signalThrottle},
		{"4.7.28", []smtpout.Result{{Host: "mx", Code: 450, Enhanced: "4.7.28"}}, signalThrottle},
		{"connection refused", []smtpout.Result{{Host: "mx", Text: "connect: connection refused"}}, signalConn},
		{"DNS failure", []smtpout.Result{{Enhanced: "4.4.3", Text: "DNS lookup failed"}}, signalNone},
		{"5.7.1 is not throttling", []smtpout.Result{{Host: "mx", Code: 550, Enhanced: "5.7.1"}}, signalOK},
	} {
		if got := signalOf(tt.rs); got != tt.want {
			t.Errorf("%s: %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestAdaptiveDefaults(t *testing.T) {
	a := DefaultAdaptive()
	want := Adaptive{Start: Limits{5, 20}, Floor: Limits{1, 0.1}, Ceiling: Limits{20, 200}, Increase: 2, Decrease: 0.5}
	if a != want {
		t.Fatalf("%+v", a)
	}
	// Out of order: clamped, floor ≤ start ≤ ceiling.
	b := Adaptive{Start: Limits{50, 500}, Ceiling: Limits{10, 100}, Decrease: 3}.withDefaults()
	if b.Start != (Limits{10, 100}) || b.Decrease != 0.5 {
		t.Fatalf("%+v", b)
	}
}
