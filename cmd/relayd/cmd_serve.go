package main

import (
	"context"
	"log/slog"

	"github.com/servir-pe/envios/internal/store"
)

// runServe opens and migrates the database, then waits for SIGINT or
// SIGTERM. The SMTP relay, the delivery engine and the HTTPS API join it
// as their issues land; until then it proves the configuration and keeps
// the database migrated.
func runServe(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("serve", &g)
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	db, err := e.open(ctx, &g, log)
	if err != nil {
		return err
	}
	defer db.Close()
	applied, err := store.Migrate(ctx, db)
	if err != nil {
		return err
	}
	for _, name := range applied {
		log.Info("applied migration", "name", name)
	}
	log.Info("relayd ready", "db", store.Describe(g.dsn()), "timezone", g.loc.String())
	<-ctx.Done()
	log.Info("relayd stopped")
	return nil
}
