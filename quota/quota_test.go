package quota_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/quota"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var (
	lima       = mustLoc("America/Lima")
	poolStart  = time.Date(2026, 1, 1, 0, 0, 0, 0, lima)
	poolEnd    = poolStart.AddDate(0, 0, 365)
	midYear    = time.Date(2026, 6, 15, 10, 30, 0, 0, lima)
	ctxTimeout = time.Minute
)

func mustLoc(name string) *time.Location {
	l, err := time.LoadLocation(name)
	if err != nil {
		panic(err)
	}
	return l
}

// fixture is a ledger on a fresh database with one pool of 10,000 and the
// accounts given (name → allocation).
func fixture(t testing.TB, db *bun.DB, accounts map[string]int64) (*quota.Ledger, *clock) {
	t.Helper()
	c := &clock{t: midYear}
	l := quota.New(db, quota.Config{Now: c.Now})
	plan := quota.Plan{Pool: quota.PoolSpec{Name: "test", Total: 10_000, StartsAt: poolStart, EndsAt: poolEnd}}
	for name, n := range accounts {
		plan.Accounts = append(plan.Accounts, quota.AccountSpec{Name: name, Allocation: n})
	}
	if _, err := l.Init(context.Background(), plan, "test"); err != nil {
		t.Fatalf("init: %v", err)
	}
	return l, c
}

func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), ctxTimeout)
	t.Cleanup(cancel)
	return c
}

func mustVerify(t testing.TB, l *quota.Ledger) {
	t.Helper()
	problems, err := l.Verify(context.Background())
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	if len(problems) > 0 {
		t.Fatalf("ledger invariants broken:\n%s", strings.Join(problems, "\n"))
	}
}

func account(t testing.TB, l *quota.Ledger, name string) quota.Account {
	t.Helper()
	a, err := l.Account(context.Background(), name)
	if err != nil {
		t.Fatalf("account %s: %v", name, err)
	}
	return a
}

func charge(name string, n int64, ref string) quota.Charge {
	return quota.Charge{Account: name, Amount: n, Origin: quota.OriginLibrary, Reference: ref, Actor: "test"}
}

func TestLedgerLifecycle(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 1000, "sjti/talento": 500})

		if _, err := l.AddAccount(ctx, "", quota.AccountSpec{Name: "SJCI/Imagen", Origin: "platform"}, "test"); err != nil {
			t.Fatalf("add account: %v", err)
		}
		if a, err := l.Allocate(ctx, quota.Allocation{Account: "sjci/imagen", Amount: 300, Actor: "test", Reason: "campaign"}); err != nil || a.Allocation != 300 {
			t.Fatalf("allocate: %+v, %v", a, err)
		}
		if err := l.Transfer(ctx, quota.Transfer{From: "enap/eventos", To: "sjti/talento", Amount: 200, Actor: "test", Reason: "rebalance"}); err != nil {
			t.Fatalf("transfer: %v", err)
		}
		a, err := l.Charge(ctx, db, charge("sjti/talento", 650, "msg-1"))
		if err != nil {
			t.Fatalf("charge: %v", err)
		}
		if a.Used != 650 || a.Allocation != 700 || a.Remaining() != 50 {
			t.Fatalf("after charge: %+v", a)
		}
		if a, err = l.Release(ctx, db, quota.Release{Account: "sjti/talento", Amount: 10, Origin: quota.OriginLibrary, Reference: "msg-1", Actor: "test", Reason: "cancelled"}); err != nil || a.Used != 640 {
			t.Fatalf("release: %+v, %v", a, err)
		}

		b, err := l.Balance(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if b.Pool.Total != 10_000 || b.Pool.Allocated != 1800 || b.Pool.Unallocated() != 8200 || b.Used != 640 || b.Remaining() != 1160 {
			t.Fatalf("balance: pool %+v used %d remaining %d", b.Pool, b.Used, b.Remaining())
		}
		got := map[string][2]int64{}
		for _, a := range b.Accounts {
			got[a.Name] = [2]int64{a.Allocation, a.Used}
		}
		want := map[string][2]int64{"enap/eventos": {800, 0}, "sjci/imagen": {300, 0}, "sjti/talento": {700, 640}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("accounts = %v, want %v", got, want)
		}

		h, err := l.History(ctx, quota.HistoryFilter{Account: "sjti/talento"})
		if err != nil {
			t.Fatal(err)
		}
		var kinds []string
		for _, e := range h {
			kinds = append(kinds, fmt.Sprintf("%s:%s<%s:%d", e.Kind, e.Account, e.From, e.Amount))
		}
		if w := "allocate:sjti/talento<:500 transfer:sjti/talento<enap/eventos:200 charge:sjti/talento<:650 release:sjti/talento<:10"; strings.Join(kinds, " ") != w {
			t.Fatalf("history = %v\nwant      %v", kinds, w)
		}
		if h[2].Reference != "msg-1" || h[2].Origin != quota.OriginLibrary || h[1].Reason != "rebalance" || !h[2].At.Equal(midYear) {
			t.Fatalf("charge entry = %+v", h[2])
		}
		mustVerify(t, l)
	})
}

