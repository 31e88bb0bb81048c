package store

import (
	"context"
	"embed"
	"fmt"

	"github.com/uptrace/bun"
	"github.com/uptrace/bun/migrate"
)

// migrationFiles are the schema migrations, timestamped bun/migrate SQL
// files. Each runs in its own transaction (".tx.up.sql"). One file serves
// both engines: it is a text/template rendered with dialectTypes, so the
// statements that are the same on both engines are written once and the
// few that differ sit in {{if .Postgres}} blocks.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// dialectTypes is the data the migration templates are rendered with.
type dialectTypes struct {
	Postgres bool
	ID       string // an auto-incrementing 64-bit primary key
	Time     string // a UTC instant
	Bool     string
	Blob     string // bytes
	JSON     string // a JSON document (PostgreSQL: jsonb)
}

func typesFor(e Engine) dialectTypes {
	if e == Postgres {
		return dialectTypes{Postgres: true, ID: "BIGSERIAL PRIMARY KEY", Time: "TIMESTAMPTZ", Bool: "BOOLEAN", Blob: "BYTEA", JSON: "JSONB"}
	}
	return dialectTypes{ID: "INTEGER PRIMARY KEY AUTOINCREMENT", Time: "TIMESTAMP", Bool: "BOOLEAN", Blob: "BLOB", JSON: "TEXT"}
}

// migrations loads the embedded migration files.
func migrations() (*migrate.Migrations, error) {
	ms := migrate.NewMigrations()
	sub, err := subFS()
	if err != nil {
		return nil, err
	}
	if err := ms.Discover(sub); err != nil {
		return nil, fmt.Errorf("store: load migrations: %w", err)
	}
	return ms, nil
}

func newMigrator(db *bun.DB, ms *migrate.Migrations) *migrate.Migrator {
	return migrate.NewMigrator(db, ms,
		migrate.WithTableName("envios_migrations"),
		migrate.WithLocksTableName("envios_migration_locks"),
		migrate.WithMarkAppliedOnSuccess(true),
		migrate.WithTemplateData(typesFor(EngineOfDB(db))),
	)
}

// Migrate applies every pending migration and returns the names of those it
// applied. Concurrent callers — several relayd nodes starting at once on one
// PostgreSQL, or a CLI command beside a running server on one SQLite file —
// are serialised by a lock that the engine releases if the holder dies
// (a PostgreSQL session advisory lock; an flock on a file beside the SQLite
// database), so a crashed migration never leaves a stale lock behind.
func Migrate(ctx context.Context, db *bun.DB) ([]string, error) {
	ms, err := migrations()
	if err != nil {
		return nil, err
	}
	m := newMigrator(db, ms)
	unlock, err := lockMigrations(ctx, db)
	if err != nil {
		return nil, err
	}
	defer unlock()
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("store: create migration tables: %w", err)
	}
	group, err := m.Migrate(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: migrate: %w", err)
	}
	var names []string
	for _, mig := range group.Migrations {
		names = append(names, mig.Name+"_"+mig.Comment)
	}
	return names, nil
}

// Pending returns the names of the migrations not yet applied. A database
// that was never migrated reports all of them.
func Pending(ctx context.Context, db *bun.DB) ([]string, error) {
	all, err := migrations()
	if err != nil {
		return nil, err
	}
	var exists bool
	switch EngineOfDB(db) {
	case Postgres:
		err = db.QueryRowContext(ctx, "SELECT to_regclass('envios_migrations') IS NOT NULL").Scan(&exists)
	default:
		err = db.QueryRowContext(ctx, "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'envios_migrations'").Scan(&exists)
	}
	if err != nil {
		return nil, fmt.Errorf("store: read schema version: %w", err)
	}
	pending := all.Sorted()
	if exists {
		withStatus, err := newMigrator(db, all).MigrationsWithStatus(ctx)
		if err != nil {
			return nil, fmt.Errorf("store: read schema version: %w", err)
		}
		pending = withStatus.Unapplied()
	}
	var names []string
	for _, mig := range pending {
		names = append(names, mig.Name+"_"+mig.Comment)
	}
	return names, nil
}
