package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/quota"
)

// The suppression-list commands: what relayd does not send to, each entry
// with a scope, a reason and its evidence. Every change is recorded in the
// audit log with the admin (cli:USER) and why; rows are never deleted.

// addReasons are the reasons an admin may give (a soft streak is only the
// classifier's).
var addReasons = []suppress.Reason{suppress.ReasonManual, suppress.ReasonImport, suppress.ReasonHardBounce, suppress.ReasonComplaint, suppress.ReasonUnsubscribe}

func reasonIn(r suppress.Reason, rs []suppress.Reason) bool {
	for _, x := range rs {
		if x == r {
			return true
		}
	}
	return false
}

func reasonList(rs []suppress.Reason) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// scopeFlags are the flags that say what mail an added entry stops.
type scopeFlags struct {
	reason, scope, account, topic *string
}

// suppression is what add and import insert, from their flags: the scope
// defaults to the account's bulk mail with --account (or for an
// unsubscribe), all bulk mail for a complaint, else all mail.
func (f scopeFlags) suppression(ctx context.Context, l *quota.Ledger, cmd string) (suppress.Add, string, error) {
	reason := suppress.Reason(*f.reason)
	if !reasonIn(reason, addReasons) {
		return suppress.Add{}, "", usagef("%s: --reason must be one of %s, not %q", cmd, reasonList(addReasons), reason)
	}
	scope := suppress.Scope(*f.scope)
	switch {
	case scope == "" && (*f.account != "" || reason == suppress.ReasonUnsubscribe):
		scope = suppress.ScopeAccount
	case scope == "" && reason == suppress.ReasonComplaint:
		scope = suppress.ScopeBulk
	case scope == "":
		scope = suppress.ScopeAll
	}
	switch {
	case scope != suppress.ScopeAll && scope != suppress.ScopeBulk && scope != suppress.ScopeAccount:
		return suppress.Add{}, "", usagef("%s: --scope must be all, bulk or account, not %q", cmd, scope)
	case scope == suppress.ScopeAccount && *f.account == "":
		return suppress.Add{}, "", usagef("%s: scope account needs --account AREA/NAME", cmd)
	case scope != suppress.ScopeAccount && *f.account != "":
		return suppress.Add{}, "", usagef("%s: --account is for scope account only (not %s)", cmd, scope)
	case scope != suppress.ScopeAccount && *f.topic != "":
		return suppress.Add{}, "", usagef("%s: --topic is for scope account only (not %s)", cmd, scope)
	}
	add := suppress.Add{Scope: scope, Topic: *f.topic, Reason: reason}
	var name string
	if scope == suppress.ScopeAccount {
		a, err := l.Account(ctx, *f.account)
		if err != nil {
			return suppress.Add{}, "", err
		}
		add.AccountID, name = a.ID, a.Name
	}
	return add, name, nil
}

// what describes the mail an entry stops: "all mail", "bulk mail of
// enap/eventos about boletin"…
func what(e suppress.Entry, account string) string {
	if e.Account != "" {
		account = e.Account
	}
	switch e.Scope {
	case suppress.ScopeAll:
		return "all mail"
	case suppress.ScopeBulk:
		return "bulk mail of every account"
	}
	if e.Topic != "" {
		return "bulk mail of " + account + " about " + e.Topic
	}
	return "bulk mail of " + account
}

// parseExpires reads --expires: a day (YYYY-MM-DD: the entry stops mail
// through that day, in loc), or a duration from now (90d, 36h, 1h30m).
func parseExpires(s string, now time.Time, loc *time.Location) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	var t time.Time
	if d, err := time.ParseInLocation(time.DateOnly, s, loc); err == nil {
		t = d.AddDate(0, 0, 1)
	} else if n, ok := strings.CutSuffix(s, "d"); ok {
		days, err := strconv.Atoi(n)
		if err != nil {
			return time.Time{}, usagef("--expires: %q is not a day like 2027-01-31 or a duration like 90d or 36h", s)
		}
		t = now.Add(time.Duration(days) * 24 * time.Hour)
	} else if d, err := time.ParseDuration(s); err == nil {
		t = now.Add(d)
	} else {
		return time.Time{}, usagef("--expires: %q is not a day like 2027-01-31 or a duration like 90d or 36h", s)
	}
	if !t.After(now) {
		return time.Time{}, usagef("--expires %s is not in the future", s)
	}
	return t, nil
}

