package store_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

func TestConnLost(t *testing.T) {
	tests := []struct {
		err  error
		want bool
	}{
		{nil, false},
		{fmt.Errorf("credential: check: %w", pgconn.ErrConnClosed), true},
		{fmt.Errorf("read: %w", &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}), true},
		{sql.ErrConnDone, true},
		{&pgconn.PgError{Code: "23505"}, false},
		{sql.ErrNoRows, false},
		{context.Canceled, false},
	}
	for _, tt := range tests {
		if got := store.ConnLost(tt.err); got != tt.want {
			t.Errorf("ConnLost(%v) = %v, want %v", tt.err, got, tt.want)
		}
	}
}

// A connection cut while a read awaits its reply (PostgreSQL restarting
// under load) fails that read; database/sql does not try again, since the
// statement may have run (pgx ≥ 5.13). RetryConnLost does, for reads, on a
// fresh connection, and the read succeeds. The same cut without it is an
// error that ConnLost recognises.
func TestRetryConnLostWhenTheConnectionIsCut(t *testing.T) {
	ctx := context.Background()
	db, proxy := storetest.OpenBehindProxy(t, 4)
	read := func(n *int) error { return db.NewRaw("SELECT 7 FROM pg_sleep(0.3)").Scan(ctx, n) }
	cut := func() {
		time.Sleep(100 * time.Millisecond)
		proxy.Down()
		proxy.Up()
	}
	for _, retry := range []bool{false, true} {
		store.DropIdle(db) // start from live connections: the last cut left dead ones idle
		var n, tries int
		go cut()
		var err error
		if retry {
			err = store.RetryConnLost(ctx, db, func() error { tries++; return read(&n) })
		} else {
			err = read(&n)
		}
		switch {
		case retry && (err != nil || n != 7 || tries != 2):
			t.Fatalf("with RetryConnLost: %d after %d tries, %v; want 7 after 2", n, tries, err)
		case !retry && !store.ConnLost(err):
			t.Fatalf("without: %d, %v; want an error ConnLost recognises", n, err)
		}
	}
}

// RetryUncommitted tries a transaction again only when its connection was
// lost and it did not commit; when the reply to its COMMIT was lost and
// the database cannot say how it ended (here SQLite, which has no
// transaction ids), the error matches ErrCommitUnknown.
func TestRetryUncommitted(t *testing.T) {
	db := storetest.Open(t, store.SQLite)
	lost := fmt.Errorf("mailing: store messages: %w", pgconn.ErrConnClosed)
	refused := &pgconn.PgError{Code: "23505"}
	tests := []struct {
		name       string
		errs       []error // what each try returns
		committing []bool  // whether each try got as far as its COMMIT
		cancelled  bool
		tries      int
		want       error
		unknown    bool
	}{
		{"committed", []error{nil}, []bool{true}, false, 1, nil, false},
		{"refused by the database", []error{refused}, []bool{false}, false, 1, refused, false},
		{"lost before COMMIT, then committed", []error{lost, nil}, []bool{false, true}, false, 2, nil, false},
		{"lost before COMMIT twice", []error{lost, lost}, []bool{false, false}, false, 2, lost, false},
		{"lost during COMMIT, no way to ask how it ended", []error{lost}, []bool{true}, false, 1, lost, true},
		{"lost, but the caller gave up", []error{lost}, []bool{false}, true, 1, lost, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.cancelled {
				cancel()
			}
			tries := 0
			err := store.RetryUncommitted(ctx, db, func(tr *store.Try) error {
				tr.Committing(tt.committing[tries])
				tries++
				return tt.errs[tries-1]
			})
			if tries != tt.tries || !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
				t.Fatalf("%d tries, %v; want %d, %v", tries, err, tt.tries, tt.want)
			}
			if errors.Is(err, store.ErrCommitUnknown) != tt.unknown {
				t.Fatalf("%v: ErrCommitUnknown should be %v", err, tt.unknown)
			}
		})
	}
}

// On PostgreSQL a transaction whose COMMIT is lost is seen through: if
// the COMMIT reached the server, RunInTx learns that it committed and
// returns nil without running it again; if it did not, it runs it again.
// Either way its row is there once.
func TestRunInTxWhenTheCommitIsLost(t *testing.T) {
	ctx := context.Background()
	db, proxy := storetest.OpenBehindProxy(t, 4)
	if _, err := db.ExecContext(ctx, "CREATE TABLE t (k text PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		arm   func(func([]byte) bool)
		tries int
	}{
		{"COMMIT reached the server", proxy.CutAfter, 1},
		{"COMMIT never reached it", proxy.CutBefore, 2},
	} {
		t.Run(c.name, func(t *testing.T) {
			tries := 0
			c.arm(storetest.IsCommit)
			err := store.RunInTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
				tries++
				_, err := tx.ExecContext(ctx, "INSERT INTO t VALUES (?)", c.name)
				return err
			})
			var n int
			if cerr := store.RetryConnLost(ctx, db, func() error {
				return db.NewRaw("SELECT count(*) FROM t WHERE k = ?", c.name).Scan(ctx, &n)
			}); cerr != nil {
				t.Fatal(cerr)
			}
			if cuts := proxy.Cuts(); cuts != 1+map[bool]int{false: 0, true: 1}[c.tries == 2] {
				t.Fatalf("%d cuts made so far", cuts)
			}
			if err != nil || tries != c.tries || n != 1 {
				t.Fatalf("RunInTx: %v after %d tries, row there %d times; want nil after %d, once", err, tries, n, c.tries)
			}
		})
	}
}
