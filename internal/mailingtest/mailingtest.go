// Package mailingtest sets up a Mailer with a pool, accounts, sender
// identities and a DKIM key on a test database, for the tests of mailing
// and of the packages around it.
package mailingtest

import (
	"bufio"
	"context"
	"fmt"
	"iter"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// Clock is a settable clock.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// Now is the clock's time.
func (c *Clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }

// Add moves the clock.
func (c *Clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// Start is the time every Setup clock starts at.
var Start = time.Date(2026, 11, 26, 17, 0, 0, 0, time.UTC)

// Env is a Mailer on a test database, with its clock.
type Env struct {
	M     *mailing.Mailer
	DB    *bun.DB
	Clock *Clock
}

// Setup makes a mailer with a pool of 100,000,000, the accounts given, and
// sender identities: avisos@servir.gob.pe for every account, @servir.gob.pe
// for enap/eventos.
func Setup(t testing.TB, db *bun.DB, accounts map[string]int64, cfg mailing.Config) Env {
	t.Helper()
	ctx := context.Background()
	clk := &Clock{t: Start}
	cfg.DB, cfg.Now = db, clk.Now
	if cfg.MessageIDDomain == "" {
		cfg.MessageIDDomain = "envios.servir.gob.pe"
	}
	m, err := mailing.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	plan := quota.Plan{Pool: quota.PoolSpec{Name: "p", Total: 100_000_000, StartsAt: Start.AddDate(0, -1, 0), EndsAt: Start.AddDate(1, 0, 0)}}
	for name, n := range accounts {
		plan.Accounts = append(plan.Accounts, quota.AccountSpec{Name: name, Allocation: n})
	}
	if _, err := m.Ledger().Init(ctx, plan, "test"); err != nil {
		t.Fatal(err)
	}
	for name := range accounts {
		if _, err := m.AddSender(ctx, name, "avisos@servir.gob.pe", "test"); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Contains(cfg.UnsignedDomains, "servir.gob.pe") {
		if _, _, err := m.AddDomainKey(ctx, "servir.gob.pe", "ed25519"); err != nil {
			t.Fatal(err)
		}
	}
	if _, ok := accounts["enap/eventos"]; ok {
		if _, err := m.AddSender(ctx, "enap/eventos", "@servir.gob.pe", "test"); err != nil {
			t.Fatal(err)
		}
	}
	return Env{M: m, DB: db, Clock: clk}
}

// Used is what account has used of its allocation.
func (e Env) Used(t testing.TB, account string) int64 {
	t.Helper()
	a, err := e.M.Ledger().Account(context.Background(), account)
	if err != nil {
		t.Fatal(err)
	}
	return a.Used
}

// Count counts the rows of table.
func (e Env) Count(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := e.DB.QueryRowContext(context.Background(), "SELECT count(*) FROM "+table).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Verify fails t if the ledger does not verify.
func Verify(t testing.TB, m *mailing.Mailer) {
	t.Helper()
	problems, err := m.Ledger().Verify(context.Background())
	if err != nil || len(problems) > 0 {
		t.Fatalf("ledger: %v %v", problems, err)
	}
}

// PeakRSS is this process's high-water resident set (VmHWM), in MB.
func PeakRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, _ := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			return float64(kb) / 1024
		}
	}
	return 0
}

// People streams n recipients without holding them. Their data is what a
// CSV import yields (strings) unless ENVIOS_BENCH_DATA=any, which gives
// map[string]any with a number (decoded from JSON at acceptance).
func People(n int) iter.Seq2[mailing.Recipient, error] {
	anyData := os.Getenv("ENVIOS_BENCH_DATA") == "any"
	return func(yield func(mailing.Recipient, error) bool) {
		for i := range n {
			var data any = map[string]string{"Nombre": fmt.Sprintf("Persona %d", i), "Curso": "Gestión Pública", "N": strconv.Itoa(i)}
			if anyData {
				data = map[string]any{"Nombre": fmt.Sprintf("Persona %d", i), "Curso": "Gestión Pública", "N": i}
			}
			r := mailing.Recipient{Address: fmt.Sprintf("persona%d@example.com", i), Data: data}
			if !yield(r, nil) {
				return
			}
		}
	}
}

// BumpPool makes the test pool big enough for any benchmark.
func BumpPool(b *testing.B, db *bun.DB) {
	b.Helper()
	if _, err := db.ExecContext(context.Background(), "UPDATE quota_pools SET total = 100000000000"); err != nil {
		b.Fatal(err)
	}
}

// BehindProxy is an env on a PostgreSQL database reached through a proxy
// that can play the server restarting.
func BehindProxy(t *testing.T) (Env, *bun.DB, *storetest.Proxy) {
	t.Helper()
	db, proxy := storetest.OpenBehindProxy(t, 4)
	return Setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{}), db, proxy
}

// SendOne sends Basic from enap/eventos and fails t if it is refused.
func SendOne(t *testing.T, e Env) mailing.Receipt {
	t.Helper()
	one := Basic()
	one.Account = "enap/eventos"
	r, err := e.M.Send(context.Background(), one)
	if err != nil {
		t.Fatalf("Send: %v", err)
	}
	return r
}

// Basic is a one-recipient message from sjti/talento.
func Basic() mailing.Message {
	return mailing.Message{Account: "sjti/talento", From: "SERVIR <avisos@servir.gob.pe>",
		To: []string{"ana@example.com"}, Subject: "Hola", Text: "Cuerpo"}
}

// FillSuppressions adds n hard-bounce suppressions of addresses no test
// sends to (goneN@suppressed.example), with one statement, for benchmarks
// of acceptance against a large suppression list.
func FillSuppressions(tb testing.TB, db *bun.DB, n int) {
	tb.Helper()
	q := db.NewRaw("INSERT INTO mail_suppressions (address, scope, reason, created_at, actor, evidence) "+
		"SELECT 'gone' || g || '@suppressed.example', 'all', 'hard_bounce', ?, 'bench', '{}' FROM generate_series(1, ?) AS g", Start, n)
	if db.Dialect().Name().String() != "pg" {
		q = db.NewRaw("WITH RECURSIVE s(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM s WHERE g < ?) "+
			"INSERT INTO mail_suppressions (address, scope, reason, created_at, actor, evidence) "+
			"SELECT 'gone' || g || '@suppressed.example', 'all', 'hard_bounce', ?, 'bench', '{}' FROM s", n, Start)
	}
	if _, err := q.Exec(context.Background()); err != nil {
		tb.Fatal(err)
	}
	// The steady state of a list that grew over months: statistics
	// gathered, the bulk insert's WAL checkpointed (not in the timed part).
	settle := []string{"ANALYZE mail_suppressions"}
	if db.Dialect().Name().String() == "pg" {
		settle = append(settle, "CHECKPOINT")
	}
	for _, stmt := range settle {
		if _, err := db.ExecContext(context.Background(), stmt); err != nil {
			tb.Fatal(err)
		}
	}
}
