package delivery_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// BenchmarkDeliverDefaults is BenchmarkDeliver with relayd's default
// configuration: ENVIOS_BENCH_RECIPIENTS (default 10,000) personalised
// recipients at one domain, signed with one RSA-2048 key, through the
// smarthost transport to a loopback sink, with the engine's defaults (8
// workers, claims of 100, no Limits: the smarthost's 16 connections and
// 100 messages per connection). It reports recipients/s, the machine's
// RSA-2048 signing rate on all cores measured before and after in the
// same run, their ratio, and the load average before the run.
// ENVIOS_BENCH_OLD_LIMITS=1 adds the limits that were the default before
// (a fixed 10 at once and 50/s for every domain) to compare.
func BenchmarkDeliverDefaults(b *testing.B) {
	n := 10_000
	if s := os.Getenv("ENVIOS_BENCH_RECIPIENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	old := os.Getenv("ENVIOS_BENCH_OLD_LIMITS") == "1"
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		e := setup(b, db, map[string]int64{"enap/eventos": 50_000_000}, mailing.Config{})
		bumpPool(b, db)
		ctx := context.Background()
		key := rsaOnly(b, db)
		sink := mailtest.NewSink(b)
		sink.DiscardData = true
		ecfg := mailing.EngineConfig{Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS()}, ReturnPathDomain: "envios.servir.gob.pe"}
		if old {
			ecfg.Limits = map[string]mailing.Limits{"*": {Concurrency: 10, PerSecond: 50}}
		}
		eng, err := e.M.NewEngine(ctx, ecfg)
		if err != nil {
			b.Fatal(err)
		}
		var rates []float64
		sign := func() {
			raw, err := e.M.Render(ctx, 1)
			if err != nil {
				b.Fatal(err)
			}
			rates = append(rates, signingRate(b, key, raw))
		}
		var rate float64
		for b.Loop() {
			b.StopTimer()
			if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "ENAP <cursos@servir.gob.pe>",
				Subject: "{{.Nombre}}: inscripción abierta", Text: "Estimado/a {{.Nombre}}, el curso {{.Curso}} abre inscripciones.",
				HTML: "<p>Estimado/a {{.Nombre}}, el curso <b>{{.Curso}}</b> abre inscripciones.</p>", Recipients: people(n)}); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(loadAverage(), "load-avg-1m")
			if len(rates) == 0 {
				sign()
			}
			b.StartTimer()
			sent0 := eng.Stats().Outcomes[mailing.StatusSent]
			runCtx, stop := context.WithCancel(ctx)
			ran := make(chan error, 1)
			startAt := time.Now()
			clockAt := startAt
			go func() { ran <- eng.Run(runCtx) }()
			for eng.Stats().Outcomes[mailing.StatusSent]-sent0 < int64(n) {
				select {
				case err := <-ran:
					b.Fatalf("Run returned %v with %d of %d sent", err, eng.Stats().Outcomes[mailing.StatusSent]-sent0, n)
				case <-time.After(2 * time.Millisecond):
				}
				now := time.Now() // the store's clock follows: what the limits deferred comes due
				e.Clock.Add(now.Sub(clockAt))
				clockAt = now
				if st := eng.Stats(); !old && st.Outcomes[mailing.StatusDeferred]+st.Outcomes[mailing.StatusFailed] > 0 {
					b.Fatalf("not every recipient was sent at once: %v", st.Outcomes)
				}
			}
			elapsed := time.Since(startAt)
			stop()
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
			rate = float64(n) / elapsed.Seconds()
			b.ReportMetric(rate, "recipients/s")
		}
		sign()
		mean := (rates[0] + rates[len(rates)-1]) / 2
		b.ReportMetric(mean, "signatures/s")
		b.ReportMetric(100*rate/mean, "ratio-%")
	})
}

// loadAverage is the machine's load average over the last minute.
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}
