package mailing_test

import (
	"context"
	"fmt"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/smtpload"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
)

// BenchmarkSubmit is the relay's work after DATA without the SMTP
// dialogue: 32 concurrent callers submit the load generator's messages
// (internal/smtpload: plain, multipart — a personalised text and HTML
// notification of 5 KB — and pdf, the same with a 100 KB PDF attached),
// each to one recipient, with a Received trace, every one committed and
// charged before Submit returns. Profile the message checks with
//
//	go test -run XXX -bench 'Submit/sqlite/multipart' -benchtime 20000x -cpuprofile /tmp/submit.prof ./mailing
func BenchmarkSubmit(b *testing.B) {
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		e := setup(b, db, map[string]int64{"sjti/talento": 50_000_000}, mailing.Config{})
		bumpPool(b, db)
		for _, shape := range smtpload.Shapes {
			b.Run(string(shape), func(b *testing.B) {
				gen, err := smtpload.NewGenerator(shape, 5<<10)
				if err != nil {
					b.Fatal(err)
				}
				var seq atomic.Int64
				trace := &mailing.Trace{Helo: "app01.servir.local", Addr: netip.MustParseAddr("10.0.0.7"), By: "relay.servir.gob.pe",
					With: "ESMTPSA", TLS: "version=TLS1.3 cipher=TLS_AES_128_GCM_SHA256"}
				b.SetParallelism(32 / max(1, runtimeProcs()))
				b.ResetTimer()
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						n := int(seq.Add(1))
						to := fmt.Sprintf("dest%d@example.org", n)
						s := mailing.Submission{Account: "sjti/talento", EnvelopeFrom: "avisos@servir.gob.pe", Recipients: []string{to},
							Message: gen.Message("avisos@servir.gob.pe", to, n), Trace: trace}
						if _, err := e.M.Submit(context.Background(), s); err != nil {
							b.Error(err)
							return
						}
					}
				})
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
			})
		}
	})
}
