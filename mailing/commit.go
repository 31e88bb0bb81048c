package mailing

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailerr"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/quota"
)

// Group commit. A commit costs one fsync (about 0.7 ms on this project's
// reference disk) plus a handful of statements, and charges of one account
// serialise on its row: one transaction per message caps acceptance near
// the disk's fsync rate. So Send and Submit do not each run a transaction:
// they queue their validated message, and whichever caller finds a commit
// slot free becomes the leader, takes everything queued, and commits it as
// one transaction in which every message is still decided alone (its own
// account, sender and DKIM checks, its own charge through
// quota.Ledger.ChargeBatch). Each caller returns only after the transaction
// that holds its message has committed, so the contract is unchanged: nil
// means committed, an error means nothing stored or charged.

// maxGroup bounds the messages of one group transaction, and
// maxGroupBytes their size: the statements carry the messages' bytes, so a
// group of large messages is cut short (one message always goes).
const (
	maxGroup      = 256
	maxGroupBytes = 32 << 20
)

// pending is one validated message waiting for a group commit.
type pending struct {
	c       common
	id      string
	rfcID   string // Message-ID without angle brackets, shared by every recipient
	rcpts   []recipientIn
	raw     []byte   // the message as submitted (Submit); nil for built messages
	senders []string // addresses that must be identities of the account: From, and Sender if any
	now     time.Time

	stopped map[int]suppress.Entry // by recipient index: on the suppression list for this mail

	done    bool // guarded by Mailer.gmu
	receipt Receipt
	dup     string // the message an earlier call stored with the same idempotency key
	err     error
}

func (p *pending) status() (Status, time.Time) {
	if p.c.sendAt.After(p.now) {
		return StatusScheduled, p.c.sendAt
	}
	return StatusQueued, p.now
}

// commit queues p and returns once a group transaction holding it has
// committed or failed.
func (m *Mailer) commit(ctx context.Context, p *pending) (Receipt, error) {
	m.gmu.Lock()
	m.gqueue = append(m.gqueue, p)
	for !p.done {
		if m.gactive < m.cfg.GroupCommitters && len(m.gqueue) > 0 {
			group := m.takeGroup()
			m.gactive++
			m.gmu.Unlock()
			// The leader commits for others too: its own cancellation
			// must not abort their transaction.
			m.commitGroup(context.WithoutCancel(ctx), group)
			m.gmu.Lock()
			m.gactive--
			for _, q := range group {
				q.done = true
			}
			m.gcond.Broadcast()
			continue
		}
		m.gcond.Wait()
	}
	m.gmu.Unlock()
	if p.err != nil {
		return Receipt{}, p.err
	}
	if p.dup != "" {
		return m.duplicateReceipt(ctx, p.dup)
	}
	return p.receipt, nil
}

// takeGroup removes up to maxGroup messages (maxGroupBytes) from the queue,
// in order as far as they fit; a message with
// the same account and idempotency key as one already taken waits for the
// next group, so that it finds the first one stored. Called with gmu held.
func (m *Mailer) takeGroup() []*pending {
	var group, rest []*pending
	keys := map[string]bool{}
	size := 0
	for _, p := range m.gqueue {
		k := p.c.account + "\x00" + p.c.key
		full := len(group) == maxGroup || (len(group) > 0 && size+p.c.size > maxGroupBytes)
		if full || (p.c.key != "" && keys[k]) {
			rest = append(rest, p)
			continue
		}
		keys[k] = true
		size += p.c.size
		group = append(group, p)
	}
	m.gqueue = rest
	return group
}

// errKeyRace: another process stored a message with the same idempotency
// key between our check and our insert; the group is retried one by one.
var errKeyRace = errors.New("mailing: idempotency key stored concurrently")

func (m *Mailer) commitGroup(ctx context.Context, group []*pending) {
	err := m.groupTx(ctx, group)
	if err != nil && len(group) > 1 && !unreachable(err) {
		// A key stored concurrently elsewhere, or one message the database
		// refuses: commit each alone, so that one message cannot fail the
		// others (a database that is down fails each of them quickly).
		for _, p := range group {
			m.commitGroup(ctx, []*pending{p})
		}
		return
	}
	if errors.Is(err, errKeyRace) {
		// Alone, the key's message is now visible: look again once.
		err = m.groupTx(ctx, group)
	}
	if err != nil {
		for _, p := range group {
			p.err, p.dup = err, ""
		}
	}
}

