package relay

import (
	"context"
	"fmt"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
)

// throttle counts failed logins per key ("ip:ADDR", "user:NAME") in the
// database, so that counters survive a restart and are shared by the
// nodes of one PostgreSQL database. A key with max failures within window
// is blocked until the window that began with its first failure ends.
type throttle struct {
	db     *bun.DB
	now    func() time.Time
	max    int
	window time.Duration
}

// blocked reports whether any of keys has reached the limit.
func (t *throttle) blocked(ctx context.Context, keys ...string) (bool, error) {
	var n int
	err := store.RetryConnLost(ctx, t.db, func() error {
		return t.db.NewRaw("SELECT count(*) FROM relay_auth_failures WHERE key IN (?) AND failures >= ? AND window_start > ?",
			bun.List(keys), t.max, t.now().Add(-t.window)).Scan(ctx, &n)
	})
	if err != nil {
		return false, fmt.Errorf("relay: read login failures: %w", err)
	}
	return n > 0, nil
}

// fail counts one failure against each key; a key whose window has ended
// starts a new one.
func (t *throttle) fail(ctx context.Context, keys ...string) error {
	now := t.now().UTC()
	expired := now.Add(-t.window)
	for _, k := range keys {
		_, err := t.db.NewRaw("INSERT INTO relay_auth_failures (key, window_start, failures) VALUES (?, ?, 1) "+
			"ON CONFLICT (key) DO UPDATE SET "+
			"failures = CASE WHEN relay_auth_failures.window_start <= ? THEN 1 ELSE relay_auth_failures.failures + 1 END, "+
			"window_start = CASE WHEN relay_auth_failures.window_start <= ? THEN excluded.window_start ELSE relay_auth_failures.window_start END",
			k, now, expired, expired).Exec(ctx)
		if err != nil {
			return fmt.Errorf("relay: count login failure: %w", err)
		}
	}
	return nil
}

// clear forgets the failures of key (a username after a good login). Run
// twice it deletes nothing more, so a lost connection is tried again.
func (t *throttle) clear(ctx context.Context, key string) error {
	err := store.RetryConnLost(ctx, t.db, func() error {
		_, err := t.db.NewRaw("DELETE FROM relay_auth_failures WHERE key = ?", key).Exec(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("relay: clear login failures: %w", err)
	}
	return nil
}
