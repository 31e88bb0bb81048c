package main

import (
	"context"
	"fmt"

	"github.com/servir-pe/envios/internal/store"
)

func runDBMigrate(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("db migrate", &g)
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	db, err := e.open(ctx, &g, e.logger())
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := store.Migrate(ctx, db)
	if err != nil {
		return err
	}
	if len(applied) == 0 {
		fmt.Fprintln(e.stdout, "database schema is up to date")
		return nil
	}
	for _, name := range applied {
		fmt.Fprintf(e.stdout, "applied %s\n", name)
	}
	return nil
}

func runDBStatus(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("db status", &g)
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	db, err := e.open(ctx, &g, e.logger())
	if err != nil {
		return err
	}
	defer db.Close()
	pending, err := store.Pending(ctx, db)
	if err != nil {
		return err
	}
	if len(pending) == 0 {
		fmt.Fprintln(e.stdout, "database schema is up to date")
		return nil
	}
	for _, name := range pending {
		fmt.Fprintf(e.stdout, "pending %s\n", name)
	}
	return nil
}