// groupTx runs commitIn in one transaction. On PostgreSQL the transaction
// runs on a connection reserved for it, so that the messages can be
// written with COPY: their bytes then travel as they are, where an INSERT
// carries them as hexadecimal text that bun writes and PostgreSQL lexes and
// decodes again (about half of the relay's allocations, measured).
//
// A transaction that loses its connection is seen through by
// store.RetryUncommitted: run again if it did not commit, and, if its
// COMMIT's reply was lost, asked of PostgreSQL whether it committed, so
// that callers get their receipts for messages that are stored (an error
// would make each client send, and be charged for, the message again).
func (m *Mailer) groupTx(ctx context.Context, group []*pending) error {
	return m.write(ctx, "store messages", func(ctx context.Context, tx bun.Tx, conn *bun.Conn) error {
		for _, p := range group {
			p.err, p.dup, p.receipt = nil, "", Receipt{}
		}
		return m.commitIn(ctx, tx, conn, group)
	})
}

// commitIn decides and writes every message of group inside tx, which runs
// on conn when conn is not nil (PostgreSQL). A message
// refused on its own merits gets its error in p.err and is not written; a
// returned error is the database's and fails the whole group.
func (m *Mailer) commitIn(ctx context.Context, tx bun.Tx, conn *bun.Conn, group []*pending) error {
	chk := newChecker(m, tx)
	var charged []*pending
	var charges []quota.Charge
	for _, p := range group {
		acct, err := chk.check(ctx, p.c, p.senders)
		if err != nil {
			if isDecided(err) {
				p.err = err
				continue
			}
			return err
		}
		if p.c.key != "" {
			k, ok, err := byKey(ctx, tx, acct.ID, p.c.key)
			if err != nil {
				return err
			}
			if ok {
				p.dup = k.id
				continue
			}
		}
		charged = append(charged, p)
		charges = append(charges, quota.Charge{Account: p.c.account, Amount: int64(len(p.rcpts)),
			Origin: p.c.origin, Reference: p.id, Actor: p.c.actor})
	}
	if len(charged) == 0 {
		return nil
	}
	// The suppression list, read once for the whole group; a suppressed
	// recipient is stored as such and not charged.
	if err := m.suppressed(ctx, tx, chk, charged, charges); err != nil {
		return err
	}
	errs, err := m.chargeGroup(ctx, tx, charges)
	if err != nil {
		return err
	}
	var msgs []mailstore.MessageRow
	var rows []mailstore.RecipientRow
	var stored []*pending
	for i, p := range charged {
		if errs[i] != nil {
			p.err, p.receipt = errs[i], Receipt{}
			continue
		}
		acct := chk.accounts[p.c.account]
		status, due := p.status()
		row, err := newMessageRow(acct.ID, p.id, "single", p.c, p.now, len(p.rcpts))
		if err != nil {
			return err
		}
		row.Raw = p.raw
		msgs = append(msgs, row)
		p.receipt = Receipt{MessageID: p.id, Recipients: len(p.rcpts), Status: status}
		for j, r := range p.rcpts {
			row := mailstore.RecipientRow{MessageID: p.id, Seq: j, AccountID: acct.ID, Origin: p.c.origin, Kind: r.kind,
				Address: r.addr.Addr, Name: r.addr.Name, RFCMessageID: p.rfcID, Status: status,
				Priority: p.c.priority, DueAt: due, AcceptedAt: p.now}
			if e, ok := p.stopped[j]; ok {
				suppressRow(&row, e, p.now)
				p.receipt.Suppressed = append(p.receipt.Suppressed, Suppressed{Address: r.addr.Addr, Reason: suppress.Describe(e)})
			}
			rows = append(rows, row)
		}
		if len(p.stopped) == len(p.rcpts) {
			p.receipt.Status = StatusSuppressed
		}
		stored = append(stored, p)
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := insertMessages(ctx, tx, conn, msgs); err != nil {
		return err
	}
	accepted := mailstore.Counts{}
	for _, r := range rows {
		accepted.Add(r.AccountID, r.Origin, r.AcceptedAt, mailstore.KindAccepted, 1)
	}
	if conn != nil {
		if err := insertRecipientsPG(ctx, tx, rows, accepted); err != nil {
			return err
		}
	} else {
		if _, err := tx.NewInsert().Model(&rows).Exec(ctx); err != nil {
			return fmt.Errorf("mailing: store recipients: %w", err)
		}
		if err := accepted.Write(ctx, tx); err != nil {
			return err
		}
	}
	if err := recordSuppressed(ctx, tx, conn != nil, rows); err != nil {
		return err
	}
	byMessage := map[string][]int64{}
	for _, r := range rows {
		byMessage[r.MessageID] = append(byMessage[r.MessageID], r.ID) // ids come back from the insert (RETURNING)
	}
	for _, p := range stored {
		p.receipt.RecipientIDs = byMessage[p.id]
	}
	x := make([]extras, len(stored))
	for i, p := range stored {
		x[i] = extras{p.id, &p.c}
	}
	return insertExtras(ctx, tx, x...)
}

// insertRecipientsPG stores a group's recipient rows and its accepted
// counters in tx with one prepared statement (PostgreSQL): the rows travel
// as arrays, the counters ride along as a WITH clause, and the rows' ids
// come back by (message_id, seq).
func insertRecipientsPG(ctx context.Context, tx bun.Tx, rows []mailstore.RecipientRow, accepted mailstore.Counts) error {
	n := len(rows)
	msgIDs, seqs, accounts := make([]string, n), make([]int64, n), make([]int64, n)
	origins, kinds, addrs, names := make([]string, n), make([]string, n), make([]string, n), make([]string, n)
	data, rfcIDs, statuses := make([]*string, n), make([]string, n), make([]string, n)
	prios, dues, ats := make([]int16, n), make([]time.Time, n), make([]time.Time, n)
	for i, r := range rows {
		msgIDs[i], seqs[i], accounts[i] = r.MessageID, int64(r.Seq), r.AccountID
		origins[i], kinds[i], addrs[i], names[i] = string(r.Origin), r.Kind, r.Address, r.Name
		data[i], rfcIDs[i], statuses[i] = r.Data, r.RFCMessageID, string(r.Status)
		prios[i], dues[i], ats[i] = r.Priority, r.DueAt, r.AcceptedAt
	}
	var cAccounts, cHours, cNs []int64
	var cOrigins, cKinds []string
	for _, k := range accepted.Keys() {
		cAccounts, cOrigins, cHours, cKinds, cNs = append(cAccounts, k.Account), append(cOrigins, string(k.Origin)), append(cHours, k.Hour), append(cKinds, k.Kind), append(cNs, accepted[k])
	}
	res, err := store.QueryIDBCached(ctx, tx, insertRecipientsSQL, cAccounts, cOrigins, cHours, cKinds, cNs,
		msgIDs, seqs, accounts, origins, kinds, addrs, names, data, rfcIDs, statuses, prios, dues, ats)
	if err != nil {
		return fmt.Errorf("mailing: store recipients: %w", err)
	}
	defer res.Close()
	type key struct {
		msg string
		seq int
	}
	ids := make(map[key]int64, n)
	for res.Next() {
		var k key
		var id int64
		if err := res.Scan(&k.msg, &k.seq, &id); err != nil {
			return fmt.Errorf("mailing: store recipients: %w", err)
		}
		ids[k] = id
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("mailing: store recipients: %w", err)
	}
	if len(ids) != n {
		return fmt.Errorf("mailing: store recipients: %d stored of %d", len(ids), n)
	}
	for i := range rows {
		rows[i].ID = ids[key{rows[i].MessageID, rows[i].Seq}]
	}
	return nil
}

const insertRecipientsSQL = `WITH counted AS (INSERT INTO mail_counters (account_id, origin, hour, kind, n)
	SELECT * FROM unnest(?::bigint[], ?::text[], ?::bigint[], ?::text[], ?::bigint[])
	ON CONFLICT (account_id, origin, hour, kind) DO UPDATE SET n = mail_counters.n + excluded.n)
INSERT INTO mail_recipients (message_id, seq, account_id, origin, kind, address, name, data, rfc_message_id, status, priority, due_at, accepted_at)
SELECT * FROM unnest(?::text[], ?::integer[], ?::bigint[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[], ?::text[],
	?::smallint[], ?::timestamptz[], ?::timestamptz[])
RETURNING message_id, seq, id`

// insertMessages stores msgs in tx. With conn (PostgreSQL), the messages
// without an idempotency key go by COPY; a message with a key may meet one
// stored concurrently by another process, and goes by INSERT … ON CONFLICT
// DO NOTHING, which tells (errKeyRace) instead of failing the transaction.
func insertMessages(ctx context.Context, tx bun.Tx, conn *bun.Conn, msgs []mailstore.MessageRow) error {
	if conn != nil {
		var plain, keyed []mailstore.MessageRow
		for _, r := range msgs {
			if r.IdempotencyKey == nil {
				plain = append(plain, r)
			} else {
				keyed = append(keyed, r)
			}
		}
		if err := copyMessages(ctx, *conn, plain); err != nil {
			return err
		}
		msgs = keyed
	}
	if len(msgs) == 0 {
		return nil
	}
	// No RETURNING (bun would read back the columns left to their
	// defaults): a statement without it and without arguments is sent as
	// is, where a query is scanned again by pgx for placeholders, and the
	// messages' bytes make it long.
	res, err := tx.NewInsert().Model(&msgs).On("CONFLICT DO NOTHING").Returning("NULL").Exec(ctx)
	if err != nil {
		return fmt.Errorf("mailing: store messages: %w", err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("mailing: store messages: %w", err)
	} else if int(n) != len(msgs) {
		return errKeyRace
	}
	return nil
}

// checker checks accounts, sender identities and DKIM keys inside one
// transaction, reading each account, identity and domain once.
type checker struct {
	m        *Mailer
	idb      bun.IDB
	accounts map[string]accountRef
	senders  map[string]bool
	keys     map[string]bool
}

func newChecker(m *Mailer, idb bun.IDB) *checker {
	return &checker{m: m, idb: idb, accounts: map[string]accountRef{}, senders: map[string]bool{}, keys: map[string]bool{}}
}

// check reads the account and checks that it is enabled, that it may send
// as c.from and as every address in also, and that c.from's domain has a
// DKIM key (or may send unsigned).
func (k *checker) check(ctx context.Context, c common, also []string) (accountRef, error) {
	addrs := append([]string{c.from.Addr}, also...)
	domain := c.from.Domain()
	acct, ok := k.accounts[c.account]
	_, known := k.keys[domain]
	for _, addr := range addrs {
		if _, seen := k.senders[senderKey(acct.ID, addr)]; !seen {
			known = false
		}
	}
	if !ok || !known {
		// Anything not read yet for this group: one query reads it all.
		var err error
		if acct, err = k.read(ctx, c.account, addrs, domain); err != nil {
			return acct, err
		}
	}
	if acct.Disabled {
		return acct, disabled(acct.Name)
	}
	for _, addr := range addrs {
		if !k.senders[senderKey(acct.ID, addr)] {
			return acct, senderNotAllowed(acct.Name, addr)
		}
	}
	for _, d := range k.m.cfg.UnsignedDomains {
		if strings.EqualFold(d, domain) {
			return acct, nil
		}
	}
	if !k.keys[domain] {
		return acct, mailerr.New(ErrNoDKIMKey, "from", "%s has no DKIM key here (relayd domain add %s)", domain, domain)
	}
	return acct, nil
}

func senderKey(account int64, addr string) string {
	return fmt.Sprint(account, "\x00", strings.ToLower(addr))
}

// read reads the account named and, in the same query (each is a round
// trip of a group commit), whether it may send as each of addrs and
// whether domain has a DKIM key; it keeps all three for the group.
func (k *checker) read(ctx context.Context, name string, addrs []string, domain string) (accountRef, error) {
	n, _, err := quota.ParseAccountName(name)
	if err != nil {
		return accountRef{}, err
	}
	var acct accountRef
	var keys int
	allowed := make([]int, len(addrs))
	dest := []any{&acct.ID, &acct.Name, &acct.Disabled, &keys}
	var q strings.Builder
	var args []any
	q.WriteString("SELECT a.id, a.name, a.disabled, (SELECT count(*) FROM dkim_keys WHERE domain = ? AND retired_at IS NULL)")
	args = append(args, domain)
	for i, addr := range addrs {
		exact, domain := senderPatterns(addr)
		q.WriteString(", (SELECT count(*) FROM mail_senders AS s WHERE s.account_id = a.id AND s.pattern IN (?, ?))")
		args = append(args, exact, domain)
		dest = append(dest, &allowed[i])
	}
	q.WriteString(" FROM quota_accounts AS a WHERE a.name = ?")
	args = append(args, n)
	if mailstore.IsPG(k.m.db) {
		// A prepared statement (one per number of addresses).
		var rows *sql.Rows
		if rows, err = store.QueryIDBCached(ctx, k.idb, q.String(), args...); err == nil {
			err = scanOne(rows, dest...)
		}
	} else {
		err = k.idb.NewRaw(q.String(), args...).Scan(ctx, dest...)
	}
	if errors.Is(err, sql.ErrNoRows) {
		return accountRef{}, noAccount(n)
	}
	if err != nil {
		return accountRef{}, fmt.Errorf("mailing: read account: %w", err)
	}
	k.accounts[name] = acct
	k.keys[domain] = keys > 0
	for i, addr := range addrs {
		k.senders[senderKey(acct.ID, addr)] = allowed[i] > 0
	}
	return acct, nil
}

// scanOne scans the first of rows into dest, or is sql.ErrNoRows, and
// closes rows.
func scanOne(rows *sql.Rows, dest ...any) error {
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return err
		}
		return sql.ErrNoRows
	}
	if err := rows.Scan(dest...); err != nil {
		return err
	}
	return rows.Close()
}

// unreachable reports an error of the connection to the database rather
// than of a statement: retrying message by message would only wait longer.
func unreachable(err error) bool {
	return store.ConnLost(err) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled)
}
