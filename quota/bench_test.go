package quota_test

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/quota"
)

func benchLedger(b *testing.B, db *bun.DB) *quota.Ledger {
	b.Helper()
	l := quota.New(db, quota.Config{Now: func() time.Time { return midYear }})
	plan := quota.Plan{
		Pool:     quota.PoolSpec{Name: "bench", Total: quota.MaxAmount, StartsAt: poolStart, EndsAt: poolEnd},
		Accounts: []quota.AccountSpec{{Name: "bench/one", Allocation: quota.MaxAmount}},
	}
	if _, err := l.Init(context.Background(), plan, "bench"); err != nil {
		b.Fatal(err)
	}
	return l
}

// BenchmarkCharge measures one committed charge transaction (conditional
// update, ledger entry, per-reference and hourly counters, commit).
func BenchmarkCharge(b *testing.B) {
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		l := benchLedger(b, db)
		ctx := context.Background()
		var seq atomic.Int64
		b.Run("serial", func(b *testing.B) {
			for b.Loop() {
				if _, err := l.Charge(ctx, db, charge("bench/one", 1, fmt.Sprint(seq.Add(1)))); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "charges/s")
		})
		b.Run("parallel64", func(b *testing.B) {
			b.SetParallelism(64 / max(1, runtimeProcs()))
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := l.Charge(ctx, db, charge("bench/one", 1, fmt.Sprint(seq.Add(1)))); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "charges/s")
		})
		// batch100: 100 charges (100 messages) share one commit, the way
		// the relay and the library will group acceptances; ns/op is per charge.
		b.Run("batch100", func(b *testing.B) {
			const batch = 100
			n := 0
			for b.Loop() {
				err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
					for range batch {
						if _, err := l.Charge(ctx, tx, charge("bench/one", 1, fmt.Sprint(seq.Add(1)))); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				n += batch
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(n), "ns/charge")
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "charges/s")
		})
		// chargebatch100: the same 100 charges through ChargeBatch, which
		// writes them with five statements instead of four per charge.
		b.Run("chargebatch100", func(b *testing.B) {
			const batch = 100
			n := 0
			cs := make([]quota.Charge, batch)
			for b.Loop() {
				for i := range cs {
					cs[i] = charge("bench/one", 1, fmt.Sprint(seq.Add(1)))
				}
				errs, err := l.ChargeBatch(ctx, db, cs)
				if err != nil {
					b.Fatal(err)
				}
				for _, err := range errs {
					if err != nil {
						b.Fatal(err)
					}
				}
				n += batch
			}
			b.ReportMetric(b.Elapsed().Seconds()*1e9/float64(n), "ns/charge")
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "charges/s")
		})
		if problems, err := l.Verify(ctx); err != nil || len(problems) > 0 {
			b.Fatalf("after benchmark: %v %v", problems, err)
		}
	})
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
