package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
)

// messageRequest is POST /v1/messages: one message (to/cc/bcc), or, with
// recipients, a personalised batch whose subject, text and html are
// templates executed with each recipient's data.
type messageRequest struct {
	Account     string            `json:"account"` // an admin token names it; an account token may repeat its own
	From        string            `json:"from"`
	ReplyTo     []string          `json:"reply_to"`
	To          []string          `json:"to"`
	Cc          []string          `json:"cc"`
	Bcc         []string          `json:"bcc"`
	Subject     string            `json:"subject"`
	Text        string            `json:"text"`
	HTML        string            `json:"html"`
	Headers     map[string]string `json:"headers"`
	Attachments []struct {
		Filename    string `json:"filename"`
		ContentType string `json:"content_type"`
		ContentID   string `json:"content_id"`
		Data        []byte `json:"data"` // base64
	} `json:"attachments"`
	Tags       []string         `json:"tags"`
	Campaign   string           `json:"campaign"`
	Priority   mailing.Priority `json:"priority"`
	SendAt     *time.Time       `json:"send_at"`
	Recipients []batchRecipient `json:"recipients"`
}

type batchRecipient struct {
	Address string         `json:"address"`
	Data    map[string]any `json:"data"`
}

type recipientJSON struct {
	ID            int64      `json:"id"`
	Address       string     `json:"address"`
	Kind          string     `json:"kind"`
	Status        string     `json:"status"`
	AcceptedAt    time.Time  `json:"accepted_at"`
	DueAt         time.Time  `json:"due_at"`
	Attempts      int        `json:"attempts"`
	LastAttemptAt *time.Time `json:"last_attempt_at"`
	FinalAt       *time.Time `json:"final_at"`
	RemoteHost    string     `json:"remote_host"`
	Reply         string     `json:"reply"`
}

// recipientsOut is the JSON form of recipients.
func recipientsOut(rs []mailing.RecipientInfo) []recipientJSON {
	out := make([]recipientJSON, len(rs))
	for i, r := range rs {
		out[i] = recipientJSON{ID: r.ID, Address: r.Address, Kind: r.Kind, Status: string(r.Status), AcceptedAt: r.AcceptedAt,
			DueAt: r.DueAt, Attempts: r.Attempts, RemoteHost: r.RemoteHost, Reply: r.Reply}
		if !r.LastAttemptAt.IsZero() {
			out[i].LastAttemptAt = &rs[i].LastAttemptAt
		}
		if !r.FinalAt.IsZero() {
			out[i].FinalAt = &rs[i].FinalAt
		}
	}
	return out
}

// account is the account a request acts on: an account token's own (naming
// another is 404: it does not exist for this token), or the one an admin
// token names.
func account(tok apitoken.Token, named string) (string, error) {
	if tok.Admin() {
		if named == "" {
			return "", &apiError{status: 422, code: "invalid", message: "an admin token must name the account",
				fields: map[string]string{"account": "required with an admin token"}}
		}
		return named, nil
	}
	if named != "" && named != tok.Account {
		return "", &apiError{status: 404, code: "not_found", message: "not found"}
	}
	return tok.Account, nil
}

// scope is the account filter of a read: all for an admin token.
func scope(tok apitoken.Token) string { return tok.Account }

func actor(tok apitoken.Token) string { return fmt.Sprintf("token:%d", tok.ID) }

