package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/user"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/credential"
	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// env is everything a command may touch of the outside world, so tests
// run commands in-process with their own streams, clock and environment.
type env struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	now            func() time.Time
	actor          string // who runs admin commands, recorded in the ledger and audit log
}

func (e *env) defaultActor() string {
	if e.actor != "" {
		return e.actor
	}
	if u, err := user.Current(); err == nil && u.Username != "" {
		return "cli:" + u.Username
	}
	return "cli"
}

// command is one row of the command table.
type command struct {
	name    string // words after "relayd", e.g. "quota show"
	args    string // synopsis of its arguments and flags
	summary string
	run     func(ctx context.Context, e *env, args []string) error
}

func commands() []command {
	return []command{
		{"serve", "[--config FILE] [--smtp ADDR|off] [--smtps ADDR|off] [--https ADDR|off] [--http ADDR] [--tls-cert FILE --tls-key FILE] [--hostname NAME] [--smarthost HOST:PORT | --direct] --sending-domain D [--smarthost-user U] [--smarthost-ca FILE] [--smarthost-plaintext] [--dns-server ADDR] [--mx-port P] [--hello-name NAME] [--unsigned-domains D,…] [--workers N] [--node NAME]",
			"run the daemon: migrate the database, accept submissions (SMTP relay on 587 and 465, HTTPS API on 8443), deliver queued mail (smarthost or direct MX), until SIGINT or SIGTERM; SIGHUP reloads the TLS certificate", runServe},
		{"db migrate", "", "apply pending schema migrations", runDBMigrate},
		{"db status", "", "list pending schema migrations", runDBStatus},
		{"quota init", "--from FILE", "create the pool and accounts of a pool file (again: no change)", runQuotaInit},
		{"quota show", "[--pool NAME] [--json]", "the pool and each account: allocated, used, remaining", runQuotaShow},
		{"quota allocate", "ACCOUNT N [--reason TEXT]", "give an account N more messages from the pool's unallocated remainder", runQuotaAllocate},
		{"quota transfer", "FROM TO N --reason TEXT", "move N messages of allocation between accounts", runQuotaTransfer},
		{"quota history", "[ACCOUNT] [--kind K] [--origin O] [--from DATE] [--to DATE] [--limit N] [--json]", "ledger entries, oldest first", runQuotaHistory},
		{"quota usage", "[--account A] [--origin O] [--from DATE] [--to DATE] [--json]", "messages charged and released per day, account and origin", runQuotaUsage},
		{"quota verify", "", "recompute every ledger invariant; exit 1 if one is broken", runQuotaVerify},
		{"account add", "AREA/NAME [--allocation N] [--origin platform|system] [--description TEXT] [--pool NAME]", "add an account to the pool", runAccountAdd},
		{"account list", "[--json]", "every account with its allocation and use", runAccountList},
		{"account disable", "ACCOUNT", "refuse further charges to an account", runAccountDisable},
		{"account enable", "ACCOUNT", "accept charges to a disabled account again", runAccountEnable},
		{"sender add", "ACCOUNT ADDRESS|@DOMAIN", "let an account send as an address, or as any address of a domain", runSenderAdd},
		{"sender list", "[ACCOUNT] [--json]", "the sender identities of one account or of all", runSenderList},
		{"sender remove", "ACCOUNT ADDRESS|@DOMAIN", "withdraw a sender identity", runSenderRemove},
		{"credential add", "ACCOUNT [--name LABEL] [--json]", "create an SMTP credential for an account and print its password (once)", runCredentialAdd},
		{"credential list", "[ACCOUNT] [--json]", "SMTP credentials, with when they were created and revoked", runCredentialList},
		{"credential revoke", "USERNAME", "withdraw an SMTP credential; its open sessions are refused from their next command", runCredentialRevoke},
		{"token add", "ACCOUNT | --admin [--name LABEL] [--json]", "create an HTTPS API bearer token for an account (or every account) and print it (once)", runTokenAdd},
		{"token list", "[--json]", "API tokens with their account, label, creation and revocation times", runTokenList},
		{"token revoke", "ID", "withdraw an API token", runTokenRevoke},
		{"domain add", "DOMAIN [--selector S] [--key rsa2048|ed25519] [--dkim-key-file PATH]", "generate a DKIM key for a From domain and print its DNS record", runDomainAdd},
		{"domain list", "", "the DKIM keys, by domain", runDomainList},
		{"domain rotate", "DOMAIN [--dkim-key-file PATH]", "new keys (new selectors) for each key type in use; they sign from now on", runDomainRotate},
		{"domain retire", "DOMAIN SELECTOR", "stop a DKIM key from signing (after a rotation)", runDomainRetire},
		{"domain keyfile", "PATH", "write a new key file for sealing DKIM private keys in the database (--dkim-key-file)", runDomainKeyfile},
		{"domain seal", "--dkim-key-file PATH", "seal with the key file every DKIM private key and token secret stored in clear", runDomainSeal},
		{"domain check", "DOMAIN [--sending-domain D] [--dns-server ADDR]", "resolve the published records and say what is missing or wrong; exit 1 if anything is", runDomainCheck},
		{"domain dns", "--sending-domain D [--ip IP] [--mx HOST] [--dmarc-report ADDR]", "every DNS record to publish: DKIM, and SPF, DMARC and MX for the sending domain", runDomainDNS},
		{"report recipient", "ADDRESS [--account A] [--json]", "every message to an address (any case): status, attempts, times, the remote server's reply", runReportRecipient},
		{"report message", "ID [--account A] [--json]", "one message: its recipients by status, and each recipient's row", runReportMessage},
		{"report campaign", "NAME [--account A] [--json]", "a campaign per account and origin: messages, recipients by status; its latest messages", runReportCampaign},
		{"report totals", "[--account A] [--origin O] [--from DATE] [--to DATE] [--by day|month|year|account|origin] [--json]", "what happened per day (or month, year; or per account or origin over the range): accepted, sent, deferred, bounced, failed, cancelled", runReportTotals},
		{"report verify", "", "recount every report counter from the recipients and events; exit 1 if one differs", runReportVerify},
		{"report log", "[--account A] [--after ID] [--follow] [--json]", "the events (accepted, sent, deferred, bounced, failed, cancelled) in order; --follow keeps printing them live", runReportLog},
		{"report export", "[--format csv|jsonl] [--account A] [--campaign C] [--message ID] [--address A] [--from DATE] [--to DATE] [-o FILE]", "every matching recipient row as CSV (default) or JSON Lines, streamed", runReportExport},
		{"list create", "NAME --account A [--description D]", "a new contact list of an account", runListCreate},
		{"list ls", "[--account A] [--json]", "the contact lists, with their subscribed and unsubscribed counts", runListList},
		{"contacts import", "FILE --account A --list L [--mode add|update|unsubscribe|blocklist] [--map email=COL,name=COL] [--dry-run] [--json]", "import contacts from a CSV file (any size; UTF-8 or Windows-1252; , ; tab or |) or an Excel workbook (.xlsx): every row lands or is listed with its line and why", runContactsImport},
		{"contacts delete", "ADDRESS --account A --why TEXT", "delete a contact and its list memberships (right to deletion); the record of mail sent to it stays", runContactsDelete},
		{"contacts rejects", "IMPORT [--after LINE] [--limit N] [--json]", "every rejected row of an import, with its line and why", runContactsRejects},
		{"segment save", "NAME --account A --expr EXPRESSION", "save a segment: a filter on contacts' attributes and lists, e.g. 'region = \"Lima\" and list \"boletin\"'", runSegmentSave},
		{"segment ls", "--account A [--json]", "an account's saved segments", runSegmentList},
		{"segment count", "NAME|EXPRESSION --account A", "how many active contacts a segment (saved, or an expression) selects", runSegmentCount},
		{"template save", "NAME (--account A | --shared) --subject S [--text-file F] [--html-file F] [--json]", "store a template (text/template and html/template syntax; merge fields {{.name}}, {{.email}}, {{.ATTRIBUTE}}); again: replaced", runTemplateSave},
		{"template ls", "[--account A] [--json]", "the templates an account may use: its own and the shared ones", runTemplateList},
		{"template show", "NAME [--account A] [--json]", "a template's subject and bodies, and the merge fields it uses", runTemplateShow},
		{"campaign create", "--account A --name N --from ADDR (--template T | --subject S [--text-file F] [--html-file F]) (--lists L,… and/or --segment NAME|EXPR) [--topic T] [--reply-to R] [--tags T,…] [--send-at 'YYYY-MM-DD HH:MM'] [--json]", "a draft campaign; its merge fields are checked against its target's contacts", runCampaignCreate},
		{"campaign list", "[--account A] [--status S] [--before ID] [--limit N] [--json]", "campaigns, newest first", runCampaignList},
		{"campaign show", "ID [--account A] [--json]", "a campaign and its progress: recipients by status", runCampaignShow},
		{"campaign preview", "ID [--as CONTACT] [--account A] [--json]", "the subject, text and HTML as a contact gets them", runCampaignPreview},
		{"campaign test", "ID --to ADDR [--as CONTACT] [--account A] [--json]", "send the campaign to one address with a contact's data (charged, tagged test)", runCampaignTest},
		{"campaign start", "ID [--dry-run] [--no-wait] [--account A] [--json]", "preflight (recipients, suppressed, cost; refused whole if the pool does not fit), then snapshot and store its recipients", runCampaignStart},
		{"campaign pause", "ID [--account A] [--json]", "hold a campaign: no more of its recipients are delivered until resume", runCampaignState("pause", (*campaign.Store).Pause)},
		{"campaign resume", "ID [--account A] [--json]", "continue a paused campaign where it stopped", runCampaignState("resume", (*campaign.Store).Resume)},
		{"campaign cancel", "ID [--account A] [--json]", "cancel the recipients not yet sent; the charge of those never attempted goes back to the account", runCampaignState("cancel", (*campaign.Store).Cancel)},
		{"campaign clone", "ID [--name N] [--account A] [--json]", "a new draft with a campaign's content and target", runCampaignClone},
		{"campaign extend", "ID [--account A] [--json]", "include the contacts added to the target since the start", runCampaignExtend},
		{"campaign recipients", "ID [--after SEQ] [--limit N] [--account A] [--json]", "a campaign's recipients: status, attempts, server and reply of each", runCampaignRecipients},
		{"inbound list", "[--mailbox M] [--kind K|pending] [--after ID] [--limit N] [--json]", "what the MX of the sending domain received (serve --mx): bounces, complaints, unsubscribes, mail to postmaster@, abuse@, fbl@, with what was done", runInboundList},
		{"inbound show", "ID [--raw] [--json]", "one received message: envelope, client, size and hash, kind and result; --raw its stored bytes", runInboundShow},
		{"suppression list", "[--address A] [--reason R] [--active] [--after ID] [--limit N] [--json]", "suppression-list entries in id order, removed and expired ones too (--active: only those that stop mail now)", runSuppressionList},
		{"suppression add", "ADDRESS --why TEXT [--reason manual|import|hard_bounce|complaint|unsubscribe] [--scope all|bulk|account] [--account A] [--topic T] [--expires DATE|DURATION]", "stop mail to an address: all of it (default), all bulk mail (complaint), or one account's bulk mail, of one topic or all (--account; unsubscribe)", runSuppressionAdd},
		{"suppression remove", "ADDRESS --why TEXT [--id N]", "mark an address's active suppressions (or entry N) removed; the rows stay, with who and why", runSuppressionRemove},
		{"suppression check", "ADDRESS [--account A] [--bulk] [--topic T] [--json]", "would mail to an address be stopped now (transactional unless --bulk), and by which entry; exit 0 either way", runSuppressionCheck},
		{"suppression export", "[--format csv|jsonl] [-o FILE]", "every entry, removed and expired ones too, as CSV (default) or JSON Lines, streamed", runSuppressionExport},
		{"suppression import", "FILE --why TEXT [--reason import] [--scope all|bulk|account] [--account A] [--topic T] [--dry-run]", "add the addresses of a file (one a line, or a CSV whose first column is the address), committed 1,000 lines at a time; prints each rejected line and the counts", runSuppressionImport},
	}
}

