package contacts

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"
)

// applier applies a staged file to its list with set-based statements.
type applier struct {
	tx  bun.Tx
	pg  bool
	im  *Import
	now time.Time
}

// SampleRejects is how many rejects an Import carries (all are stored).
const SampleRejects = 100

// merge is the SQL of the JSON object l with the keys of the text r set
// over it; asJSON the text x as the attrs column's type.
func (a *applier) merge(l, r string) string {
	if a.pg {
		return "(" + l + " || " + r + "::jsonb)"
	}
	return "json_patch(" + l + ", " + r + ")"
}

func (a *applier) asJSON(x string) string {
	if a.pg {
		return x + "::jsonb"
	}
	return x
}

func (a *applier) exec(ctx context.Context, what, q string, args ...any) (int64, error) {
	res, err := a.tx.NewRaw(q, args...).Exec(ctx)
	if err != nil {
		return 0, fmt.Errorf("contacts: import: %s: %w", what, err)
	}
	n, _ := res.RowsAffected()
	return n, nil
}

func (a *applier) count(ctx context.Context, where string, args ...any) (int64, error) {
	var n int64
	if err := a.tx.NewRaw("SELECT count(*) FROM import_stage WHERE "+where, args...).Scan(ctx, &n); err != nil {
		return 0, fmt.Errorf("contacts: import: count: %w", err)
	}
	return n, nil
}

// run checks the staged rows (duplicates, the contacts and memberships
// there already, the suppression list), applies the mode, and stores the
// rejects and the counts.
func (a *applier) run(ctx context.Context) error {
	im := a.im
	steps := []struct {
		what, q string
		args    []any
	}{
		{"duplicates", `UPDATE import_stage SET reject = 'duplicate in the file: first on line ' || f.first
			FROM (SELECT address, min(line) AS first FROM import_stage WHERE reject = '' GROUP BY address HAVING count(*) > 1) AS f
			WHERE import_stage.address = f.address AND import_stage.line > f.first AND import_stage.reject = ''`, nil},
		{"existing contacts", `UPDATE import_stage SET contact_id = c.id, cstatus = c.status,
			same = (c.name = import_stage.name AND ` + a.merge("c.attrs", "import_stage.attrs") + ` = c.attrs)
			FROM contacts AS c WHERE c.account_id = ? AND c.address = import_stage.address AND import_stage.reject = ''`, []any{im.AccountID}},
		{"memberships", `UPDATE import_stage SET member = m.status FROM contact_memberships AS m
			WHERE m.list_id = ? AND m.contact_id = import_stage.contact_id AND import_stage.reject = ''`, []any{im.ListID}},
	}
	for _, s := range steps {
		if _, err := a.exec(ctx, s.what, s.q, s.args...); err != nil {
			return err
		}
	}
	var err error
	switch im.Mode {
	case ModeAdd, ModeUpdate:
		err = a.subscribe(ctx)
	case ModeUnsubscribe:
		err = a.unsubscribe(ctx)
	case ModeBlocklist:
		err = a.blocklist(ctx)
	}
	if err != nil {
		return err
	}
	return a.finish(ctx)
}

// subscribe adds the new contacts, updates the existing ones (ModeUpdate)
// and subscribes them all to the list — except what the suppression list,
// the contact's status or an earlier unsubscribe from the list forbids.
func (a *applier) subscribe(ctx context.Context) error {
	im := a.im
	rejects := []struct {
		what, q string
		args    []any
	}{
		{"suppressions", `UPDATE import_stage SET reject = 'suppressed: ' || s.reason || ' (' || s.scope || ')'
			FROM mail_suppressions AS s WHERE s.address = import_stage.address AND import_stage.reject = ''
			AND s.removed_at IS NULL AND (s.expires_at IS NULL OR s.expires_at > ?)
			AND (s.scope IN ('all', 'bulk') OR (s.scope = 'account' AND s.account_id = ? AND s.topic = ''))`, []any{a.now, im.AccountID}},
		{"contact status", `UPDATE import_stage SET reject = 'the contact is ' || cstatus
			WHERE reject = '' AND cstatus IN ('unsubscribed', 'blocklisted')`, nil},
		{"left the list", `UPDATE import_stage SET reject = 'unsubscribed from the list: an import does not subscribe it again'
			WHERE reject = '' AND member = 'unsubscribed'`, nil},
	}
	for _, s := range rejects {
		if _, err := a.exec(ctx, s.what, s.q, s.args...); err != nil {
			return err
		}
	}
	source := "import:" + strconv.FormatInt(im.ID, 10)
	// Imports of one account run one at a time (importLock), so the
	// addresses without a contact at the check have none now: a plain
	// INSERT, not ON CONFLICT's speculative one per row.
	insert := `INSERT INTO contacts (account_id, address, name, attrs, status, source, created_at, updated_at)
		SELECT ?, address, name, ` + a.asJSON("attrs") + `, 'active', ?, ?, ? FROM import_stage WHERE reject = '' AND contact_id IS NULL`
	subscribe := `INSERT INTO contact_memberships (list_id, contact_id, status, created_at, updated_at)
		SELECT ?, contact_id, 'subscribed', ?, ? FROM import_stage WHERE reject = '' AND contact_id IS NOT NULL AND member = ''
		ON CONFLICT (list_id, contact_id) DO NOTHING`
	var added int64
	var err error
	if a.pg {
		// The new contacts' ids go straight into their memberships.
		added, err = a.exec(ctx, "add contacts", `WITH ins AS (`+insert+` RETURNING id)
			INSERT INTO contact_memberships (list_id, contact_id, status, created_at, updated_at) SELECT ?, id, 'subscribed', ?, ? FROM ins`,
			im.AccountID, source, a.now, a.now, im.ListID, a.now, a.now)
	} else {
		if added, err = a.exec(ctx, "add contacts", insert, im.AccountID, source, a.now, a.now); err == nil {
			_, err = a.exec(ctx, "new contacts' ids", `UPDATE import_stage SET contact_id = c.id, member = 'new' FROM contacts AS c
				WHERE c.account_id = ? AND c.address = import_stage.address AND import_stage.reject = '' AND import_stage.contact_id IS NULL`, im.AccountID)
		}
		if err == nil {
			_, err = a.exec(ctx, "subscribe new", strings.Replace(subscribe, "member = ''", "member = 'new'", 1), im.ListID, a.now, a.now)
		}
	}
	if err != nil {
		return err
	}
	update := im.Mode == ModeUpdate
	if update {
		if _, err := a.exec(ctx, "update contacts", `UPDATE contacts SET name = s.name, attrs = `+a.merge("contacts.attrs", "s.attrs")+`, updated_at = ?
			FROM import_stage AS s WHERE contacts.id = s.contact_id AND s.reject = '' AND s.member <> 'new' AND NOT s.same`, a.now); err != nil {
			return err
		}
	}
	if _, err := a.exec(ctx, "subscribe", subscribe, im.ListID, a.now, a.now); err != nil {
		return err
	}
	existing, err := a.count(ctx, "reject = '' AND contact_id IS NOT NULL AND member <> 'new'")
	if err != nil {
		return err
	}
	changed, err := a.count(ctx, "reject = '' AND contact_id IS NOT NULL AND member <> 'new' AND ((? AND NOT same) OR member = '')", update)
	if err != nil {
		return err
	}
	im.Added, im.Updated, im.Unchanged = added, changed, existing-changed
	return nil
}

