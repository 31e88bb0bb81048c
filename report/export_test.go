package report_test

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"iter"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/report"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// golden compares got with testdata/name; with -update, the SQLite run
// rewrites it (both engines must then match it).
func golden(t *testing.T, name, got string, write bool) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update && write {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (run go test -update and review the diff):\n%s", path, got)
	}
}

// hostile stores messages whose cells a spreadsheet would run as
// formulas, and cells that need RFC 4180 quoting.
func hostile(t *testing.T, f fixture) {
	t.Helper()
	ctx := context.Background()
	for _, msg := range []mailing.Message{
		{To: []string{"=1+2@example.com", "-x@example.com", "+x@example.com"}, Subject: `=HYPERLINK("http://evil.example/","click")`, Campaign: `@campaign, "quoted"`},
		{To: []string{"plain@example.com"}, Subject: "\tTab first", Campaign: "-1"},
		{To: []string{"plain@example.com"}, Subject: `+cmd|' /C calc'!A0`, Campaign: "Semana, \"de\" gestión"},
		{To: []string{"plain@example.com"}, Subject: "-2+3", Campaign: "ok"},
	} {
		msg.Account, msg.From, msg.Text = "sjti/talento", "avisos@servir.gob.pe", "x"
		if _, err := f.m.Send(ctx, msg); err != nil {
			t.Fatal(err)
		}
	}
}

func TestExportGolden(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		f := setup(t, db, 100)
		history(t, f)
		hostile(t, f)
		ctx := context.Background()
		for _, format := range []report.Format{report.CSV, report.JSONLines} {
			var b bytes.Buffer
			n, err := f.rep.Export(ctx, &b, format, report.Filter{})
			if err != nil || n != 15 {
				t.Fatalf("Export %s = %d, %v; want 15 rows", format, n, err)
			}
			golden(t, "export."+string(format), b.String(), store.EngineOfDB(db) == store.SQLite)
			switch format {
			case report.CSV:
				recs, err := csv.NewReader(bytes.NewReader(b.Bytes())).ReadAll()
				if err != nil || len(recs) != 16 {
					t.Fatalf("the CSV export does not read back: %d records, %v", len(recs), err)
				}
				for _, rec := range recs[1:] {
					for _, cell := range rec {
						if cell != "" && strings.ContainsRune("=+-@\t\r", rune(cell[0])) {
							t.Errorf("cell %q would run as a formula", cell)
						}
					}
				}
			case report.JSONLines:
				lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
				for _, l := range lines {
					var m map[string]any
					if err := json.Unmarshal([]byte(l), &m); err != nil || len(m) != len(report.Columns) {
						t.Fatalf("line %q: %d keys, %v", l, len(m), err)
					}
				}
				if len(lines) != 15 {
					t.Fatalf("%d lines", len(lines))
				}
			}
		}
		// Filters, resuming and limits apply to exports too.
		var b bytes.Buffer
		if n, err := f.rep.Export(ctx, &b, report.CSV, report.Filter{Account: "enap/eventos", Campaign: "semana", After: 4, Limit: 2}); err != nil || n != 2 {
			t.Fatalf("filtered export: %d %v", n, err)
		}
		if got := strings.Count(b.String(), "\n"); got != 3 || !strings.Contains(b.String(), "\n5,enap/eventos,") {
			t.Fatalf("filtered export:\n%s", b.String())
		}
		// A bad filter or format writes nothing.
		b.Reset()
		if _, err := f.rep.Export(ctx, &b, "xml", report.Filter{}); !errors.Is(err, report.ErrInvalid) || b.Len() != 0 {
			t.Fatalf("format xml: %v, wrote %q", err, b.String())
		}
		if _, err := f.rep.Export(ctx, &b, report.CSV, report.Filter{Account: "nadie/nadie"}); !errors.Is(err, report.ErrNotFound) || b.Len() != 0 {
			t.Fatalf("unknown account: %v, wrote %q", err, b.String())
		}
		// A writer that fails stops the export with its error.
		if _, err := f.rep.Export(ctx, failingWriter{}, report.JSONLines, report.Filter{}); err == nil {
			t.Fatal("an export to a failing writer succeeded")
		}
	})
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// many enqueues n batch recipients for sjti/talento, one batch.
func many(t testing.TB, f fixture, n int) {
	t.Helper()
	recipients := func(yield func(mailing.Recipient, error) bool) {
		for i := range n {
			if !yield(mailing.Recipient{Address: fmt.Sprintf("persona%07d@example.com", i), Data: map[string]string{"N": strconv.Itoa(i)}}, nil) {
				return
			}
		}
	}
	r, err := f.m.SendBatch(context.Background(), mailing.Batch{Account: "sjti/talento", From: "avisos@servir.gob.pe",
		Subject: "Convocatoria {{.N}}", Text: "Hola {{.N}}", Campaign: "masiva", Recipients: iter.Seq2[mailing.Recipient, error](recipients), Expected: n})
	if err != nil || r.Accepted != n {
		t.Fatalf("batch of %d: %+v %v", n, r, err)
	}
}

