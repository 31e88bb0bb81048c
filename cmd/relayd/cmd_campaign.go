package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
)

// The campaign commands: campaigns to lists and segments, and their life
// (start, pause, resume, cancel); templates and segments are in
// cmd_template.go.

// openCampaigns opens the database and the campaign store on it.
func (e *env) openCampaigns(ctx context.Context, g *globals) (*campaign.Store, func(), error) {
	db, _, err := e.openMigrated(ctx, g)
	if err != nil {
		return nil, nil, err
	}
	m, err := mailing.New(mailing.Config{DB: db, Now: e.now})
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	quiet := slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{Level: slog.LevelWarn})) // the command prints what it did
	s, err := campaign.New(campaign.Config{DB: db, Mailer: m, Segments: &contacts.Store{DB: db, Now: e.now}, Now: e.now, Logger: quiet})
	if err != nil {
		m.Close()
		db.Close()
		return nil, nil, err
	}
	return s, func() { m.Close(); db.Close() }, nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

func runCampaignCreate(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("campaign create", &g)
	var sp campaign.Spec
	fs.StringVar(&sp.Account, "account", "", "the account (required)")
	fs.StringVar(&sp.Name, "name", "", "the campaign's name (required)")
	fs.StringVar(&sp.From, "from", "", "the From address, one of the account's sender identities (required)")
	replyTo := fs.String("reply-to", "", "comma-separated Reply-To addresses")
	fs.StringVar(&sp.Template, "template", "", "a stored template to copy the subject and bodies from")
	fs.StringVar(&sp.Subject, "subject", "", "the subject template (without --template)")
	textFile := fs.String("text-file", "", "file with the text body template (without --template)")
	htmlFile := fs.String("html-file", "", "file with the HTML body template (without --template)")
	lists := fs.String("lists", "", "comma-separated lists whose subscribed contacts it goes to")
	fs.StringVar(&sp.Segment, "segment", "", "a segment expression the contacts must match, e.g. 'region = \"Lima\"'")
	fs.StringVar(&sp.Topic, "topic", "", "the scope of its unsubscribe links (default: its first list, or its name)")
	tags := fs.String("tags", "", "comma-separated tags for reports")
	sendAt := fs.String("send-at", "", "when to send, 'YYYY-MM-DD HH:MM' in --timezone (default Lima), or RFC 3339")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if sp.Account == "" || sp.Name == "" || sp.From == "" {
		return usagef("campaign create: --account, --name and --from are required")
	}
	var err error
	if sp.Text, err = readBody("text-file", *textFile); err != nil {
		return err
	}
	if sp.HTML, err = readBody("html-file", *htmlFile); err != nil {
		return err
	}
	sp.ReplyTo, sp.Lists, sp.Tags = splitList(*replyTo), splitList(*lists), splitList(*tags)
	if *sendAt != "" {
		if sp.SendAt, err = parseSendAt(*sendAt, g.loc); err != nil {
			return err
		}
	}
	s, done, err := e.openCampaigns(ctx, &g)
	if err != nil {
		return err
	}
	defer done()
	c, err := s.Create(ctx, sp, e.defaultActor())
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, c)
	}
	fmt.Fprintf(e.stdout, "campaign %d %q created as a draft (relayd campaign start %d)\n", c.ID, c.Name, c.ID)
	return nil
}

func parseSendAt(s string, loc *time.Location) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	t, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		return time.Time{}, usagef("--send-at: %q is not 'YYYY-MM-DD HH:MM' (in %s) or RFC 3339", s, loc)
	}
	return t, nil
}

// campaignCmd is a command on one campaign: its id, --account and
// --json, and the campaign store opened (close it).
type campaignCmd struct {
	g       globals
	s       *campaign.Store
	id      int64
	account string
	asJSON  bool
	close   func()
}

