package quota_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/quota"
)

func TestChargeBatchDecidesEachCharge(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, clk := fixture(t, db, map[string]int64{"a/one": 10, "a/two": 5, "a/off": 5, "a/three": 10})
		if _, err := l.SetDisabled(ctx, "a/off", true, "t"); err != nil {
			t.Fatal(err)
		}
		cs := []quota.Charge{
			charge("a/one", 4, "m1"),   // 0: fits (6 left)
			charge("a/two", 5, "m2"),   // 1: fits exactly
			charge("a/one", 7, "m3"),   // 2: too big: 6 left
			charge("a/one", 6, "m4"),   // 3: fits after the refusal
			charge("a/off", 1, "m5"),   // 4: disabled
			charge("a/nadie", 1, "m6"), // 5: unknown
			charge("a/one", 0, "m7"),   // 6: invalid
			charge("a/two", 1, "m8"),   // 7: two is spent
			charge("a/one", 0+1, ""),   // 8: no reference
			{Account: "a/two", Amount: 1, Origin: "fax", Reference: "x", Actor: "t"}, // 9: bad origin
			charge("a/three", 3, "m10"), // 10, 11: all of a/three fits: charged whole
			charge("a/three", 7, "m11"),
		}
		want := []error{nil, nil, quota.ErrInsufficient, nil, quota.ErrDisabled, quota.ErrNotFound, quota.ErrInvalid, quota.ErrInsufficient, quota.ErrInvalid, quota.ErrInvalid, nil, nil}
		errs, err := l.ChargeBatch(ctx, db, cs)
		if err != nil {
			t.Fatal(err)
		}
		for i := range cs {
			if (want[i] == nil) != (errs[i] == nil) || (want[i] != nil && !errors.Is(errs[i], want[i])) {
				t.Errorf("charge %d: err = %v, want %v", i, errs[i], want[i])
			}
		}
		var ie *quota.InsufficientError
		if !errors.As(errs[2], &ie) || ie.Remaining != 6 || ie.Requested != 7 {
			t.Errorf("charge 2: %v", errs[2])
		}
		if a := account(t, l, "a/one"); a.Used != 10 {
			t.Errorf("a/one used %d, want 10", a.Used)
		}
		if a := account(t, l, "a/two"); a.Used != 5 {
			t.Errorf("a/two used %d, want 5", a.Used)
		}
		if a := account(t, l, "a/three"); a.Used != 10 {
			t.Errorf("a/three used %d, want 10", a.Used)
		}
		h, _ := l.History(ctx, quota.HistoryFilter{Kind: quota.KindCharge})
		if len(h) != 5 {
			t.Errorf("%d charge entries, want 5", len(h))
		}
		var three []string
		for _, e := range h {
			if e.Account == "a/three" {
				three = append(three, fmt.Sprint(e.Reference, "=", e.Amount))
			}
		}
		if len(three) != 2 || !slices.Contains(three, "m10=3") || !slices.Contains(three, "m11=7") {
			t.Errorf("a/three's entries %v", three)
		}
		mustVerify(t, l)

		// Outside the period every charge is refused, nothing written.
		clk.Set(poolEnd.Add(time.Hour))
		if _, err := l.Release(ctx, db, quota.Release{Account: "a/one", Amount: 4, Origin: quota.OriginLibrary, Reference: "m1", Actor: "t"}); err != nil {
			t.Fatal(err)
		}
		errs, err = l.ChargeBatch(ctx, db, []quota.Charge{charge("a/one", 1, "late")})
		if err != nil || !errors.Is(errs[0], quota.ErrOutsidePeriod) {
			t.Fatalf("after the period: %v, %v", errs, err)
		}
		mustVerify(t, l)
	})
}

func TestChargeBatchSameReferenceTwiceAndRollback(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"a/one": 100})
		cs := []quota.Charge{charge("a/one", 2, "m"), charge("a/one", 3, "m")}
		if errs, err := l.ChargeBatch(ctx, db, cs); err != nil || errs[0] != nil || errs[1] != nil {
			t.Fatalf("%v %v", errs, err)
		}
		// All five can be released under the one reference, not six.
		rel := quota.Release{Account: "a/one", Amount: 6, Origin: quota.OriginLibrary, Reference: "m", Actor: "t"}
		if _, err := l.Release(ctx, db, rel); !errors.Is(err, quota.ErrOverRelease) {
			t.Fatalf("release 6 of 5: %v", err)
		}
		rel.Amount = 5
		if _, err := l.Release(ctx, db, rel); err != nil {
			t.Fatal(err)
		}
		boom := errors.New("caller fails")
		err := db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if _, err := l.ChargeBatch(ctx, tx, []quota.Charge{charge("a/one", 50, "r")}); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			t.Fatal(err)
		}
		if a := account(t, l, "a/one"); a.Used != 0 {
			t.Fatalf("used %d after rollback", a.Used)
		}
		mustVerify(t, l)
	})
}

// Batches from many committers race with single charges and transfers in
// both directions on two accounts: exactly the allocation is charged, every
// refusal is ErrInsufficient, nothing deadlocks, the invariants hold.
func TestChargeBatchConcurrent(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := ctx(t)
		l, _ := fixture(t, db, map[string]int64{"a/one": 1000, "a/two": 1000})
		var charged atomic.Int64
		var wg sync.WaitGroup
		errc := make(chan error, 32)
		for w := range 16 {
			wg.Go(func() {
				for b := range 10 {
					var cs []quota.Charge
					for i := range 10 {
						acct := []string{"a/one", "a/two"}[(w+i)%2]
						cs = append(cs, charge(acct, 2, fmt.Sprintf("w%d-b%d-%d", w, b, i)))
					}
					errs, err := l.ChargeBatch(ctx, db, cs)
					if err != nil {
						errc <- err
						return
					}
					for _, e := range errs {
						switch {
						case e == nil:
							charged.Add(2)
						case !errors.Is(e, quota.ErrInsufficient):
							errc <- e
							return
						}
					}
					if w%4 == 0 {
						from, to := "a/one", "a/two"
						if b%2 == 1 {
							from, to = to, from
						}
						if err := l.Transfer(ctx, quota.Transfer{From: from, To: to, Amount: 4, Actor: "t"}); err != nil && !errors.Is(err, quota.ErrInsufficient) {
							errc <- err
							return
						}
					}
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			t.Fatal(err)
		}
		b, err := l.Balance(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		// 16×10×10×2 = 3,200 asked of 2,000: all 2,000 spent, whatever moved
		// (amounts are even, so no account is left with one unspendable message).
		if b.Used != 2000 || charged.Load() != 2000 {
			t.Fatalf("used %d, counted %d; want 2000", b.Used, charged.Load())
		}
		mustVerify(t, l)
	})
}
