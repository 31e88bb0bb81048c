package main

import (
	"context"
	"fmt"

	"github.com/servir-pe/envios/quota"
)

func runAccountAdd(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("account add", &g)
	alloc := fs.String("allocation", "0", "messages to allocate from the pool's remainder")
	origin := fs.String("origin", "platform", "platform (campaigns) or system (information systems)")
	desc := fs.String("description", "", "what the account is for")
	pool := fs.String("pool", "", "pool name (default: the only or current pool)")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	var n int64
	if *alloc != "0" {
		if n, err = parseAmount("--allocation", *alloc); err != nil {
			return err
		}
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	a, err := l.AddAccount(ctx, *pool, quota.AccountSpec{Name: pos[0], Origin: *origin, Description: *desc, Allocation: n}, e.defaultActor())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "added account %s to pool %s with an allocation of %s\n", a.Name, a.Pool, group(a.Allocation))
	return nil
}

func runAccountList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("account list", &g)
	asJSON := fs.Bool("json", false, "print JSON")
	_, db, l, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	as, err := l.Accounts(ctx, "")
	if err != nil {
		return err
	}
	if *asJSON {
		out := []accountJSON{}
		for _, a := range as {
			out = append(out, toAccountJSON(a))
		}
		return writeJSON(e.stdout, out)
	}
	if len(as) == 0 {
		fmt.Fprintln(e.stdout, "no accounts yet (relayd quota init --from FILE, or relayd account add)")
		return nil
	}
	accountsTable(as).write(e.stdout)
	return nil
}

func runAccountDisable(ctx context.Context, e *env, args []string) error {
	return setDisabled(ctx, e, "account disable", args, true)
}

func runAccountEnable(ctx context.Context, e *env, args []string) error {
	return setDisabled(ctx, e, "account enable", args, false)
}

func setDisabled(ctx context.Context, e *env, name string, args []string, disabled bool) error {
	var g globals
	fs := e.flagSet(name, &g)
	pos, db, l, err := e.parseAndOpen(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	changed, err := l.SetDisabled(ctx, pos[0], disabled, e.defaultActor())
	if err != nil {
		return err
	}
	state := "enabled"
	if disabled {
		state = "disabled"
	}
	acct, _, _ := quota.ParseAccountName(pos[0])
	if !changed {
		fmt.Fprintf(e.stdout, "account %s was already %s: nothing changed\n", acct, state)
		return nil
	}
	fmt.Fprintf(e.stdout, "account %s %s\n", acct, state)
	return nil
}