func TestChargeRefusals(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, clk := fixture(t, db, map[string]int64{"enap/eventos": 100, "enap/biblioteca": 100})
		if _, err := l.Charge(ctx, db, charge("enap/eventos", 90, "first")); err != nil {
			t.Fatal(err)
		}
		if _, err := l.SetDisabled(ctx, "enap/biblioteca", true, "test"); err != nil {
			t.Fatal(err)
		}
		tests := []struct {
			name  string
			at    time.Time
			c     quota.Charge
			match error
			text  string
		}{
			{"beyond remaining", midYear, charge("enap/eventos", 11, "x"), quota.ErrInsufficient, "has 10 messages left, 11 requested"},
			{"disabled", midYear, charge("enap/biblioteca", 1, "x"), quota.ErrDisabled, "enap/biblioteca"},
			{"unknown account", midYear, charge("enap/nadie", 1, "x"), quota.ErrNotFound, "enap/nadie"},
			{"malformed account", midYear, charge("eventos", 1, "x"), quota.ErrInvalid, "AREA/NAME"},
			{"zero", midYear, charge("enap/eventos", 0, "x"), quota.ErrInvalid, "positive"},
			{"negative", midYear, charge("enap/eventos", -5, "x"), quota.ErrInvalid, "positive"},
			{"no reference", midYear, charge("enap/eventos", 1, ""), quota.ErrInvalid, "reference"},
			{"bad origin", midYear, quota.Charge{Account: "enap/eventos", Amount: 1, Origin: "fax", Reference: "x", Actor: "t"}, quota.ErrInvalid, "fax"},
			{"before the period", poolStart.Add(-time.Second), charge("enap/eventos", 1, "x"), quota.ErrOutsidePeriod, "starts on"},
			{"after the period", poolEnd, charge("enap/eventos", 1, "x"), quota.ErrOutsidePeriod, "expired on"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				clk.Set(tt.at)
				_, err := l.Charge(ctx, db, tt.c)
				if !errors.Is(err, tt.match) || !strings.Contains(err.Error(), tt.text) {
					t.Fatalf("err = %v, want %v containing %q", err, tt.match, tt.text)
				}
				var ie *quota.InsufficientError
				if errors.As(err, &ie) && (ie.Remaining != 10 || ie.Requested != 11) {
					t.Fatalf("InsufficientError = %+v", ie)
				}
				if a := account(t, l, "enap/eventos"); a.Used != 90 {
					t.Fatalf("a refused charge changed used to %d", a.Used)
				}
			})
		}
		clk.Set(midYear)
		if h, _ := l.History(ctx, quota.HistoryFilter{Kind: quota.KindCharge}); len(h) != 1 {
			t.Fatalf("refused charges left ledger entries: %d charge entries", len(h))
		}
		// The last messages can still be spent, exactly.
		if a, err := l.Charge(ctx, db, charge("enap/eventos", 10, "last")); err != nil || a.Remaining() != 0 {
			t.Fatalf("exact charge: %+v %v", a, err)
		}
		mustVerify(t, l)
	})
}

