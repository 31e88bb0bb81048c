package store_test

import (
	"context"
	"testing"

	"github.com/uptrace/bun"
)

type bunDB = bun.DB

func mustExec(t *testing.T, db *bun.DB, q string) {
	t.Helper()
	if _, err := db.ExecContext(context.Background(), q); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}
