package campaign

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/quota"
)

// Errors, for errors.Is; the error's text says what exactly.
var (
	ErrNotFound = errors.New("campaign: not found")
	ErrInvalid  = errors.New("campaign: invalid")
	ErrState    = errors.New("campaign: not in a state that allows it") // e.g. starting a running campaign
)

type kindError struct {
	kind error
	msg  string
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

func errorf(kind error, format string, args ...any) error {
	return &kindError{kind, fmt.Sprintf(format, args...)}
}

// Status is where a campaign is in its life.
type Status string

// The statuses.
const (
	Draft     Status = "draft"
	Scheduled Status = "scheduled" // started, waiting for its send-at time
	Running   Status = "running"
	Paused    Status = "paused"
	Finished  Status = "finished" // every recipient reached a final status
	Cancelled Status = "cancelled"
)

// Segments are an account's saved segments, and compile a segment
// expression into a condition on contacts c and its arguments:
// *contacts.Store.
type Segments interface {
	Segment(ctx context.Context, account, name string) (contacts.Segment, error)
	Match(ctx context.Context, idb bun.IDB, account, expression string) (where string, args []any, err error)
}

// Config configures a Store. Mailer and Segments are required.
type Config struct {
	DB       *bun.DB         // default the Mailer's database (Mailer.DB)
	Mailer   *mailing.Mailer // stores and charges the recipients
	Segments Segments        // a *contacts.Store
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives materialisation errors. Default slog.Default().
	Logger *slog.Logger
	// Poll is how often Run looks for campaigns to materialise, to start
	// at their send-at time and to finish. Default 2 seconds.
	Poll time.Duration
}

// Store is the templates and campaigns of every account in one database.
type Store struct {
	cfg  Config
	kick chan struct{} // Start asks Run to materialise now
}

// New returns a Store.
func New(cfg Config) (*Store, error) {
	if cfg.Mailer == nil || cfg.Segments == nil {
		return nil, errors.New("campaign: Config.Mailer and Segments are required")
	}
	if cfg.DB == nil {
		cfg.DB = cfg.Mailer.DB()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 2 * time.Second
	}
	return &Store{cfg: cfg, kick: make(chan struct{}, 1)}, nil
}

func (s *Store) now() time.Time { return s.cfg.Now().UTC() }

// Spec is what a campaign is made of, as given to Create and Update.
type Spec struct {
	Account string
	Name    string
	From    string   // an identity the account may send as
	ReplyTo []string // optional
	// Template names a stored template (the account's, or a shared one)
	// whose subject, text and HTML are copied into the campaign; or give
	// Subject and Text and/or HTML (text/template and html/template
	// syntax, with the contact's attributes and .email and .name).
	Template       string
	Subject        string
	Text, HTML     string
	Lists          []string  // the lists whose subscribed contacts it goes to
	Segment        string    // and/or a segment: a saved segment's name or an expression (relayd segment)
	Topic          string    // the scope of its unsubscribe links; default its first list's name, or its name
	Tags           []string  // for reports
	SendAt         time.Time // zero: when started
	IncludeUnknown bool      // skip the check of merge fields against the target's attributes
}

// Campaign is a stored campaign.
type Campaign struct {
	ID             int64     `json:"id"`
	Account        string    `json:"account"`
	Name           string    `json:"name"`
	From           string    `json:"from"`
	ReplyTo        []string  `json:"reply_to"`
	TemplateID     int64     `json:"template_id,omitempty"`
	Subject        string    `json:"subject"`
	Text           string    `json:"text,omitempty"`
	HTML           string    `json:"html,omitempty"`
	Lists          []string  `json:"lists"`
	Segment        string    `json:"segment,omitempty"`
	Topic          string    `json:"topic"`
	Tags           []string  `json:"tags"`
	SendAt         time.Time `json:"send_at,omitzero"`
	Status         Status    `json:"status"`
	MessageID      string    `json:"message_id,omitempty"` // the mailing message of its recipients, once started
	Targets        int64     `json:"targets"`              // contacts snapshotted at the start
	Error          string    `json:"error,omitempty"`      // why materialising stopped, if it did
	CreatedAt      time.Time `json:"created_at"`
	CreatedBy      string    `json:"created_by"`
	UpdatedAt      time.Time `json:"updated_at"`
	UpdatedBy      string    `json:"updated_by"`
	StartedAt      time.Time `json:"started_at,omitzero"`
	StartedBy      string    `json:"started_by,omitempty"`
	MaterialisedAt time.Time `json:"materialised_at,omitzero"` // every target stored
	FinishedAt     time.Time `json:"finished_at,omitzero"`
	CancelledAt    time.Time `json:"cancelled_at,omitzero"`
}

// row is a row of campaigns.
type row struct {
	bun.BaseModel  `bun:"table:campaigns,alias:cp"`
	ID             int64 `bun:",pk,autoincrement"`
	AccountID      int64
	Account        string `bun:",scanonly"`
	Name           string
	FromAddr       string
	ReplyTo        string
	Subject        string
	TextBody       *string
	HTMLBody       *string `bun:"html_body"`
	TemplateID     *int64
	Lists          string
	Segment        string
	Topic          string
	Tags           string
	SendAt         *time.Time
	Status         Status
	MessageID      string
	Targets        int64
	Error          string
	CreatedAt      time.Time
	CreatedBy      string
	UpdatedAt      time.Time
	UpdatedBy      string
	StartedAt      *time.Time
	StartedBy      string
	MaterialisedAt *time.Time
	FinishedAt     *time.Time
	CancelledAt    *time.Time
}

func (r *row) campaign() Campaign {
	c := Campaign{ID: r.ID, Account: r.Account, Name: r.Name, From: r.FromAddr, Subject: r.Subject, Segment: r.Segment,
		Topic: r.Topic, Status: r.Status, MessageID: r.MessageID, Targets: r.Targets, Error: r.Error,
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(), UpdatedBy: r.UpdatedBy, StartedBy: r.StartedBy}
	c.ReplyTo, c.Lists, c.Tags = strs(r.ReplyTo), strs(r.Lists), strs(r.Tags)
	if r.TextBody != nil {
		c.Text = *r.TextBody
	}
	if r.HTMLBody != nil {
		c.HTML = *r.HTMLBody
	}
	if r.TemplateID != nil {
		c.TemplateID = *r.TemplateID
	}
	for _, t := range []struct {
		dst *time.Time
		src *time.Time
	}{{&c.SendAt, r.SendAt}, {&c.StartedAt, r.StartedAt}, {&c.MaterialisedAt, r.MaterialisedAt}, {&c.FinishedAt, r.FinishedAt}, {&c.CancelledAt, r.CancelledAt}} {
		if t.src != nil {
			*t.dst = t.src.UTC()
		}
	}
	return c
}

// strs decodes a JSON array of strings as stored (never nil).
func strs(s string) []string {
	out := []string{}
	_ = json.Unmarshal([]byte(s), &out)
	return out
}

func jsonStrs(ss []string) string {
	if ss == nil {
		ss = []string{}
	}
	b, _ := json.Marshal(ss)
	return string(b)
}

func optional(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

func accountID(ctx context.Context, idb bun.IDB, account string) (int64, error) {
	var ids []int64
	if err := idb.NewRaw("SELECT id FROM quota_accounts WHERE name = ?", account).Scan(ctx, &ids); err != nil {
		return 0, fmt.Errorf("campaign: read account: %w", err)
	}
	if len(ids) == 0 {
		return 0, errorf(ErrNotFound, "no account %q", account)
	}
	return ids[0], nil
}

// Create stores a draft campaign, after checking it as Update does.
func (s *Store) Create(ctx context.Context, d Spec, actor string) (Campaign, error) {
	var c Campaign
	err := s.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		r, err := s.check(ctx, tx, d)
		if err != nil {
			return err
		}
		now := s.now()
		r.Status, r.CreatedAt, r.CreatedBy, r.UpdatedAt, r.UpdatedBy = Draft, now, actor, now, actor
		if _, err := tx.NewInsert().Model(r).Returning("id").Exec(ctx); err != nil {
			return fmt.Errorf("campaign: create: %w", err)
		}
		c = r.campaign()
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "campaign.create", Subject: d.Account, Detail: fmt.Sprintf("campaign=%d %s", r.ID, r.Name)})
	})
	return c, err
}