// heapProbe is a writer that counts what it is given and, every probe
// bytes, collects garbage and records the live heap.
type heapProbe struct {
	n, since, probe int64
	peak            uint64
}

func (h *heapProbe) Write(p []byte) (int, error) {
	h.n += int64(len(p))
	h.since += int64(len(p))
	if h.since >= h.probe {
		h.since = 0
		h.sample()
	}
	return len(p), nil
}

func (h *heapProbe) sample() {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	h.peak = max(h.peak, ms.HeapAlloc)
}

// exportMemory exports every row as format and returns the bytes written,
// the growth of the live heap over its level before the export at its
// highest, and the bytes allocated per row.
func exportMemory(t testing.TB, rep *report.Reporter, format report.Format, rows int) (written int64, growth uint64, allocPerRow float64, took time.Duration) {
	t.Helper()
	h := &heapProbe{probe: 2 << 20}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	begin := time.Now()
	n, err := rep.Export(context.Background(), h, format, report.Filter{Account: "sjti/talento"})
	took = time.Since(begin)
	if err != nil || n != int64(rows) {
		t.Fatalf("export: %d rows, %v; want %d", n, err, rows)
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	h.sample()
	if h.peak > before.HeapAlloc {
		growth = h.peak - before.HeapAlloc
	}
	return h.n, growth, float64(after.TotalAlloc-before.TotalAlloc) / float64(rows), took
}

// TestExportConstantMemory exports 200,000 rows from SQLite in both
// formats and checks that the live heap never grows by more than a few
// megabytes — the rows themselves are tens of megabytes.
func TestExportConstantMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("enqueues 200,000 recipients")
	}
	if raceEnabled {
		// SQLite is Go code here: under the race detector 50,000 rows took
		// a minute. The export's code paths run under -race in the other
		// tests; this one measures, so it runs without.
		t.Skip("measures memory; run without -race")
	}
	rows := 200_000
	db := storetest.Open(t, store.SQLite)
	f := setup(t, db, int64(rows))
	begin := time.Now()
	many(t, f, rows)
	t.Logf("enqueued %d recipients in %v", rows, time.Since(begin).Round(time.Millisecond))
	for _, format := range []report.Format{report.CSV, report.JSONLines} {
		written, growth, perRow, took := exportMemory(t, f.rep, format, rows)
		t.Logf("%s: %d rows, %.1f MB in %v (%.0f rows/s); live heap grew at most %.2f MB; %.0f bytes allocated per row",
			format, rows, float64(written)/1e6, took.Round(time.Millisecond), float64(rows)/took.Seconds(), float64(growth)/1e6, perRow)
		if written < int64(rows)*150 {
			t.Fatalf("%s: only %d bytes for %d rows", format, written, rows)
		}
		if limit := uint64(8 << 20); growth > limit {
			t.Errorf("%s: the live heap grew by %.1f MB while exporting %d rows (limit %d MB): the export holds rows",
				format, float64(growth)/1e6, rows, limit>>20)
		}
	}
}

// BenchmarkExport exports ENVIOS_BENCH_ROWS recipients (default
// 1,000,000) on each engine and reports rows/s and the live heap growth:
//
//	go test -run XXX -bench Export -benchtime 1x -timeout 30m ./report
func BenchmarkExport(b *testing.B) {
	rows := 1_000_000
	if s := os.Getenv("ENVIOS_BENCH_ROWS"); s != "" {
		var err error
		if rows, err = strconv.Atoi(s); err != nil {
			b.Fatal(err)
		}
	}
	storetest.Each(b, func(b *testing.B, db *bun.DB) {
		f := setup(b, db, int64(rows))
		many(b, f, rows)
		for _, format := range []report.Format{report.CSV, report.JSONLines} {
			b.Run(string(format), func(b *testing.B) {
				var growth uint64
				var took time.Duration
				var written int64
				for b.Loop() {
					var g uint64
					var d time.Duration
					written, g, _, d = exportMemory(b, f.rep, format, rows)
					growth, took = max(growth, g), took+d
				}
				b.ReportMetric(float64(rows)*float64(b.N)/took.Seconds(), "rows/s")
				b.ReportMetric(float64(growth)/1e6, "heap-growth-MB")
				b.ReportMetric(float64(written)/float64(rows), "B/row")
			})
		}
	})
}

var _ io.Writer = (*heapProbe)(nil)
