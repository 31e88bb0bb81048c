package campaign

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"text/template/parse"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
	"github.com/servir-pe/envios/internal/compose"
)

// Template is a stored template: an account's, or shared by an admin
// (Account ""), with the merge fields it uses.
type Template struct {
	ID        int64     `json:"id"`
	Account   string    `json:"account"` // "": shared
	Name      string    `json:"name"`
	Subject   string    `json:"subject"`
	Text      string    `json:"text,omitempty"`
	HTML      string    `json:"html,omitempty"`
	Fields    []string  `json:"fields"` // the merge fields it uses: .region → region
	CreatedAt time.Time `json:"created_at"`
	CreatedBy string    `json:"created_by"`
	UpdatedAt time.Time `json:"updated_at"`
	UpdatedBy string    `json:"updated_by"`
}

type templateRow struct {
	bun.BaseModel `bun:"table:campaign_templates,alias:t"`
	ID            int64 `bun:",pk,autoincrement"`
	AccountID     int64
	Account       string `bun:",scanonly"`
	Name          string
	Subject       string
	TextBody      *string
	HTMLBody      *string `bun:"html_body"`
	Fields        string
	CreatedAt     time.Time
	CreatedBy     string
	UpdatedAt     time.Time
	UpdatedBy     string
}

func (r *templateRow) template() Template {
	t := Template{ID: r.ID, Account: r.Account, Name: r.Name, Subject: r.Subject, Fields: strs(r.Fields),
		CreatedAt: r.CreatedAt.UTC(), CreatedBy: r.CreatedBy, UpdatedAt: r.UpdatedAt.UTC(), UpdatedBy: r.UpdatedBy}
	if r.TextBody != nil {
		t.Text = *r.TextBody
	}
	if r.HTMLBody != nil {
		t.HTML = *r.HTMLBody
	}
	return t
}

// builtins are the merge fields every contact has.
var builtins = []string{"email", "name"}

// SaveTemplate stores t by its account and name, replacing the one of that
// name (templates are never deleted: campaigns keep a copy of what they
// sent). Account "" stores a shared template (an admin's). The templates
// must parse; the fields they use are recorded.
func (s *Store) SaveTemplate(ctx context.Context, t Template, actor string) (Template, error) {
	t.Name = strings.TrimSpace(t.Name)
	if t.Name == "" || len(t.Name) > 200 {
		return Template{}, errorf(ErrInvalid, "a template needs a name (at most 200 bytes)")
	}
	fields, err := parseContent(t.Subject, t.Text, t.HTML)
	if err != nil {
		return Template{}, err
	}
	var out Template
	err = s.cfg.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		var aid int64
		if t.Account != "" {
			var err error
			if aid, err = accountID(ctx, tx, t.Account); err != nil {
				return err
			}
		}
		now := s.now()
		r := &templateRow{AccountID: aid, Account: t.Account, Name: t.Name, Subject: t.Subject, TextBody: optional(t.Text), HTMLBody: optional(t.HTML),
			Fields: jsonStrs(fields), CreatedAt: now, CreatedBy: actor, UpdatedAt: now, UpdatedBy: actor}
		_, err := tx.NewInsert().Model(r).
			On("CONFLICT (account_id, name) DO UPDATE").
			Set("subject = EXCLUDED.subject, text_body = EXCLUDED.text_body, html_body = EXCLUDED.html_body, fields = EXCLUDED.fields").
			Set("updated_at = EXCLUDED.updated_at, updated_by = EXCLUDED.updated_by").
			Returning("id, created_at, created_by").Exec(ctx)
		if err != nil {
			return fmt.Errorf("campaign: save template: %w", err)
		}
		out = r.template()
		subject := t.Account
		if subject == "" {
			subject = "(shared)"
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: actor, Action: "template.save", Subject: subject, Detail: t.Name})
	})
	return out, err
}

// Templates returns the templates an account may use — its own and the
// shared ones — by name; account "" returns only the shared ones.
func (s *Store) Templates(ctx context.Context, account string) ([]Template, error) {
	return s.templates(ctx, s.cfg.DB, account, "")
}