// Update replaces a draft's content and target (only a draft changes).
func (s *Store) Update(ctx context.Context, id int64, d Spec, actor string) (Campaign, error) {
	var c Campaign
	err := s.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		old, err := s.get(ctx, tx, d.Account, id, true)
		if err != nil {
			return err
		}
		if old.Status != Draft {
			return errorf(ErrState, "campaign %d is %s: only a draft can be changed (clone it)", id, old.Status)
		}
		r, err := s.check(ctx, tx, d)
		if err != nil {
			return err
		}
		now := s.now()
		r.ID, r.Status, r.CreatedAt, r.CreatedBy, r.UpdatedAt, r.UpdatedBy = id, Draft, old.CreatedAt, old.CreatedBy, now, actor
		if _, err := tx.NewUpdate().Model(r).WherePK().Exec(ctx); err != nil {
			return fmt.Errorf("campaign: update: %w", err)
		}
		c = r.campaign()
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "campaign.update", Subject: d.Account, Detail: fmt.Sprintf("campaign=%d", id)})
	})
	return c, err
}

// Get returns campaign id; a non-empty account restricts it to that
// account's (another account's is ErrNotFound).
func (s *Store) Get(ctx context.Context, account string, id int64) (Campaign, error) {
	r, err := s.get(ctx, s.cfg.DB, account, id, false)
	if err != nil {
		return Campaign{}, err
	}
	return r.campaign(), nil
}

