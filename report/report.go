package report

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/quota"
)

var (
	// ErrNotFound: no such message, campaign or account (for the account
	// asking, which is the same answer).
	ErrNotFound = errors.New("report: not found")
	// ErrInvalid: a filter that cannot be answered (a malformed account
	// name, an unknown status or origin, a missing address).
	ErrInvalid = errors.New("report: invalid request")
)

// MaxPage bounds the rows of one Page; DefaultPage is a Page's size when
// Filter.Limit is zero.
const (
	MaxPage     = 5000
	DefaultPage = 1000
)

// Config configures a Reporter. Zero values are safe.
type Config struct {
	// Location is the time zone of the times returned and of the days and
	// months of Totals. Default America/Lima (UTC−5, no daylight saving;
	// a fixed UTC−5 zone if the system has no time zone database).
	Location *time.Location

	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Reporter answers questions about the mail stored in one database. It is
// safe for concurrent use.
type Reporter struct {
	db  *bun.DB
	loc *time.Location
	now func() time.Time
}

// New returns a Reporter on db, which must be migrated.
func New(db *bun.DB, cfg Config) *Reporter {
	loc := cfg.Location
	if loc == nil {
		var err error
		if loc, err = time.LoadLocation("America/Lima"); err != nil {
			loc = time.FixedZone("-05", -5*60*60)
		}
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &Reporter{db: db, loc: loc, now: now}
}

// Location is the time zone the Reporter shows times in.
func (r *Reporter) Location() *time.Location { return r.loc }

// Filter selects recipient rows. Zero fields select everything; the
// fields set all apply (AND).
type Filter struct {
	Account   string           // "area/name": only this account's rows
	Address   string           // one recipient address, any case
	MessageID string           // one message
	Campaign  string           // messages with this campaign
	Tag       string           // messages with this tag
	Origin    quota.Origin     // library, smtp, http, campaign, cli
	Status    mailstore.Status // queued, sent, bounced, …
	From, To  time.Time        // accepted in [From, To)

	// After continues a listing: only rows with a recipient id greater
	// than After (Page.Next of the previous page).
	After int64
	// Limit bounds a Page (default DefaultPage, at most MaxPage) and, when
	// positive, an export or All.
	Limit int
}

// Row is one recipient: what was accepted and what became of it. Times
// are in the Reporter's Location; zero when it has not happened.
type Row struct {
	ID            int64            `json:"id"` // the recipient id
	Account       string           `json:"account"`
	Origin        quota.Origin     `json:"origin"`
	MessageID     string           `json:"message_id"`
	Campaign      string           `json:"campaign"`
	Subject       string           `json:"subject"` // for a batch, its subject template
	Address       string           `json:"address"`
	Kind          string           `json:"kind"` // to, cc, bcc
	Status        mailstore.Status `json:"status"`
	AcceptedAt    time.Time        `json:"accepted_at"`
	Attempts      int              `json:"attempts"`
	LastAttemptAt time.Time        `json:"last_attempt_at,omitzero"`
	FinalAt       time.Time        `json:"final_at,omitzero"`
	RemoteHost    string           `json:"remote_host"`
	Reply         string           `json:"reply"` // the remote server's last reply, or why delivery could not be tried
	RFCMessageID  string           `json:"rfc_message_id"`
}

// Page is one page of rows in recipient id order.
type Page struct {
	Rows []Row
	Next int64 // pass as Filter.After for the next page; 0: this was the last
}

// rowColumns are the columns every row query selects, in scan order.
const rowColumns = "r.id, a.name, r.origin, r.message_id, m.campaign, m.subject, r.address, r.kind, r.status, " +
	"r.accepted_at, r.attempts, r.last_attempt_at, r.final_at, r.remote_host, r.reply, r.rfc_message_id"

// scan reads one row selected with rowColumns.
func (r *Reporter) scan(rows *sql.Rows, x *Row) error {
	var accepted, last, final timeCell
	err := rows.Scan(&x.ID, &x.Account, &x.Origin, &x.MessageID, &x.Campaign, &x.Subject, &x.Address, &x.Kind, &x.Status,
		&accepted, &x.Attempts, &last, &final, &x.RemoteHost, &x.Reply, &x.RFCMessageID)
	if err != nil {
		return fmt.Errorf("report: read row: %w", err)
	}
	x.AcceptedAt, x.LastAttemptAt, x.FinalAt = r.in(accepted.t), r.in(last.t), r.in(final.t)
	return nil
}

func (r *Reporter) in(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return t.In(r.loc)
}

// Rows returns one page of the rows f selects, in recipient id order:
// an account's rows in a period, a message's, a campaign's, a tag's, or
// any combination.
func (r *Reporter) Rows(ctx context.Context, f Filter) (Page, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultPage
	}
	limit = min(limit, MaxPage)
	q, err := r.rowQuery(ctx, f)
	if err != nil {
		return Page{}, err
	}
	rows, err := q.Limit(int64(limit + 1)).Rows(ctx)
	if err != nil {
		return Page{}, fmt.Errorf("report: list rows: %w", err)
	}
	defer rows.Close()
	var p Page
	for rows.Next() {
		if len(p.Rows) == limit {
			p.Next = p.Rows[limit-1].ID
			break
		}
		var x Row
		if err := r.scan(rows, &x); err != nil {
			return Page{}, err
		}
		p.Rows = append(p.Rows, x)
	}
	if err := rows.Err(); err != nil {
		return Page{}, fmt.Errorf("report: list rows: %w", err)
	}
	return p, nil
}

// Recipient returns one page of every row to the address f.Address
// (compared without regard to case), with the other fields of f applied.
func (r *Reporter) Recipient(ctx context.Context, f Filter) (Page, error) {
	if strings.TrimSpace(f.Address) == "" {
		return Page{}, fmt.Errorf("%w: no address given", ErrInvalid)
	}
	return r.Rows(ctx, f)
}

// rowQuery builds the query selecting f's rows in id order, without a limit.
func (r *Reporter) rowQuery(ctx context.Context, f Filter) (*bun.SelectQuery, error) {
	q := r.db.NewSelect().TableExpr("mail_recipients AS r").ColumnExpr(rowColumns).
		Join("JOIN mail_messages AS m ON m.id = r.message_id").
		Join("JOIN quota_accounts AS a ON a.id = r.account_id").
		OrderExpr("r.id")
	q, err := r.where(ctx, q, f, onRows)
	if err != nil {
		return nil, err
	}
	if f.Address != "" {
		q = q.Where("lower(r.address) = ?", NormalizeAddress(f.Address))
	}
	if f.Status != "" {
		if !validStatus(f.Status) {
			return nil, fmt.Errorf("%w: unknown status %q", ErrInvalid, f.Status)
		}
		q = q.Where("r.status = ?", f.Status)
	}
	if f.After > 0 {
		q = q.Where("r.id > ?", f.After)
	}
	return q, nil
}

// NormalizeAddress is the form addresses are compared in: a mailbox that
// address.Parse accepts becomes its address with the domain in
// A-label form ("Ana <Ana@Bücher.example>" → "ana@xn--bcher-kva.example"),
// anything else is only trimmed; then lowercased.
func NormalizeAddress(s string) string {
	s = strings.TrimSpace(s)
	if a, err := address.Parse(s); err == nil {
		s = a.Addr
	}
	return strings.ToLower(s)
}

// accountID resolves an account name to its id.
func (r *Reporter) accountID(ctx context.Context, account string) (int64, error) {
	name, _, err := quota.ParseAccountName(account)
	if err != nil {
		return 0, fmt.Errorf("%w: account name %q must be AREA/NAME, e.g. enap/eventos", ErrInvalid, account)
	}
	var id int64
	err = r.db.NewSelect().TableExpr("quota_accounts").Column("id").Where("name = ?", name).Scan(ctx, &id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%w: no account %s", ErrNotFound, name)
	}
	if err != nil {
		return 0, fmt.Errorf("report: read account: %w", err)
	}
	return id, nil
}

var statuses = []mailstore.Status{mailstore.StatusQueued, mailstore.StatusScheduled, mailstore.StatusSending, mailstore.StatusDeferred,
	mailstore.StatusSent, mailstore.StatusBounced, mailstore.StatusFailed, mailstore.StatusSuppressed, mailstore.StatusCancelled}

func validStatus(s mailstore.Status) bool {
	for _, x := range statuses {
		if x == s {
			return true
		}
	}
	return false
}

// timeCell scans a nullable timestamp as either engine's driver returns
// it: a time.Time, or (SQLite) text in one of the formats it is stored in.
type timeCell struct{ t time.Time }

var timeLayouts = []string{"2006-01-02 15:04:05.999999999-07:00", time.RFC3339Nano, "2006-01-02 15:04:05.999999999Z07:00", "2006-01-02 15:04:05.999999999"}

func (c *timeCell) Scan(v any) error {
	switch v := v.(type) {
	case nil:
		c.t = time.Time{}
		return nil
	case time.Time:
		c.t = v
		return nil
	case string:
		return c.parse(v)
	case []byte:
		return c.parse(string(v))
	}
	return fmt.Errorf("report: cannot read %T as a time", v)
}

func (c *timeCell) parse(s string) error {
	for _, l := range timeLayouts {
		if t, err := time.Parse(l, s); err == nil {
			c.t = t
			return nil
		}
	}
	return fmt.Errorf("report: cannot read %q as a time", s)
}
