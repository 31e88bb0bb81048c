package mailing

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
)

// write is the transaction policy of every write the library makes (the
// group commit of Send and Submit, a batch's chunks, Cancel): fn runs in
// one transaction through store.RetryUncommitted, so a transaction whose
// connection is lost before its COMMIT runs again on a fresh connection,
// and one whose COMMIT's reply is lost is asked of PostgreSQL (committed:
// nil, not run again; not: run again). On PostgreSQL the transaction runs
// on a connection reserved for it, which fn gets as conn (COPY needs the
// pgx connection under it); on SQLite conn is nil. fn may run more than
// once: it must reset whatever it reports besides what it writes in tx.
func (m *Mailer) write(ctx context.Context, what string, fn func(ctx context.Context, tx bun.Tx, conn *bun.Conn) error) error {
	return store.RetryUncommitted(ctx, m.db, func(t *store.Try) error {
		run := func(ctx context.Context, tx bun.Tx, conn *bun.Conn) error {
			if err := t.Begin(ctx, tx); err != nil {
				return err
			}
			err := fn(ctx, tx, conn)
			t.Committing(err == nil)
			return err
		}
		if !mailstore.IsPG(m.db) {
			return m.db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error { return run(ctx, tx, nil) })
		}
		conn, err := m.db.Conn(ctx)
		if err != nil {
			return fmt.Errorf("mailing: %s: %w", what, err)
		}
		defer conn.Close()
		return conn.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error { return run(ctx, tx, &conn) })
	})
}
