package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/servir-pe/envios/internal/poolfile"
	"github.com/servir-pe/envios/quota"
)

func runQuotaInit(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota init", &g)
	from := fs.String("from", "", "pool file")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *from == "" {
		return usagef("quota init: --from FILE is required (for example examples/servir/pool.yaml)")
	}
	f, err := os.Open(*from)
	if err != nil {
		return fmt.Errorf("pool file: %w", err)
	}
	defer f.Close()
	plan, err := poolfile.Parse(f, g.loc)
	if err != nil {
		return fmt.Errorf("%s: %w", *from, err)
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	res, err := l.Init(ctx, plan, e.defaultActor())
	if err != nil {
		return err
	}
	p := res.Pool
	if !res.Created {
		fmt.Fprintf(e.stdout, "pool %s is already initialized as in %s: nothing changed\n", p.Name, *from)
		for _, d := range res.Drift {
			fmt.Fprintf(e.stdout, "  moved since by allocations or transfers: %s\n", d)
		}
		return nil
	}
	fmt.Fprintf(e.stdout, "created pool %s: %s messages, %s\n", p.Name, group(p.Total), period(p, g.loc))
	fmt.Fprintf(e.stdout, "%d accounts, %s allocated, %s unallocated\n", res.Accounts, group(p.Allocated), group(p.Unallocated()))
	return nil
}

// period renders a pool's validity as inclusive calendar days in loc.
func period(p quota.Pool, loc *time.Location) string {
	last := p.EndsAt.In(loc).Add(-time.Nanosecond)
	return fmt.Sprintf("valid %s to %s (%s)", p.StartsAt.In(loc).Format(time.DateOnly), last.Format(time.DateOnly), loc)
}

type accountJSON struct {
	Name        string `json:"name"`
	Pool        string `json:"pool"`
	Origin      string `json:"origin"`
	Description string `json:"description,omitempty"`
	Allocation  int64  `json:"allocation"`
	Used        int64  `json:"used"`
	Remaining   int64  `json:"remaining"`
	Disabled    bool   `json:"disabled"`
}

func toAccountJSON(a quota.Account) accountJSON {
	return accountJSON{Name: a.Name, Pool: a.Pool, Origin: a.Origin, Description: a.Description,
		Allocation: a.Allocation, Used: a.Used, Remaining: a.Remaining(), Disabled: a.Disabled}
}

func accountsTable(as []quota.Account) *table {
	t := &table{head: []string{"ACCOUNT", "ORIGIN", ">ALLOCATED", ">USED", ">REMAINING", "STATUS"}}
	for _, a := range as {
		status := "enabled"
		if a.Disabled {
			status = "disabled"
		}
		t.add(a.Name, a.Origin, group(a.Allocation), group(a.Used), group(a.Remaining()), status)
	}
	return t
}

func runQuotaShow(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota show", &g)
	pool := fs.String("pool", "", "pool name (default: the only or current pool)")
	asJSON := fs.Bool("json", false, "print JSON")
	_, db, l, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	b, err := l.Balance(ctx, *pool)
	if err != nil {
		return err
	}
	p := b.Pool
	if *asJSON {
		out := struct {
			Pool        string        `json:"pool"`
			Total       int64         `json:"total"`
			StartsAt    time.Time     `json:"starts_at"`
			EndsAt      time.Time     `json:"ends_at"`
			Allocated   int64         `json:"allocated"`
			Used        int64         `json:"used"`
			Remaining   int64         `json:"remaining"`
			Unallocated int64         `json:"unallocated"`
			Accounts    []accountJSON `json:"accounts"`
		}{p.Name, p.Total, p.StartsAt, p.EndsAt, p.Allocated, b.Used, b.Remaining(), p.Unallocated(), []accountJSON{}}
		for _, a := range b.Accounts {
			out.Accounts = append(out.Accounts, toAccountJSON(a))
		}
		return writeJSON(e.stdout, out)
	}
	fmt.Fprintf(e.stdout, "Pool %s: %s messages, %s\n\n", p.Name, group(p.Total), period(p, g.loc))
	t := accountsTable(b.Accounts)
	t.add(fmt.Sprintf("TOTAL (%d accounts)", len(b.Accounts)), "", group(p.Allocated), group(b.Used), group(b.Remaining()), "")
	t.add("UNALLOCATED", "", group(p.Unallocated()), "", "", "")
	t.write(e.stdout)
	if now := e.now(); !p.ValidAt(now) {
		fmt.Fprintf(e.stdout, "\nwarning: the pool is not valid now (%s): charges are refused\n", now.In(g.loc).Format("2006-01-02 15:04 MST"))
	}
	return nil
}

func runQuotaAllocate(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota allocate", &g)
	reason := fs.String("reason", "", "why (recorded in the ledger)")
	pos, err := parse(fs, &g, args, 2, 2)
	if err != nil {
		return helpOr(err, fs, e)
	}
	n, err := parseAmount("amount", pos[1])
	if err != nil {
		return err
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	a, err := l.Allocate(ctx, quota.Allocation{Account: pos[0], Amount: n, Origin: quota.OriginCLI, Actor: e.defaultActor(), Reason: *reason})
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "allocated %s to %s: allocation now %s, %s remaining\n", group(n), a.Name, group(a.Allocation), group(a.Remaining()))
	return nil
}

func runQuotaTransfer(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota transfer", &g)
	reason := fs.String("reason", "", "why (required; recorded in the ledger)")
	pos, err := parse(fs, &g, args, 3, 3)
	if err != nil {
		return helpOr(err, fs, e)
	}
	n, err := parseAmount("amount", pos[2])
	if err != nil {
		return err
	}
	if *reason == "" {
		return usagef("quota transfer: --reason TEXT is required (it is recorded in the ledger)")
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	t := quota.Transfer{From: pos[0], To: pos[1], Amount: n, Origin: quota.OriginCLI, Actor: e.defaultActor(), Reason: *reason}
	if err := l.Transfer(ctx, t); err != nil {
		return err
	}
	from, err := l.Account(ctx, t.From)
	if err != nil {
		return err
	}
	to, err := l.Account(ctx, t.To)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "transferred %s from %s to %s\n", group(n), from.Name, to.Name)
	fmt.Fprintf(e.stdout, "  %s: allocation %s, %s remaining\n", from.Name, group(from.Allocation), group(from.Remaining()))
	fmt.Fprintf(e.stdout, "  %s: allocation %s, %s remaining\n", to.Name, group(to.Allocation), group(to.Remaining()))
	return nil
}

func runQuotaHistory(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota history", &g)
	kind := fs.String("kind", "", "allocate, transfer, charge or release")
	origin := fs.String("origin", "", "library, smtp, http, campaign or cli")
	from := fs.String("from", "", "first day (YYYY-MM-DD)")
	to := fs.String("to", "", "last day, inclusive (YYYY-MM-DD)")
	limit := fs.Int("limit", 0, "at most this many entries (0: all)")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, &g, args, 0, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	f := quota.HistoryFilter{Kind: quota.Kind(*kind), Origin: quota.Origin(*origin), Limit: *limit}
	if len(pos) == 1 {
		f.Account = pos[0]
	}
	if *limit < 0 {
		return usagef("--limit must not be negative")
	}
	if f.From, f.To, err = dayRange(*from, *to, g.loc); err != nil {
		return err
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	es, err := l.History(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		type entryJSON struct {
			ID        int64        `json:"id"`
			At        time.Time    `json:"at"`
			Pool      string       `json:"pool"`
			Kind      quota.Kind   `json:"kind"`
			Account   string       `json:"account"`
			From      string       `json:"from,omitempty"`
			Amount    int64        `json:"amount"`
			Origin    quota.Origin `json:"origin"`
			Actor     string       `json:"actor"`
			Reason    string       `json:"reason,omitempty"`
			Reference string       `json:"reference,omitempty"`
		}
		out := []entryJSON{}
		for _, x := range es {
			out = append(out, entryJSON{x.ID, x.At, x.Pool, x.Kind, x.Account, x.From, x.Amount, x.Origin, x.Actor, x.Reason, x.Reference})
		}
		return writeJSON(e.stdout, out)
	}
	if len(es) == 0 {
		fmt.Fprintln(e.stdout, "no ledger entries match")
		return nil
	}
	t := &table{head: []string{">ID", "TIME (" + g.loc.String() + ")", "KIND", "ACCOUNT", "FROM", ">AMOUNT", "ORIGIN", "ACTOR", "REASON", "REFERENCE"}}
	for _, x := range es {
		t.add(fmt.Sprint(x.ID), x.At.In(g.loc).Format("2006-01-02 15:04:05"), string(x.Kind), x.Account, x.From,
			group(x.Amount), string(x.Origin), x.Actor, x.Reason, x.Reference)
	}
	t.write(e.stdout)
	return nil
}

func runQuotaUsage(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota usage", &g)
	account := fs.String("account", "", "only this account")
	origin := fs.String("origin", "", "only this origin")
	from := fs.String("from", "", "first day (YYYY-MM-DD)")
	to := fs.String("to", "", "last day, inclusive (YYYY-MM-DD)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	f := quota.UsageFilter{Account: *account, Origin: quota.Origin(*origin), Location: g.loc}
	var err error
	if f.From, f.To, err = dayRange(*from, *to, g.loc); err != nil {
		return err
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	us, err := l.Usage(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		type usageJSON struct {
			Day      string       `json:"day"`
			Account  string       `json:"account"`
			Origin   quota.Origin `json:"origin"`
			Charged  int64        `json:"charged"`
			Released int64        `json:"released"`
			Net      int64        `json:"net"`
		}
		out := []usageJSON{}
		for _, u := range us {
			out = append(out, usageJSON{u.Day.Format(time.DateOnly), u.Account, u.Origin, u.Charged, u.Released, u.Net()})
		}
		return writeJSON(e.stdout, out)
	}
	if len(us) == 0 {
		fmt.Fprintln(e.stdout, "no usage in that period")
		return nil
	}
	t := &table{head: []string{"DAY", "ACCOUNT", "ORIGIN", ">CHARGED", ">RELEASED", ">NET"}}
	var c, r int64
	for _, u := range us {
		t.add(u.Day.Format(time.DateOnly), u.Account, string(u.Origin), group(u.Charged), group(u.Released), group(u.Net()))
		c += u.Charged
		r += u.Released
	}
	t.add("TOTAL", "", "", group(c), group(r), group(c-r))
	t.write(e.stdout)
	return nil
}

func runQuotaVerify(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("quota verify", &g)
	_, db, l, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	problems, err := l.Verify(ctx)
	if err != nil {
		return err
	}
	if len(problems) == 0 {
		fmt.Fprintln(e.stdout, "ledger verified: every counter equals its recount from the ledger")
		return nil
	}
	for _, p := range problems {
		fmt.Fprintf(e.stderr, "relayd: ledger problem: %s\n", p)
	}
	return errProblems
}