func TestChargeJoinsCallerTransaction(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 100})
		rollback := errors.New("caller fails after charging")
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := l.Charge(ctx, tx, charge("enap/eventos", 40, "m1")); err != nil {
				return err
			}
			return rollback
		})
		if !errors.Is(err, rollback) {
			t.Fatal(err)
		}
		if a := account(t, l, "enap/eventos"); a.Used != 0 {
			t.Fatalf("rolled-back charge left used = %d", a.Used)
		}
		// A refused charge inside a transaction leaves it usable.
		err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := l.Charge(ctx, tx, charge("enap/eventos", 101, "m2")); !errors.Is(err, quota.ErrInsufficient) {
				return fmt.Errorf("want ErrInsufficient, got %v", err)
			}
			_, err := l.Charge(ctx, tx, charge("enap/eventos", 100, "m3"))
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if a := account(t, l, "enap/eventos"); a.Used != 100 {
			t.Fatalf("used = %d, want 100", a.Used)
		}
		mustVerify(t, l)
	})
}

func TestReleaseNeverExceedsCharge(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 100, "enap/biblioteca": 100})
		if _, err := l.Charge(ctx, db, charge("enap/eventos", 5, "m1")); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Charge(ctx, db, charge("enap/biblioteca", 5, "m2")); err != nil {
			t.Fatal(err)
		}
		rel := func(account, ref string, n int64) error {
			_, err := l.Release(ctx, db, quota.Release{Account: account, Amount: n, Origin: quota.OriginSMTP, Reference: ref, Actor: "test", Reason: "cancelled"})
			return err
		}
		if err := rel("enap/eventos", "m1", 3); err != nil {
			t.Fatal(err)
		}
		for _, tt := range []struct {
			account, ref string
			n            int64
			want         error
		}{
			{"enap/eventos", "m1", 3, quota.ErrOverRelease}, // only 2 left
			{"enap/eventos", "m2", 1, quota.ErrOverRelease}, // another account's reference
			{"enap/eventos", "nope", 1, quota.ErrOverRelease},
			{"enap/nadie", "m1", 1, quota.ErrNotFound},
			{"enap/eventos", "m1", 0, quota.ErrInvalid},
		} {
			if err := rel(tt.account, tt.ref, tt.n); !errors.Is(err, tt.want) {
				t.Errorf("release %d of %s/%s: err = %v, want %v", tt.n, tt.account, tt.ref, err, tt.want)
			}
		}
		if err := rel("enap/eventos", "m1", 2); err != nil {
			t.Fatal(err)
		}
		if a := account(t, l, "enap/eventos"); a.Used != 0 {
			t.Fatalf("used = %d after releasing everything", a.Used)
		}
		// Releases are allowed on a disabled account.
		if _, err := l.SetDisabled(ctx, "enap/biblioteca", true, "test"); err != nil {
			t.Fatal(err)
		}
		if err := rel("enap/biblioteca", "m2", 5); err != nil {
			t.Fatalf("release on disabled account: %v", err)
		}
		mustVerify(t, l)
	})
}