// unsubscribe takes the file's contacts off the list.
func (a *applier) unsubscribe(ctx context.Context) error {
	im := a.im
	if _, err := a.exec(ctx, "unknown", `UPDATE import_stage SET reject = CASE WHEN contact_id IS NULL THEN 'not a contact of the account'
		ELSE 'not on the list' END WHERE reject = '' AND (contact_id IS NULL OR member = '')`); err != nil {
		return err
	}
	n, err := a.exec(ctx, "unsubscribe", `UPDATE contact_memberships SET status = 'unsubscribed', updated_at = ?
		FROM import_stage AS s WHERE contact_memberships.list_id = ? AND contact_memberships.contact_id = s.contact_id
		AND s.reject = '' AND s.member = 'subscribed'`, a.now, im.ListID)
	if err != nil {
		return err
	}
	valid, err := a.count(ctx, "reject = ''")
	if err != nil {
		return err
	}
	im.Updated, im.Unchanged = n, valid-n
	return nil
}

// blocklist marks the file's contacts blocklisted, adding the new ones so.
func (a *applier) blocklist(ctx context.Context) error {
	im := a.im
	added, err := a.exec(ctx, "add contacts", `INSERT INTO contacts (account_id, address, name, attrs, status, source, created_at, updated_at)
		SELECT ?, address, name, `+a.asJSON("attrs")+`, 'blocklisted', ?, ?, ? FROM import_stage WHERE reject = '' AND contact_id IS NULL`, im.AccountID, "import:"+strconv.FormatInt(im.ID, 10), a.now, a.now)
	if err != nil {
		return err
	}
	n, err := a.exec(ctx, "blocklist", `UPDATE contacts SET status = 'blocklisted', updated_at = ? FROM import_stage AS s
		WHERE contacts.id = s.contact_id AND s.reject = '' AND s.cstatus <> 'blocklisted'`, a.now)
	if err != nil {
		return err
	}
	existing, err := a.count(ctx, "reject = '' AND contact_id IS NOT NULL")
	if err != nil {
		return err
	}
	im.Added, im.Updated, im.Unchanged = added, n, existing-n
	return nil
}

// finish counts, keeps a sample of the rejects on the Import and stores
// them all.
func (a *applier) finish(ctx context.Context) error {
	im := a.im
	var err error
	if im.Read, err = a.count(ctx, "TRUE"); err != nil {
		return err
	}
	if im.Rejected, err = a.count(ctx, "reject <> ''"); err != nil {
		return err
	}
	if err := a.tx.NewRaw("SELECT line, raw, reject AS reason FROM import_stage WHERE reject <> '' ORDER BY line LIMIT ?", SampleRejects).
		Scan(ctx, &im.Rejects); err != nil {
		return fmt.Errorf("contacts: import: rejects: %w", err)
	}
	if im.ID == 0 || im.Rejected == 0 { // a dry run stores nothing
		return nil
	}
	_, err = a.exec(ctx, "store rejects", `INSERT INTO contact_import_rejects (import_id, line, raw, reason)
		SELECT ?, line, raw, reject FROM import_stage WHERE reject <> ''`, im.ID)
	return err
}