// campaignCommand parses the flags common to commands on one campaign
// (its id, --account, --json, and those extra adds) and opens the store.
func (e *env) campaignCommand(ctx context.Context, name string, args []string, extra func(*flag.FlagSet)) (campaignCmd, error) {
	c := campaignCmd{close: func() {}}
	fs := e.flagSet(name, &c.g)
	acct := fs.String("account", "", "the campaign's account (default: any, for an admin)")
	j := fs.Bool("json", false, "print JSON")
	if extra != nil {
		extra(fs)
	}
	pos, err := parse(fs, &c.g, args, 1, 1)
	if err != nil {
		return c, helpOr(err, fs, e)
	}
	id, perr := strconv.ParseInt(pos[0], 10, 64)
	if perr != nil || id <= 0 {
		return c, usagef("%s: %q is not a campaign id", name, pos[0])
	}
	c.id, c.account, c.asJSON = id, *acct, *j
	if c.s, c.close, err = e.openCampaigns(ctx, &c.g); err != nil {
		return c, err
	}
	return c, nil
}

func runCampaignList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("campaign list", &g)
	account := fs.String("account", "", "only this account's campaigns")
	status := fs.String("status", "", "only campaigns in this status (draft, scheduled, running, paused, finished, cancelled)")
	before := fs.Int64("before", 0, "the campaigns older than this id (pagination)")
	limit := fs.Int("limit", 100, "at most this many")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	s, done, err := e.openCampaigns(ctx, &g)
	if err != nil {
		return err
	}
	defer done()
	cs, err := s.List(ctx, *account, campaign.ListOptions{Status: campaign.Status(*status), BeforeID: *before, Limit: *limit})
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, cs)
	}
	if len(cs) == 0 {
		fmt.Fprintln(e.stdout, "no campaigns (relayd campaign create)")
		return nil
	}
	t := &table{head: []string{">ID", "ACCOUNT", "CAMPAIGN", "STATUS", ">RECIPIENTS", "CREATED", "BY"}}
	for _, c := range cs {
		t.add(strconv.FormatInt(c.ID, 10), c.Account, c.Name, string(c.Status), group(c.Targets), c.CreatedAt.In(g.loc).Format("2006-01-02 15:04"), c.CreatedBy)
	}
	t.write(e.stdout)
	return nil
}

func runCampaignShow(ctx context.Context, e *env, args []string) error {
	cc, err := e.campaignCommand(ctx, "campaign show", args, nil)
	if err != nil {
		return err
	}
	defer cc.close()
	p, err := cc.s.Progress(ctx, cc.account, cc.id)
	if err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, p)
	}
	c := p.Campaign
	w := e.stdout
	fmt.Fprintf(w, "campaign %d %q of %s: %s\n", c.ID, c.Name, c.Account, c.Status)
	fmt.Fprintf(w, "from:      %s\nsubject:   %s\ntarget:    lists %s; segment %s\ntopic:     %s\n", c.From, c.Subject, noneIfEmpty(c.Lists), noneIfEmpty(splitList(c.Segment)), c.Topic)
	if !c.SendAt.IsZero() {
		fmt.Fprintf(w, "send at:   %s\n", c.SendAt.In(cc.g.loc).Format("2006-01-02 15:04 MST"))
	}
	fmt.Fprintf(w, "created:   %s by %s\n", c.CreatedAt.In(cc.g.loc).Format("2006-01-02 15:04"), c.CreatedBy)
	if !c.StartedAt.IsZero() {
		fmt.Fprintf(w, "started:   %s by %s; %s recipients, %s stored", c.StartedAt.In(cc.g.loc).Format("2006-01-02 15:04"), c.StartedBy, group(p.Targets), group(p.Stored))
		if p.Skipped > 0 {
			fmt.Fprintf(w, ", %s skipped (deleted or no longer active)", group(p.Skipped))
		}
		fmt.Fprintln(w)
		var parts []string
		for _, st := range []mailing.Status{mailing.StatusQueued, mailing.StatusScheduled, mailing.StatusSending, mailing.StatusDeferred,
			mailing.StatusSent, mailing.StatusBounced, mailing.StatusFailed, mailing.StatusSuppressed, mailing.StatusCancelled} {
			if n := p.Counts[st]; n > 0 {
				parts = append(parts, fmt.Sprintf("%s %s", st, group(int64(n))))
			}
		}
		fmt.Fprintf(w, "progress:  %s\n", noneIfEmpty(parts))
	}
	if c.Error != "" {
		fmt.Fprintf(w, "stopped:   %s\n", c.Error)
	}
	return nil
}

