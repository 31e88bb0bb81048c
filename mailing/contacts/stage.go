package contacts

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"
	"github.com/servir-pe/envios/internal/store"
	"github.com/uptrace/bun"
	"github.com/uptrace/bun/dialect"
)

func isPG(db bun.IDB) bool { return db.Dialect().Name() == dialect.PG }

// The staging table: one row per row of the file. contact_id, cstatus and
// same describe the existing contact of the address; member its
// membership of the list (” none, subscribed, unsubscribed).
const stageColumns = `line BIGINT NOT NULL, address TEXT NOT NULL, name TEXT NOT NULL, attrs TEXT NOT NULL, raw TEXT NOT NULL,
	reject TEXT NOT NULL, contact_id BIGINT, cstatus TEXT NOT NULL DEFAULT '', same BOOLEAN NOT NULL DEFAULT FALSE,
	member TEXT NOT NULL DEFAULT ''`

func createStage(ctx context.Context, tx bun.Tx, pg bool) error {
	stmts := []string{"DROP TABLE IF EXISTS temp.import_stage", "CREATE TEMP TABLE import_stage (" + stageColumns + ")"}
	if pg {
		stmts = []string{"CREATE TEMP TABLE import_stage (" + stageColumns + ") ON COMMIT DROP"}
	}
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("contacts: staging table: %w", err)
		}
	}
	return nil
}

var stageCopyColumns = []string{"line", "address", "name", "attrs", "raw", "reject"}

// copyStage streams the rows into the staging table with COPY, on the
// pgx connection under conn (inside the transaction open on it).
func copyStage(ctx context.Context, conn bun.Conn, rows *rowSource) error {
	var rerr error
	err := store.WithPgx(conn, func(pc *pgx.Conn) error {
		_, err := pc.CopyFrom(ctx, pgx.Identifier{"import_stage"}, stageCopyColumns, pgx.CopyFromFunc(func() ([]any, error) {
			r, ok, err := rows.next()
			if err != nil || !ok {
				rerr = err
				return nil, err
			}
			return []any{r.line, r.address, r.name, r.attrs, r.raw, r.reject}, nil
		}))
		return err
	})
	if rerr != nil {
		return rerr
	}
	if err != nil {
		return fmt.Errorf("contacts: stage the rows: %w", err)
	}
	return nil
}

// stageModel is a staged row as SQLite's multi-row INSERT writes it.
type stageModel struct {
	bun.BaseModel `bun:"table:import_stage"`
	Line          int64
	Address       string
	Name          string
	Attrs         string
	Raw           string
	Reject        string
}

// insertStage writes the rows into the staging table 500 at a time.
func insertStage(ctx context.Context, tx bun.Tx, rows *rowSource) error {
	batch := make([]stageModel, 0, 500)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if _, err := tx.NewInsert().Model(&batch).Exec(ctx); err != nil {
			return fmt.Errorf("contacts: stage the rows: %w", err)
		}
		batch = batch[:0]
		return nil
	}
	for {
		r, ok, err := rows.next()
		if err != nil {
			return err
		}
		if !ok {
			return flush()
		}
		batch = append(batch, stageModel{Line: r.line, Address: r.address, Name: r.name, Attrs: r.attrs, Raw: r.raw, Reject: r.reject})
		if len(batch) == cap(batch) {
			if err := flush(); err != nil {
				return err
			}
		}
	}
}