func TestAllocateAndTransferLimits(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 6000, "sjti/talento": 3000})
		if _, err := l.Charge(ctx, db, charge("enap/eventos", 5000, "big")); err != nil {
			t.Fatal(err)
		}
		_, err := l.Allocate(ctx, quota.Allocation{Account: "sjti/talento", Amount: 1001, Actor: "t"})
		var ue *quota.UnallocatedError
		if !errors.As(err, &ue) || ue.Unallocated != 1000 || !errors.Is(err, quota.ErrUnallocated) {
			t.Fatalf("over-allocation: err = %v", err)
		}
		err = l.Transfer(ctx, quota.Transfer{From: "enap/eventos", To: "sjti/talento", Amount: 1001, Actor: "t"})
		var ie *quota.InsufficientError
		if !errors.As(err, &ie) || !ie.Transfer || ie.Remaining != 1000 || !strings.Contains(err.Error(), "1000 unused") {
			t.Fatalf("transfer beyond free: err = %v", err)
		}
		for _, tt := range []struct {
			tr   quota.Transfer
			want error
		}{
			{quota.Transfer{From: "enap/eventos", To: "enap/eventos", Amount: 1, Actor: "t"}, quota.ErrInvalid},
			{quota.Transfer{From: "enap/eventos", To: "enap/nadie", Amount: 1, Actor: "t"}, quota.ErrNotFound},
			{quota.Transfer{From: "enap/nadie", To: "enap/eventos", Amount: 1, Actor: "t"}, quota.ErrNotFound},
			{quota.Transfer{From: "enap/eventos", To: "sjti/talento", Amount: 0, Actor: "t"}, quota.ErrInvalid},
			{quota.Transfer{From: "enap/eventos", To: "sjti/talento", Amount: 1}, quota.ErrInvalid}, // no actor
		} {
			if err := l.Transfer(ctx, tt.tr); !errors.Is(err, tt.want) {
				t.Errorf("transfer %+v: err = %v, want %v", tt.tr, err, tt.want)
			}
		}
		// Exactly what is free moves.
		if err := l.Transfer(ctx, quota.Transfer{From: "enap/eventos", To: "sjti/talento", Amount: 1000, Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		if _, err := l.Allocate(ctx, quota.Allocation{Account: "sjti/talento", Amount: 1000, Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		b, _ := l.Balance(ctx, "test")
		if b.Pool.Unallocated() != 0 {
			t.Fatalf("unallocated = %d", b.Pool.Unallocated())
		}
		mustVerify(t, l)
	})
}

// 64 goroutines race to charge an account of 1,000: exactly 1,000 succeed,
// every other call is refused with ErrInsufficient, nothing else happens.
func TestConcurrentChargesNeverOverdraw(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 1000})
		const workers, each = 64, 20
		var ok, refused atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan error, workers)
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					_, err := l.Charge(ctx, db, charge("enap/eventos", 1, fmt.Sprintf("w%d-%d", w, i)))
					switch {
					case err == nil:
						ok.Add(1)
					case errors.Is(err, quota.ErrInsufficient):
						refused.Add(1)
					default:
						errs <- err
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("unexpected error: %v", err)
		}
		if ok.Load() != 1000 || refused.Load() != workers*each-1000 {
			t.Fatalf("charged %d, refused %d; want 1000 and %d", ok.Load(), refused.Load(), workers*each-1000)
		}
		if a := account(t, l, "enap/eventos"); a.Used != 1000 {
			t.Fatalf("used = %d", a.Used)
		}
		mustVerify(t, l)
	})
}