func runCampaignStart(ctx context.Context, e *env, args []string) error {
	var dry, noWait *bool
	cc, err := e.campaignCommand(ctx, "campaign start", args, func(fs *flag.FlagSet) {
		dry = fs.Bool("dry-run", false, "only the preflight: recipients, suppressed, cost against the account's remaining allocation")
		noWait = fs.Bool("no-wait", false, "snapshot the recipients and return: relayd serve stores them")
	})
	if err != nil {
		return err
	}
	defer cc.close()
	if *dry {
		p, err := cc.s.Preflight(ctx, cc.account, cc.id)
		if err != nil {
			return err
		}
		if cc.asJSON {
			return writeJSON(e.stdout, p)
		}
		printPreflight(e, p)
		return nil
	}
	c, p, err := cc.s.Start(ctx, cc.account, cc.id, e.defaultActor())
	if err != nil {
		return err
	}
	if !cc.asJSON {
		printPreflight(e, p)
	}
	if *noWait {
		if cc.asJSON {
			return writeJSON(e.stdout, c)
		}
		fmt.Fprintf(e.stdout, "campaign %d %s: relayd serve stores its %s recipients\n", c.ID, c.Status, group(c.Targets))
		return nil
	}
	if _, err := cc.s.Materialise(ctx, cc.id); err != nil {
		return fmt.Errorf("campaign start: started, but storing its recipients stopped (relayd serve resumes it): %w", err)
	}
	pr, err := cc.s.Progress(ctx, cc.account, cc.id)
	if err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, pr)
	}
	fmt.Fprintf(e.stdout, "campaign %d %s: %s recipients stored\n", c.ID, pr.Campaign.Status, group(pr.Stored))
	if pr.Campaign.Error != "" {
		fmt.Fprintf(e.stdout, "stopped: %s\n", pr.Campaign.Error)
	}
	return nil
}

func printPreflight(e *env, p campaign.Preflight) {
	fmt.Fprintf(e.stdout, "recipients %s, suppressed %s (recorded, not sent, not charged), cost %s of %s remaining: ",
		group(p.Recipients), group(p.Suppressed), group(p.Cost), group(p.Remaining))
	if p.Fits {
		fmt.Fprintln(e.stdout, "fits")
	} else {
		fmt.Fprintln(e.stdout, "does NOT fit (allocate more first: relayd quota transfer)")
	}
}

// runCampaignState is pause, resume and cancel.
func runCampaignState(name string, do func(*campaign.Store, context.Context, string, int64, string) (campaign.Campaign, error)) func(context.Context, *env, []string) error {
	return func(ctx context.Context, e *env, args []string) error {
		cc, err := e.campaignCommand(ctx, "campaign "+name, args, nil)
		if err != nil {
			return err
		}
		defer cc.close()
		c, err := do(cc.s, ctx, cc.account, cc.id, e.defaultActor())
		if err != nil {
			return err
		}
		if cc.asJSON {
			return writeJSON(e.stdout, c)
		}
		fmt.Fprintf(e.stdout, "campaign %d is %s\n", c.ID, c.Status)
		return nil
	}
}

