package main

import (
	"context"
	"fmt"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/store"
)

func runDBMigrate(ctx context.Context, e *env, args []string) error {
	return dbSchema(ctx, e, "db migrate", args, "applied", store.Migrate)
}

func runDBStatus(ctx context.Context, e *env, args []string) error {
	return dbSchema(ctx, e, "db status", args, "pending", store.Pending)
}

// dbSchema runs a schema operation and prints the migrations it names.
func dbSchema(ctx context.Context, e *env, name string, args []string, verb string,
	op func(context.Context, *bun.DB) ([]string, error)) error {
	var g globals
	fs := e.flagSet(name, &g)
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	db, err := e.open(ctx, &g, e.logger())
	if err != nil {
		return err
	}
	defer db.Close()
	names, err := op(ctx, db)
	if err != nil {
		return err
	}
	if len(names) == 0 {
		fmt.Fprintln(e.stdout, "database schema is up to date")
		return nil
	}
	for _, n := range names {
		fmt.Fprintf(e.stdout, "%s %s\n", verb, n)
	}
	return nil
}
