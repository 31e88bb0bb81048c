package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// readScope is the account a read covers: an account token's own; an
// admin token's ?account= (empty: all).
func readScope(tok apitoken.Token, r *http.Request) string {
	if tok.Admin() {
		return r.URL.Query().Get("account")
	}
	return tok.Account
}

// dateParam reads a query date: YYYY-MM-DD (the start of that day in the
// reports' zone) or an RFC 3339 time; endOfDay moves a plain date to the
// start of the next day (an inclusive "to").
func (a *API) dateParam(r *http.Request, name string, endOfDay bool) (time.Time, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.ParseInLocation(time.DateOnly, v, a.cfg.Location); err == nil {
		if endOfDay {
			t = t.AddDate(0, 0, 1)
		}
		return t, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	return time.Time{}, &apiError{status: 422, code: "invalid", message: name + " must be YYYY-MM-DD or an RFC 3339 time",
		fields: map[string]string{name: "YYYY-MM-DD or RFC 3339"}}
}

// filter reads the recipient filters every report route shares.
func (a *API) filter(tok apitoken.Token, r *http.Request) (report.Filter, error) {
	q := r.URL.Query()
	f := report.Filter{Account: readScope(tok, r), Address: q.Get("address"), MessageID: q.Get("message"), Campaign: q.Get("campaign"),
		Tag: q.Get("tag"), Origin: quota.Origin(q.Get("origin")), Status: mailing.Status(q.Get("status"))}
	var err error
	if f.From, err = a.dateParam(r, "from", false); err != nil {
		return f, err
	}
	if f.To, err = a.dateParam(r, "to", true); err != nil {
		return f, err
	}
	for _, p := range []struct {
		name string
		dst  any
	}{{"after", &f.After}, {"limit", &f.Limit}} {
		v := q.Get(p.name)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return f, &apiError{status: 422, code: "invalid", message: p.name + " must be a non-negative number", fields: map[string]string{p.name: "a number"}}
		}
		switch d := p.dst.(type) {
		case *int64:
			*d = n
		case *int:
			*d = int(n)
		}
	}
	return f, nil
}

func (a *API) getRecipients(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	f, err := a.filter(tok, r)
	if err == nil && f.Address == "" {
		err = &apiError{status: 422, code: "invalid", message: "address is required", fields: map[string]string{"address": "required"}}
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	p, err := a.cfg.Reports.Recipient(r.Context(), f)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ids := make([]int64, len(p.Rows))
	for i, x := range p.Rows {
		ids[i] = x.ID
	}
	attempts, err := a.cfg.Reports.Attempts(r.Context(), ids)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	type rowJSON struct {
		report.Row
		AttemptLog []report.Attempt `json:"attempt_log"`
	}
	rows := make([]rowJSON, len(p.Rows))
	for i, x := range p.Rows {
		rows[i] = rowJSON{x, attempts[x.ID]}
		if rows[i].AttemptLog == nil {
			rows[i].AttemptLog = []report.Attempt{}
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"recipients": rows, "next": p.Next})
}

// getTotals reads the counters: what happened per period (day, month,
// year) or per account or origin over the range.
func (a *API) getTotals(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	f := report.ActivityFilter{Account: readScope(tok, r), Origin: quota.Origin(r.URL.Query().Get("origin")), By: report.Period(r.URL.Query().Get("by"))}
	var err error
	if f.From, err = a.dateParam(r, "from", false); err == nil {
		f.To, err = a.dateParam(r, "to", true)
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ts, err := a.cfg.Reports.Activity(r.Context(), f)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	if ts == nil {
		ts = []report.Activity{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"totals": ts})
}

// getExport streams every selected row as CSV or JSON Lines. Once rows are
// flowing the status is sent: a failure then cuts the body short (the
// client sees a truncated transfer) and is logged.
func (a *API) getExport(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	f, err := a.filter(tok, r)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	format := report.Format(r.URL.Query().Get("format"))
	ctype := map[report.Format]string{report.CSV: "text/csv; charset=utf-8", report.JSONLines: "application/x-ndjson"}[format]
	if ctype == "" {
		writeError(w, a.cfg.Logger, &apiError{status: 422, code: "invalid", message: "format must be csv or jsonl", fields: map[string]string{"format": "csv or jsonl"}})
		return
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Content-Disposition", `attachment; filename="envios-export.`+string(format)+`"`)
	w.Header().Set("Cache-Control", "no-store")
	n, err := a.cfg.Reports.Export(r.Context(), w, format, f)
	if err != nil {
		a.cfg.Logger.Error("api: export cut short", "rows", n, "err", err)
		panic(http.ErrAbortHandler) // the client must not take a partial export for a whole one
	}
}
