// Command relayd is the envios daemon and its admin commands: the
// message-pool ledger (quota, account), the database (db), and the
// server (serve). Run `relayd --help` for the list.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"

	// The IANA time zone database inside the binary, so America/Lima
	// resolves on machines without /usr/share/zoneinfo.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, &env{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, now: time.Now}, os.Args[1:])
	stop()
	os.Exit(code)
}
