package main

import (
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// parseAndOpenReporter is parseAndOpen with a Reporter showing times in
// --timezone; the caller closes db.
func (e *env) parseAndOpenReporter(ctx context.Context, fs *flag.FlagSet, g *globals, args []string, min, max int) ([]string, *bun.DB, *report.Reporter, error) {
	pos, db, _, err := e.parseAndOpen(ctx, fs, g, args, min, max)
	if err != nil {
		return nil, nil, nil, err
	}
	return pos, db, report.New(db, report.Config{Location: g.loc, Now: e.now}), nil
}

const stampLayout = "2006-01-02 15:04:05"

func stamp(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.Format(stampLayout)
}

// clip shortens s to n runes for a table cell.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	return string([]rune(s)[:n-1]) + "…"
}

// rowsTable renders recipient rows; times in loc.
func rowsTable(rows []report.Row, loc *time.Location) *table {
	t := &table{head: []string{">ID", "ACCEPTED (" + loc.String() + ")", "ACCOUNT", "ORIGIN", "MESSAGE", "CAMPAIGN", "SUBJECT",
		"ADDRESS", "STATUS", ">ATTEMPTS", "LAST ATTEMPT", "FINAL", "REMOTE", "REPLY"}}
	for _, r := range rows {
		t.add(fmt.Sprint(r.ID), stamp(r.AcceptedAt), r.Account, string(r.Origin), r.MessageID, clip(r.Campaign, 24), clip(r.Subject, 40),
			r.Address, string(r.Status), fmt.Sprint(r.Attempts), stamp(r.LastAttemptAt), stamp(r.FinalAt), r.RemoteHost, clip(r.Reply, 60))
	}
	return t
}

