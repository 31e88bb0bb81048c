package main

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/servir-pe/envios/internal/inbound"
	"github.com/servir-pe/envios/internal/mailstore"
)

// The inbound commands: what the MX of the sending domain received
// (relayd serve --mx), kept permanently — bounces and complaints with what
// was done about them, and the mail to postmaster@, abuse@ and fbl@ that
// waits for an admin to read it.

var inboundKinds = []string{"dsn", "delayed", "complaint", "auto-reply", "feedback", "unknown", "unsubscribe", "pending"}

var inboundMailboxes = []string{inbound.MailboxBounce, inbound.MailboxUnsubscribe, inbound.MailboxPostmaster, inbound.MailboxAbuse, inbound.MailboxFBL}

// inboundJSON is a stored message as --json shows it (without its bytes).
type inboundJSON struct {
	ID          int64     `json:"id"`
	ReceivedAt  time.Time `json:"received_at"`
	RemoteAddr  string    `json:"remote_addr"`
	Helo        string    `json:"helo"`
	MailFrom    string    `json:"mail_from"`
	Rcpt        string    `json:"rcpt"`
	Mailbox     string    `json:"mailbox"`
	RecipientID *int64    `json:"recipient_id"`
	Size        int64     `json:"size"`
	SHA256      string    `json:"sha256"`
	Truncated   bool      `json:"truncated"`
	Kind        string    `json:"kind"` // "" while not processed
	Result      string    `json:"result"`
	Subject     string    `json:"subject"`
}

func inboundOut(r mailstore.InboundRow, loc *time.Location) inboundJSON {
	return inboundJSON{ID: r.ID, ReceivedAt: r.ReceivedAt.In(loc).Truncate(time.Second), RemoteAddr: r.RemoteAddr, Helo: r.Helo,
		MailFrom: r.MailFrom, Rcpt: r.Rcpt, Mailbox: r.Mailbox, RecipientID: r.RecipientID, Size: r.Size, SHA256: r.SHA256,
		Truncated: r.Truncated, Kind: r.Kind, Result: r.Result, Subject: headerOf(r.Raw, "Subject")}
}

// headerOf is the first field name of raw's header, unfolded, cut to 200
// bytes: enough to recognise a message in a list.
func headerOf(raw []byte, name string) string {
	head, _, _ := strings.Cut(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n\n")
	lines := strings.Split(head, "\n")
	for i, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok || !strings.EqualFold(strings.TrimSpace(k), name) {
			continue
		}
		for _, c := range lines[i+1:] {
			if c == "" || (c[0] != ' ' && c[0] != '\t') {
				break
			}
			v += " " + strings.TrimSpace(c)
		}
		v = strings.ToValidUTF8(strings.TrimSpace(v), "?")
		if len(v) > 200 {
			v = v[:200]
		}
		return v
	}
	return ""
}