func (a *API) postMessage(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	var req messageRequest
	if err := decode(r, &req); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	acct, err := account(tok, req.Account)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	key := r.Header.Get("Idempotency-Key")
	var headers []mailing.Header
	for k, v := range req.Headers {
		headers = append(headers, mailing.Header{Name: k, Value: v})
	}
	var atts []mailing.Attachment
	for _, x := range req.Attachments {
		atts = append(atts, mailing.Attachment{Filename: x.Filename, ContentType: x.ContentType, ContentID: x.ContentID, Data: x.Data})
	}
	var sendAt time.Time
	if req.SendAt != nil {
		sendAt = *req.SendAt
	}
	ctx := r.Context()
	if len(req.Recipients) > 0 {
		if len(req.To)+len(req.Cc)+len(req.Bcc) > 0 {
			writeError(w, a.cfg.Logger, &apiError{status: 422, code: "invalid", message: "a batch (recipients) has no to, cc or bcc",
				fields: map[string]string{"recipients": "not with to, cc or bcc"}})
			return
		}
		rs := make([]mailing.Recipient, len(req.Recipients))
		for i, x := range req.Recipients {
			rs[i] = mailing.Recipient{Address: x.Address, Data: x.Data}
		}
		b, err := a.cfg.Mailer.SendBatch(ctx, mailing.Batch{Account: acct, From: req.From, ReplyTo: req.ReplyTo, Subject: req.Subject,
			Text: req.Text, HTML: req.HTML, Headers: headers, Attachments: atts, Tags: req.Tags, Campaign: req.Campaign,
			Priority: req.Priority, SendAt: sendAt, IdempotencyKey: key, Origin: quota.OriginHTTP, Actor: actor(tok),
			Recipients: mailing.List(rs...), Expected: len(rs)})
		if err != nil && b.Accepted == 0 && b.Resumed == 0 {
			writeError(w, a.cfg.Logger, err)
			return
		}
		type rejection struct {
			Index   int    `json:"index"`
			Address string `json:"address"`
			Error   string `json:"error"`
		}
		rej := []rejection{}
		for _, x := range b.Rejected {
			rej = append(rej, rejection{x.Index, x.Address, public(x.Err)})
		}
		a.audit(r, tok, "api.send", acct, b.MessageID)
		body := map[string]any{"id": b.MessageID, "accepted": b.Accepted, "resumed": b.Resumed, "rejected": rej, "rejected_count": b.NRejected,
			"suppressed_count": b.Suppressed}
		if err != nil { // stopped part-way (the pool ran out): what was stored stays
			body["stopped"] = public(err)
		}
		a.receipt(w, r, tok, b.MessageID, body)
		return
	}
	rc, err := a.cfg.Mailer.Send(ctx, mailing.Message{Account: acct, From: req.From, ReplyTo: req.ReplyTo, To: req.To, Cc: req.Cc,
		Bcc: req.Bcc, Subject: req.Subject, Text: req.Text, HTML: req.HTML, Headers: headers, Attachments: atts, Tags: req.Tags,
		Campaign: req.Campaign, Priority: req.Priority, SendAt: sendAt, IdempotencyKey: key, Origin: quota.OriginHTTP, Actor: actor(tok)})
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	a.audit(r, tok, "api.send", acct, rc.MessageID)
	ids := rc.RecipientIDs
	if rc.Duplicate { // the first message's recipients
		rs, err := a.cfg.Mailer.Recipients(r.Context(), scope(tok), rc.MessageID, -1, 1000)
		if err != nil {
			writeError(w, a.cfg.Logger, err)
			return
		}
		for _, x := range rs {
			ids = append(ids, x.ID)
		}
	}
	type suppressed struct {
		Address string `json:"address"`
		Reason  string `json:"reason"`
	}
	supp := []suppressed{}
	for _, x := range rc.Suppressed {
		supp = append(supp, suppressed{x.Address, x.Reason})
	}
	w.Header().Set("Location", "/v1/messages/"+rc.MessageID)
	writeJSON(w, http.StatusAccepted, map[string]any{"id": rc.MessageID, "status": rc.Status, "duplicate": rc.Duplicate,
		"recipients": rc.Recipients, "recipient_ids": ids, "suppressed": supp})
}

// receipt answers 202 with the message's recipients (the first 1,000) and
// their ids: everything in it is committed.
func (a *API) receipt(w http.ResponseWriter, r *http.Request, tok apitoken.Token, id string, body map[string]any) {
	rs, err := a.cfg.Mailer.Recipients(r.Context(), scope(tok), id, -1, 1000)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	body["recipients"] = recipientsOut(rs)
	w.Header().Set("Location", "/v1/messages/"+id)
	writeJSON(w, http.StatusAccepted, body)
}