// usageError is a mistake in how relayd was invoked: exit code 2.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// errProblems reports that a check found problems it already printed.
var errProblems = errors.New("problems found")

// run executes one relayd command line and returns the process exit code:
// 0 success, 1 the operation failed, 2 the command line is wrong.
func run(ctx context.Context, e *env, args []string) int {
	err := dispatch(ctx, e, args)
	if err == nil {
		return 0
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if !errors.Is(err, errProblems) {
		fmt.Fprintf(e.stderr, "relayd: %s\n", describe(err))
	}
	var ue *usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

func dispatch(ctx context.Context, e *env, args []string) error {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printHelp(e.stdout, "")
		return nil
	}
	cmds := commands()
	for _, c := range cmds {
		words := strings.Fields(c.name)
		if len(args) >= len(words) && strings.Join(args[:len(words)], " ") == c.name {
			return c.run(ctx, e, args[len(words):])
		}
	}
	// A known group with an unknown or missing subcommand.
	for _, c := range cmds {
		if group, _, ok := strings.Cut(c.name, " "); ok && group == args[0] {
			if len(args) == 1 {
				printHelp(e.stderr, group)
				return usagef("%s: missing subcommand", group)
			}
			if args[1] == "-h" || args[1] == "--help" || args[1] == "help" {
				printHelp(e.stdout, group)
				return nil
			}
			return usagef("unknown command %q (see relayd %s --help)", group+" "+args[1], group)
		}
	}
	return usagef("unknown command %q (see relayd --help)", args[0])
}

func printHelp(w io.Writer, group string) {
	fmt.Fprintln(w, "relayd — the envios SMTP relay and its admin commands")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Usage: relayd COMMAND [ARGS] [FLAGS]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Commands:")
	for _, c := range commands() {
		if group != "" && !strings.HasPrefix(c.name, group+" ") {
			continue
		}
		fmt.Fprintf(w, "  %s\n      %s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Flags every command takes:")
	fmt.Fprintln(w, "  --db DSN                    database: a postgres:// URL or a SQLite file path (env RELAYD_DB; default DATA_DIR/relayd.db)")
	fmt.Fprintln(w, "  --data-dir DIR              where the embedded database and generated files live (env RELAYD_DATA_DIR; default ./data)")
	fmt.Fprintln(w, "  --timezone ZONE             time zone for dates shown and typed (env RELAYD_TIMEZONE; default America/Lima)")
	fmt.Fprintln(w, "  --allow-unsafe-durability   open a database whose fsync/synchronous settings can lose commits, with a warning")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "Exit codes: 0 success, 1 the operation failed (nothing was changed), 2 bad command line.")
}

// prefixes the CLI drops from error texts: the sentinel names add nothing a
// reader needs on one line.
var sentinelPrefixes = []error{quota.ErrInvalid, quota.ErrNotFound, quota.ErrExists, dkimkey.ErrExists,
	credential.ErrNotFound, credential.ErrInvalid, apitoken.ErrNotFound, apitoken.ErrInvalid, report.ErrNotFound, report.ErrInvalid}

// describe renders an error as the one line relayd prints.
func describe(err error) string {
	var ie *quota.InsufficientError
	var ue *quota.UnallocatedError
	var me *mailing.Error
	switch {
	case errors.As(err, &ie) && ie.Transfer:
		return fmt.Sprintf("account %s has %s unused messages: cannot transfer %s", ie.Account, group(ie.Remaining), group(ie.Requested))
	case errors.As(err, &ie):
		return fmt.Sprintf("account %s has %s messages left: cannot charge %s", ie.Account, group(ie.Remaining), group(ie.Requested))
	case errors.As(err, &ue):
		return fmt.Sprintf("pool %s has %s unallocated messages: cannot allocate %s (transfer from another account instead)", ue.Pool, group(ue.Unallocated), group(ue.Requested))
	case errors.As(err, &me) && errors.As(err, new(*mailing.AddressError)):
		return "invalid address " + me.Public
	case errors.As(err, &me) && !errors.Is(err, quota.ErrInsufficient):
		return me.Public // the library's refusals carry their own words
	}
	msg := err.Error()
	for _, s := range sentinelPrefixes {
		msg = strings.ReplaceAll(msg, s.Error()+": ", "")
	}
	msg = strings.ReplaceAll(msg, "quota: ", "")
	msg = strings.ReplaceAll(msg, "store: ", "")
	msg = strings.ReplaceAll(msg, "mailing: ", "")
	msg = strings.ReplaceAll(msg, "dkimkey: ", "")
	msg = strings.ReplaceAll(msg, "credential: ", "")
	msg = strings.ReplaceAll(msg, "apitoken: ", "")
	msg = strings.ReplaceAll(msg, "report: ", "")
	return strings.Join(strings.Fields(msg), " ")
}

// globals are the flags every command takes.
type globals struct {
	db, dataDir, timezone string
	allowUnsafe           bool
	loc                   *time.Location
}

// flagSet returns a FlagSet for command name with the global flags on it.
func (e *env) flagSet(name string, g *globals) *flag.FlagSet {
	fs := flag.NewFlagSet("relayd "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&g.db, "db", e.getenv("RELAYD_DB"), "database DSN")
	dataDir := e.getenv("RELAYD_DATA_DIR")
	if dataDir == "" {
		dataDir = "data"
	}
	fs.StringVar(&g.dataDir, "data-dir", dataDir, "data directory")
	tz := e.getenv("RELAYD_TIMEZONE")
	if tz == "" {
		tz = "America/Lima"
	}
	fs.StringVar(&g.timezone, "timezone", tz, "time zone")
	fs.BoolVar(&g.allowUnsafe, "allow-unsafe-durability", false, "open a non-durable database")
	return fs
}

var numberLike = regexp.MustCompile(`^-[0-9][0-9,_]*$`)

// parse parses flags anywhere among the arguments (relayd quota transfer A
// B 10 --reason x) and returns the positional ones, of which there must be
// between min and max. "-5" is a positional (a bad amount), not a flag.
func parse(fs *flag.FlagSet, g *globals, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, usagef("%s: %v", strings.TrimPrefix(fs.Name(), "relayd "), err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		if rest[0] == "--" {
			pos = append(pos, rest[1:]...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
		// Numbers that look like flags are positionals.
		for len(args) > 0 && numberLike.MatchString(args[0]) {
			pos = append(pos, args[0])
			args = args[1:]
		}
	}
	if len(pos) < min {
		return nil, usagef("%s: missing arguments (want %s)", strings.TrimPrefix(fs.Name(), "relayd "), synopsis(fs.Name()))
	}
	if len(pos) > max {
		return nil, usagef("%s: unexpected argument %q", strings.TrimPrefix(fs.Name(), "relayd "), pos[max])
	}
	if g != nil {
		loc, err := time.LoadLocation(g.timezone)
		if err != nil {
			return nil, usagef("--timezone: unknown time zone %q", g.timezone)
		}
		g.loc = loc
	}
	return pos, nil
}

func synopsis(fsName string) string {
	name := strings.TrimPrefix(fsName, "relayd ")
	for _, c := range commands() {
		if c.name == name {
			return c.args
		}
	}
	return ""
}

func helpFor(fs *flag.FlagSet, e *env) {
	name := strings.TrimPrefix(fs.Name(), "relayd ")
	for _, c := range commands() {
		if c.name == name {
			fmt.Fprintf(e.stdout, "Usage: relayd %s\n\n%s\n", strings.TrimSpace(c.name+" "+c.args), c.summary)
		}
	}
}

// dsn resolves the database the globals select.
func (g *globals) dsn() string {
	if g.db != "" {
		return g.db
	}
	return filepath.Join(g.dataDir, "relayd.db")
}

// open opens the database and, unless migrate is false, refuses a schema
// with pending migrations (commands other than serve and db migrate never
// change the schema behind a running server's back).
func (e *env) open(ctx context.Context, g *globals, logger *slog.Logger) (*bun.DB, error) {
	db, err := store.Open(ctx, store.Config{DSN: g.dsn(), AllowUnsafeDurability: g.allowUnsafe, Logger: logger})
	if err != nil {
		return nil, err
	}
	return db, nil
}

func (e *env) openMigrated(ctx context.Context, g *globals) (*bun.DB, *quota.Ledger, error) {
	db, err := e.open(ctx, g, e.logger())
	if err != nil {
		return nil, nil, err
	}
	pending, err := store.Pending(ctx, db)
	if err != nil {
		db.Close()
		return nil, nil, err
	}
	if len(pending) > 0 {
		db.Close()
		return nil, nil, fmt.Errorf("database schema is not up to date (%d pending %s): run relayd db migrate",
			len(pending), plural(len(pending), "migration", "migrations"))
	}
	return db, quota.New(db, quota.Config{Now: e.now}), nil
}

// parseAndOpen parses a command line and opens the migrated database with
// its ledger; the caller closes db.
func (e *env) parseAndOpen(ctx context.Context, fs *flag.FlagSet, g *globals, args []string, min, max int) ([]string, *bun.DB, *quota.Ledger, error) {
	pos, err := parse(fs, g, args, min, max)
	if err != nil {
		return nil, nil, nil, helpOr(err, fs, e)
	}
	db, l, err := e.openMigrated(ctx, g)
	if err != nil {
		return nil, nil, nil, err
	}
	return pos, db, l, nil
}

func (e *env) logger() *slog.Logger {
	return slog.New(slog.NewTextHandler(e.stderr, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if a.Key == slog.TimeKey && len(groups) == 0 {
				return slog.Attr{}
			}
			return a
		},
	}))
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// helpOr prints a command's help when err is flag.ErrHelp (-h, --help).
func helpOr(err error, fs *flag.FlagSet, e *env) error {
	if errors.Is(err, flag.ErrHelp) {
		helpFor(fs, e)
	}
	return err
}
