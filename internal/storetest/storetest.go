// Package storetest runs a test body on every database engine envios
// supports: a SQLite file in t.TempDir() and, when ENVIOS_TEST_POSTGRES
// names a server, a fresh PostgreSQL schema per test, so parallel tests
// never see each other's rows.
//
// ENVIOS_TEST_POSTGRES is a postgres:// URL (CI sets
// postgres://postgres@127.0.0.1:5432/test?sslmode=disable). When it is set,
// a PostgreSQL test that cannot connect fails; when it is unset, the
// PostgreSQL half of each test is skipped with a message saying so.
package storetest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
)

// EnvPostgres is the environment variable naming the PostgreSQL test server.
const EnvPostgres = "ENVIOS_TEST_POSTGRES"

// Engines lists the engines a test runs on, SQLite first.
var Engines = []store.Engine{store.SQLite, store.Postgres}

// Runner is *testing.T or *testing.B.
type Runner[T any] interface {
	testing.TB
	Run(name string, f func(T)) bool
}

// Each runs fn once per engine as a subtest named after the engine, each
// with a freshly migrated, empty database.
func Each[T Runner[T]](t T, fn func(t T, db *bun.DB)) {
	t.Helper()
	for _, e := range Engines {
		t.Run(string(e), func(t T) {
			fn(t, Open(t, e))
		})
	}
}

// Open returns a freshly migrated, empty database on engine e, closed (and
// for PostgreSQL, dropped) when the test ends.
func Open(t testing.TB, e store.Engine) *bun.DB {
	t.Helper()
	dsn := DSN(t, e)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := store.Open(ctx, store.Config{DSN: dsn})
	if err != nil {
		t.Fatalf("open %s: %v", e, err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := store.Migrate(ctx, db); err != nil {
		t.Fatalf("migrate %s: %v", e, err)
	}
	return db
}

// DSN returns a DSN for a new, empty database on engine e that is removed
// when the test ends: a file in t.TempDir(), or a PostgreSQL URL whose
// search_path is a schema created for this test alone. It does not migrate.
func DSN(t testing.TB, e store.Engine) string {
	t.Helper()
	if e == store.SQLite {
		return filepath.Join(t.TempDir(), "envios.db")
	}
	base := os.Getenv(EnvPostgres)
	if base == "" {
		t.Skipf("PostgreSQL half skipped: set %s (e.g. postgres://postgres@127.0.0.1:5432/test?sslmode=disable) to run it", EnvPostgres)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := store.Open(ctx, store.Config{DSN: base, MaxOpenConns: 1})
	if err != nil {
		t.Fatalf("%s is set but PostgreSQL is unreachable: %v", EnvPostgres, err)
	}
	defer admin.Close()
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	schema := "envios_test_" + hex.EncodeToString(b)
	if _, err := admin.ExecContext(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create test schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		admin, err := store.Open(ctx, store.Config{DSN: base, MaxOpenConns: 1})
		if err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
			return
		}
		defer admin.Close()
		if _, err := admin.ExecContext(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop test schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgres, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}