func (a *API) getMessage(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	id := r.PathValue("id")
	info, err := a.cfg.Mailer.Message(r.Context(), scope(tok), id)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	after := -1
	if s := r.URL.Query().Get("after"); s != "" {
		if after, err = strconv.Atoi(s); err != nil {
			writeError(w, a.cfg.Logger, &apiError{status: 422, code: "invalid", message: "after must be a number", fields: map[string]string{"after": "a number"}})
			return
		}
	}
	rs, err := a.cfg.Mailer.Recipients(r.Context(), scope(tok), id, after, 1000)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	out := recipientsOut(rs)
	counts := map[string]int{}
	for s, n := range info.Counts {
		counts[string(s)] = n
	}
	body := map[string]any{"id": info.ID, "account": info.Account, "origin": info.Origin, "kind": info.Kind, "priority": info.Priority,
		"campaign": info.Campaign, "tags": info.Tags, "from": info.From, "subject": info.Subject, "accepted_at": info.AcceptedAt,
		"recipient_count": info.Recipients, "counts": counts, "recipients": out}
	if !info.SendAt.IsZero() {
		body["send_at"] = info.SendAt
	}
	if !info.CancelledAt.IsZero() {
		body["cancelled_at"] = info.CancelledAt
	}
	writeJSON(w, http.StatusOK, body)
}

func (a *API) deleteMessage(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	res, err := a.cfg.Mailer.Cancel(r.Context(), scope(tok), r.PathValue("id"), actor(tok))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	a.audit(r, tok, "api.cancel", "", fmt.Sprintf("%s: %d cancelled, %d released", r.PathValue("id"), res.Cancelled, res.Released))
	writeJSON(w, http.StatusOK, map[string]any{"cancelled": res.Cancelled, "released": res.Released})
}

func (a *API) getAttempts(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	rid, err := strconv.ParseInt(r.PathValue("rid"), 10, 64)
	if err != nil {
		writeError(w, a.cfg.Logger, &apiError{status: 404, code: "not_found", message: "not found"})
		return
	}
	// The recipient must belong to the message named, within the scope.
	as, err := a.cfg.Mailer.Attempts(r.Context(), scope(tok), r.PathValue("id"), rid)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	type attemptJSON struct {
		At         time.Time `json:"at"`
		RemoteHost string    `json:"remote_host"`
		Reply      string    `json:"reply"`
		Status     string    `json:"status"`
	}
	out := make([]attemptJSON, len(as))
	for i, x := range as {
		out[i] = attemptJSON{x.At, x.RemoteHost, x.Reply, string(x.Status)}
	}
	writeJSON(w, http.StatusOK, map[string]any{"attempts": out})
}

type accountJSON struct {
	Name       string `json:"name"`
	Allocation int64  `json:"allocation"`
	Used       int64  `json:"used"`
	Remaining  int64  `json:"remaining"`
	Disabled   bool   `json:"disabled"`
}

func (a *API) getQuota(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	l := a.cfg.Mailer.Ledger()
	if !tok.Admin() {
		acct, err := l.Account(r.Context(), tok.Account)
		if err != nil {
			writeError(w, a.cfg.Logger, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"account": accountJSON{acct.Name, acct.Allocation, acct.Used, acct.Remaining(), acct.Disabled}})
		return
	}
	b, err := l.Balance(r.Context(), r.URL.Query().Get("pool"))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	accts := make([]accountJSON, len(b.Accounts))
	for i, x := range b.Accounts {
		accts[i] = accountJSON{x.Name, x.Allocation, x.Used, x.Remaining(), x.Disabled}
	}
	writeJSON(w, http.StatusOK, map[string]any{"pool": b.Pool.Name, "total": b.Pool.Total, "used": b.Used, "remaining": b.Remaining(), "accounts": accts})
}

// audit records what an admin token did (account tokens act only on their
// own account, as their owners). A failure to record is logged: the
// action itself has committed.
func (a *API) audit(r *http.Request, tok apitoken.Token, action, subject, detail string) {
	if !tok.Admin() {
		return
	}
	if err := a.cfg.Tokens.Audit(context.WithoutCancel(r.Context()), tok, action, subject, detail); err != nil {
		a.cfg.Logger.Error("api: audit log", "action", action, "err", err)
	}
}

// public is what a client is told of an error in a body that is not an
// error answer (a batch's rejections, why it stopped): a refusal's public
// text, or that something failed on our side.
func public(err error) string {
	var me *mailing.Error
	if errors.As(err, &me) {
		return me.Public
	}
	return "internal error, try again later"
}
