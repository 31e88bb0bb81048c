package quota_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/quota"
)

// A program that accepts a message charges its account inside the same
// transaction that stores the message: both commit, or neither does.
func ExampleLedger_Charge() {
	dir, _ := os.MkdirTemp("", "quota-example-")
	defer os.RemoveAll(dir)
	ctx := context.Background()
	db, err := store.Open(ctx, store.Config{DSN: filepath.Join(dir, "envios.db")})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	if _, err := store.Migrate(ctx, db); err != nil {
		log.Fatal(err)
	}

	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ledger := quota.New(db, quota.Config{Now: func() time.Time { return now }})
	_, err = ledger.Init(ctx, quota.Plan{
		Pool: quota.PoolSpec{Name: "servir-2026", Total: 8_306_727,
			StartsAt: time.Date(2026, 11, 1, 5, 0, 0, 0, time.UTC), EndsAt: time.Date(2027, 11, 1, 5, 0, 0, 0, time.UTC)},
		Accounts: []quota.AccountSpec{{Name: "gdcrsc/reto-excelencia", Origin: "system", Allocation: 50_000}},
	}, "example")
	if err != nil {
		log.Fatal(err)
	}

	err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		// ... insert the message and its 3 recipients with tx ...
		acct, err := ledger.Charge(ctx, tx, quota.Charge{
			Account: "gdcrsc/reto-excelencia", Amount: 3, Origin: quota.OriginLibrary,
			Reference: "msg-0001", Actor: "library:reto-app",
		})
		if err != nil {
			return err // rolls back the message too
		}
		fmt.Println("remaining:", acct.Remaining())
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}

	_, err = ledger.Charge(ctx, db, quota.Charge{
		Account: "gdcrsc/reto-excelencia", Amount: 60_000, Origin: quota.OriginSMTP,
		Reference: "msg-0002", Actor: "smtp:reto-app",
	})
	var ie *quota.InsufficientError
	if errors.Is(err, quota.ErrInsufficient) && errors.As(err, &ie) {
		fmt.Printf("refused: %d left, %d asked\n", ie.Remaining, ie.Requested)
	}
	// Output:
	// remaining: 49997
	// refused: 49997 left, 60000 asked
}