// Template returns the template called name an account may use: its own,
// else a shared one.
func (s *Store) Template(ctx context.Context, account, name string) (Template, error) {
	ts, err := s.templates(ctx, s.cfg.DB, account, name)
	if err != nil {
		return Template{}, err
	}
	if len(ts) == 0 {
		return Template{}, errorf(ErrNotFound, "no template %q for %s (relayd template ls)", name, orShared(account))
	}
	return ts[0], nil // its own first
}

func orShared(account string) string {
	if account == "" {
		return "shared templates"
	}
	return account
}

func (s *Store) templates(ctx context.Context, idb bun.IDB, account, name string) ([]Template, error) {
	var rows []templateRow
	q := idb.NewSelect().Model(&rows).ColumnExpr("t.*, COALESCE(a.name, '') AS account").
		Join("LEFT JOIN quota_accounts AS a ON a.id = t.account_id")
	if account == "" {
		q = q.Where("t.account_id = 0")
	} else {
		q = q.Where("t.account_id = 0 OR a.name = ?", account)
	}
	if name != "" {
		q = q.Where("t.name = ?", name)
	}
	if err := q.OrderExpr("t.name, t.account_id DESC").Scan(ctx); err != nil {
		return nil, fmt.Errorf("campaign: read templates: %w", err)
	}
	out := make([]Template, len(rows))
	for i := range rows {
		out[i] = rows[i].template()
	}
	return out, nil
}

// content fills r's subject, text and HTML from d: copied from d.Template
// if named, else d's own; the templates must parse.
func (s *Store) content(ctx context.Context, tx bun.Tx, _ int64, d *Spec, r *row) error {
	if d.Template != "" {
		if d.Subject != "" || d.Text != "" || d.HTML != "" {
			return errorf(ErrInvalid, "give a template or a subject and bodies, not both")
		}
		ts, err := s.templates(ctx, tx, d.Account, d.Template)
		if err != nil {
			return err
		}
		if len(ts) == 0 {
			return errorf(ErrInvalid, "no template %q for %s", d.Template, d.Account)
		}
		d.Subject, d.Text, d.HTML = ts[0].Subject, ts[0].Text, ts[0].HTML
		r.TemplateID = &ts[0].ID
	}
	if _, err := parseContent(d.Subject, d.Text, d.HTML); err != nil {
		return err
	}
	r.Subject, r.TextBody, r.HTMLBody = d.Subject, optional(d.Text), optional(d.HTML)
	return nil
}

// parseContent checks that the templates parse (as delivery will execute
// them) and returns the merge fields they use.
func parseContent(subject, text, html string) ([]string, error) {
	if strings.TrimSpace(subject) == "" {
		return nil, errorf(ErrInvalid, "a subject is required")
	}
	if text == "" && html == "" {
		return nil, errorf(ErrInvalid, "a text or an HTML body is required")
	}
	if _, err := compose.ParseTemplates(subject, optional(text), optional(html), 0); err != nil {
		return nil, errorf(ErrInvalid, "%v", err)
	}
	var fields []string
	for _, src := range []string{subject, text, html} {
		fs, err := Fields(src)
		if err != nil {
			return nil, errorf(ErrInvalid, "%v", err)
		}
		fields = append(fields, fs...)
	}
	sort.Strings(fields)
	return slices.Compact(fields), nil
}

// Fields returns the merge fields a template uses at its top level — the
// first name of each {{.name}}, and the key of each {{index . "a key"}},
// outside a range or with block, which changes what the dot is — sorted,
// once each.
func Fields(src string) ([]string, error) {
	builtin := map[string]any{}
	for _, f := range []string{"and", "call", "html", "index", "slice", "js", "len", "not", "or", "print", "printf", "println",
		"urlquery", "eq", "ge", "gt", "le", "lt", "ne"} {
		builtin[f] = fmt.Sprint // parse only asks whether the name exists
	}
	trees, err := parse.Parse("t", src, "", "", builtin)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for _, t := range trees {
		walk(t.Root, seen)
	}
	out := make([]string, 0, len(seen))
	for f := range seen {
		out = append(out, f)
	}
	sort.Strings(out)
	return out, nil
}