func runSuppressionAdd(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("suppression add", &g)
	sf := scopeFlags{fs.String("reason", "manual", "why it is on the list"), fs.String("scope", "", "all, bulk or account"),
		fs.String("account", "", "the account, for scope account"), fs.String("topic", "", "a campaign label, for scope account")}
	expires := fs.String("expires", "", "a day (YYYY-MM-DD) or a duration (90d, 36h)")
	why := fs.String("why", "", "why (kept in the evidence and the audit log)")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if strings.TrimSpace(*why) == "" {
		return usagef("suppression add: --why TEXT is required (it goes to the evidence and the audit log)")
	}
	now := e.now()
	exp, err := parseExpires(*expires, now, g.loc)
	if err != nil {
		return err
	}
	addr, err := address.Parse(pos[0])
	if err != nil {
		return err
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	add, account, err := sf.suppression(ctx, l, "suppression add")
	if err != nil {
		return err
	}
	add.Address, add.Actor, add.ExpiresAt, add.Now = addr.Addr, e.defaultActor(), exp, now
	add.Evidence = map[string]string{"why": strings.TrimSpace(*why)}
	var entry suppress.Entry
	var added bool
	err = store.RunInTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		var err error
		entry, added, err = suppress.Insert(ctx, tx, add)
		return err
	})
	if err != nil {
		return err
	}
	if !added {
		fmt.Fprintf(e.stdout, "%s is already suppressed for %s by entry %d (%s): nothing changed\n", entry.Address, what(entry, account), entry.ID, entry.Reason)
		return nil
	}
	until := "until removed"
	if entry.ExpiresAt != nil {
		until = "until " + entry.ExpiresAt.In(g.loc).Format("2006-01-02 15:04") + " (" + g.loc.String() + ")"
	}
	fmt.Fprintf(e.stdout, "entry %d: %s suppressed for %s (%s), %s\n", entry.ID, entry.Address, what(entry, account), entry.Reason, until)
	return nil
}

func runSuppressionRemove(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("suppression remove", &g)
	id := fs.Int64("id", 0, "only this entry")
	why := fs.String("why", "", "why (kept in the audit log)")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if strings.TrimSpace(*why) == "" {
		return usagef("suppression remove: --why TEXT is required (it goes to the audit log)")
	}
	if *id < 0 {
		return usagef("suppression remove: --id %d is not an entry id (relayd suppression list)", *id)
	}
	addr, err := address.Parse(pos[0])
	if err != nil {
		return err
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	var n int
	err = store.RunInTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		var err error
		n, err = suppress.Remove(ctx, tx, addr.Addr, *id, e.defaultActor(), strings.TrimSpace(*why), e.now())
		return err
	})
	norm := suppress.Normalize(addr.Addr)
	switch {
	case errors.Is(err, suppress.ErrNotFound) && *id != 0:
		return fmt.Errorf("%s has no suppression %d to remove (relayd suppression list --address %s)", norm, *id, norm)
	case errors.Is(err, suppress.ErrNotFound):
		return fmt.Errorf("%s has no suppression to remove (relayd suppression list --address %s)", norm, norm)
	case err != nil:
		return err
	}
	fmt.Fprintf(e.stdout, "removed %d %s of %s (kept, marked removed by %s)\n", n, plural(n, "suppression", "suppressions"), norm, e.defaultActor())
	return nil
}

// suppressionJSON is an entry as --json and export show it.
type suppressionJSON struct {
	ID            int64           `json:"id"`
	Address       string          `json:"address"`
	Scope         suppress.Scope  `json:"scope"`
	Account       string          `json:"account"`
	Topic         string          `json:"topic"`
	Reason        suppress.Reason `json:"reason"`
	Active        bool            `json:"active"`
	CreatedAt     string          `json:"created_at"`
	ExpiresAt     *string         `json:"expires_at"`
	Actor         string          `json:"actor"`
	RecipientID   *int64          `json:"recipient_id"`
	Evidence      json.RawMessage `json:"evidence"`
	RemovedAt     *string         `json:"removed_at"`
	RemovedBy     string          `json:"removed_by"`
	RemovedReason string          `json:"removed_reason"`
}

// suppressionColumns are export's columns: the CSV header and the keys of
// each JSON Lines object.
var suppressionColumns = []string{"id", "address", "scope", "account", "topic", "reason", "active", "created_at", "expires_at",
	"actor", "recipient_id", "evidence", "removed_at", "removed_by", "removed_reason"}

// entryJSON is e as shown: times RFC 3339 in loc, to the second.
func entryJSON(e suppress.Entry, account string, now time.Time, loc *time.Location) suppressionJSON {
	stamp := func(t *time.Time) *string {
		if t == nil {
			return nil
		}
		s := t.In(loc).Format(time.RFC3339)
		return &s
	}
	if e.Account != "" {
		account = e.Account
	}
	if e.Scope != suppress.ScopeAccount {
		account = ""
	}
	j := suppressionJSON{ID: e.ID, Address: e.Address, Scope: e.Scope, Account: account, Topic: e.Topic, Reason: e.Reason,
		Active: e.Active(now), CreatedAt: e.CreatedAt.In(loc).Format(time.RFC3339), ExpiresAt: stamp(e.ExpiresAt), Actor: e.Actor,
		RecipientID: e.RecipientID, Evidence: json.RawMessage("{}"), RemovedAt: stamp(e.RemovedAt), RemovedBy: e.RemovedBy, RemovedReason: e.RemovedReason}
	if json.Valid([]byte(e.Evidence)) && strings.HasPrefix(strings.TrimSpace(e.Evidence), "{") {
		j.Evidence = json.RawMessage(e.Evidence)
	}
	return j
}

