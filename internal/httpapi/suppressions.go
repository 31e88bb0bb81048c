package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/quota"
)

// The suppression list over the API. An admin token sees and changes every
// entry. An account token lists, adds and removes only its own account's
// entries (scope account); entries of scope all and bulk are
// installation-wide: adding or removing one needs an admin token (403), and
// an account token reads them only through check, for its own mail.

// suppressionJSON is a suppression-list entry as the API shows it.
type suppressionJSON struct {
	ID            int64           `json:"id"`
	Address       string          `json:"address"`
	Scope         suppress.Scope  `json:"scope"`
	Account       string          `json:"account"` // scope account: its name; else ""
	Topic         string          `json:"topic"`
	Reason        suppress.Reason `json:"reason"`
	Active        bool            `json:"active"` // it stops mail now
	Description   string          `json:"description"`
	CreatedAt     time.Time       `json:"created_at"`
	ExpiresAt     *time.Time      `json:"expires_at"`
	Actor         string          `json:"actor"`
	RecipientID   *int64          `json:"recipient_id"`
	Evidence      json.RawMessage `json:"evidence"`
	RemovedAt     *time.Time      `json:"removed_at"`
	RemovedBy     string          `json:"removed_by"`
	RemovedReason string          `json:"removed_reason"`
}

// suppressionOut is e as tok may see it: the recipient whose feedback
// caused an installation-wide entry may be another account's, so only an
// admin token, or the entry's own account, sees it.
func suppressionOut(e suppress.Entry, tok apitoken.Token, accountName string, now time.Time) suppressionJSON {
	if e.Scope == suppress.ScopeAccount && e.Account == "" {
		e.Account = accountName
	}
	j := suppressionJSON{ID: e.ID, Address: e.Address, Scope: e.Scope, Account: e.Account, Topic: e.Topic, Reason: e.Reason,
		Active: e.Active(now), Description: suppress.Describe(e), CreatedAt: e.CreatedAt.UTC(), ExpiresAt: utc(e.ExpiresAt),
		Actor: e.Actor, RecipientID: e.RecipientID, Evidence: json.RawMessage("{}"), RemovedAt: utc(e.RemovedAt),
		RemovedBy: e.RemovedBy, RemovedReason: e.RemovedReason}
	if e.Scope != suppress.ScopeAccount {
		j.Account = ""
	}
	if json.Valid([]byte(e.Evidence)) && strings.HasPrefix(strings.TrimSpace(e.Evidence), "{") {
		j.Evidence = json.RawMessage(e.Evidence)
	}
	if !tok.Admin() && e.Scope != suppress.ScopeAccount {
		j.RecipientID = nil
	}
	return j
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// errNoList answers the suppression routes and the unsubscribe links of an
// API configured without its database.
var errNoList = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the suppression list is not available on this server"}

func (a *API) listDB() (*bun.DB, error) {
	if a.cfg.DB == nil {
		return nil, errNoList
	}
	return a.cfg.DB, nil
}

func invalidField(field, msg string) *apiError {
	return &apiError{status: 422, code: "invalid", message: field + ": " + msg, fields: map[string]string{field: msg}}
}

var errForbidden = &apiError{status: http.StatusForbidden, code: "forbidden",
	message: "entries of scope all and bulk are installation-wide: an admin token is needed to add or remove one"}

// accountID resolves an account name typed in a request to its id.
func (a *API) accountID(ctx context.Context, name string) (int64, string, error) {
	n, _, err := quota.ParseAccountName(name)
	if err != nil {
		return 0, "", invalidField("account", "must be AREA/NAME, e.g. enap/eventos")
	}
	acct, err := a.cfg.Mailer.Ledger().Account(ctx, n)
	if errors.Is(err, quota.ErrNotFound) {
		return 0, "", invalidField("account", "no account "+n)
	}
	if err != nil {
		return 0, "", err
	}
	return acct.ID, acct.Name, nil
}

// tokenAccount is the account a request acts on: an account token's own
// (naming another is 404: it does not exist for this token), or the one
// an admin token names, which may be none (id 0).
func (a *API) tokenAccount(ctx context.Context, tok apitoken.Token, named string) (int64, string, error) {
	if !tok.Admin() {
		if named != "" && !strings.EqualFold(strings.TrimSpace(named), tok.Account) {
			return 0, "", &apiError{status: 404, code: "not_found", message: "not found"}
		}
		named = tok.Account
	}
	if named == "" {
		return 0, "", nil
	}
	return a.accountID(ctx, named)
}

// queryInt reads a non-negative integer query parameter (def when absent).
func queryInt(r *http.Request, name string, def int64) (int64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, invalidField(name, "a non-negative number")
	}
	return n, nil
}