func walk(n parse.Node, seen map[string]bool) {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return
		}
		for _, c := range n.Nodes {
			walk(c, seen)
		}
	case *parse.ActionNode:
		walk(n.Pipe, seen)
	case *parse.PipeNode:
		if n == nil {
			return
		}
		for _, c := range n.Cmds {
			walk(c, seen)
		}
	case *parse.CommandNode:
		// {{index . "Fecha de alta"}}: a field whose name is no identifier.
		if len(n.Args) == 3 {
			if id, ok := n.Args[0].(*parse.IdentifierNode); ok && id.Ident == "index" {
				if _, ok := n.Args[1].(*parse.DotNode); ok {
					if s, ok := n.Args[2].(*parse.StringNode); ok {
						seen[s.Text] = true
					}
				}
			}
		}
		for _, a := range n.Args {
			walk(a, seen)
		}
	case *parse.FieldNode:
		seen[n.Ident[0]] = true
	case *parse.IfNode:
		walk(n.Pipe, seen)
		walk(n.List, seen)
		walk(n.ElseList, seen)
	case *parse.RangeNode:
		walk(n.Pipe, seen) // the body's dot is an element
	case *parse.WithNode:
		walk(n.Pipe, seen)
		walk(n.ElseList, seen)
	}
}

// checkFields refuses content whose merge fields the target's contacts do
// not have (unless the target has no contacts yet: Start checks again).
func (s *Store) checkFields(ctx context.Context, idb bun.IDB, r *row) error {
	fields, err := parseContent(r.Subject, deref(r.TextBody), deref(r.HTMLBody))
	if err != nil {
		return err
	}
	have, n, err := s.attributes(ctx, idb, r)
	if err != nil || n == 0 {
		return err
	}
	var unknown []string
	for _, f := range fields {
		if !slices.Contains(builtins, f) && !have[f] {
			unknown = append(unknown, f)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	known := make([]string, 0, len(have))
	for k := range have {
		known = append(known, k)
	}
	sort.Strings(known)
	return errorf(ErrInvalid, "the content uses merge fields the target's contacts do not have: %s (they have: %s)",
		strings.Join(unknown, ", "), strings.Join(append(slices.Clone(builtins), known...), ", "))
}

func deref(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// attributes returns the attribute names of the target's contacts and how
// many contacts it has.
func (s *Store) attributes(ctx context.Context, idb bun.IDB, r *row) (map[string]bool, int64, error) {
	where, args, err := s.targetSQL(ctx, idb, r)
	if err != nil {
		return nil, 0, err
	}
	keys := "SELECT DISTINCT k.key FROM contacts c, json_each(c.attrs) AS k WHERE " + where
	if s.pg() {
		keys = "SELECT DISTINCT jsonb_object_keys(c.attrs) FROM contacts c WHERE " + where
	}
	var names []string
	if err := idb.NewRaw(keys, args...).Scan(ctx, &names); err != nil {
		return nil, 0, fmt.Errorf("campaign: read the target's attributes: %w", err)
	}
	var n int64
	if err := idb.NewRaw("SELECT count(*) FROM contacts c WHERE "+where, args...).Scan(ctx, &n); err != nil {
		return nil, 0, fmt.Errorf("campaign: count the target: %w", err)
	}
	have := make(map[string]bool, len(names))
	for _, k := range names {
		have[k] = true
	}
	return have, n, nil
}

// decodeAttrs is a contact's attributes as template data, with its
// address and name.
func decodeAttrs(attrs, address, name string) (map[string]string, error) {
	data := map[string]string{}
	if attrs != "" {
		if err := json.Unmarshal([]byte(attrs), &data); err != nil {
			return nil, fmt.Errorf("campaign: contact %s: attributes: %w", address, err)
		}
	}
	data["email"], data["name"] = address, name
	return data, nil
}