func runSuppressionList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("suppression list", &g)
	addr := fs.String("address", "", "only this address (any case)")
	reason := fs.String("reason", "", "only this reason")
	active := fs.Bool("active", false, "only the entries that stop mail now")
	after := fs.Int64("after", 0, "the entries after this id")
	limit := fs.Int("limit", 100, "at most this many entries")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *reason != "" && !reasonIn(suppress.Reason(*reason), suppress.Reasons) {
		return usagef("suppression list: --reason must be one of %s, not %q", reasonList(suppress.Reasons), *reason)
	}
	if *limit < 1 || *limit > 10000 {
		return usagef("suppression list: --limit must be between 1 and 10,000, not %d", *limit)
	}
	if *after < 0 {
		return usagef("suppression list: --after %d is not an entry id", *after)
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	now := e.now()
	rows, err := suppress.List(ctx, db, suppress.Filter{Address: *addr, Reason: suppress.Reason(*reason), Active: *active, After: *after, Limit: *limit}, now)
	if err != nil {
		return err
	}
	if *asJSON {
		out := make([]suppressionJSON, len(rows))
		for i, x := range rows {
			out[i] = entryJSON(x, "", now, g.loc)
		}
		return writeJSON(e.stdout, out)
	}
	if len(rows) == 0 {
		if *addr == "" && *reason == "" && !*active && *after == 0 {
			fmt.Fprintln(e.stdout, "the suppression list is empty (relayd suppression add ADDRESS --why TEXT)")
		} else {
			fmt.Fprintln(e.stdout, "no suppressions match")
		}
		return nil
	}
	day := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.In(g.loc).Format("2006-01-02")
	}
	t := &table{head: []string{">ID", "ADDRESS", "SCOPE", "ACCOUNT", "TOPIC", "REASON", "SINCE", "EXPIRES", "REMOVED", "BY"}}
	for _, x := range rows {
		acct, topic := x.Account, x.Topic
		if acct == "" {
			acct = "-"
		}
		if topic == "" {
			topic = "-"
		}
		t.add(strconv.FormatInt(x.ID, 10), x.Address, string(x.Scope), acct, topic, string(x.Reason), day(&x.CreatedAt), day(x.ExpiresAt), day(x.RemovedAt), x.Actor)
	}
	t.write(e.stdout)
	if len(rows) == *limit {
		fmt.Fprintf(e.stdout, "more: relayd suppression list --after %d\n", rows[len(rows)-1].ID)
	}
	return nil
}

func runSuppressionCheck(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("suppression check", &g)
	account := fs.String("account", "", "the sending account (default none: only the installation-wide entries apply)")
	bulk := fs.Bool("bulk", false, "bulk mail (default transactional)")
	topic := fs.String("topic", "", "the campaign label of the mail")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	addr, err := address.Parse(pos[0])
	if err != nil {
		return err
	}
	db, l, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	m := suppress.Mail{Bulk: *bulk, Topic: *topic}
	name := ""
	if *account != "" {
		a, err := l.Account(ctx, *account)
		if err != nil {
			return err
		}
		m.AccountID, name = a.ID, a.Name
	}
	now := e.now()
	stops, err := suppress.Check(ctx, db, m, []string{addr.Addr}, now)
	if err != nil {
		return err
	}
	norm := suppress.Normalize(addr.Addr)
	entry, stopped := stops[norm]
	if *asJSON {
		out := map[string]any{"address": norm, "account": name, "bulk": *bulk, "topic": *topic, "suppressed": stopped, "suppression": nil}
		if stopped {
			out["suppression"] = entryJSON(entry, name, now, g.loc)
		}
		return writeJSON(e.stdout, out)
	}
	mail := "transactional mail"
	if *bulk {
		mail = "bulk mail"
	}
	if name != "" {
		mail += " of " + name
	}
	if *topic != "" {
		mail += " about " + *topic
	}
	if !stopped {
		fmt.Fprintf(e.stdout, "%s: %s would go: no suppression stops it\n", norm, mail)
		return nil
	}
	fmt.Fprintf(e.stdout, "%s: %s would be stopped by entry %d: %s, by %s\n", norm, mail, entry.ID, suppress.Describe(entry), entry.Actor)
	return nil
}