// queryBool reads a boolean query parameter: true, false, 1, 0 (absent:
// false).
func queryBool(r *http.Request, name string) (bool, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return false, nil
	}
	b, err := strconv.ParseBool(v)
	if err != nil {
		return false, invalidField(name, "true or false")
	}
	return b, nil
}

func validReason(r suppress.Reason, allowed []suppress.Reason) bool {
	for _, x := range allowed {
		if x == r {
			return true
		}
	}
	return false
}

// addReasons are the reasons a person may give an entry they add (a soft
// streak is only ever the classifier's).
var addReasons = []suppress.Reason{suppress.ReasonManual, suppress.ReasonImport, suppress.ReasonHardBounce, suppress.ReasonComplaint, suppress.ReasonUnsubscribe}

// DefaultScope is the scope of an entry added with no scope: an account's
// when one is named or the reason is an unsubscribe; all bulk mail for a
// complaint; else all mail.
func defaultScope(reason suppress.Reason, account bool) suppress.Scope {
	switch {
	case account || reason == suppress.ReasonUnsubscribe:
		return suppress.ScopeAccount
	case reason == suppress.ReasonComplaint:
		return suppress.ScopeBulk
	}
	return suppress.ScopeAll
}

// listPage bounds the rows an account token's list reads per request: the
// list holds every account's entries, so its page may hold fewer than
// limit of them, and next says where to go on.
const listPage, listScan = 500, 5000

// getSuppressions lists entries in id order: ?address=&reason=&active=
// &after=&limit= (default 100, at most 1,000); next is the after of the
// next page, 0 on the last.
func (a *API) getSuppressions(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	db, err := a.listDB()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	q := r.URL.Query()
	f := suppress.Filter{Address: q.Get("address"), Reason: suppress.Reason(q.Get("reason"))}
	if f.Reason != "" && !validReason(f.Reason, suppress.Reasons) {
		writeError(w, a.cfg.Logger, invalidField("reason", "one of hard_bounce, soft_streak, complaint, unsubscribe, manual, import"))
		return
	}
	if f.Active, err = queryBool(r, "active"); err == nil {
		if f.After, err = queryInt(r, "after", 0); err == nil {
			var n int64
			n, err = queryInt(r, "limit", 100)
			f.Limit = int(min(max(n, 1), 1000))
		}
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ctx := r.Context()
	now := a.cfg.Now()
	var rows []suppress.Entry
	var next int64
	if tok.Admin() {
		if rows, err = suppress.List(ctx, db, f, now); err == nil && len(rows) == f.Limit {
			next = rows[len(rows)-1].ID
		}
	} else {
		rows, next, err = a.listAccount(ctx, db, tok, f, now)
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	out := make([]suppressionJSON, len(rows))
	for i, e := range rows {
		out[i] = suppressionOut(e, tok, "", now)
	}
	writeJSON(w, http.StatusOK, map[string]any{"suppressions": out, "next": next})
}

// listAccount is an account token's page: its account's entries only,
// reading at most listScan rows of the list.
func (a *API) listAccount(ctx context.Context, db bun.IDB, tok apitoken.Token, f suppress.Filter, now time.Time) ([]suppress.Entry, int64, error) {
	id, _, err := a.tokenAccount(ctx, tok, "")
	if err != nil {
		return nil, 0, err
	}
	want := f.Limit
	f.Limit = listPage
	out := []suppress.Entry{}
	for scanned := 0; scanned < listScan; {
		rows, err := suppress.List(ctx, db, f, now)
		if err != nil {
			return nil, 0, err
		}
		scanned += len(rows)
		for _, e := range rows {
			f.After = e.ID
			if e.Scope == suppress.ScopeAccount && e.AccountID != nil && *e.AccountID == id {
				out = append(out, e)
				if len(out) == want {
					return out, f.After, nil
				}
			}
		}
		if len(rows) < listPage {
			return out, 0, nil
		}
	}
	return out, f.After, nil
}

// suppressionRequest is POST /v1/suppressions.
type suppressionRequest struct {
	Address   string          `json:"address"`
	Scope     suppress.Scope  `json:"scope"`   // all, bulk, account; default by reason (see defaultScope)
	Account   string          `json:"account"` // scope account: an admin token names it; an account token's is its own
	Topic     string          `json:"topic"`   // scope account: a campaign label; "" all of the account's bulk mail
	Reason    suppress.Reason `json:"reason"`  // default manual
	Why       string          `json:"why"`     // required: goes to the evidence and the audit log
	ExpiresAt *time.Time      `json:"expires_at"`
}

// postSuppression adds an entry: 201 with it, or 200 with the active entry
// of the same address, scope, account and topic already there (added
// false: nothing changed).
func (a *API) postSuppression(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	db, err := a.listDB()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var req suppressionRequest
	if err := decode(r, &req); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ctx := r.Context()
	now := a.cfg.Now()
	add, acctName, err := a.suppressionAdd(ctx, tok, req, now)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var e suppress.Entry
	var added bool
	err = store.RunInTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		var err error
		e, added, err = suppress.Insert(ctx, tx, add)
		return err
	})
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	status := http.StatusOK
	if added {
		status = http.StatusCreated
	}
	writeJSON(w, status, map[string]any{"added": added, "suppression": suppressionOut(e, tok, acctName, now)})
}

