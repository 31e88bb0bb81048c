package main

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
)

func runTokenAdd(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("token add", &g)
	name := fs.String("name", "", "a label: which system uses the token")
	admin := fs.Bool("admin", false, "a token for every account (no ACCOUNT)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 0, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	if (len(pos) == 1) == *admin {
		return usagef("token add: give an ACCOUNT, or --admin")
	}
	account := ""
	if len(pos) == 1 {
		account = pos[0]
	}
	t, secret, err := apitoken.NewStore(db, e.now).Add(ctx, account, *name, e.defaultActor())
	if err != nil {
		return err
	}
	scope := t.Account
	if t.Admin() {
		scope = "admin (every account)"
	}
	if *asJSON {
		return writeJSON(e.stdout, map[string]any{"id": t.ID, "account": t.Account, "admin": t.Admin(), "name": t.Name, "token": secret})
	}
	fmt.Fprintf(e.stdout, "token %d for %s\n  %s\n", t.ID, scope, secret)
	fmt.Fprintln(e.stdout, "It is shown only now; only its hash is stored. Send it as: Authorization: Bearer TOKEN")
	return nil
}

func runTokenList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("token list", &g)
	asJSON := fs.Bool("json", false, "print JSON")
	_, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	ts, err := apitoken.NewStore(db, e.now).List(ctx)
	if err != nil {
		return err
	}
	if *asJSON {
		type tokenJSON struct {
			ID      int64      `json:"id"`
			Account string     `json:"account"`
			Admin   bool       `json:"admin"`
			Name    string     `json:"name"`
			Created time.Time  `json:"created"`
			Revoked *time.Time `json:"revoked"`
		}
		out := []tokenJSON{}
		for _, t := range ts {
			j := tokenJSON{t.ID, t.Account, t.Admin(), t.Name, t.CreatedAt, nil}
			if !t.RevokedAt.IsZero() {
				j.Revoked = &t.RevokedAt
			}
			out = append(out, j)
		}
		return writeJSON(e.stdout, out)
	}
	if len(ts) == 0 {
		fmt.Fprintln(e.stdout, "no API tokens (relayd token add ACCOUNT | --admin)")
		return nil
	}
	tb := &table{head: []string{"ID", "ACCOUNT", "NAME", "CREATED (" + g.loc.String() + ")", "REVOKED"}}
	for _, t := range ts {
		acct, revoked := t.Account, "-"
		if t.Admin() {
			acct = "(admin)"
		}
		if !t.RevokedAt.IsZero() {
			revoked = t.RevokedAt.In(g.loc).Format("2006-01-02 15:04")
		}
		tb.add(strconv.FormatInt(t.ID, 10), acct, t.Name, t.CreatedAt.In(g.loc).Format("2006-01-02 15:04"), revoked)
	}
	tb.write(e.stdout)
	return nil
}

func runTokenRevoke(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("token revoke", &g)
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return usagef("token revoke: %q is not a token id (relayd token list)", pos[0])
	}
	changed, err := apitoken.NewStore(db, e.now).Revoke(ctx, id, e.defaultActor())
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(e.stdout, "token %d was already revoked: nothing changed\n", id)
		return nil
	}
	fmt.Fprintf(e.stdout, "token %d revoked\n", id)
	return nil
}
