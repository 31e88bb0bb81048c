package contacts

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/uptrace/bun"
)

// applier applies a staged file to its list with set-based statements.
// Each pass over the staging table costs about 0.15 s per million rows,
// so the checks are few statements, each touching only the rows it
// changes, and a statement whose rows the counts show to be none is not
// run (statement timings: BENCHMARKS.md, issue 15).
type applier struct {
	tx  bun.Tx
	pg  bool
	im  *Import
	now time.Time
	st  staged // what staging learnt of the rows
}

// SampleRejects is how many rejects an Import carries (all are stored).
const SampleRejects = 100

// pgSettings are the transaction's own settings on PostgreSQL: enough
// memory for the duplicates' hash aggregate of a million addresses and
// the joins, without spilling to disk. (temp_buffers stays at its
// default: a 1,000,000-row staging table in local buffers measured
// slower than in the kernel's page cache, the buffers' first touch
// costing more than the reads they save.)
const pgSettings = "SET LOCAL work_mem = '128MB'"

// merge is the SQL of the JSON object l with the keys of the JSON object
// r set over it.
func (a *applier) merge(l, r string) string {
	if a.pg {
		return "(" + l + " || " + r + ")"
	}
	return "json_patch(" + l + ", " + r + ")"
}

func (a *applier) exec(ctx context.Context, what, q string, args ...any) (int64, error) {
	res, err := a.tx.NewRaw(q, args...).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("contacts: import: %s: %w", what, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

// stageCounts are the staged rows by what applying them does.
type stageCounts struct {
	Read, Rejected int64
	Fresh          int64 // valid rows without a contact: added
	Existing       int64 // valid rows with a contact of the account
	Changed        int64 // of those, the ones the mode changes
	Unlisted       int64 // of those, the ones not on the list
}

// changedSQL is the condition on an existing contact's staged row that
// mode changes it.
func changedSQL(mode Mode) string {
	switch mode {
	case ModeUpdate:
		return "(member = '' OR NOT same)"
	case ModeUnsubscribe:
		return "member = 'subscribed'"
	case ModeBlocklist:
		return "cstatus <> 'blocklisted'"
	}
	return "member = ''"
}

// run checks the staged rows (duplicates, the suppression list, the
// contacts and memberships there already), applies the mode, and stores
// the rejects and the counts.
func (a *applier) run(ctx context.Context) error {
	if a.pg {
		for _, q := range []string{pgSettings, "ANALYZE import_stage"} {
			if _, err := a.exec(ctx, "settings", q); err != nil {
				return err
			}
		}
	}
	if err := a.check(ctx); err != nil {
		return err
	}
	var c stageCounts
	if err := a.tx.NewRaw(`SELECT count(*), count(*) FILTER (WHERE reject <> ''),
		count(*) FILTER (WHERE reject = '' AND contact_id IS NULL), count(*) FILTER (WHERE reject = '' AND contact_id IS NOT NULL),
		count(*) FILTER (WHERE reject = '' AND contact_id IS NOT NULL AND `+changedSQL(a.im.Mode)+`),
		count(*) FILTER (WHERE reject = '' AND contact_id IS NOT NULL AND member = '') FROM import_stage`).
		Scan(ctx, &c.Read, &c.Rejected, &c.Fresh, &c.Existing, &c.Changed, &c.Unlisted); err != nil {
		return fmt.Errorf("contacts: import: count: %w", err)
	}
	im := a.im
	im.Read, im.Rejected = c.Read, c.Rejected
	var err error
	switch im.Mode {
	case ModeAdd, ModeUpdate:
		err = a.subscribe(ctx, c)
	case ModeUnsubscribe:
		err = a.unsubscribe(ctx, c)
	case ModeBlocklist:
		err = a.blocklist(ctx, c)
	}
	if err != nil {
		return err
	}
	return a.rejects(ctx)
}

// check marks the rejected rows and finds each valid row's contact and
// membership, in the order of the reasons' precedence: duplicates in the
// file, the suppression list, the contact's status, a membership left.
func (a *applier) check(ctx context.Context) error {
	im := a.im
	subscribing := im.Mode == ModeAdd || im.Mode == ModeUpdate
	type step struct {
		what, q string
		args    []any
	}
	var steps []step
	if a.st.twice { // otherwise no two valid rows have the same address
		steps = append(steps, step{"duplicates", `UPDATE import_stage SET reject = 'duplicate in the file: first on line ' || f.first
			FROM (SELECT address, min(line) AS first FROM import_stage WHERE reject = '' GROUP BY address HAVING count(*) > 1) AS f
			WHERE import_stage.address = f.address AND import_stage.line > f.first AND import_stage.reject = ''`, nil})
	}
	if subscribing {
		steps = append(steps, step{"suppressions", `UPDATE import_stage SET reject = 'suppressed: ' || s.reason || ' (' || s.scope || ')'
			FROM mail_suppressions AS s WHERE s.address = import_stage.address AND import_stage.reject = ''
			AND s.removed_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > ?)
			AND (s.scope IN ('all', 'bulk') OR (s.scope = 'account' AND s.account_id = ? AND s.topic = ''))`, []any{a.now, im.AccountID}})
	}
	// The existing contacts, their membership of the list and, when
	// subscribing, the rejects that their status or membership makes.
	reject := ""
	if subscribing {
		reject = `, reject = CASE WHEN c.status IN ('unsubscribed', 'blocklisted') THEN 'the contact is ' || c.status
			WHEN m.status = 'unsubscribed' THEN 'unsubscribed from the list: an import does not subscribe it again' ELSE '' END`
	}
	steps = append(steps, step{"existing contacts", `UPDATE import_stage SET contact_id = c.id, cstatus = c.status, member = COALESCE(m.status, ''),
		same = (c.name = import_stage.name AND ` + a.merge("c.attrs", "import_stage.attrs") + ` = c.attrs)` + reject + `
		FROM contacts AS c LEFT JOIN contact_memberships AS m ON m.list_id = ? AND m.contact_id = c.id
		WHERE c.account_id = ? AND c.address = import_stage.address AND import_stage.reject = ''`, []any{im.ListID, im.AccountID}})
	if im.Mode == ModeUnsubscribe {
		steps = append(steps, step{"unknown", `UPDATE import_stage SET reject = CASE WHEN contact_id IS NULL THEN 'not a contact of the account'
			ELSE 'not on the list' END WHERE reject = '' AND (contact_id IS NULL OR member = '')`, nil})
	}
	for _, s := range steps {
		if _, err := a.exec(ctx, s.what, s.q, s.args...); err != nil {
			return err
		}
	}
	return nil
}

// insertContacts adds the contacts of the valid rows that have none, with
// status, and (subscribe) subscribes them to the list. They go in address
// order, so that the (account_id, address) index grows at its end
// instead of splitting pages all over it.
func (a *applier) insertContacts(ctx context.Context, status string, subscribe bool) (int64, error) {
	im := a.im
	source := "import:" + strconv.FormatInt(im.ID, 10)
	// Imports of one account run one at a time (importLock), so the
	// addresses without a contact at the check have none now: a plain
	// INSERT, not ON CONFLICT's speculative one per row.
	insert := `INSERT INTO contacts (account_id, address, name, attrs, status, source, created_at, updated_at)
		SELECT ?, address, name, attrs, ?, ?, ?, ? FROM import_stage WHERE reject = '' AND contact_id IS NULL`
	args := []any{im.AccountID, status, source, a.now, a.now}
	members := `INSERT INTO contact_memberships (list_id, contact_id, status, created_at, updated_at)`
	switch {
	case !subscribe:
		return a.exec(ctx, "add contacts", insert, args...)
	case a.pg:
		// The new contacts' ids go straight into their memberships.
		return a.exec(ctx, "add contacts", `WITH ins AS (`+insert+` ORDER BY address RETURNING id)
			`+members+` SELECT ?, id, 'subscribed', ?, ? FROM ins`, append(args, im.ListID, a.now, a.now)...)
	}
	// SQLite numbers the rows of one INSERT one after another (the
	// database's write lock is held), so the new ids are the n up to the
	// last, in the order inserted.
	res, err := a.tx.NewRaw(insert+" ORDER BY address", args...).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("contacts: import: add contacts: %w", err)
	}
	n, _ := res.RowsAffected()
	last, err := res.LastInsertId()
	if err != nil || n == 0 {
		return n, err
	}
	_, err = a.exec(ctx, "subscribe new", members+` SELECT ?, ? + row_number() OVER (ORDER BY address), 'subscribed', ?, ?
		FROM import_stage WHERE reject = '' AND contact_id IS NULL`, im.ListID, last-n, a.now, a.now)
	return n, err
}

// subscribe adds the new contacts, updates the existing ones (ModeUpdate)
// and subscribes them all to the list — except the rows check rejected:
// what the suppression list, the contact's status or an earlier
// unsubscribe from the list forbids.
func (a *applier) subscribe(ctx context.Context, c stageCounts) error {
	im := a.im
	if c.Fresh > 0 {
		n, err := a.insertContacts(ctx, "active", true)
		if err != nil {
			return err
		}
		im.Added = n
	}
	if im.Mode == ModeUpdate && c.Changed > 0 {
		if _, err := a.exec(ctx, "update contacts", `UPDATE contacts SET name = s.name, attrs = `+a.merge("contacts.attrs", "s.attrs")+`, updated_at = ?
			FROM import_stage AS s WHERE contacts.id = s.contact_id AND s.reject = '' AND NOT s.same`, a.now); err != nil {
			return err
		}
	}
	if c.Unlisted > 0 {
		if _, err := a.exec(ctx, "subscribe", `INSERT INTO contact_memberships (list_id, contact_id, status, created_at, updated_at)
			SELECT ?, contact_id, 'subscribed', ?, ? FROM import_stage WHERE reject = '' AND contact_id IS NOT NULL AND member = ''
			ON CONFLICT (list_id, contact_id) DO NOTHING`, im.ListID, a.now, a.now); err != nil {
			return err
		}
	}
	im.Updated, im.Unchanged = c.Changed, c.Existing-c.Changed
	return nil
}

// unsubscribe takes the file's contacts off the list (check rejected the
// rows that are not on it).
func (a *applier) unsubscribe(ctx context.Context, c stageCounts) error {
	im := a.im
	var n int64
	if c.Changed > 0 {
		var err error
		if n, err = a.exec(ctx, "unsubscribe", `UPDATE contact_memberships SET status = 'unsubscribed', updated_at = ?
			FROM import_stage AS s WHERE contact_memberships.list_id = ? AND contact_memberships.contact_id = s.contact_id
			AND s.reject = '' AND s.member = 'subscribed'`, a.now, im.ListID); err != nil {
			return err
		}
	}
	im.Updated, im.Unchanged = n, c.Read-c.Rejected-n
	return nil
}

// blocklist marks the file's contacts blocklisted, adding the new ones so.
func (a *applier) blocklist(ctx context.Context, c stageCounts) error {
	im := a.im
	if c.Fresh > 0 {
		n, err := a.insertContacts(ctx, "blocklisted", false)
		if err != nil {
			return err
		}
		im.Added = n
	}
	var n int64
	if c.Changed > 0 {
		var err error
		if n, err = a.exec(ctx, "blocklist", `UPDATE contacts SET status = 'blocklisted', updated_at = ? FROM import_stage AS s
			WHERE contacts.id = s.contact_id AND s.reject = '' AND s.cstatus <> 'blocklisted'`, a.now); err != nil {
			return err
		}
	}
	im.Updated, im.Unchanged = n, c.Existing-n
	return nil
}

// rejects stores the rejected rows and keeps the first of them on the
// Import (a dry run stores nothing).
func (a *applier) rejects(ctx context.Context) error {
	im := a.im
	if im.Rejected == 0 {
		return nil
	}
	q := a.tx.NewRaw("SELECT line, raw, reject AS reason FROM import_stage WHERE reject <> '' ORDER BY line LIMIT ?", SampleRejects)
	if im.ID != 0 && !im.DryRun {
		if _, err := a.exec(ctx, "store rejects", `INSERT INTO contact_import_rejects (import_id, line, raw, reason)
			SELECT ?, line, raw, reject FROM import_stage WHERE reject <> ''`, im.ID); err != nil {
			return err
		}
		// The stored rejects' primary key reads the first ones without
		// another pass over the staging table.
		q = a.tx.NewRaw("SELECT line, raw, reason FROM contact_import_rejects WHERE import_id = ? ORDER BY line LIMIT ?", im.ID, SampleRejects)
	}
	if err := q.Scan(ctx, &im.Rejects); err != nil {
		return fmt.Errorf("contacts: import: rejects: %w", err)
	}
	return nil
}
