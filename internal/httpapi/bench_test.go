package httpapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/httpapi"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// BenchmarkTenMillionRows is issue 6's measure: on PostgreSQL holding
// ENVIOS_BENCH_ROWS recipient rows (10,000,000 for BENCHMARKS.md; the
// benchmark is skipped without the variable), generated in SQL across ten
// accounts and a year, with their counters: per-address lookups (p50/p99),
// a year's totals by account × origin, a CSV export of one account's rows
// (rows/s and heap growth), and POST /v1/messages with 32 concurrent
// clients over TLS keep-alive (sends/s, each committed).
func BenchmarkTenMillionRows(b *testing.B) {
	n, _ := strconv.Atoi(os.Getenv("ENVIOS_BENCH_ROWS"))
	if n <= 0 {
		b.Skip("set ENVIOS_BENCH_ROWS (BENCHMARKS.md uses 10000000)")
	}
	db := storetest.Open(b, store.Postgres)
	ctx := context.Background()
	m, err := mailing.New(mailing.Config{DB: db, MessageIDDomain: "envios.servir.gob.pe", UnsignedDomains: []string{"servir.gob.pe"}})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	start := time.Date(2026, 1, 1, 5, 0, 0, 0, time.UTC)
	plan := quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 100_000_000, StartsAt: start.AddDate(0, 0, -1), EndsAt: start.AddDate(2, 0, 0)}}
	for i := range 10 {
		plan.Accounts = append(plan.Accounts, quota.AccountSpec{Name: fmt.Sprintf("area/cuenta%d", i), Allocation: 9_000_000})
	}
	if _, err := m.Ledger().Init(ctx, plan, "bench"); err != nil {
		b.Fatal(err)
	}
	var ids []int64
	if err := db.NewRaw("SELECT id FROM quota_accounts ORDER BY name").Scan(ctx, &ids); err != nil {
		b.Fatal(err)
	}
	t0 := time.Now()
	const perMessage = 1000
	for _, q := range []string{
		fmt.Sprintf(`INSERT INTO mail_messages (id, account_id, origin, actor, kind, priority, campaign, from_addr, subject, headers, accepted_at, recipients)
			SELECT 'bench-' || g, (ARRAY%v)[1 + g %% 10], (ARRAY['library','smtp','http','campaign'])[1 + g %% 4], 'bench', 'single', 1,
			'camp-' || (g %% 50), 'avisos@servir.gob.pe', 'Asunto ' || g, '[]', ?::timestamptz + g * interval '%d second', %d
			FROM generate_series(0, %d) AS g`, pgArray(ids), 3*perMessage, perMessage, n/perMessage),
		fmt.Sprintf(`INSERT INTO mail_recipients (message_id, seq, account_id, origin, kind, address, rfc_message_id, status, priority, due_at, accepted_at, attempts, last_attempt_at, final_at, remote_host, reply)
			SELECT 'bench-' || (i / %[1]d), i %% %[1]d, (ARRAY%[2]v)[1 + (i / %[1]d) %% 10], (ARRAY['library','smtp','http','campaign'])[1 + (i / %[1]d) %% 4], 'to',
			'u' || (i %% 2000003) || '@d' || (i %% 97) || '.example.org', 'bench-' || i || '@envios', 
			CASE i %% 50 WHEN 0 THEN 'bounced' WHEN 1 THEN 'deferred' ELSE 'sent' END, 1,
			?::timestamptz + i * interval '3 second', ?::timestamptz + i * interval '3 second', 1,
			?::timestamptz + i * interval '3 second' + interval '4 second',
			CASE WHEN i %% 50 = 1 THEN NULL ELSE ?::timestamptz + i * interval '3 second' + interval '4 second' END,
			'mx.example.org', '250 2.0.0 Ok' FROM generate_series(0, %[3]d) AS i`, perMessage, pgArray(ids), n-1),
	} {
		args := []any{start}
		if bytes.Contains([]byte(q), []byte("mail_recipients")) {
			args = []any{start, start, start, start}
		}
		if _, err := db.NewRaw(q, args...).Exec(ctx); err != nil {
			b.Fatal(err)
		}
	}
	// Counters consistent with the rows (report verify must hold).
	for _, q := range []string{
		`INSERT INTO mail_counters (account_id, origin, hour, kind, n) SELECT account_id, origin, CAST(floor(extract(epoch FROM accepted_at) / 3600) AS BIGINT), 'accepted', count(*) FROM mail_recipients GROUP BY 1, 2, 3`,
		`INSERT INTO mail_counters (account_id, origin, hour, kind, n) SELECT account_id, origin, CAST(floor(extract(epoch FROM final_at) / 3600) AS BIGINT), status, count(*) FROM mail_recipients WHERE final_at IS NOT NULL GROUP BY 1, 2, 3, 4`,
		`ANALYZE`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("generated %d recipient rows in %s", n, time.Since(t0).Round(time.Second))
	rep := report.New(db, report.Config{})
	b.ResetTimer()

	// Per-address lookups.
	rng := rand.New(rand.NewPCG(1, 2))
	var lat []time.Duration
	for range 1000 {
		i := rng.IntN(n)
		addr := fmt.Sprintf("U%d@D%d.example.org", i%2000003, i%97) // any case
		t := time.Now()
		p, err := rep.Recipient(ctx, report.Filter{Address: addr})
		if err != nil || len(p.Rows) == 0 {
			b.Fatalf("lookup %s: %d rows, %v", addr, len(p.Rows), err)
		}
		lat = append(lat, time.Since(t))
	}
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "lookup-p50-ms")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "lookup-p99-ms")

	// A year's totals by account × origin (the first run cold).
	var runs []time.Duration
	for range 7 {
		t := time.Now()
		as, err := rep.Activity(ctx, report.ActivityFilter{From: start, To: start.AddDate(1, 0, 0), By: report.Year})
		if err != nil || len(as) == 0 {
			b.Fatal(err)
		}
		runs = append(runs, time.Since(t))
	}
	b.ReportMetric(float64(runs[0].Microseconds())/1000, "year-totals-first-ms")
	slices.Sort(runs)
	b.ReportMetric(float64(runs[len(runs)-1].Microseconds())/1000, "year-totals-max-ms")
	b.ReportMetric(float64(runs[len(runs)/2].Microseconds())/1000, "year-totals-p50-ms")

	// CSV export of one account (a tenth of the rows).
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	t := time.Now()
	cw := &countingWriter{}
	rows, err := rep.Export(ctx, cw, report.CSV, report.Filter{Account: "area/cuenta3"})
	if err != nil {
		b.Fatal(err)
	}
	el := time.Since(t)
	runtime.ReadMemStats(&ms1)
	b.ReportMetric(float64(rows)/el.Seconds(), "export-rows/s")
	b.ReportMetric(float64(ms1.HeapInuse)/(1<<20), "heap-after-export-MB")
	b.Logf("exported %d rows (%d MB of CSV) in %s", rows, cw.n>>20, el.Round(time.Millisecond))

	// POST /v1/messages, 32 clients over TLS keep-alive.
	for _, a := range []string{"area/cuenta0"} {
		if _, err := m.AddSender(ctx, a, "@servir.gob.pe", "bench"); err != nil {
			b.Fatal(err)
		}
	}
	_, secret, err := apitoken.NewStore(db, nil).Add(ctx, "area/cuenta0", "bench", "bench")
	if err != nil {
		b.Fatal(err)
	}
	api, err := httpapi.New(httpapi.Config{Mailer: m, Tokens: apitoken.NewStore(db, nil), Reports: rep, DB: db})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewTLSServer(api.Handler())
	defer srv.Close()
	client := srv.Client()
	client.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
	const sends = 20_000
	var next, failed atomic.Int64
	t = time.Now()
	var wg sync.WaitGroup
	for range 32 {
		wg.Go(func() {
			for {
				i := next.Add(1)
				if i > sends {
					return
				}
				body, _ := json.Marshal(map[string]any{"from": "avisos@servir.gob.pe", "to": []string{fmt.Sprintf("p%d@example.org", i)}, "subject": "s", "text": "t"})
				req, _ := http.NewRequest("POST", srv.URL+"/v1/messages", bytes.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+secret)
				resp, err := client.Do(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = drain(resp)
				if resp.StatusCode != 202 {
					failed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	el = time.Since(t)
	if failed.Load() > 0 {
		b.Fatalf("%d sends failed", failed.Load())
	}
	b.ReportMetric(sends/el.Seconds(), "post-sends/s")
}

func pgArray(ids []int64) string {
	s := "["
	for i, id := range ids {
		if i > 0 {
			s += ","
		}
		s += strconv.FormatInt(id, 10)
	}
	return s + "]"
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

func drain(resp *http.Response) (int64, error) {
	defer resp.Body.Close()
	var buf bytes.Buffer
	return buf.ReadFrom(resp.Body)
}
