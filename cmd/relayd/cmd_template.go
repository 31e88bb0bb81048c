package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
)

// The template and segment commands: stored content campaigns copy, and
// saved filters on an account's contacts.

// readBody is the content of a --text-file or --html-file ("" if none).
func readBody(flag, path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("--%s: %w", flag, err)
	}
	return string(b), nil
}

func runTemplateSave(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("template save", &g)
	account := fs.String("account", "", "the account the template belongs to (or --shared)")
	shared := fs.Bool("shared", false, "a template every account may use (an admin's)")
	subject := fs.String("subject", "", "the subject template (required), e.g. 'Hola {{.name}}'")
	textFile := fs.String("text-file", "", "file with the text body template")
	htmlFile := fs.String("html-file", "", "file with the HTML body template")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if (*account == "") == !*shared {
		return usagef("template save: give --account A or --shared")
	}
	text, err := readBody("text-file", *textFile)
	if err != nil {
		return err
	}
	html, err := readBody("html-file", *htmlFile)
	if err != nil {
		return err
	}
	s, done, err := e.openCampaigns(ctx, &g)
	if err != nil {
		return err
	}
	defer done()
	t, err := s.SaveTemplate(ctx, campaign.Template{Account: *account, Name: pos[0], Subject: *subject, Text: text, HTML: html}, e.defaultActor())
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, t)
	}
	fmt.Fprintf(e.stdout, "template %q saved (id %d); merge fields: %s\n", t.Name, t.ID, noneIfEmpty(t.Fields))
	return nil
}

func noneIfEmpty(ss []string) string {
	if len(ss) == 0 {
		return "none"
	}
	return strings.Join(ss, ", ")
}

func runTemplateList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("template ls", &g)
	account := fs.String("account", "", "the account's templates and the shared ones (default: only the shared ones)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	s, done, err := e.openCampaigns(ctx, &g)
	if err != nil {
		return err
	}
	defer done()
	ts, err := s.Templates(ctx, *account)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, ts)
	}
	if len(ts) == 0 {
		fmt.Fprintln(e.stdout, "no templates (relayd template save NAME --account A --subject S --html-file F)")
		return nil
	}
	t := &table{head: []string{">ID", "ACCOUNT", "TEMPLATE", "SUBJECT", "FIELDS", "UPDATED", "BY"}}
	for _, x := range ts {
		acct := x.Account
		if acct == "" {
			acct = "(shared)"
		}
		t.add(strconv.FormatInt(x.ID, 10), acct, x.Name, x.Subject, noneIfEmpty(x.Fields), x.UpdatedAt.In(g.loc).Format("2006-01-02 15:04"), x.UpdatedBy)
	}
	t.write(e.stdout)
	return nil
}

func runTemplateShow(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("template show", &g)
	account := fs.String("account", "", "the account whose template (or a shared one) it is; default: the shared ones")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	s, done, err := e.openCampaigns(ctx, &g)
	if err != nil {
		return err
	}
	defer done()
	t, err := s.Template(ctx, *account, pos[0])
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, t)
	}
	owner := t.Account
	if owner == "" {
		owner = "shared"
	}
	fmt.Fprintf(e.stdout, "template %q (%s), updated %s by %s; merge fields: %s\nSubject: %s\n", t.Name, owner,
		t.UpdatedAt.In(g.loc).Format("2006-01-02 15:04"), t.UpdatedBy, noneIfEmpty(t.Fields), t.Subject)
	if t.Text != "" {
		fmt.Fprintf(e.stdout, "\n--- text ---\n%s\n", t.Text)
	}
	if t.HTML != "" {
		fmt.Fprintf(e.stdout, "\n--- html ---\n%s\n", t.HTML)
	}
	return nil
}

// segmentExpression is arg as an expression: the expression of the
// account's saved segment of that name, if there is one, else arg itself.
func segmentExpression(ctx context.Context, cs *contacts.Store, account, arg string) (string, error) {
	sg, err := cs.Segment(ctx, account, arg)
	if err == nil {
		return sg.Expression, nil
	}
	if errors.Is(err, contacts.ErrNotFound) {
		return arg, nil
	}
	return "", err
}

func runSegmentSave(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("segment save", &g)
	account := fs.String("account", "", "the account (required)")
	expr := fs.String("expr", "", "the expression (required), e.g. 'region = \"Lima\" and not domain = \"gmail.com\"'")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if *account == "" || *expr == "" {
		return usagef("segment save: --account and --expr are required")
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	cs := &contacts.Store{DB: db, Now: e.now}
	sg, err := cs.SaveSegment(ctx, *account, pos[0], *expr, e.defaultActor())
	if err != nil {
		return err
	}
	n, err := cs.CountSegment(ctx, *account, sg.Expression)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "segment %q saved: %s (%s active contacts now)\n", sg.Name, sg.Expression, group(n))
	return nil
}

func runSegmentList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("segment ls", &g)
	account := fs.String("account", "", "the account (required)")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *account == "" {
		return usagef("segment ls: --account is required")
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	ss, err := (&contacts.Store{DB: db, Now: e.now}).Segments(ctx, *account)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, ss)
	}
	if len(ss) == 0 {
		fmt.Fprintln(e.stdout, "no segments (relayd segment save NAME --account A --expr E)")
		return nil
	}
	t := &table{head: []string{">ID", "SEGMENT", "EXPRESSION", "UPDATED", "BY"}}
	for _, s := range ss {
		t.add(strconv.FormatInt(s.ID, 10), s.Name, s.Expression, s.UpdatedAt.In(g.loc).Format("2006-01-02 15:04"), s.CreatedBy)
	}
	t.write(e.stdout)
	return nil
}

func runSegmentCount(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("segment count", &g)
	account := fs.String("account", "", "the account (required)")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	if *account == "" {
		return usagef("segment count: --account is required")
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	cs := &contacts.Store{DB: db, Now: e.now}
	expr, err := segmentExpression(ctx, cs, *account, pos[0])
	if err != nil {
		return err
	}
	n, err := cs.CountSegment(ctx, *account, expr)
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "%s active contacts of %s match %s\n", group(n), *account, expr)
	return nil
}
