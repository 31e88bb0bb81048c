package delivery_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// BenchmarkDeliver enqueues ENVIOS_BENCH_RECIPIENTS personalised recipients
// (default 10,000; BENCHMARKS.md uses 100,000), then delivers them all to a
// loopback sink through the smarthost transport, and reports recipients/s
// from the first claim to the last row marked sent, and peak RSS. With
// dkim, every message is signed with RSA-2048; the same run measures the
// machine's RSA-2048 DKIM signing rate on all cores, before and after the
// delivery, and reports the ratio to their mean.
func BenchmarkDeliver(b *testing.B) {
	n := 10_000
	if s := os.Getenv("ENVIOS_BENCH_RECIPIENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	for _, signed := range []bool{false, true} {
		name := "unsigned"
		if signed {
			name = "dkim-rsa2048"
		}
		b.Run(name, func(b *testing.B) {
			storetest.Each(b, func(b *testing.B, db *bun.DB) {
				cfg := mailing.Config{}
				if !signed {
					cfg.UnsignedDomains = []string{"servir.gob.pe"}
				}
				e := setup(b, db, map[string]int64{"enap/eventos": 50_000_000}, cfg)
				bumpPool(b, db)
				ctx := context.Background()
				var key dkimkey.Key
				if signed {
					key = rsaOnly(b, db)
				}
				sink := mailtest.NewSink(b)
				sink.DiscardData = true // the sink shares this process: keep its memory out of the RSS
				ecfg := mailing.EngineConfig{Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS()},
					ReturnPathDomain: "envios.servir.gob.pe", Workers: 32, Batch: 1000,
					// One loopback sink stands for every destination: no per-domain cap.
					Limits: map[string]mailing.Limits{"example.com": {Concurrency: 64, PerSecond: 1e6}}}
				if !signed {
					ecfg.UnsignedDomains = []string{"servir.gob.pe"}
				}
				eng, err := e.M.NewEngine(ctx, ecfg)
				if err != nil {
					b.Fatal(err)
				}
				// The machine's signing rate is measured just before and just
				// after the delivery, and averaged: this kind of machine's
				// speed drifts over minutes.
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
					if signed && len(rates) == 0 {
						sign()
					}
					b.StartTimer()
					// Run, as relayd serve runs it, until the engine has
					// recorded every recipient sent (Stats count committed
					// outcomes only).
					sent0 := eng.Stats().Outcomes[mailing.StatusSent]
					runCtx, stop := context.WithCancel(ctx)
					ran := make(chan error, 1)
					startAt := time.Now()
					go func() { ran <- eng.Run(runCtx) }()
					for eng.Stats().Outcomes[mailing.StatusSent]-sent0 < int64(n) {
						select {
						case err := <-ran:
							b.Fatalf("Run returned %v with %d of %d sent", err, eng.Stats().Outcomes[mailing.StatusSent]-sent0, n)
						case <-time.After(2 * time.Millisecond):
						}
						if st := eng.Stats(); st.Outcomes[mailing.StatusDeferred]+st.Outcomes[mailing.StatusFailed] > 0 {
							b.Fatalf("not every recipient was sent: %v", st.Outcomes)
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
				if got := len(sink.Messages()); got < n {
					b.Fatalf("sink got %d of %d", got, n)
				}
				b.ReportMetric(peakRSS(), "peak-RSS-MB")
				if signed {
					sign()
					mean := (rates[0] + rates[len(rates)-1]) / 2
					b.ReportMetric(mean, "signatures/s")
					b.ReportMetric(100*rate/mean, "ratio-%")
				}
			})
		})
	}
}

// rsaOnly signs servir.gob.pe with one RSA-2048 key only: setup's Ed25519
// key is retired, so one signature is made per message.
func rsaOnly(b *testing.B, db *bun.DB) dkimkey.Key {
	b.Helper()
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "UPDATE dkim_keys SET retired_at = created_at"); err != nil {
		b.Fatal(err)
	}
	key, err := dkimkey.Add(ctx, db, nil, "servir.gob.pe", "bench", dkimkey.RSA2048, start)
	if err != nil {
		b.Fatal(err)
	}
	return key
}