func runCampaignClone(ctx context.Context, e *env, args []string) error {
	var name *string
	cc, err := e.campaignCommand(ctx, "campaign clone", args, func(fs *flag.FlagSet) {
		name = fs.String("name", "", "the new campaign's name (default: the old one and \" (copia)\")")
	})
	if err != nil {
		return err
	}
	defer cc.close()
	c, err := cc.s.Clone(ctx, cc.account, cc.id, *name, e.defaultActor())
	if err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, c)
	}
	fmt.Fprintf(e.stdout, "campaign %d %q created as a draft from campaign %d\n", c.ID, c.Name, cc.id)
	return nil
}

func runCampaignExtend(ctx context.Context, e *env, args []string) error {
	cc, err := e.campaignCommand(ctx, "campaign extend", args, nil)
	if err != nil {
		return err
	}
	defer cc.close()
	n, err := cc.s.Extend(ctx, cc.account, cc.id, e.defaultActor())
	if err != nil {
		return err
	}
	if _, err := cc.s.Materialise(ctx, cc.id); err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, map[string]int64{"added": n})
	}
	fmt.Fprintf(e.stdout, "campaign %d: %s contacts added since the start included\n", cc.id, group(n))
	return nil
}

func runCampaignPreview(ctx context.Context, e *env, args []string) error {
	var as *string
	cc, err := e.campaignCommand(ctx, "campaign preview", args, func(fs *flag.FlagSet) {
		as = fs.String("as", "", "render with this contact's data (default: the target's first contact)")
	})
	if err != nil {
		return err
	}
	defer cc.close()
	p, err := cc.s.Preview(ctx, cc.account, cc.id, *as)
	if err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, p)
	}
	fmt.Fprintf(e.stdout, "To: %s\nSubject: %s\n", p.To, p.Subject)
	if p.Text != "" {
		fmt.Fprintf(e.stdout, "\n--- text ---\n%s\n", p.Text)
	}
	if p.HTML != "" {
		fmt.Fprintf(e.stdout, "\n--- html ---\n%s\n", p.HTML)
	}
	return nil
}

func runCampaignTest(ctx context.Context, e *env, args []string) error {
	var to, as *string
	cc, err := e.campaignCommand(ctx, "campaign test", args, func(fs *flag.FlagSet) {
		to = fs.String("to", "", "the address to send the test to (required)")
		as = fs.String("as", "", "render with this contact's data (default: the target's first contact)")
	})
	if err != nil {
		return err
	}
	defer cc.close()
	if *to == "" {
		return usagef("campaign test: --to is required")
	}
	rec, err := cc.s.Test(ctx, cc.account, cc.id, *to, *as, e.defaultActor())
	if err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, rec)
	}
	fmt.Fprintf(e.stdout, "test of campaign %d queued to %s as message %s (charged, tagged test)\n", cc.id, *to, rec.MessageID)
	return nil
}

func runCampaignRecipients(ctx context.Context, e *env, args []string) error {
	var after, limit *int
	cc, err := e.campaignCommand(ctx, "campaign recipients", args, func(fs *flag.FlagSet) {
		after = fs.Int("after", -1, "the recipients after this seq (pagination)")
		limit = fs.Int("limit", 1000, "at most this many")
	})
	if err != nil {
		return err
	}
	defer cc.close()
	rs, err := cc.s.Recipients(ctx, cc.account, cc.id, *after, *limit)
	if err != nil {
		return err
	}
	if cc.asJSON {
		return writeJSON(e.stdout, rs)
	}
	if len(rs) == 0 {
		fmt.Fprintln(e.stdout, "no recipients stored yet")
		return nil
	}
	t := &table{head: []string{">SEQ", "ADDRESS", "STATUS", ">ATTEMPTS", "LAST ATTEMPT", "SERVER", "REPLY"}}
	for _, r := range rs {
		last := ""
		if !r.LastAttemptAt.IsZero() {
			last = r.LastAttemptAt.In(cc.g.loc).Format("2006-01-02 15:04:05")
		}
		t.add(strconv.Itoa(r.Seq), r.Address, string(r.Status), strconv.Itoa(r.Attempts), last, r.RemoteHost, r.Reply)
	}
	t.write(e.stdout)
	return nil
}
