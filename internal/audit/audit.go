// Package audit records administrative actions — who did what, to what,
// when — in the append-only audit_log table, inside the caller's
// transaction so an action and its record commit together.
package audit

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"
)

// Event is one administrative action.
type Event struct {
	bun.BaseModel `bun:"table:audit_log"`
	ID            int64     `bun:",pk,autoincrement"`
	At            time.Time `bun:"created_at"`
	Actor         string    // who: "cli:root", "token:ops"…
	Action        string    // what: "account.add", "pool.create"…
	Subject       string    // to what: an account or pool name
	Detail        string    // free text
}

// Record appends e. A zero e.At is an error: callers pass their clock's time.
func Record(ctx context.Context, idb bun.IDB, e Event) error {
	if e.At.IsZero() || e.Actor == "" || e.Action == "" {
		return fmt.Errorf("audit: event needs a time, an actor and an action")
	}
	e.At = e.At.UTC()
	if _, err := idb.NewInsert().Model(&e).Exec(ctx); err != nil {
		return fmt.Errorf("audit: record %s: %w", e.Action, err)
	}
	return nil
}

// List returns the most recent events, newest first, at most limit (0: 100).
func List(ctx context.Context, idb bun.IDB, limit int) ([]Event, error) {
	if limit <= 0 {
		limit = 100
	}
	var evs []Event
	if err := idb.NewSelect().Model(&evs).Order("id DESC").Limit(int64(limit)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("audit: list: %w", err)
	}
	for i := range evs {
		evs[i].At = evs[i].At.UTC()
	}
	return evs, nil
}
