package store

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io/fs"
	"strings"

	"github.com/uptrace/bun"
)

func subFS() (fs.FS, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, fmt.Errorf("store: migrations: %w", err)
	}
	return sub, nil
}

// lockMigrations takes the migration lock and returns its release.
func lockMigrations(ctx context.Context, db *bun.DB) (func(), error) {
	if EngineOfDB(db) == Postgres {
		return lockPostgres(ctx, db)
	}
	var seq int
	var name, file string
	if err := db.QueryRowContext(ctx, "PRAGMA database_list").Scan(&seq, &name, &file); err != nil {
		return nil, fmt.Errorf("store: locate SQLite file: %w", err)
	}
	if file == "" { // in-memory: no other process can see it
		return func() {}, nil
	}
	return lockFile(ctx, file+".migrate-lock")
}

// lockPostgres holds a session advisory lock, keyed by the current schema,
// on a connection reserved for it; PostgreSQL drops it if we die.
func lockPostgres(ctx context.Context, db *bun.DB) (func(), error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return nil, fmt.Errorf("store: migration lock: %w", err)
	}
	const key = "hashtext('envios.migrate.' || current_schema())"
	if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock("+key+")"); err != nil {
		conn.Close()
		return nil, fmt.Errorf("store: migration lock: %w", err)
	}
	return func() {
		// A fresh context: the caller's may be cancelled, and the lock must
		// still be released before the connection returns to the pool.
		_, err := conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock("+key+")")
		if err != nil {
			// Closing the connection ends the session, which drops the lock.
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
}

// TryLock takes the lock called name, without waiting, and holds it until
// release is called or the process ends, however it ends (kill -9 too):
// on PostgreSQL a session advisory lock on a connection reserved for it,
// which the server drops with the session; on SQLite an flock on a file
// beside the database. ok is false when someone else — another process or
// another caller in this one — holds it. On an in-memory SQLite database,
// which no other process can open, it always succeeds.
func TryLock(ctx context.Context, db *bun.DB, name string) (release func(), ok bool, err error) {
	if EngineOfDB(db) == Postgres {
		conn, err := db.Conn(ctx)
		if err != nil {
			return nil, false, fmt.Errorf("store: lock %s: %w", name, err)
		}
		const key = "hashtextextended('envios.' || current_schema() || '.' || ?, 0)"
		if err := conn.QueryRowContext(ctx, "SELECT pg_try_advisory_lock("+key+")", name).Scan(&ok); err != nil || !ok {
			conn.Close()
			if err != nil {
				return nil, false, fmt.Errorf("store: lock %s: %w", name, err)
			}
			return nil, false, nil
		}
		return func() {
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock("+key+")", name); err != nil {
				_ = conn.Raw(func(any) error { return driver.ErrBadConn }) // ending the session drops it
			}
			conn.Close()
		}, true, nil
	}
	var seq int
	var schema, file string
	if err := db.QueryRowContext(ctx, "PRAGMA database_list").Scan(&seq, &schema, &file); err != nil {
		return nil, false, fmt.Errorf("store: locate SQLite file: %w", err)
	}
	if file == "" {
		return func() {}, true, nil
	}
	safe := strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.' {
			return r
		}
		return '_'
	}, strings.ToLower(name))
	return tryLockFile(file + ".lock-" + safe)
}