func runInboundList(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("inbound list", &g)
	mailbox := fs.String("mailbox", "", "only this mailbox: "+strings.Join(inboundMailboxes, ", "))
	kind := fs.String("kind", "", "only this kind (dsn, delayed, complaint, auto-reply, feedback, unknown, unsubscribe; pending: not processed yet)")
	after := fs.Int64("after", 0, "the messages after this id")
	limit := fs.Int("limit", 100, "at most this many messages")
	asJSON := fs.Bool("json", false, "print JSON")
	if _, err := parse(fs, &g, args, 0, 0); err != nil {
		return helpOr(err, fs, e)
	}
	if *mailbox != "" && !slices.Contains(inboundMailboxes, *mailbox) {
		return usagef("inbound list: --mailbox must be one of %s, not %q", strings.Join(inboundMailboxes, ", "), *mailbox)
	}
	if *kind != "" && !slices.Contains(inboundKinds, *kind) {
		return usagef("inbound list: --kind must be one of %s, not %q", strings.Join(inboundKinds, ", "), *kind)
	}
	if *limit < 1 || *limit > 10000 {
		return usagef("inbound list: --limit must be between 1 and 10,000, not %d", *limit)
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	var rows []mailstore.InboundRow
	q := db.NewSelect().Model(&rows).Where("id > ?", *after).Order("id").Limit(int64(*limit))
	if *mailbox != "" {
		q = q.Where("mailbox = ?", *mailbox)
	}
	switch *kind {
	case "":
	case "pending":
		q = q.Where("kind = ''")
	default:
		q = q.Where("kind = ?", *kind)
	}
	if err := q.Scan(ctx); err != nil {
		return fmt.Errorf("inbound list: %w", err)
	}
	if *asJSON {
		out := make([]inboundJSON, len(rows))
		for i, r := range rows {
			out[i] = inboundOut(r, g.loc)
		}
		return writeJSON(e.stdout, out)
	}
	if len(rows) == 0 {
		fmt.Fprintln(e.stdout, "no inbound messages match")
		return nil
	}
	t := &table{head: []string{">ID", "RECEIVED (" + g.loc.String() + ")", "FROM", "TO", "KIND", ">SIZE", "SUBJECT", "RESULT"}}
	for _, r := range rows {
		x := inboundOut(r, g.loc)
		t.add(strconv.FormatInt(x.ID, 10), x.ReceivedAt.Format("2006-01-02 15:04:05"), cmp.Or(x.MailFrom, "<>"), x.Rcpt, cmp.Or(x.Kind, "pending"),
			strconv.FormatInt(x.Size, 10), cmp.Or(x.Subject, "-"), cmp.Or(x.Result, "-"))
	}
	t.write(e.stdout)
	if len(rows) == *limit {
		fmt.Fprintf(e.stdout, "more: relayd inbound list --after %d\n", rows[len(rows)-1].ID)
	}
	return nil
}

func runInboundShow(ctx context.Context, e *env, args []string) error {
	var g globals
	fs := e.flagSet("inbound show", &g)
	raw := fs.Bool("raw", false, "print only the stored bytes of the message (its first 256 KiB)")
	asJSON := fs.Bool("json", false, "print JSON (without the message's bytes)")
	pos, err := parse(fs, &g, args, 1, 1)
	if err != nil {
		return helpOr(err, fs, e)
	}
	id, err := strconv.ParseInt(pos[0], 10, 64)
	if err != nil || id <= 0 {
		return usagef("inbound show: %q is not an inbound message id (relayd inbound list shows them)", pos[0])
	}
	db, _, err := e.openMigrated(ctx, &g)
	if err != nil {
		return err
	}
	defer db.Close()
	var rows []mailstore.InboundRow
	if err := db.NewSelect().Model(&rows).Where("id = ?", id).Scan(ctx); err != nil {
		return fmt.Errorf("inbound show: %w", err)
	}
	if len(rows) == 0 {
		return fmt.Errorf("inbound show: no inbound message %d", id)
	}
	r := rows[0]
	switch {
	case *raw:
		_, err := e.stdout.Write(r.Raw)
		return err
	case *asJSON:
		return writeJSON(e.stdout, inboundOut(r, g.loc))
	}
	x := inboundOut(r, g.loc)
	recipient := "-"
	if x.RecipientID != nil {
		recipient = strconv.FormatInt(*x.RecipientID, 10)
	}
	size := fmt.Sprintf("%d bytes", x.Size)
	if x.Truncated {
		size += fmt.Sprintf(" (the first %d kept)", len(r.Raw))
	}
	for _, kv := range [][2]string{{"Inbound", strconv.FormatInt(x.ID, 10)}, {"Received", x.ReceivedAt.Format("2006-01-02 15:04:05 MST")},
		{"Client", x.RemoteAddr + " (EHLO " + cmp.Or(x.Helo, "-") + ")"}, {"Mail from", cmp.Or(x.MailFrom, "<>")}, {"To", x.Rcpt + " (" + x.Mailbox + ")"},
		{"Recipient", recipient}, {"Size", size}, {"SHA-256", x.SHA256}, {"Kind", cmp.Or(x.Kind, "pending")}, {"Result", cmp.Or(x.Result, "-")},
		{"Subject", cmp.Or(x.Subject, "-")}} {
		fmt.Fprintf(e.stdout, "%-10s %s\n", kv[0]+":", kv[1])
	}
	fmt.Fprintf(e.stdout, "(relayd inbound show %d --raw prints the message)\n", x.ID)
	return nil
}
