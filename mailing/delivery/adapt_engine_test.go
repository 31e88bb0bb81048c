package delivery_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// These tests run engines for seconds of real time against real sinks:
// what they check is the control (DB-independent), so they run on SQLite
// only, and their bounds are generous (the machine may be busy).

// followClock moves e's clock along with real time until the test ends,
// so that recipients deferred for a destination's limits come due.
func followClock(t *testing.T, e env) {
	t.Helper()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		last := time.Now()
		for {
			select {
			case <-stop:
				return
			case now := <-tick.C:
				e.Clock.Add(now.Sub(last))
				last = now
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done })
}

// direct is an engine delivering to MX hosts found through dns, on port.
func direct(t *testing.T, e env, dns, port string, sink *mailtest.Sink, cfg mailing.EngineConfig) *mailing.Engine {
	t.Helper()
	cfg.Transport = &mailing.DirectMX{Resolver: mailing.NewResolver(dns), Port: port, HelloName: "mta.envios.test", RootCAs: sink.ClientTLS().RootCAs,
		Timeout: 10 * time.Second}
	cfg.ReturnPathDomain = "envios.servir.gob.pe"
	cfg.UnsignedDomains = []string{"servir.gob.pe"}
	eng, err := e.M.NewEngine(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return eng
}

// queue enqueues n bulk recipients at domain.
func queue(t *testing.T, e env, domain string, n int) {
	t.Helper()
	rs := make([]mailing.Recipient, n)
	for i := range rs {
		rs[i] = mailing.Recipient{Address: fmt.Sprintf("p%d@%s", i, domain)}
	}
	if _, err := e.M.SendBatch(context.Background(), mailing.Batch{Account: "enap/eventos", From: "avisos@servir.gob.pe", Subject: "s", Text: "t",
		Recipients: mailing.List(rs...)}); err != nil {
		t.Fatal(err)
	}
}

// runUntilTheEnd runs eng until the test ends.
func runUntilTheEnd(t *testing.T, eng *mailing.Engine) {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- eng.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-ran; err != nil {
			t.Error(err)
		}
	})
}

func destination(eng *mailing.Engine, name string) (mailing.DestinationStats, bool) {
	for _, d := range eng.Stats().Destinations {
		if d.Name == name {
			return d, true
		}
	}
	return mailing.DestinationStats{}, false
}

func sqliteEnv(t *testing.T, n int64) env {
	t.Helper()
	return setup(t, storetest.Open(t, store.SQLite), map[string]int64{"enap/eventos": n}, mailing.Config{UnsignedDomains: []string{"servir.gob.pe"}})
}

// A destination that answers 421 4.7.28 above R messages a second: the
// engine's rate converges near R with few throttled attempts, and grows
// back once the destination stops throttling.
func TestAdaptiveRateFollowsAThrottlingDestination(t *testing.T) {
	const R = 30
	e := sqliteEnv(t, 100_000)
	sink := mailtest.NewSink(t)
	sink.DiscardData = true
	var mu sync.Mutex
	var window []time.Time
	var throttle atomic.Bool
	var accepted, refused atomic.Int64
	throttle.Store(true)
	sink.Reply = func(string) error {
		mu.Lock()
		defer mu.Unlock()
		now := time.Now()
		for len(window) > 0 && now.Sub(window[0]) >= time.Second {
			window = window[1:]
		}
		if throttle.Load() && len(window) >= R {
			refused.Add(1)
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 28}, Message: "too many messages, slow down"}
		}
		window = append(window, now)
		accepted.Add(1)
		return nil
	}
	_, port, _ := net.SplitHostPort(sink.Addr)
	dns := mailtest.NewDNS(t, mailtest.Zone{MX: map[string][]mailtest.MX{"rate.test.": {{Pref: 10, Host: "mx.rate.test."}}},
		A: map[string]string{"mx.rate.test.": "127.0.0.1"}})
	eng := direct(t, e, dns, port, sink, mailing.EngineConfig{Workers: 8,
		Adaptive: mailing.Adaptive{Start: mailing.Limits{Concurrency: 4, PerSecond: 10}, Ceiling: mailing.Limits{Concurrency: 16, PerSecond: 1000}, Increase: 10}})
	queue(t, e, "rate.test", 3000)
	followClock(t, e)
	runUntilTheEnd(t, eng)

	time.Sleep(3 * time.Second) // up from 10/s to the limit
	a0, r0 := accepted.Load(), refused.Load()
	time.Sleep(6 * time.Second)
	a1, r1 := accepted.Load()-a0, refused.Load()-r0
	limited := eng.DestinationRate("rate.test")
	rate := float64(a1) / 6
	t.Logf("throttled: %.1f/s accepted, %d refused (%d in all), rate allowed %.1f/s; %+v", rate, r1, refused.Load(), limited, eng.Stats().Destinations)
	if rate < 0.4*R || rate > 1.2*R {
		t.Errorf("%.1f messages/s accepted against a destination that takes %d/s", rate, R)
	}
	if r1 > a1/8 {
		t.Errorf("%d throttled attempts against %d accepted", r1, a1)
	}
	if limited > 2*R {
		t.Errorf("rate allowed %.1f/s after throttling above %d/s", limited, R)
	}
	if d, ok := destination(eng, "rate.test"); !ok || d.Mode != "adaptive" || d.Throttled == 0 {
		t.Errorf("destination rate.test: %+v", d)
	}

	throttle.Store(false) // quiet: the rate grows back
	time.Sleep(5 * time.Second)
	if again := eng.DestinationRate("rate.test"); again < limited+10 || again < R {
		t.Errorf("rate %.1f/s after 5 quiet seconds, %.1f/s before: it did not grow back past %d/s", again, limited, R)
	}
}