// suppressionAdd checks a request and makes the suppress.Add it asks for.
func (a *API) suppressionAdd(ctx context.Context, tok apitoken.Token, req suppressionRequest, now time.Time) (suppress.Add, string, error) {
	addr, err := address.Parse(req.Address)
	if err != nil || req.Address == "" {
		return suppress.Add{}, "", invalidField("address", "a mail address, e.g. ana@example.org")
	}
	why := strings.TrimSpace(req.Why)
	if why == "" {
		return suppress.Add{}, "", invalidField("why", "required: why the address is suppressed (kept in the evidence and the audit log)")
	}
	if req.Reason == "" {
		req.Reason = suppress.ReasonManual
	}
	if !validReason(req.Reason, addReasons) {
		return suppress.Add{}, "", invalidField("reason", "one of manual, import, hard_bounce, complaint, unsubscribe")
	}
	if req.Scope == "" {
		req.Scope = defaultScope(req.Reason, req.Account != "" || !tok.Admin())
	}
	switch req.Scope {
	case suppress.ScopeAll, suppress.ScopeBulk:
		if !tok.Admin() {
			return suppress.Add{}, "", errForbidden
		}
		if req.Account != "" {
			return suppress.Add{}, "", invalidField("account", "only for scope account")
		}
	case suppress.ScopeAccount:
	default:
		return suppress.Add{}, "", invalidField("scope", "all, bulk or account")
	}
	if req.Topic != "" && req.Scope != suppress.ScopeAccount {
		return suppress.Add{}, "", invalidField("topic", "only for scope account")
	}
	add := suppress.Add{Address: addr.Addr, Scope: req.Scope, Topic: req.Topic, Reason: req.Reason, Actor: actor(tok),
		Evidence: map[string]string{"why": why}, Now: now}
	if req.ExpiresAt != nil {
		if !req.ExpiresAt.After(now) {
			return suppress.Add{}, "", invalidField("expires_at", "must be in the future")
		}
		add.ExpiresAt = *req.ExpiresAt
	}
	var name string
	if req.Scope == suppress.ScopeAccount {
		if tok.Admin() && req.Account == "" {
			return suppress.Add{}, "", invalidField("account", "required for scope account with an admin token")
		}
		if add.AccountID, name, err = a.tokenAccount(ctx, tok, req.Account); err != nil {
			return suppress.Add{}, "", err
		}
	}
	return add, name, nil
}