func runReportRecipient(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report recipient", &g)
	account := fs.String("account", "", "only this account's messages")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, db, rep, err := e.parseAndOpenReporter(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	f := report.Filter{Account: *account, Address: pos[0], Limit: report.MaxPage}
	rows := []report.Row{}
	for {
		p, err := rep.Recipient(ctx, f)
		if err != nil {
			return err
		}
		rows = append(rows, p.Rows...)
		if f.After = p.Next; f.After == 0 {
			break
		}
	}
	ids := make([]int64, len(rows))
	for i, r := range rows {
		ids[i] = r.ID
	}
	attempts, err := rep.Attempts(ctx, ids)
	if err != nil {
		return err
	}
	feedback, err := rep.Feedback(ctx, ids)
	if err != nil {
		return err
	}
	sups, err := rep.Suppressions(ctx, pos[0])
	if err != nil {
		return err
	}
	if *account != "" { // another account's unsubscribes are its own business
		sups = slices.DeleteFunc(sups, func(s report.Suppression) bool { return s.Account != "" && s.Account != *account })
	}
	if *asJSON {
		// One object per message, as before; each also carries the
		// address's suppressions (the same for every row).
		type rowJSON struct {
			report.Row
			AttemptLog   []report.Attempt     `json:"attempt_log"`
			Feedback     []report.Feedback    `json:"feedback"`
			Suppressions []report.Suppression `json:"suppressions"`
		}
		if sups == nil {
			sups = []report.Suppression{}
		}
		out := make([]rowJSON, len(rows))
		for i, r := range rows {
			out[i] = rowJSON{r, attempts[r.ID], feedback[r.ID], sups}
			if out[i].AttemptLog == nil {
				out[i].AttemptLog = []report.Attempt{}
			}
			if out[i].Feedback == nil {
				out[i].Feedback = []report.Feedback{}
			}
		}
		return writeJSON(e.stdout, out)
	}
	if len(rows) == 0 {
		fmt.Fprintf(e.stdout, "no messages to %s\n", report.NormalizeAddress(pos[0]))
		return nil
	}
	rowsTable(rows, g.loc).write(e.stdout)
	// Each attempt, with its time and the server's reply.
	t := &table{head: []string{"RECIPIENT", "MESSAGE", "ATTEMPT (" + g.loc.String() + ")", "RESULT", "SERVER", "REPLY"}}
	n := 0
	for _, r := range rows {
		for _, a := range attempts[r.ID] {
			t.add(fmt.Sprint(r.ID), r.MessageID, a.At.In(g.loc).Format("2006-01-02 15:04:05"), a.Result, a.RemoteHost, a.Reply)
			n++
		}
	}
	if n > 0 {
		fmt.Fprintln(e.stdout)
		t.write(e.stdout)
	}
	writeFeedback(e, g.loc, rows, feedback, sups)
	return nil
}

// writeFeedback prints what came back for each message after delivery
// (DSNs, complaints, unsubscribes) and the address's suppressions.
func writeFeedback(e *env, loc *time.Location, rows []report.Row, feedback map[int64][]report.Feedback, sups []report.Suppression) {
	t := &table{head: []string{"RECIPIENT", "MESSAGE", "FEEDBACK (" + loc.String() + ")", "EVENT", "CLASS", "STATUS", "DIAGNOSTIC"}}
	for _, r := range rows {
		for _, f := range feedback[r.ID] {
			diag := f.Detail["diagnostic"]
			if diag == "" {
				diag = f.Reply
			}
			t.add(fmt.Sprint(r.ID), r.MessageID, f.At.In(loc).Format("2006-01-02 15:04:05"), f.Type, f.Class, f.Detail["status"], diag)
		}
	}
	if len(t.rows) > 0 {
		fmt.Fprintln(e.stdout)
		t.write(e.stdout)
	}
	if len(sups) == 0 {
		return
	}
	s := &table{head: []string{"SUPPRESSION", "SCOPE", "ACCOUNT", "TOPIC", "REASON", "SINCE", "EXPIRES", "REMOVED", "BY"}}
	day := func(t time.Time) string {
		if t.IsZero() {
			return "-"
		}
		return t.In(loc).Format("2006-01-02")
	}
	for _, x := range sups {
		s.add(fmt.Sprint(x.ID), x.Scope, x.Account, x.Topic, x.Reason, day(x.CreatedAt), day(x.ExpiresAt), day(x.RemovedAt), x.Actor)
	}
	fmt.Fprintln(e.stdout)
	s.write(e.stdout)
}

func runReportMessage(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report message", &g)
	account := fs.String("account", "", "only if the message is this account's")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, db, rep, err := e.parseAndOpenReporter(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	m, err := rep.Message(ctx, *account, pos[0])
	if err != nil {
		return err
	}
	p, err := rep.Rows(ctx, report.Filter{Account: *account, MessageID: m.ID, Limit: report.DefaultPage})
	if err != nil {
		return err
	}
	if *asJSON {
		rows := p.Rows
		if rows == nil {
			rows = []report.Row{}
		}
		return writeJSON(e.stdout, struct {
			report.Message
			Recipients []report.Row `json:"recipients"`
			More       bool         `json:"more_recipients"` // more than shown: use relayd report export --message
		}{m, rows, p.Next != 0})
	}
	w := e.stdout
	fmt.Fprintf(w, "Message %s\n", m.ID)
	field := func(name, value string) {
		if value != "" {
			fmt.Fprintf(w, "  %-11s %s\n", name, value)
		}
	}
	field("account", fmt.Sprintf("%s (%s)", m.Account, m.Origin))
	field("kind", m.Kind)
	field("campaign", m.Campaign)
	field("tags", strings.Join(m.Tags, ", "))
	field("from", m.From)
	field("subject", m.Subject)
	field("accepted", fmt.Sprintf("%s (%s)", stamp(m.AcceptedAt), g.loc))
	field("send at", stamp(m.SendAt))
	field("cancelled", stamp(m.CancelledAt))
	field("recipients", countsLine(m.Counts))
	fmt.Fprintln(w)
	rowsTable(p.Rows, g.loc).write(w)
	if p.Next != 0 {
		fmt.Fprintf(w, "(first %s recipients shown: relayd report export --message %s lists them all)\n", group(int64(len(p.Rows))), m.ID)
	}
	return nil
}

// countsLine renders counts as "5 accepted: 3 sent, 1 bounced, 1 deferred".
func countsLine(c report.Counts) string {
	var parts []string
	for _, x := range []struct {
		n    int64
		name string
	}{{c.Queued, "queued"}, {c.Scheduled, "scheduled"}, {c.Sending, "sending"}, {c.Deferred, "deferred"}, {c.Sent, "sent"},
		{c.Bounced, "bounced"}, {c.Failed, "failed"}, {c.Suppressed, "suppressed"}, {c.Cancelled, "cancelled"}} {
		if x.n > 0 {
			parts = append(parts, group(x.n)+" "+x.name)
		}
	}
	if len(parts) == 0 {
		return group(c.Accepted) + " accepted"
	}
	return group(c.Accepted) + " accepted: " + strings.Join(parts, ", ")
}

// countsHead and countsCells are the status columns of the totals tables.
var countsHead = []string{">ACCEPTED", ">QUEUED", ">SCHEDULED", ">SENDING", ">DEFERRED", ">SENT", ">BOUNCED", ">FAILED", ">SUPPRESSED", ">CANCELLED"}

func countsCells(c report.Counts) []string {
	return []string{group(c.Accepted), group(c.Queued), group(c.Scheduled), group(c.Sending), group(c.Deferred), group(c.Sent),
		group(c.Bounced), group(c.Failed), group(c.Suppressed), group(c.Cancelled)}
}

func runReportCampaign(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report campaign", &g)
	account := fs.String("account", "", "only this account's messages")
	asJSON := fs.Bool("json", false, "print JSON")
	pos, db, rep, err := e.parseAndOpenReporter(ctx, fs, &g, args, 1, 1)
	if err != nil {
		return err
	}
	defer db.Close()
	const latest = 20
	f := report.Filter{Account: *account, Campaign: pos[0]}
	parts, err := rep.Campaign(ctx, f)
	if err != nil {
		return err
	}
	f.Limit = latest
	ms, err := rep.Messages(ctx, f)
	if err != nil {
		return err
	}
	if *asJSON {
		return writeJSON(e.stdout, struct {
			Campaign string                `json:"campaign"`
			Parts    []report.CampaignPart `json:"parts"`
			Latest   []report.Message      `json:"latest_messages"`
		}{pos[0], parts, ms})
	}
	fmt.Fprintf(e.stdout, "Campaign %s\n\n", pos[0])
	t := &table{head: append([]string{"ACCOUNT", "ORIGIN", ">MESSAGES", "FIRST (" + g.loc.String() + ")", "LAST"}, countsHead...)}
	var sum report.Counts
	var msgs int64
	for _, p := range parts {
		t.add(append([]string{p.Account, string(p.Origin), group(p.Messages), stamp(p.FirstAcceptedAt), stamp(p.LastAcceptedAt)}, countsCells(p.Counts)...)...)
		sum, msgs = sum.Plus(p.Counts), msgs+p.Messages
	}
	if len(parts) > 1 {
		t.add(append([]string{"TOTAL", "", group(msgs), "", ""}, countsCells(sum)...)...)
	}
	t.write(e.stdout)
	fmt.Fprintf(e.stdout, "\nLatest messages:\n")
	mt := &table{head: []string{"MESSAGE", "ACCEPTED", "ACCOUNT", "SUBJECT", "RECIPIENTS"}}
	for _, m := range ms {
		mt.add(m.ID, stamp(m.AcceptedAt), m.Account, clip(m.Subject, 40), countsLine(m.Counts))
	}
	mt.write(e.stdout)
	if msgs > int64(len(ms)) {
		fmt.Fprintf(e.stdout, "(%d of %s shown)\n", len(ms), group(msgs))
	}
	return nil
}

func runReportTotals(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report totals", &g)
	account := fs.String("account", "", "only this account")
	origin := fs.String("origin", "", "only this origin: library, smtp, http, campaign or cli")
	from := fs.String("from", "", "first day (YYYY-MM-DD)")
	to := fs.String("to", "", "last day, inclusive (YYYY-MM-DD)")
	by := fs.String("by", "day", "day, month, year, account or origin")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	f := report.ActivityFilter{Account: *account, Origin: quota.Origin(*origin), By: report.Period(*by)}
	layout, ok := map[string]string{"day": time.DateOnly, "month": "2006-01", "year": "2006", "account": "", "origin": ""}[*by]
	if !ok {
		return usagef("--by must be day, month, year, account or origin, not %q", *by)
	}
	var err error
	if f.From, f.To, err = dayRange(*from, *to, g.loc); err != nil {
		return err
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	as, err := report.New(db, report.Config{Location: g.loc, Now: e.now}).Activity(ctx, f)
	if err != nil {
		return err
	}
	period := func(a report.Activity) string {
		if layout == "" {
			return ""
		}
		return a.Period.Format(layout)
	}
	if *asJSON {
		type totalJSON struct {
			Period string `json:"period,omitempty"`
			report.Activity
		}
		out := []totalJSON{}
		for _, x := range as {
			out = append(out, totalJSON{period(x), x})
		}
		return writeJSON(e.stdout, out)
	}
	if len(as) == 0 {
		fmt.Fprintln(e.stdout, "nothing happened in that period")
		return nil
	}
	head := []string{strings.ToUpper(*by), "ACCOUNT", "ORIGIN"}
	if layout == "" {
		head = []string{"ACCOUNT", "ORIGIN"}
	}
	t := &table{head: append(head, ">ACCEPTED", ">SENT", ">DEFERRED", ">BOUNCED", ">FAILED", ">SUPPRESSED", ">CANCELLED",
		">COMPLAINED", ">UNSUBSCRIBED", ">BOUNCE%", ">COMPLAINT%")}
	cells := func(x report.Activity) []string {
		return []string{group(x.Accepted), group(x.Sent), group(x.Deferred), group(x.Bounced), group(x.Failed), group(x.Suppressed),
			group(x.Cancelled), group(x.Complained), group(x.Unsubscribed), percent(x.BounceRate), percent(x.ComplaintRate)}
	}
	var sum report.Activity
	for _, x := range as {
		row := []string{x.Account, string(x.Origin)}
		if layout != "" {
			row = append([]string{period(x)}, row...)
		}
		t.add(append(row, cells(x)...)...)
		sum.Sum(x)
	}
	total := []string{"TOTAL", ""}
	if layout != "" {
		total = append(total, "")
	}
	t.add(append(total, cells(sum)...)...)
	t.write(e.stdout)
	fmt.Fprintf(e.stdout, "(what happened in each period, in %s: recipients accepted, sent, deferring attempts, bounced, failed, "+
		"suppressed, cancelled, complaints, unsubscribes, bounces of sent+bounced, complaints of sent; from the counters kept with each change)\n", g.loc)
	return nil
}

func runReportVerify(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report verify", &g)
	_, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	problems, err := report.New(db, report.Config{Location: g.loc, Now: e.now}).Verify(ctx)
	if err != nil {
		return err
	}
	if len(problems) > 0 {
		for _, p := range problems {
			fmt.Fprintln(e.stdout, "PROBLEM", p)
		}
		return errProblems
	}
	fmt.Fprintln(e.stdout, "report counters verified: every counter equals its recount from the recipients and events")
	return nil
}

func runReportLog(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report log", &g)
	account := fs.String("account", "", "only this account")
	follow := fs.Bool("follow", false, "keep printing events as they happen, until interrupted")
	after := fs.String("after", "", "start after this event id (R.E or R.E.A, printed with each event); default: the beginning")
	asJSON := fs.Bool("json", false, "print one JSON object per event")
	_, db, _, err := e.parseAndOpen(ctx, fs, &g, args, 0, 0)
	if err != nil {
		return err
	}
	defer db.Close()
	cur, err := report.ParseCursor(*after)
	if err != nil {
		return usagef("report log: --after %q must be an event id R.E or R.E.A", *after)
	}
	rep := report.New(db, report.Config{Location: g.loc, Now: e.now})
	lag := time.Duration(-1) // without --follow: everything committed
	if *follow {
		lag = 0 // the default: a few seconds behind, so no slow transaction is skipped
	}
	for {
		evs, next, err := rep.Events(ctx, report.EventsFilter{Account: *account, After: cur, Lag: lag})
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		for _, ev := range evs {
			if *asJSON {
				if err := writeJSONLine(e.stdout, ev); err != nil {
					return err
				}
				continue
			}
			reply := ev.Reply
			if ev.Class != "" {
				reply = "(" + ev.Class + ") " + reply
			}
			fmt.Fprintf(e.stdout, "%s  %-9s  %s  %s  %s  %s %s\n", ev.At.Format("2006-01-02 15:04:05"), ev.Type, cmp.Or(ev.Account, "-"), ev.Address,
				cmp.Or(ev.MessageID, "-"), reply, "["+ev.ID+"]")
		}
		cur = next
		if len(evs) > 0 {
			continue
		}
		if !*follow {
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

func runReportExport(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("report export", &g)
	format := fs.String("format", "csv", "csv or jsonl")
	account := fs.String("account", "", "only this account")
	campaign := fs.String("campaign", "", "only this campaign")
	message := fs.String("message", "", "only this message")
	address := fs.String("address", "", "only this recipient address")
	from := fs.String("from", "", "first day (YYYY-MM-DD)")
	to := fs.String("to", "", "last day, inclusive (YYYY-MM-DD)")
	out := fs.String("o", "", "write to FILE (default standard output)")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *format != string(report.CSV) && *format != string(report.JSONLines) {
		return usagef("--format must be csv or jsonl, not %q", *format)
	}
	f := report.Filter{Account: *account, Campaign: *campaign, MessageID: *message, Address: *address}
	var err error
	if f.From, f.To, err = dayRange(*from, *to, g.loc); err != nil {
		return err
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	rep := report.New(db, report.Config{Location: g.loc, Now: e.now})
	if *out == "" {
		_, err := rep.Export(ctx, e.stdout, report.Format(*format), f)
		return err
	}
	n, err := exportFile(ctx, rep, *out, report.Format(*format), f, terminal(e.stderr))
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stdout, "exported %s %s to %s\n", group(n), plural(int(n), "recipient", "recipients"), *out)
	return nil
}

// exportFile writes the export beside path and renames it into place when
// it is complete, so a failed export never leaves a partial file.
// On a terminal (progress not nil) it shows the rows and bytes written as
// it goes.
func exportFile(ctx context.Context, rep *report.Reporter, path string, format report.Format, f report.Filter, progress io.Writer) (int64, error) {
	return writeFileAtomic(path, func(w io.Writer) (int64, error) {
		cw := &progressWriter{w: w}
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			if progress == nil {
				return
			}
			start := time.Now()
			tick := time.NewTicker(250 * time.Millisecond)
			defer tick.Stop()
			show := func(end string) {
				rows, size := cw.rows.Load(), cw.bytes.Load()
				fmt.Fprintf(progress, "\rexporting to %s: %s rows, %.1f MB, %s rows/s%s", path, group(rows), float64(size)/(1<<20),
					group(int64(float64(rows)/max(time.Since(start).Seconds(), 0.001))), end)
			}
			for {
				select {
				case <-tick.C:
					show("")
				case <-stop:
					show("\n")
					return
				}
			}
		}()
		n, err := rep.Export(ctx, cw, format, f)
		close(stop)
		<-done
		return n, err
	})
}

// progressWriter counts what goes through it: bytes, and lines (rows).
type progressWriter struct {
	w           io.Writer
	rows, bytes atomic.Int64
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.bytes.Add(int64(n))
	p.rows.Add(int64(bytes.Count(b[:n], []byte{'\n'})))
	return n, err
}

// terminal returns w if it is a terminal, for progress displays; nil
// otherwise (a pipe or a file gets no progress lines).
func terminal(w io.Writer) io.Writer {
	f, ok := w.(*os.File)
	if !ok {
		return nil
	}
	if fi, err := f.Stat(); err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return nil
	}
	return w
}
