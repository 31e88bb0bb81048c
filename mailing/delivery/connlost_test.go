package delivery_test

import (
	"context"
	"sync"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// PostgreSQL restarting while messages are being delivered, just as the
// last reply is awaited, so that all that is left is recording the
// outcomes: the outcomes' transaction is seen through — run again when it
// met a dead connection or its COMMIT never arrived, found committed when
// only the COMMIT's reply was lost — so every recipient is recorded sent
// once, none left leased to be delivered a second time.
func TestEngineRecordsThroughARestart(t *testing.T) {
	tests := []struct {
		name    string
		restart func(*storetest.Proxy)
		cuts    int
	}{
		{"the pool died", func(p *storetest.Proxy) { p.Down(); p.Up() }, 0},
		{"the COMMIT lost on its way", func(p *storetest.Proxy) { p.CutBefore(storetest.IsCommit) }, 1},
		{"the COMMIT's reply lost", func(p *storetest.Proxy) { p.CutAfter(storetest.IsCommit) }, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			e, db, proxy := behindProxy(t)
			for range 3 {
				sendOne(t, e)
			}
			sink := mailtest.NewSink(t)
			var mu sync.Mutex
			seen := 0
			sink.DataReply = func([]string) error {
				mu.Lock()
				defer mu.Unlock()
				if seen++; seen == 3 {
					tt.restart(proxy)
				}
				return nil
			}
			eng := engine(t, e, sink, mailing.EngineConfig{Workers: 1})
			if _, err := eng.RunOnce(ctx); err != nil {
				t.Fatal(err)
			}
			var sent, other, events int
			if err := store.RetryConnLost(ctx, db, func() error { // the test's own read may meet a dead connection too
				return db.NewRaw("SELECT count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status <> 'sent'), "+
					"(SELECT count(*) FROM mail_events WHERE type = 'sent') FROM mail_recipients").Scan(ctx, &sent, &other, &events)
			}); err != nil {
				t.Fatal(err)
			}
			if sent != 3 || other != 0 || events != 3 || len(sink.Messages()) != 3 {
				t.Fatalf("%d recipients sent and %d not, %d sent events, %d messages at the sink; want 3, 0, 3, 3",
					sent, other, events, len(sink.Messages()))
			}
			if proxy.Cuts() != tt.cuts {
				t.Fatalf("%d cuts made, want %d", proxy.Cuts(), tt.cuts)
			}
			if n := eng.Stats().Outcomes[mailing.StatusSent]; n != 3 {
				t.Fatalf("Stats count %d sent, want 3", n)
			}
		})
	}
}
