package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	"github.com/servir-pe/envios/mailing"
)

// parseAndOpenMailer is parseAndOpen with a Mailer on the database; done
// closes both.
func (e *env) parseAndOpenMailer(ctx context.Context, fs *flag.FlagSet, g *globals, args []string, min, max int) ([]string, *mailing.Mailer, func(), error) {
	pos, db, _, err := e.parseAndOpen(ctx, fs, g, args, min, max)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := mailing.New(mailing.Config{DB: db, Now: e.now})
	if err != nil {
		db.Close()
		return nil, nil, nil, err
	}
	return pos, m, func() { m.Close(); db.Close() }, nil
}

func runSenderAdd(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("sender add", &g)
	pos, m, done, err := e.parseAndOpenMailer(ctx, fs, &g, args, 2, 2)
	if err != nil {
		return err
	}
	defer done()
	added, err := m.AddSender(ctx, pos[0], pos[1], e.defaultActor())
	if err != nil {
		return err
	}
	if !added {
		fmt.Fprintf(e.stdout, "%s may already send as %s: nothing changed\n", pos[0], pos[1])
		return nil
	}
	fmt.Fprintf(e.stdout, "%s may now send as %s\n", pos[0], pos[1])
	return nil
}

func runSenderRemove(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("sender remove", &g)
	pos, m, done, err := e.parseAndOpenMailer(ctx, fs, &g, args, 2, 2)
	if err != nil {
		return err
	}
	defer done()
	if err := m.RemoveSender(ctx, pos[0], pos[1], e.defaultActor()); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s may no longer send as %s\n", pos[0], pos[1])
	return nil
}

func runSenderList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("sender list", &g)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, m, done, err := e.parseAndOpenMailer(ctx, fs, &g, args, 0, 1)
	if err != nil {
		return err
	}
	defer done()
	account := ""
	if len(pos) == 1 {
		account = pos[0]
	}
	ss, err := m.Senders(ctx, account)
	if err != nil {
		return err
	}
	if *asJSON {
		type senderJSON struct {
			Account string    `json:"account"`
			Sender  string    `json:"sender"`
			Added   time.Time `json:"added"`
		}
		out := []senderJSON{}
		for _, s := range ss {
			out = append(out, senderJSON{s.Account, s.Pattern, s.Created})
		}
		return writeJSON(e.stdout, out)
	}
	if len(ss) == 0 {
		fmt.Fprintln(e.stdout, "no sender identities (relayd sender add ACCOUNT ADDRESS|@DOMAIN)")
		return nil
	}
	t := &table{head: []string{"ACCOUNT", "SENDER", "ADDED (" + g.loc.String() + ")"}}
	for _, s := range ss {
		t.add(s.Account, s.Pattern, s.Created.In(g.loc).Format("2006-01-02 15:04"))
	}
	t.write(e.stdout)
	return nil
}
