package report

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
)

// TestAddressLookupUsesIndex: the by-address query says lower(address)
// exactly as mail_recipients_address_lower_idx does, so both engines can
// answer it from the index (PostgreSQL is told to avoid sequential scans,
// which it prefers on an empty table).
func TestAddressLookupUsesIndex(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		r := New(db, Config{})
		q, err := r.rowQuery(ctx, Filter{Address: "Ana@Example.com", After: 10})
		if err != nil {
			t.Fatal(err)
		}
		query := q.Limit(DefaultPage + 1).String()
		var plan []string
		err = db.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
			explain := "EXPLAIN QUERY PLAN "
			if store.EngineOfDB(db) == store.Postgres {
				if _, err := tx.ExecContext(ctx, "SET LOCAL enable_seqscan = off"); err != nil {
					return err
				}
				explain = "EXPLAIN "
			}
			rows, err := tx.QueryContext(ctx, explain+query)
			if err != nil {
				return err
			}
			defer rows.Close()
			cols, _ := rows.Columns()
			for rows.Next() {
				cells := make([]any, len(cols))
				for i := range cells {
					cells[i] = new(sql.NullString)
				}
				if err := rows.Scan(cells...); err != nil {
					return err
				}
				plan = append(plan, cells[len(cells)-1].(*sql.NullString).String)
			}
			return rows.Err()
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Log(strings.Join(plan, "\n"))
		if !strings.Contains(strings.Join(plan, "\n"), "mail_recipients_address_lower_idx") {
			t.Fatalf("the address lookup does not use mail_recipients_address_lower_idx:\n%s\n%s", query, strings.Join(plan, "\n"))
		}
	})
}
