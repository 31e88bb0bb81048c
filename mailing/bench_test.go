package mailing_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailingtest"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
)

var (
	peakRSS = mailingtest.PeakRSS
	people  = mailingtest.People
)

// BenchmarkBatchEnqueue enqueues one personalised batch of
// ENVIOS_BENCH_RECIPIENTS recipients (default 100,000; BENCHMARKS.md uses
// 1,000,000) per op and reports recipients/s and the process's peak RSS.
// Run one engine per process so the RSS is that engine's:
//
//	ENVIOS_BENCH_RECIPIENTS=1000000 go test -run XXX -bench 'BatchEnqueue/postgres' -benchtime 1x ./mailing
func BenchmarkBatchEnqueue(b *testing.B) {
	n := 100_000
	if s := os.Getenv("ENVIOS_BENCH_RECIPIENTS"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		e := setup(b, db, map[string]int64{"enap/eventos": 50_000_000}, mailing.Config{})
		bumpPool(b, db)
		if s := os.Getenv("ENVIOS_BENCH_SUPPRESSIONS"); s != "" { // a suppression list of that many other addresses
			k, _ := strconv.Atoi(s)
			mailingtest.FillSuppressions(b, db, k)
		}
		ctx := context.Background()
		var total int
		for b.Loop() {
			rec, err := e.M.SendBatch(ctx, mailing.Batch{
				Account: "enap/eventos", From: "ENAP <cursos@servir.gob.pe>",
				Subject:    "{{.Nombre}}: inscripción abierta",
				Text:       "Estimado/a {{.Nombre}}, el curso {{.Curso}} abre inscripciones.",
				HTML:       "<p>Estimado/a {{.Nombre}}, el curso <b>{{.Curso}}</b> abre inscripciones.</p>",
				Campaign:   "bench",
				Recipients: people(n),
			})
			if err != nil || rec.Accepted != n {
				b.Fatalf("accepted %d of %d: %v", rec.Accepted, n, err)
			}
			total += n
		}
		b.ReportMetric(float64(total)/b.Elapsed().Seconds(), "recipients/s")
		b.ReportMetric(peakRSS(), "peak-RSS-MB")
	})
}

var bumpPool = mailingtest.BumpPool

// BenchmarkSendConcurrent32 measures single sends (one recipient each,
// committed before Send returns) from 32 concurrent callers.
func BenchmarkSendConcurrent32(b *testing.B) {
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		e := setup(b, db, map[string]int64{"sjti/talento": 50_000_000}, mailing.Config{})
		bumpPool(b, db)
		ctx := context.Background()
		var seq atomic.Int64
		b.SetParallelism(32 / max(1, runtimeProcs()))
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				msg := basic()
				msg.To = []string{fmt.Sprintf("u%d@example.com", seq.Add(1))}
				if _, err := e.M.Send(ctx, msg); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sends/s")
	})
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