func (s *Store) get(ctx context.Context, idb bun.IDB, account string, id int64, lock bool) (*row, error) {
	r := new(row)
	q := idb.NewSelect().Model(r).ColumnExpr("cp.*, a.name AS account").Join("JOIN quota_accounts AS a ON a.id = cp.account_id").Where("cp.id = ?", id)
	if account != "" {
		q = q.Where("a.name = ?", account)
	}
	if lock && s.pg() {
		q = q.For("UPDATE OF cp")
	}
	if err := q.Scan(ctx); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, errorf(ErrNotFound, "no campaign %d", id)
		}
		return nil, fmt.Errorf("campaign: read: %w", err)
	}
	return r, nil
}

// ListOptions select campaigns: newest first, Limit at a time (default
// 100), before the id BeforeID (keyset pagination; 0: from the newest).
type ListOptions struct {
	Status   Status
	BeforeID int64
	Limit    int
}

// List returns an account's campaigns ("" for every account's).
func (s *Store) List(ctx context.Context, account string, o ListOptions) ([]Campaign, error) {
	if o.Limit <= 0 || o.Limit > 1000 {
		o.Limit = 100
	}
	var rows []row
	q := s.cfg.DB.NewSelect().Model(&rows).ColumnExpr("cp.*, a.name AS account").Join("JOIN quota_accounts AS a ON a.id = cp.account_id").
		Order("cp.id DESC").Limit(int64(o.Limit))
	if account != "" {
		q = q.Where("a.name = ?", account)
	}
	if o.Status != "" {
		q = q.Where("cp.status = ?", o.Status)
	}
	if o.BeforeID > 0 {
		q = q.Where("cp.id < ?", o.BeforeID)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("campaign: list: %w", err)
	}
	out := make([]Campaign, len(rows))
	for i := range rows {
		out[i] = rows[i].campaign()
	}
	return out, nil
}

