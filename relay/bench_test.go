package relay_test

import (
	"context"
	"testing"

	"github.com/servir-pe/envios/internal/smtpload"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/relay"
	"github.com/uptrace/bun"
)

// BenchmarkIngest is the throughput measure in process: 32
// connections with STARTTLS and AUTH PLAIN send 5 KB messages to one
// recipient each; every message is committed and charged before its 250.
// b.N messages per engine; msg/s is reported. The end-to-end figure with
// the real binary comes from internal/cmd/smtpload (BENCHMARKS.md).
func BenchmarkIngest(b *testing.B) {
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		f := newFixture(b, db, 9_000_000, relay.Limits{})
		b.ResetTimer()
		res, err := smtpload.Run(context.Background(), smtpload.Config{Addr: f.addr, TLS: f.clientTLS(), Username: f.user, Password: f.pass,
			From: "avisos@servir.gob.pe", To: "dest%d@example.org", Conns: 32, Messages: max(b.N, 64), Size: 5 << 10})
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		if len(res.Failed) > 0 || res.Sent != max(b.N, 64) {
			b.Fatalf("%v", res)
		}
		b.ReportMetric(res.Rate(), "msg/s")
		b.ReportMetric(float64(res.P99.Microseconds())/1000, "p99-ms")
	})
}

// The load generator itself: every message it counts as sent was stored
// and charged, and a refusal is counted by its reply code.
func TestLoadGenerator(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := newFixture(t, db, 50, relay.Limits{})
		res, err := smtpload.Run(context.Background(), smtpload.Config{Addr: f.addr, TLS: f.clientTLS(), Username: f.user, Password: f.pass,
			From: "avisos@servir.gob.pe", To: "dest%d@example.org", Conns: 4, Messages: 60, Size: 2048})
		if err != nil {
			t.Fatal(err)
		}
		if res.Sent != 50 || res.Failed["452"] != 10 || f.count(t, "mail_messages") != 50 || f.used(t) != 50 {
			t.Fatalf("%v; stored %d, charged %d", res, f.count(t, "mail_messages"), f.used(t))
		}
	})
}