// signingRate measures DKIM RSA-2048 signatures per second on all cores.
func signingRate(b *testing.B, k dkimkey.Key, msg []byte) float64 {
	b.Helper()
	var count atomic.Int64
	deadline := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				var out bytes.Buffer
				err := dkim.Sign(&out, bytes.NewReader(msg), &dkim.SignOptions{Domain: k.Domain, Selector: k.Selector, Signer: k.Signer,
					HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed})
				if err != nil {
					panic(fmt.Sprint(err))
				}
				count.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(count.Load()) / 2
}

// BenchmarkTransactionalDuringCampaign measures the priority guarantee of
// issue 4 at scale: a bulk campaign of ENVIOS_BENCH_RECIPIENTS personalised
// recipients (default 100,000; BENCHMARKS.md uses 1,000,000) is queued
// (not timed), and while the engine delivers it DKIM-signed (RSA-2048, as
// relayd serve runs it: 32 workers, claims of 1,000) a transactional
// message is sent every 100 ms, 20 in all. It reports the p50 and the
// largest delay from Send's return to the sink's RCPT for that message,
// and the bulk recipients the sink was offered meanwhile (its RCPTs).
func BenchmarkTransactionalDuringCampaign(b *testing.B) {
	n := 100_000
	if s := os.Getenv("ENVIOS_BENCH_RECIPIENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		e := setup(b, db, map[string]int64{"enap/eventos": 50_000_000, "sjti/talento": 1000}, mailing.Config{})
		bumpPool(b, db)
		ctx := context.Background()
		rsaOnly(b, db)
		var mu sync.Mutex
		seen := map[string]time.Time{}
		sink := mailtest.NewSink(b)
		sink.DiscardData = true
		var bulkSeen atomic.Int64
		sink.Reply = func(rcpt string) error {
			if strings.HasPrefix(rcpt, "urgente") {
				mu.Lock()
				seen[rcpt] = time.Now()
				mu.Unlock()
			} else {
				bulkSeen.Add(1)
			}
			return nil
		}
		eng, err := e.M.NewEngine(ctx, mailing.EngineConfig{Transport: &mailing.Smarthost{Addr: sink.Addr, TLS: sink.ClientTLS()},
			ReturnPathDomain: "envios.servir.gob.pe", Workers: 32, Batch: 1000,
			Limits: map[string]mailing.Limits{"example.com": {Concurrency: 64, PerSecond: 1e6}}})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			b.StopTimer()
			if _, err := e.M.SendBatch(ctx, mailing.Batch{Account: "enap/eventos", From: "ENAP <cursos@servir.gob.pe>", Priority: mailing.Bulk,
				Subject: "{{.Nombre}}: inscripción abierta", Text: "Estimado/a {{.Nombre}}, el curso {{.Curso}} abre inscripciones.",
				Recipients: people(n)}); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			runCtx, stop := context.WithCancel(ctx)
			ran := make(chan error, 1)
			go func() { ran <- eng.Run(runCtx) }()
			for eng.Stats().Outcomes[mailing.StatusSent] < 2000 { // the campaign is under way
				time.Sleep(5 * time.Millisecond)
			}
			bulk0 := bulkSeen.Load()
			const urgent = 20
			sentAt := map[string]time.Time{}
			for i := range urgent {
				m := basic()
				m.To, m.Subject = []string{fmt.Sprintf("urgente%d@example.org", i)}, "Restablecer contraseña"
				if _, err := e.M.Send(ctx, m); err != nil {
					b.Fatal(err)
				}
				sentAt[m.To[0]] = time.Now()
				time.Sleep(100 * time.Millisecond)
			}
			var delays []time.Duration
			for deadline := time.Now().Add(time.Minute); len(delays) < urgent; {
				if time.Now().After(deadline) {
					b.Fatalf("%d of %d transactional messages arrived within a minute", len(delays), urgent)
				}
				time.Sleep(10 * time.Millisecond)
				mu.Lock()
				delays = delays[:0]
				for to, t := range sentAt {
					if at, ok := seen[to]; ok {
						delays = append(delays, at.Sub(t))
					}
				}
				mu.Unlock()
			}
			bulk := bulkSeen.Load() - bulk0
			stop()
			if err := <-ran; err != nil {
				b.Fatal(err)
			}
			slices.Sort(delays)
			b.ReportMetric(float64(delays[len(delays)/2].Milliseconds()), "p50-ms")
			b.ReportMetric(float64(delays[len(delays)-1].Milliseconds()), "max-ms")
			b.ReportMetric(float64(bulk), "bulk-sent-meanwhile")
		}
	})
}
