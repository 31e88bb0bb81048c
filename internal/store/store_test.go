package store_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

func TestMigrateConcurrentNodes(t *testing.T) {
	for _, e := range storetest.Engines {
		t.Run(string(e), func(t *testing.T) {
			dsn := storetest.DSN(t, e)
			ctx := context.Background()
			const nodes = 4
			var wg sync.WaitGroup
			applied := make([][]string, nodes)
			errs := make([]error, nodes)
			for i := range nodes {
				wg.Go(func() {
					db, err := store.Open(ctx, store.Config{DSN: dsn})
					if err != nil {
						errs[i] = err
						return
					}
					defer db.Close()
					applied[i], errs[i] = store.Migrate(ctx, db)
				})
			}
			wg.Wait()
			total := 0
			for i := range nodes {
				if errs[i] != nil {
					t.Fatalf("node %d: %v", i, errs[i])
				}
				total += len(applied[i])
			}
			db, err := store.Open(ctx, store.Config{DSN: dsn})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			all, err := store.Pending(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 0 {
				t.Fatalf("pending after migrate: %v", all)
			}
			// Exactly one node applied each migration.
			var n int
			if err := db.QueryRowContext(ctx, "SELECT count(*) FROM envios_migrations").Scan(&n); err != nil {
				t.Fatal(err)
			}
			if total != n || n == 0 {
				t.Fatalf("nodes applied %d migrations in all, table records %d", total, n)
			}
			again, err := store.Migrate(ctx, db)
			if err != nil || len(again) != 0 {
				t.Fatalf("second migrate: applied %v, err %v", again, err)
			}
		})
	}
}

func TestPendingOnEmptyDatabase(t *testing.T) {
	for _, e := range storetest.Engines {
		t.Run(string(e), func(t *testing.T) {
			ctx := context.Background()
			db, err := store.Open(ctx, store.Config{DSN: storetest.DSN(t, e)})
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			p, err := store.Pending(ctx, db)
			if err != nil {
				t.Fatal(err)
			}
			if len(p) == 0 || !strings.HasSuffix(p[0], "_quota") {
				t.Fatalf("pending on empty database = %v, want the quota migration first", p)
			}
		})
	}
}

func TestLedgerTablesAreAppendOnly(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bunDB) {
		ctx := context.Background()
		mustExec(t, db, "INSERT INTO quota_pools (name, total, starts_at, ends_at, created_at) VALUES ('p', 10, '2026-01-01 00:00:00+00:00', '2027-01-01 00:00:00+00:00', '2026-01-01 00:00:00+00:00')")
		mustExec(t, db, "INSERT INTO quota_accounts (pool_id, name, area, origin, created_at) VALUES (1, 'a/b', 'a', 'platform', '2026-01-01 00:00:00+00:00')")
		mustExec(t, db, "INSERT INTO quota_entries (pool_id, kind, account_id, amount, origin, actor, created_at) VALUES (1, 'allocate', 1, 5, 'cli', 't', '2026-01-01 00:00:00+00:00')")
		mustExec(t, db, "INSERT INTO audit_log (created_at, actor, action) VALUES ('2026-01-01 00:00:00+00:00', 't', 'x')")
		for _, q := range []string{
			"UPDATE quota_entries SET amount = 6",
			"DELETE FROM quota_entries",
			"UPDATE audit_log SET actor = 'u'",
			"DELETE FROM audit_log",
		} {
			_, err := db.ExecContext(ctx, q)
			if err == nil || !strings.Contains(err.Error(), "append-only") {
				t.Errorf("%s: err = %v, want append-only refusal", q, err)
			}
		}
		// The accounts table refuses used > allocation even if code misbehaves.
		if _, err := db.ExecContext(ctx, "UPDATE quota_accounts SET used = 1"); err == nil {
			t.Error("used > allocation accepted by the schema")
		}
	})
}

func TestDurabilityCheck(t *testing.T) {
	ctx := context.Background()
	t.Run("sqlite-in-memory", func(t *testing.T) {
		// An in-memory database cannot be put in WAL mode: nothing survives.
		_, err := store.Open(ctx, store.Config{DSN: ":memory:"})
		if !errors.Is(err, store.ErrNotDurable) || !strings.Contains(err.Error(), "journal_mode") {
			t.Fatalf("open :memory: err = %v, want ErrNotDurable naming journal_mode", err)
		}
		db, err := store.Open(ctx, store.Config{DSN: ":memory:", AllowUnsafeDurability: true})
		if err != nil {
			t.Fatalf("open with override: %v", err)
		}
		db.Close()
	})
	t.Run("sqlite-file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "sub", "x.db")
		db, err := store.Open(ctx, store.Config{DSN: path})
		if err != nil {
			t.Fatalf("open: %v", err)
		}
		defer db.Close()
		var mode string
		var sync int
		if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
			t.Fatal(err)
		}
		if mode != "wal" || sync != 2 {
			t.Fatalf("journal_mode=%s synchronous=%d, want wal and 2", mode, sync)
		}
	})
	t.Run("postgres-synchronous-commit-off", func(t *testing.T) {
		dsn := storetest.DSN(t, store.Postgres) + "&synchronous_commit=off"
		_, err := store.Open(ctx, store.Config{DSN: dsn})
		if !errors.Is(err, store.ErrNotDurable) || !strings.Contains(err.Error(), "synchronous_commit") {
			t.Fatalf("open with synchronous_commit=off: err = %v, want ErrNotDurable naming it", err)
		}
		db, err := store.Open(ctx, store.Config{DSN: dsn, AllowUnsafeDurability: true})
		if err != nil {
			t.Fatalf("open with override: %v", err)
		}
		db.Close()
	})
	t.Run("postgres-unreachable", func(t *testing.T) {
		_, err := store.Open(ctx, store.Config{DSN: "postgres://nobody@127.0.0.1:1/none?sslmode=disable&connect_timeout=2"})
		if err == nil || !strings.Contains(err.Error(), "connect to postgres") {
			t.Fatalf("err = %v, want a connect error", err)
		}
	})
}

func TestDescribeHidesPassword(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:secret@h:5432/db": "postgres postgres://u:xxxxx@h:5432/db",
		"data/relayd.db":                "sqlite data/relayd.db",
	} {
		if got := store.Describe(in); got != want {
			t.Errorf("Describe(%q) = %q, want %q", in, got, want)
		}
	}
}