// Transfers in every direction race with charges and releases; the
// invariants hold throughout (checked while running) and at the end.
func TestConcurrentTransfersAndCharges(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		names := []string{"a/one", "a/two", "a/three"}
		l, _ := fixture(t, db, map[string]int64{"a/one": 1000, "a/two": 1000, "a/three": 1000})
		var wg sync.WaitGroup
		errs := make(chan error, 64)
		fail := func(err error) {
			select {
			case errs <- err:
			default:
			}
		}
		var charged atomic.Int64
		for w := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				for i := range 40 {
					from, to := names[r.IntN(3)], names[r.IntN(3)]
					switch r.IntN(3) {
					case 0:
						if from == to {
							continue
						}
						err := l.Transfer(ctx, quota.Transfer{From: from, To: to, Amount: int64(1 + r.IntN(50)), Actor: "t"})
						if err != nil && !errors.Is(err, quota.ErrInsufficient) {
							fail(fmt.Errorf("transfer: %w", err))
						}
					case 1:
						ref := fmt.Sprintf("w%d-%d", w, i)
						n := int64(1 + r.IntN(30))
						_, err := l.Charge(ctx, db, charge(from, n, ref))
						if err == nil {
							charged.Add(n)
							if r.IntN(2) == 0 {
								if _, err := l.Release(ctx, db, quota.Release{Account: from, Amount: 1, Origin: quota.OriginLibrary, Reference: ref, Actor: "t"}); err != nil {
									fail(fmt.Errorf("release: %w", err))
								}
								charged.Add(-1)
							}
						} else if !errors.Is(err, quota.ErrInsufficient) {
							fail(fmt.Errorf("charge: %w", err))
						}
					case 2:
						problems, err := l.Verify(ctx)
						if err != nil {
							fail(fmt.Errorf("verify: %w", err))
						} else if len(problems) > 0 {
							fail(fmt.Errorf("mid-run invariants: %v", problems))
						}
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		b, err := l.Balance(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if b.Pool.Allocated != 3000 || b.Used != charged.Load() {
			t.Fatalf("allocated %d used %d, want 3000 and %d", b.Pool.Allocated, b.Used, charged.Load())
		}
		mustVerify(t, l)
	})
}

func TestUsageByLimaDay(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, clk := fixture(t, db, map[string]int64{"enap/eventos": 1000})
		at := func(s string) time.Time {
			tm, err := time.ParseInLocation("2006-01-02 15:04", s, lima)
			if err != nil {
				t.Fatal(err)
			}
			return tm
		}
		steps := []struct {
			when   string
			origin quota.Origin
			n      int64
		}{
			{"2026-03-01 00:10", quota.OriginSMTP, 1},    // 05:10 UTC
			{"2026-03-01 18:59", quota.OriginSMTP, 2},    // 23:59 UTC
			{"2026-03-01 19:00", quota.OriginSMTP, 4},    // 00:00 UTC next day, still 1 March in Lima
			{"2026-03-01 23:59", quota.OriginLibrary, 8}, // another origin
			{"2026-03-02 00:00", quota.OriginSMTP, 16},
		}
		for i, s := range steps {
			clk.Set(at(s.when))
			c := charge("enap/eventos", s.n, fmt.Sprint(i))
			c.Origin = s.origin
			if _, err := l.Charge(ctx, db, c); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := l.Release(ctx, db, quota.Release{Account: "enap/eventos", Amount: 1, Origin: quota.OriginSMTP, Reference: "4", Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		u, err := l.Usage(ctx, quota.UsageFilter{Location: lima})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, r := range u {
			got = append(got, fmt.Sprintf("%s %s %s %d-%d", r.Day.Format("2006-01-02"), r.Account, r.Origin, r.Charged, r.Released))
		}
		want := []string{
			"2026-03-01 enap/eventos library 8-0",
			"2026-03-01 enap/eventos smtp 7-0",
			"2026-03-02 enap/eventos smtp 16-1",
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("usage:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
		// Filters.
		u, err = l.Usage(ctx, quota.UsageFilter{Location: lima, Origin: quota.OriginSMTP, From: at("2026-03-02 00:00")})
		if err != nil || len(u) != 1 || u[0].Net() != 15 {
			t.Fatalf("filtered usage = %+v, %v", u, err)
		}
	})
}

func TestInitIsIdempotentAndRefusesConflicts(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l := quota.New(db, quota.Config{Now: func() time.Time { return midYear }})
		plan := func() quota.Plan {
			return quota.Plan{
				Pool: quota.PoolSpec{Name: "servir-2026", Total: 1000, StartsAt: poolStart, EndsAt: poolEnd},
				Accounts: []quota.AccountSpec{
					{Name: "enap/eventos", Origin: "platform", Allocation: 600},
					{Name: "sjti/talento", Origin: "system", Allocation: 400},
				},
			}
		}
		r, err := l.Init(ctx, plan(), "t")
		if err != nil || !r.Created || r.Pool.Allocated != 1000 {
			t.Fatalf("first init: %+v, %v", r, err)
		}
		r, err = l.Init(ctx, plan(), "t")
		if err != nil || r.Created || len(r.Drift) != 0 {
			t.Fatalf("second init: %+v, %v", r, err)
		}
		if err := l.Transfer(ctx, quota.Transfer{From: "enap/eventos", To: "sjti/talento", Amount: 100, Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		r, err = l.Init(ctx, plan(), "t")
		if err != nil || r.Created || len(r.Drift) != 2 {
			t.Fatalf("init after a transfer: %+v, %v", r, err)
		}
		conflicts := []struct {
			name string
			edit func(*quota.Plan)
			text string
		}{
			{"total", func(p *quota.Plan) { p.Pool.Total = 2000 }, "total is 1000 in the database, 2000 in the plan"},
			{"period", func(p *quota.Plan) { p.Pool.EndsAt = p.Pool.EndsAt.AddDate(0, 0, 1) }, "period"},
			{"new account", func(p *quota.Plan) { p.Accounts = append(p.Accounts, quota.AccountSpec{Name: "x/y"}) }, "x/y is not in the database"},
			{"origin", func(p *quota.Plan) { p.Accounts[0].Origin = "system" }, "origin platform in the database, system in the plan"},
		}
		for _, c := range conflicts {
			p := plan()
			c.edit(&p)
			if _, err := l.Init(ctx, p, "t"); !errors.Is(err, quota.ErrConflict) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("%s: err = %v, want ErrConflict with %q", c.name, err, c.text)
			}
		}
		invalid := []struct {
			name string
			edit func(*quota.Plan)
			text string
		}{
			{"over-allocated", func(p *quota.Plan) { p.Accounts[0].Allocation = 601 }, "allocated 1001 messages, the pool has 1000"},
			{"duplicate", func(p *quota.Plan) { p.Accounts[1].Name = "ENAP/eventos" }, "listed twice"},
			{"bad name", func(p *quota.Plan) { p.Accounts[1].Name = "enap" }, "AREA/NAME"},
			{"bad pool name", func(p *quota.Plan) { p.Pool.Name = "Servir 2026" }, "pool name"},
			{"empty period", func(p *quota.Plan) { p.Pool.EndsAt = p.Pool.StartsAt }, "must end after it starts"},
			{"zero total", func(p *quota.Plan) { p.Pool.Total = 0 }, "positive"},
			{"bad origin", func(p *quota.Plan) { p.Accounts[0].Origin = "robot" }, "platform or system"},
		}
		for _, c := range invalid {
			p := plan()
			p.Pool.Name = "other"
			c.edit(&p)
			if _, err := l.Init(ctx, p, "t"); !errors.Is(err, quota.ErrInvalid) || !strings.Contains(err.Error(), c.text) {
				t.Errorf("%s: err = %v, want ErrInvalid with %q", c.name, err, c.text)
			}
		}
		if ps, _ := l.Pools(ctx); len(ps) != 1 {
			t.Fatalf("refused plans created pools: %d pools", len(ps))
		}
		mustVerify(t, l)
	})
}

func TestVerifyDetectsTampering(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 100})
		if _, err := l.Charge(ctx, db, charge("enap/eventos", 10, "m")); err != nil {
			t.Fatal(err)
		}
		mustVerify(t, l)
		// A counter changed behind the ledger's back is found.
		if _, err := db.ExecContext(ctx, "UPDATE quota_accounts SET used = used - 1"); err != nil {
			t.Fatal(err)
		}
		problems, err := l.Verify(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(problems) != 1 || !strings.Contains(problems[0], "used 9, ledger says 10") {
			t.Fatalf("problems = %v", problems)
		}
	})
}

func TestDisableEnable(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"enap/eventos": 100})
		for _, step := range []struct {
			disable, changed bool
		}{{true, true}, {true, false}, {false, true}, {false, false}} {
			changed, err := l.SetDisabled(ctx, "enap/eventos", step.disable, "t")
			if err != nil || changed != step.changed {
				t.Fatalf("SetDisabled(%v) = %v, %v; want changed %v", step.disable, changed, err, step.changed)
			}
		}
		if _, err := l.SetDisabled(ctx, "enap/nadie", true, "t"); !errors.Is(err, quota.ErrNotFound) {
			t.Fatalf("unknown account: %v", err)
		}
		if _, err := l.Charge(ctx, db, charge("enap/eventos", 1, "m")); err != nil {
			t.Fatalf("charge after re-enable: %v", err)
		}
	})
}