// deleteSuppression marks entry {id} removed, with why (a JSON body
// {"why": …}, or ?why=); the row stays.
func (a *API) deleteSuppression(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	db, err := a.listDB()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		writeError(w, a.cfg.Logger, &apiError{status: 404, code: "not_found", message: "not found"})
		return
	}
	why := r.URL.Query().Get("why")
	if r.ContentLength != 0 {
		var body struct {
			Why string `json:"why"`
		}
		if err := decode(r, &body); err != nil {
			writeError(w, a.cfg.Logger, err)
			return
		}
		if body.Why != "" {
			why = body.Why
		}
	}
	if why = strings.TrimSpace(why); why == "" {
		writeError(w, a.cfg.Logger, invalidField("why", "required: why the suppression is removed (kept in the audit log)"))
		return
	}
	ctx := r.Context()
	now := a.cfg.Now()
	var e suppress.Entry
	err = store.RunInTx(ctx, db, func(ctx context.Context, tx bun.Tx) error {
		var err error
		if e, err = a.ownEntry(ctx, tx, tok, id, now); err != nil {
			return err
		}
		if e.RemovedAt != nil {
			return &apiError{status: 404, code: "not_found", message: fmt.Sprintf("suppression %d was removed already", id)}
		}
		if _, err := suppress.Remove(ctx, tx, e.Address, id, actor(tok), why, now); err != nil {
			return err
		}
		e, err = a.ownEntry(ctx, tx, tok, id, now)
		return err
	})
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"removed": 1, "suppression": suppressionOut(e, tok, "", now)})
}

// ownEntry reads entry id as tok may change it: 404 when there is none or
// it is another account's; 403 for an installation-wide one and an account
// token.
func (a *API) ownEntry(ctx context.Context, idb bun.IDB, tok apitoken.Token, id int64, now time.Time) (suppress.Entry, error) {
	rows, err := suppress.List(ctx, idb, suppress.Filter{After: id - 1, Limit: 1}, now)
	if err != nil {
		return suppress.Entry{}, err
	}
	if len(rows) == 0 || rows[0].ID != id {
		return suppress.Entry{}, &apiError{status: 404, code: "not_found", message: "not found"}
	}
	e := rows[0]
	if tok.Admin() {
		return e, nil
	}
	if e.Scope != suppress.ScopeAccount {
		return suppress.Entry{}, errForbidden
	}
	own, _, err := a.tokenAccount(ctx, tok, "")
	if err != nil {
		return suppress.Entry{}, err
	}
	if e.AccountID == nil || *e.AccountID != own {
		return suppress.Entry{}, &apiError{status: 404, code: "not_found", message: "not found"}
	}
	return e, nil
}

// checkSuppression says whether mail to ?address= would be stopped now,
// and by which entry: transactional mail unless ?bulk=true, of the
// token's account (an admin token's ?account=, or none), about ?topic=
// (a campaign label). 200 either way.
func (a *API) checkSuppression(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	db, err := a.listDB()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	q := r.URL.Query()
	addr, err := address.Parse(q.Get("address"))
	if err != nil || q.Get("address") == "" {
		writeError(w, a.cfg.Logger, invalidField("address", "a mail address, e.g. ana@example.org"))
		return
	}
	bulk, err := queryBool(r, "bulk")
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ctx := r.Context()
	id, name, err := a.tokenAccount(ctx, tok, q.Get("account"))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	now := a.cfg.Now()
	m := suppress.Mail{AccountID: id, Bulk: bulk, Topic: q.Get("topic")}
	stops, err := suppress.Check(ctx, db, m, []string{addr.Addr}, now)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	body := map[string]any{"address": suppress.Normalize(addr.Addr), "account": name, "bulk": bulk, "topic": m.Topic,
		"suppressed": false, "suppression": nil}
	if e, ok := stops[suppress.Normalize(addr.Addr)]; ok {
		body["suppressed"] = true
		body["suppression"] = suppressionOut(e, tok, name, now)
	}
	writeJSON(w, http.StatusOK, body)
}