// limitConns is a proxy in front of addr that takes k connections at once
// and answers any more with 421 and closes them.
func limitConns(t *testing.T, addr string, k int) (port string, refused *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var active atomic.Int64
	refused = new(atomic.Int64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			if active.Add(1) > int64(k) {
				active.Add(-1)
				refused.Add(1)
				_, _ = io.WriteString(c, "421 4.7.0 too many connections from your IP\r\n")
				c.Close()
				continue
			}
			go func() {
				defer active.Add(-1)
				defer c.Close()
				up, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, c); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	_, port, _ = net.SplitHostPort(l.Addr().String())
	return port, refused
}

// A destination that takes K connections at once and refuses more: the
// engine's concurrency settles at K or less, with few refused attempts.
func TestAdaptiveConcurrencySettlesOnAConnectionLimit(t *testing.T) {
	const K = 3
	e := sqliteEnv(t, 100_000)
	sink := mailtest.NewSink(t)
	sink.DiscardData = true
	sink.DataReply = func([]string) error { time.Sleep(40 * time.Millisecond); return nil } // connections stay open a while
	port, refused := limitConns(t, sink.Addr, K)
	dns := mailtest.NewDNS(t, mailtest.Zone{MX: map[string][]mailtest.MX{"conns.test.": {{Pref: 10, Host: "mx.conns.test."}}},
		A: map[string]string{"mx.conns.test.": "127.0.0.1"}})
	eng := direct(t, e, dns, port, sink, mailing.EngineConfig{Workers: 16,
		Adaptive: mailing.Adaptive{Start: mailing.Limits{Concurrency: 8, PerSecond: 1000}, Ceiling: mailing.Limits{Concurrency: 16, PerSecond: 1000}}})
	queue(t, e, "conns.test", 2000)
	followClock(t, e)
	runUntilTheEnd(t, eng)

	time.Sleep(2 * time.Second)
	var within, samples int
	for range 100 { // 8 s
		time.Sleep(80 * time.Millisecond)
		if d, ok := destination(eng, "conns.test"); ok {
			samples++
			if d.Concurrency <= K {
				within++
			}
		}
	}
	sent := len(sink.Messages())
	t.Logf("%d sent, %d connections refused; concurrency ≤ %d in %d of %d samples", sent, refused.Load(), K, within, samples)
	if samples == 0 || float64(within) < 0.8*float64(samples) {
		t.Errorf("concurrency ≤ %d in only %d of %d samples", K, within, samples)
	}
	if n := refused.Load(); n > 20 || n > int64(sent)/10 {
		t.Errorf("%d connections refused against %d sent", n, sent)
	}
	if sent < 100 {
		t.Errorf("only %d sent in 10 s to a destination that takes %d at once", sent, K)
	}
}

// Through a smarthost, the default configuration puts no limit on the
// recipient domains: 1,000 recipients at one domain go as fast as the
// smarthost takes them, none deferred for a destination's limits, faster
// than the old 50/s per domain would allow. A 421 from the smarthost then
// slows the smarthost down, and the metrics show it.
func TestSmarthostModeIsNotCappedPerDomain(t *testing.T) {
	const n = 1000
	e := sqliteEnv(t, 100_000)
	sink := mailtest.NewSink(t)
	sink.DiscardData = true
	var slow atomic.Bool
	sink.Reply = func(string) error {
		if slow.Load() {
			return &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "slow down"}
		}
		return nil
	}
	eng, err := e.M.NewEngine(context.Background(), mailing.EngineConfig{Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS()},
		ReturnPathDomain: "envios.servir.gob.pe", UnsignedDomains: []string{"servir.gob.pe"}})
	if err != nil {
		t.Fatal(err)
	}
	if r := eng.DestinationRate("example.com"); !math.IsInf(r, 1) {
		t.Fatalf("rate %v before any delivery, want unlimited", r)
	}
	queue(t, e, "example.com", n)
	followClock(t, e)
	begin := time.Now()
	runUntilTheEnd(t, eng)
	for eng.Stats().Outcomes[mailing.StatusSent] < n {
		if time.Since(begin) > time.Minute {
			t.Fatalf("%d of %d sent in a minute", eng.Stats().Outcomes[mailing.StatusSent], n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	took := time.Since(begin)
	st := eng.Stats()
	t.Logf("%d sent in %v (%.0f/s); destinations %+v", n, took, n/took.Seconds(), st.Destinations)
	if st.Outcomes[mailing.StatusDeferred] != 0 || len(st.Destinations) != 1 || st.Destinations[0].Mode != "smarthost" || st.Destinations[0].Waited != 0 {
		t.Fatalf("outcomes %v, destinations %+v: want every recipient sent at once, none waiting for a limit", st.Outcomes, st.Destinations)
	}
	if took > n/50*time.Second {
		t.Errorf("%d recipients took %v: no faster than 50/s", n, took)
	}
	slow.Store(true)
	msg := basic()
	msg.Account, msg.To = "enap/eventos", []string{"otra@example.com"}
	if _, err := e.M.Send(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
	for d, _ := destination(eng, sink.Addr); d.Throttled == 0; d, _ = destination(eng, sink.Addr) {
		if time.Since(begin) > time.Minute {
			t.Fatal("the smarthost's 421 was not seen")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := eng.DestinationRate("example.com"); math.IsInf(r, 1) || r <= 0 {
		t.Fatalf("rate %v after the smarthost's 421, want it slowed down", r)
	}
	var b bytes.Buffer
	eng.Stats().WriteDestinationMetrics(&b)
	for _, want := range []string{
		fmt.Sprintf("envios_delivery_destination_concurrency{destination=%q,mode=\"smarthost\"} 8\n", sink.Addr),
		fmt.Sprintf("envios_delivery_destination_throttled_total{destination=%q,mode=\"smarthost\"} 1\n", sink.Addr),
		"# TYPE envios_delivery_destination_rate gauge\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("metrics lack %q:\n%s", want, b.String())
		}
	}
}

// Domains whose MX hosts are one provider's (the same registrable domain)
// share one destination: with a fixed limit of one message per 1,000 s on
// the group, the second domain waits for the first; another provider's
// domain goes.
func TestMXGroupSharesOneBudget(t *testing.T) {
	e := sqliteEnv(t, 1000)
	sink := mailtest.NewSink(t)
	_, port, _ := net.SplitHostPort(sink.Addr)
	dns := mailtest.NewDNS(t, mailtest.Zone{MX: map[string][]mailtest.MX{
		"uno.test.":  {{Pref: 10, Host: "mx1.shared.test."}},
		"dos.test.":  {{Pref: 5, Host: "mx2.shared.test."}, {Pref: 50, Host: "backup.other.test."}},
		"tres.test.": {{Pref: 10, Host: "mx.other.test."}},
	}, A: map[string]string{"mx1.shared.test.": "127.0.0.1", "mx2.shared.test.": "127.0.0.1", "mx.other.test.": "127.0.0.1", "backup.other.test.": "127.0.0.1"}})
	eng := direct(t, e, dns, port, sink, mailing.EngineConfig{Workers: 1,
		Limits: map[string]mailing.Limits{"shared.test": {Concurrency: 1, PerSecond: 0.001}}})
	ctx := context.Background()
	var second string
	for _, to := range []string{"a@uno.test", "b@dos.test", "c@tres.test"} {
		msg := basic()
		msg.Account, msg.To = "enap/eventos", []string{to}
		r, err := e.M.Send(ctx, msg)
		if err != nil {
			t.Fatal(err)
		}
		if to == "b@dos.test" {
			second = r.MessageID
		}
	}
	if _, err := eng.RunOnce(ctx); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range sink.Messages() {
		got = append(got, m.To[0])
	}
	if len(got) != 2 || got[0] != "a@uno.test" || got[1] != "c@tres.test" {
		t.Fatalf("sink got %v, want a@uno.test and c@tres.test (b@dos.test shares uno.test's budget)", got)
	}
	rs, err := e.M.Recipients(ctx, "", second, -1, 0)
	if err != nil || len(rs) != 1 || rs[0].Status != mailing.StatusDeferred || rs[0].Attempts != 0 {
		t.Fatalf("b@dos.test %+v (%v), want deferred without an attempt", rs, err)
	}
	var names []string
	for _, d := range eng.Stats().Destinations {
		names = append(names, d.Mode+" "+d.Name)
	}
	if strings.Join(names, ", ") != "adaptive other.test, fixed shared.test" {
		t.Fatalf("destinations %v, want the groups, not the domains", names)
	}
}
