package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

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
	return RetryUncommitted(ctx, db, func(t *Try) error {
		return db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			if err := t.Begin(ctx, tx); err != nil {
				return err
			}
			err := fn(ctx, tx)
			t.Committing(err == nil)
			return err
		})
	})
}

// Try is one try of a transaction run by RetryUncommitted.
type Try struct {
	engine     Engine
	id         int64 // PostgreSQL's transaction id; 0 when not known
	committing bool
}

// Begin notes the transaction's id (PostgreSQL: txid_current(), one round
// trip), by which RetryUncommitted can later learn whether a COMMIT whose
// reply was lost took. Call it first thing in the transaction.
func (t *Try) Begin(ctx context.Context, tx bun.Tx) error {
	if t.engine != Postgres {
		return nil
	}
	return tx.QueryRowContext(ctx, "SELECT txid_current()").Scan(&t.id)
}

// Committing says whether the transaction's statements are done and its
// COMMIT is about to be sent (true), or it is to roll back (false).
func (t *Try) Committing(yes bool) { t.committing = yes }

// RetryUncommitted runs try, one whole transaction, and sees it through a
// lost connection:
//
//   - lost before the COMMIT was sent, the transaction did not commit, and
//     it is run once more, after the pool's idle connections are dropped
//     (as in RetryConnLost);
//   - lost while the COMMIT's reply was awaited, PostgreSQL is asked on a
//     fresh connection whether the transaction committed (txid_status,
//     which exists for this), waiting while the server finishes it: if it
//     did, RetryUncommitted returns nil, the work being done; if it
//     aborted, the transaction is run once more. If that cannot be learnt,
//     the error matches ErrCommitUnknown.
//
// try must call Begin first in its transaction and Committing last.
func RetryUncommitted(ctx context.Context, db *bun.DB, try func(t *Try) error) error {
	engine := EngineOfDB(db)
	var err error
	for tries := 0; tries < 2; tries++ {
		t := &Try{engine: engine}
		err = try(t)
		if !ConnLost(err) || ctx.Err() != nil {
			return err
		}
		if t.committing {
			committed, serr := t.status(ctx, db)
			switch {
			case serr != nil:
				return fmt.Errorf("%w: %w (its status: %w)", ErrCommitUnknown, err, serr)
			case committed:
				return nil
			}
		}
		DropIdle(db) // it did not commit: once more, on a fresh connection
	}
	return err
}

// status asks PostgreSQL, on a fresh connection, whether the try's
// transaction committed, waiting while it is still in progress (the server
// may not have read the COMMIT yet, or noticed that the connection is
// gone).
func (t *Try) status(ctx context.Context, db *bun.DB) (bool, error) {
	if t.id == 0 {
		return false, errors.New("no transaction id")
	}
	DropIdle(db)
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		var st sql.NullString
		err := RetryConnLost(ctx, db, func() error {
			return db.QueryRowContext(ctx, "SELECT txid_status(?)", t.id).Scan(&st)
		})
		if err != nil {
			return false, err
		}
		switch st.String {
		case "committed":
			return true, nil
		case "aborted":
			return false, nil
		case "in progress":
		default:
			return false, fmt.Errorf("txid_status(%d) = %q", t.id, st.String)
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return false, fmt.Errorf("transaction %d still in progress: %w", t.id, ctx.Err())
		}
	}
}

// ErrCommitUnknown wraps the error of a transaction whose connection was
// lost while its COMMIT was awaited, when whether it committed could not
// be learnt either.
var ErrCommitUnknown = errors.New("store: connection lost during COMMIT, outcome unknown")
