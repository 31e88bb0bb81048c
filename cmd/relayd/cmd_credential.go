package main

import (
	"context"
	"fmt"
	"time"

	"github.com/servir-pe/envios/internal/credential"
)

func runCredentialAdd(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("credential add", &g)
	name := fs.String("name", "", "a label: which system uses the credential")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	c, password, err := credential.NewStore(db, e.now).Add(ctx, pos[0], *name, e.defaultActor())
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, map[string]string{"account": c.Account, "username": c.Username, "password": password, "name": c.Name})
	}
	fmt.Fprintf(e.stdout, "credential for %s\n  username: %s\n  password: %s\n", c.Account, c.Username, password)
	fmt.Fprintln(e.stdout, "The password is shown only now; it is stored hashed. Use it with STARTTLS on port 587 or TLS on port 465, AUTH PLAIN or LOGIN.")
	return nil
}

func runCredentialList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("credential list", &g)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 0, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	account := ""
	if len(pos) == 1 {
		account = pos[0]
	}
	cs, err := credential.NewStore(db, e.now).List(ctx, account)
	if err != nil {
		return err
	}
	if *asJSON {
		type credJSON struct {
			Account  string     `json:"account"`
			Username string     `json:"username"`
			Name     string     `json:"name"`
			Created  time.Time  `json:"created"`
			Revoked  *time.Time `json:"revoked"`
		}
		out := []credJSON{}
		for _, c := range cs {
			j := credJSON{c.Account, c.Username, c.Name, c.CreatedAt, nil}
			if !c.RevokedAt.IsZero() {
				j.Revoked = &c.RevokedAt
			}
			out = append(out, j)
		}
		return writeJSON(e.stdout, out)
	}
	if len(cs) == 0 {
		fmt.Fprintln(e.stdout, "no credentials (relayd credential add ACCOUNT)")
		return nil
	}
	t := &table{head: []string{"ACCOUNT", "USERNAME", "NAME", "CREATED (" + g.loc.String() + ")", "REVOKED"}}
	for _, c := range cs {
		revoked := "-"
		if !c.RevokedAt.IsZero() {
			revoked = c.RevokedAt.In(g.loc).Format("2006-01-02 15:04")
		}
		t.add(c.Account, c.Username, c.Name, c.CreatedAt.In(g.loc).Format("2006-01-02 15:04"), revoked)
	}
	t.write(e.stdout)
	return nil
}

func runCredentialRevoke(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("credential revoke", &g)
	pos, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	changed, err := credential.NewStore(db, e.now).Revoke(ctx, pos[0], e.defaultActor())
	if err != nil {
		return err
	}
	if !changed {
		fmt.Fprintf(e.stdout, "%s was already revoked: nothing changed\n", pos[0])
		return nil
	}
	fmt.Fprintf(e.stdout, "%s revoked: sessions using it are refused from their next command\n", pos[0])
	return nil
}
