package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/uptrace/bun"
)

// ConnLost reports whether err says that the connection to the database
// was lost (found closed, reset, or cut while a reply was awaited), rather
// than that the database refused a statement.
func ConnLost(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	return errors.Is(err, pgconn.ErrConnClosed) || errors.Is(err, driver.ErrBadConn) || errors.Is(err, sql.ErrConnDone) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.As(err, &ne)
}

// RetryConnLost runs op, and once more if it failed because its connection
// was lost. Before the second try it drops the pool's idle connections:
// after a database restart they are all dead, and each would fail one
// request in turn. op must be safe to run twice — a read, or a transaction
// that failed before its COMMIT was sent.
//
// database/sql retries by itself only what the driver marks safe to retry,
// and pgx (since 5.13) no longer marks a connection found closed while a
// reply was awaited as safe, since the statement may have run: so a pool
// of connections that died while idle fails its next requests, one per
// connection, unless the caller, who knows its statement changes nothing,
// tries again.
func RetryConnLost(ctx context.Context, db *bun.DB, op func() error) error {
	err := op()
	if !ConnLost(err) || ctx.Err() != nil {
		return err
	}
	DropIdle(db)
	return op()
}

// DropIdle closes the idle connections of a PostgreSQL pool (Open keeps
// as many idle as it allows open); new ones are opened as needed. A
// SQLite database has no connection to lose.
func DropIdle(db *bun.DB) {
	if EngineOfDB(db) != Postgres {
		return
	}
	n := db.Stats().MaxOpenConnections
	db.SetMaxIdleConns(0) // closes every idle connection
	db.SetMaxIdleConns(n)
}

// RunInTx runs fn in a transaction, as bun's RunInTx does, through
// RetryUncommitted. fn must leave nothing behind but what it writes in tx.
func RunInTx(ctx context.Context, db *bun.DB, fn func(ctx context.Context, tx bun.Tx) error) error {
	return RetryUncommitted(ctx, db, func(committing *bool) error {
		return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			err := fn(ctx, tx)
			*committing = err == nil
			return err
		})
	})
}

// RetryUncommitted runs try, one whole transaction, and runs it once more
// if its connection was lost before its COMMIT was sent: such a
// transaction did not commit. try sets *committing when its statements
// are done and the COMMIT is about to go; a connection lost after that is
// not tried again, and its error matches ErrCommitUnknown: whether the
// transaction committed is for the caller to find out.
// Before the second try the pool's idle connections are dropped, as in
// RetryConnLost.
func RetryUncommitted(ctx context.Context, db *bun.DB, try func(committing *bool) error) error {
	committing := false
	err := try(&committing)
	if !committing && ConnLost(err) && ctx.Err() == nil {
		DropIdle(db)
		committing = false
		err = try(&committing)
	}
	if committing && ConnLost(err) {
		return fmt.Errorf("%w: %w", ErrCommitUnknown, err)
	}
	return err
}

// ErrCommitUnknown wraps the error of a transaction whose connection was
// lost while its COMMIT was awaited: it may have committed or not.
var ErrCommitUnknown = errors.New("store: connection lost during COMMIT, outcome unknown")
