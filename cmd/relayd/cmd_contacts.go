package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/servir-pe/envios/mailing/contacts"
)

// The contact commands: an account's lists, and importing contacts into
// them from files of any size.

func runListCreate(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("list create", &g)
	account := fs.String("account", "", "the account the list belongs to (required)")
	desc := fs.String("description", "", "what the list is for")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if *account == "" {
		return usagef("list create: --account is required")
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	l, err := (&contacts.Store{DB: db, Now: e.now}).CreateList(ctx, *account, pos[0], *desc, e.defaultActor())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "list %q of %s created (id %d)\n", l.Name, l.Account, l.ID)
	return nil
}

func runListList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("list ls", &g)
	account := fs.String("account", "", "only this account's lists")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	ls, err := (&contacts.Store{DB: db, Now: e.now}).Lists(ctx, *account)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, ls)
	}
	if len(ls) == 0 {
		fmt.Fprintln(e.stdout, "no lists (relayd list create NAME --account A)")
		return nil
	}
	t := &table{head: []string{">ID", "ACCOUNT", "LIST", ">SUBSCRIBED", ">UNSUBSCRIBED", "CREATED", "BY", "DESCRIPTION"}}
	for _, l := range ls {
		t.add(strconv.FormatInt(l.ID, 10), l.Account, l.Name, group(l.Subscribed), group(l.Unsubscribed),
			l.CreatedAt.In(g.loc).Format("2006-01-02"), l.CreatedBy, l.Description)
	}
	t.write(e.stdout)
	return nil
}

func runContactsImport(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("contacts import", &g)
	account := fs.String("account", "", "the account (required)")
	list := fs.String("list", "", "the list to import into (required; relayd list create)")
	mode := fs.String("mode", "add", "add, update, unsubscribe or blocklist")
	mapping := fs.String("map", "", "which columns hold the address and name, e.g. email=Correo,name=Nombre (default: recognised by their header)")
	dry := fs.Bool("dry-run", false, "read and check everything, report, change nothing")
	asJSON := fs.Bool("json", false, "print the import as JSON")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if *account == "" || *list == "" {
		return usagef("contacts import: --account and --list are required")
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fmt.Errorf("contacts import: %w", err)
	}
	defer f.Close()
	size := int64(0)
	if fi, err := f.Stat(); err == nil {
		size = fi.Size()
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	o := contacts.ImportOptions{Account: *account, List: *list, Mode: contacts.Mode(*mode), Map: *mapping, FileName: pos[0], DryRun: *dry,
		Actor: e.defaultActor()}
	start := time.Now()
	if tty := terminal(e.stderr); tty != nil && !*asJSON {
		o.Progress = func(lines int, n int64) {
			pct := 0.0
			if size > 0 {
				pct = 100 * float64(n) / float64(size)
			}
			fmt.Fprintf(tty, "\rimporting %s: %5.1f%%, %s lines, %s rows/s ", pos[0], pct, group(int64(lines)),
				group(int64(float64(lines)/max(time.Since(start).Seconds(), 0.001))))
		}
	}
	im, err := (&contacts.Store{DB: db, Now: e.now}).Import(ctx, f, o)
	if o.Progress != nil {
		fmt.Fprintln(terminal(e.stderr))
	}
	if err != nil {
		return fmt.Errorf("contacts import: %w", err)
	}
	if *asJSON {
		return writeJSON(e.stdout, im)
	}
	for _, r := range im.Rejects {
		fmt.Fprintf(e.stdout, "line %d: %s: %s\n", r.Line, r.Reason, csvCell(r.Raw))
	}
	if im.Rejected > int64(len(im.Rejects)) {
		fmt.Fprintf(e.stdout, "… %s more rejected rows: relayd contacts rejects %d\n", group(im.Rejected-int64(len(im.Rejects))), im.ID)
	}
	what := fmt.Sprintf("import %d", im.ID)
	if im.DryRun {
		what = "dry run"
	}
	format := im.Encoding // a spreadsheet has no delimiter
	if im.Delimiter != "" {
		format = fmt.Sprintf("%s, %q", im.Encoding, im.Delimiter)
	}
	fmt.Fprintf(e.stdout, "%s (%s): read %s %s: %s added, %s updated, %s unchanged, %s rejected\n", what, format,
		group(im.Read), plural(int(im.Read), "row", "rows"), group(im.Added), group(im.Updated), group(im.Unchanged), group(im.Rejected))
	switch {
	case im.DryRun:
		fmt.Fprintln(e.stdout, "dry run: nothing was changed")
	case im.Added+im.Updated == 0 && im.Read > 0:
		fmt.Fprintln(e.stdout, "nothing changed: every row was already there (or rejected)")
	}
	return nil
}

func runContactsRejects(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("contacts rejects", &g)
	after := fs.Int64("after", 0, "the rejects after this line")
	limit := fs.Int("limit", 1000, "at most this many")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return usagef("contacts rejects: %q is not an import id", pos[0])
	}
	if *limit < 1 || *limit > 100000 {
		return usagef("contacts rejects: --limit must be between 1 and 100,000, not %d", *limit)
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	rs, err := (&contacts.Store{DB: db, Now: e.now}).Rejects(ctx, id, *after, *limit)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, rs)
	}
	if len(rs) == 0 {
		fmt.Fprintln(e.stdout, "no rejected rows")
		return nil
	}
	for _, r := range rs {
		fmt.Fprintf(e.stdout, "line %d: %s: %s\n", r.Line, r.Reason, strings.TrimSpace(csvCell(r.Raw)))
	}
	if len(rs) == *limit {
		fmt.Fprintf(e.stdout, "more: relayd contacts rejects %d --after %d\n", id, rs[len(rs)-1].Line)
	}
	return nil
}

func runContactsDelete(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("contacts delete", &g)
	account := fs.String("account", "", "the account (required)")
	why := fs.String("why", "", "why (required; recorded in the audit log), e.g. the request's file number")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if *account == "" || strings.TrimSpace(*why) == "" {
		return usagef("contacts delete: --account and --why are required")
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := (&contacts.Store{DB: db, Now: e.now}).Delete(ctx, *account, pos[0], e.defaultActor(), *why); err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "contact %s of %s deleted with its list memberships; the record of mail already sent to it stays\n", strings.ToLower(pos[0]), *account)
	return nil
}