// Clone stores a new draft with campaign id's content and target, named
// name (default: the old name and " (copia)").
func (s *Store) Clone(ctx context.Context, account string, id int64, name, actor string) (Campaign, error) {
	old, err := s.Get(ctx, account, id)
	if err != nil {
		return Campaign{}, err
	}
	if name == "" {
		name = old.Name + " (copia)"
	}
	d := Spec{Account: old.Account, Name: name, From: old.From, ReplyTo: old.ReplyTo, Subject: old.Subject, Text: old.Text, HTML: old.HTML,
		Lists: old.Lists, Segment: old.Segment, Topic: old.Topic, Tags: old.Tags, IncludeUnknown: true}
	return s.Create(ctx, d, actor)
}

func (s *Store) pg() bool { return s.cfg.DB.Dialect().Name().String() == "pg" }

// check validates a draft and returns its row (account, content, target).
func (s *Store) check(ctx context.Context, tx bun.Tx, d Spec) (*row, error) {
	aid, err := accountID(ctx, tx, d.Account)
	if err != nil {
		return nil, err
	}
	d.Name = strings.TrimSpace(d.Name)
	if d.Name == "" || utf8.RuneCountInString(d.Name) > 200 || !utf8.ValidString(d.Name) {
		return nil, errorf(ErrInvalid, "a campaign needs a name (at most 200 characters)")
	}
	if err := s.cfg.Mailer.MaySendSigned(ctx, d.Account, d.From); err != nil {
		return nil, errorf(ErrInvalid, "from %q: %v", d.From, err)
	}
	for _, a := range d.ReplyTo {
		if _, err := mailing.ParseAddress(a); err != nil {
			return nil, errorf(ErrInvalid, "reply-to %q: %v", a, err)
		}
	}
	r := &row{AccountID: aid, Account: d.Account, Name: d.Name, FromAddr: d.From, ReplyTo: jsonStrs(d.ReplyTo), Tags: jsonStrs(d.Tags)}
	if err := s.content(ctx, tx, aid, &d, r); err != nil {
		return nil, err
	}
	if err := s.target(ctx, tx, &d, r); err != nil {
		return nil, err
	}
	if !d.SendAt.IsZero() {
		t := d.SendAt.UTC()
		r.SendAt = &t
	}
	if !d.IncludeUnknown {
		if err := s.checkFields(ctx, tx, r); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// target checks the lists and segment of d and fills r's.
func (s *Store) target(ctx context.Context, tx bun.Tx, d *Spec, r *row) error {
	if len(d.Lists) == 0 && strings.TrimSpace(d.Segment) == "" {
		return errorf(ErrInvalid, "a campaign needs a target: one or more lists and/or a segment")
	}
	lists := make([]string, 0, len(d.Lists))
	for _, l := range d.Lists {
		l = strings.TrimSpace(l)
		var n int
		if err := tx.NewRaw("SELECT count(*) FROM contact_lists WHERE account_id = ? AND name = ?", r.AccountID, l).Scan(ctx, &n); err != nil {
			return fmt.Errorf("campaign: read list: %w", err)
		}
		if n == 0 {
			return errorf(ErrInvalid, "%s has no list %q", d.Account, l)
		}
		lists = append(lists, l)
	}
	r.Lists = jsonStrs(lists)
	r.Segment = strings.TrimSpace(d.Segment)
	if sg, err := s.cfg.Segments.Segment(ctx, d.Account, r.Segment); err == nil {
		r.Segment = sg.Expression // a saved segment's name: its expression now, kept with the campaign
	} else if !errors.Is(err, contacts.ErrNotFound) {
		return err
	}
	if r.Segment != "" {
		if _, _, err := s.cfg.Segments.Match(ctx, tx, d.Account, r.Segment); err != nil {
			return errorf(ErrInvalid, "segment: %v", err)
		}
	}
	r.Topic = strings.TrimSpace(d.Topic)
	if r.Topic == "" {
		r.Topic = d.Name
		if len(lists) > 0 {
			r.Topic = lists[0]
		}
	}
	return nil
}

// origin is what a campaign's recipients are charged as.
const origin = quota.OriginCampaign
