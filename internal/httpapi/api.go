// Package httpapi is the HTTPS JSON API of relayd: the agency's systems
// written in any language send mail (POST /v1/messages, the semantics of
// package mailing), cancel it, and read what happened to it, with bearer
// tokens scoped to one account (or admin), and keep the suppression list.
// Errors are JSON {"error": {"code", "message", "fields"}}, decided in one
// function, answer, and written by writeError (JSON) or, on the public
// unsubscribe pages (/u/TOKEN, RFC 8058), as a short HTML page.
package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/campaign"
	"github.com/servir-pe/envios/mailing/contacts"
	"github.com/servir-pe/envios/quota"
	"github.com/servir-pe/envios/report"
)

// Config configures the API. Mailer, Tokens and Reports are required.
type Config struct {
	Mailer  *mailing.Mailer
	Tokens  *apitoken.Store
	Reports *report.Reporter
	// Location is the zone of YYYY-MM-DD dates in queries. Default
	// America/Lima.
	Location *time.Location
	// MaxBody bounds a request body, in bytes. Default 32 MB (a message of
	// 25 MB with its JSON encoding).
	MaxBody int64
	// EventPoll is how often the event stream looks for new events.
	// Default 1 second.
	EventPoll time.Duration
	// EventLag is how far behind the commits the event stream stays
	// (report.EventsFilter.Lag). Default 2 seconds.
	EventLag time.Duration
	// Metrics, when set, writes the serving process's own metrics in the
	// Prometheus text format after the database's (GET /metrics).
	Metrics func(w io.Writer)
	// Logger receives what errors hide. Default slog.Default().
	Logger *slog.Logger
	// DB is the database of the suppression list (/v1/suppressions) and
	// of the recipients unsubscribe links name (/u/TOKEN): the Mailer's.
	// Default none: those routes answer 503 unavailable.
	DB *bun.DB
	// RecipientTokens checks the tokens of unsubscribe links: the keyring
	// the delivery engine makes them with (rcpttoken.Load, with the key
	// file's sealer when the secret is sealed). Default: loaded from DB,
	// without a key file, on the first request that needs it.
	RecipientTokens *rcpttoken.Keyring
	// Campaigns, when set, serves the templates and campaigns routes
	// (/v1/templates, /v1/campaigns). Default none: they answer 503.
	Campaigns *campaign.Store
	// Contacts serves the lists and contacts routes (/v1/lists,
	// /v1/contacts). Default none: they answer 503.
	Contacts *contacts.Store
	// Imports serves the import routes (/v1/imports): jobs run by its
	// Run. Default none: they answer 503.
	Imports *contacts.Jobs
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// API serves the routes.
type API struct {
	cfg Config
	mux *http.ServeMux

	keysMu sync.Mutex
	keys   *rcpttoken.Keyring // Config.RecipientTokens, or loaded on first use
}

// route is one endpoint; the table is also what the OpenAPI test checks.
type route struct {
	method, path string
	handle       func(*API, http.ResponseWriter, *http.Request, apitoken.Token)
	public       bool // no token needed
}

var routes = []route{
	{"GET", "/healthz", (*API).healthz, true},
	{"GET", "/v1/openapi.json", (*API).openapi, true},
	{"POST", "/v1/messages", (*API).postMessage, false},
	{"GET", "/v1/messages/{id}", (*API).getMessage, false},
	{"DELETE", "/v1/messages/{id}", (*API).deleteMessage, false},
	{"GET", "/v1/messages/{id}/recipients/{rid}/attempts", (*API).getAttempts, false},
	{"GET", "/v1/quota", (*API).getQuota, false},
	{"GET", "/v1/recipients", (*API).getRecipients, false},
	{"GET", "/v1/reports/totals", (*API).getTotals, false},
	{"GET", "/v1/export", (*API).getExport, false},
	{"GET", "/v1/events", (*API).getEvents, false},
	{"GET", "/metrics", (*API).getMetrics, false},
	{"GET", "/v1/suppressions", (*API).getSuppressions, false},
	{"POST", "/v1/suppressions", (*API).postSuppression, false},
	{"GET", "/v1/suppressions/check", (*API).checkSuppression, false},
	{"DELETE", "/v1/suppressions/{id}", (*API).deleteSuppression, false},
	{"GET", "/v1/lists", (*API).getLists, false},
	{"POST", "/v1/lists", (*API).postList, false},
	{"DELETE", "/v1/contacts/{address}", (*API).deleteContact, false},
	{"POST", "/v1/imports", (*API).postImport, false},
	{"GET", "/v1/imports", (*API).getImports, false},
	{"GET", "/v1/imports/{id}", (*API).getImport, false},
	{"DELETE", "/v1/imports/{id}", (*API).deleteImport, false},
	{"GET", "/v1/imports/{id}/events", (*API).getImportEvents, false},
	{"GET", "/v1/imports/{id}/rejects", (*API).getImportRejects, false},
	{"GET", "/v1/segments", (*API).getSegments, false},
	{"POST", "/v1/segments", (*API).postSegment, false},
	{"GET", "/v1/segments/count", (*API).getSegmentCount, false},
	{"GET", "/v1/templates", (*API).getTemplates, false},
	{"POST", "/v1/templates", (*API).postTemplate, false},
	{"GET", "/v1/campaigns", (*API).getCampaigns, false},
	{"POST", "/v1/campaigns", (*API).postCampaign, false},
	{"GET", "/v1/campaigns/{id}", (*API).getCampaign, false},
	{"PUT", "/v1/campaigns/{id}", (*API).putCampaign, false},
	{"GET", "/v1/campaigns/{id}/preflight", (*API).getPreflight, false},
	{"GET", "/v1/campaigns/{id}/preview", (*API).getPreview, false},
	{"GET", "/v1/campaigns/{id}/recipients", (*API).getCampaignRecipients, false},
	{"POST", "/v1/campaigns/{id}/{action}", (*API).postCampaignAction, false},
	// One-click unsubscribe (RFC 8058, RFC 2369): no token, no cookie,
	// never a redirect; GET (and HEAD) only show the confirmation page.
	{"GET", "/u/{token}", (*API).unsubscribePage, true},
	{"POST", "/u/{token}", (*API).unsubscribe, true},
}

// New returns the API.
func New(cfg Config) (*API, error) {
	if cfg.Mailer == nil || cfg.Tokens == nil || cfg.Reports == nil {
		return nil, errors.New("httpapi: Config.Mailer, Tokens and Reports are required")
	}
	if cfg.Location == nil {
		loc, err := time.LoadLocation("America/Lima")
		if err != nil {
			loc = time.FixedZone("-05", -5*3600)
		}
		cfg.Location = loc
	}
	if cfg.EventPoll <= 0 {
		cfg.EventPoll = time.Second
	}
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 32 << 20
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DB == nil {
		cfg.Logger.Warn("api: no Config.DB: the suppression routes and the unsubscribe links answer 503")
	}
	a := &API{cfg: cfg, mux: http.NewServeMux(), keys: cfg.RecipientTokens}
	for _, r := range routes {
		a.mux.HandleFunc(r.method+" "+r.path, a.wrap(r))
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, a.cfg.Logger, &apiError{status: http.StatusNotFound, code: "not_found", message: "no such endpoint"})
	})
	return a, nil
}

// Handler is the API's http.Handler.
func (a *API) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// An unsubscribe link that is not one clean path segment would get
		// the mux's redirect to its cleaned path: a link is never
		// redirected (RFC 8058), so such a path is an invalid link. Every
		// answer under /u/ is a page.
		if rest, ok := strings.CutPrefix(r.URL.Path, "/u/"); ok {
			switch {
			case rest == "" || strings.ContainsAny(rest, "/.") || strings.Contains(r.URL.EscapedPath(), "%"):
				a.writePage(w, r, http.StatusNotFound, pageInvalid, pageData{})
				return
			case r.Method != http.MethodGet && r.Method != http.MethodHead && r.Method != http.MethodPost:
				w.Header().Set("Allow", "GET, HEAD, POST")
				a.writePage(w, r, http.StatusMethodNotAllowed, pageInvalid, pageData{})
				return
			}
		}
		a.mux.ServeHTTP(w, r)
	})
}

func (a *API) wrap(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !unboundedBody[rt.method+" "+rt.path] {
			r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBody)
		}
		var tok apitoken.Token
		if !rt.public {
			secret, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="envios"`)
				writeError(w, a.cfg.Logger, apitoken.ErrUnauthorized)
				return
			}
			var err error
			if tok, err = a.cfg.Tokens.Authenticate(r.Context(), strings.TrimSpace(secret)); err != nil {
				w.Header().Set("WWW-Authenticate", `Bearer realm="envios", error="invalid_token"`)
				writeError(w, a.cfg.Logger, err)
				return
			}
		}
		rt.handle(a, w, r, tok)
	}
}

// apiError is an error with its HTTP answer already decided.
type apiError struct {
	status  int
	code    string
	message string
	fields  map[string]string
	extra   map[string]any
}

func (e *apiError) Error() string { return e.message }

// writeError writes the JSON answer to err (see answer).
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	ae := answer(w, log, err)
	body := map[string]any{"code": ae.code, "message": ae.message}
	if len(ae.fields) > 0 {
		body["fields"] = ae.fields
	}
	for k, v := range ae.extra {
		body[k] = v
	}
	writeJSON(w, ae.status, map[string]any{"error": body})
}

// answer is the one place where errors become HTTP answers: their status,
// code and public text (writeError writes them as JSON, writePageError as
// a page). Internal error text never reaches the client.
func answer(w http.ResponseWriter, log *slog.Logger, err error) *apiError {
	var ae *apiError
	var me *mailing.Error
	var mbe *http.MaxBytesError
	var ins *quota.InsufficientError
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, apitoken.ErrUnauthorized):
		ae = &apiError{status: 401, code: "unauthorized", message: "a valid bearer token is required"}
	case errors.As(err, &mbe):
		ae = &apiError{status: 413, code: "body_too_large", message: fmt.Sprintf("the request body exceeds %d bytes", mbe.Limit)}
	case errors.As(err, &me):
		ae = refused(me)
	case errors.Is(err, quota.ErrNotFound), errors.Is(err, report.ErrNotFound):
		ae = &apiError{status: 404, code: "not_found", message: "not found"}
	case errors.Is(err, report.ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), report.ErrInvalid.Error()+": ")
		ae = &apiError{status: 422, code: "invalid", message: msg, fields: map[string]string{"query": msg}}
	case errors.Is(err, campaign.ErrNotFound):
		ae = &apiError{status: 404, code: "not_found", message: "not found"}
	case errors.Is(err, campaign.ErrInvalid):
		ae = &apiError{status: 422, code: "invalid", message: err.Error(), fields: map[string]string{"campaign": err.Error()}}
	case errors.Is(err, campaign.ErrState):
		ae = &apiError{status: 409, code: "conflict", message: err.Error()}
	case errors.As(err, &ins):
		ae = &apiError{status: 409, code: "pool_exhausted", message: fmt.Sprintf("%s has %d messages left; this needs %d", ins.Account, ins.Remaining, ins.Requested),
			extra: map[string]any{"account": ins.Account, "remaining": ins.Remaining, "requested": ins.Requested}}
	case errors.Is(err, suppress.ErrNotFound):
		ae = &apiError{status: 404, code: "not_found", message: "not found"}
	case errors.Is(err, suppress.ErrInvalid):
		msg := strings.TrimPrefix(err.Error(), suppress.ErrInvalid.Error()+": ")
		ae = &apiError{status: 422, code: "invalid", message: msg, fields: map[string]string{"suppression": msg}}
	case errors.Is(err, contacts.ErrNotFound):
		ae = &apiError{status: 404, code: "not_found", message: err.Error()}
	case errors.Is(err, contacts.ErrInvalid):
		ae = &apiError{status: 422, code: "invalid", message: err.Error()}
	case errors.Is(err, contacts.ErrExists):
		ae = &apiError{status: 409, code: "exists", message: err.Error()}
	case store.ConnLost(err):
		log.Error("api: database unreachable", "err", err)
		w.Header().Set("Retry-After", "5")
		ae = &apiError{status: 503, code: "unavailable", message: "the database is unreachable, try again"}
	default:
		if !errors.Is(err, context.Canceled) {
			log.Error("api: internal error", "err", err)
		}
		ae = &apiError{status: 500, code: "internal", message: "internal error, try again later"}
	}
	return ae
}

// refused is the answer to a refusal by the library, by its kind, with
// its public text and the field it is about.
func refused(e *mailing.Error) *apiError {
	invalid := func() *apiError {
		field := e.Field
		if field == "" {
			field = "message"
		}
		return &apiError{status: 422, code: "invalid", message: e.Public, fields: map[string]string{field: e.Public}}
	}
	var ins *quota.InsufficientError
	switch e.Kind {
	case quota.ErrInsufficient:
		if errors.As(e, &ins) {
			return &apiError{status: 409, code: "pool_exhausted", message: e.Public,
				extra: map[string]any{"account": ins.Account, "remaining": ins.Remaining, "requested": ins.Requested}}
		}
		return &apiError{status: 409, code: "pool_exhausted", message: e.Public}
	case mailing.ErrNotFound, quota.ErrNotFound:
		return &apiError{status: 404, code: "not_found", message: "not found"}
	case quota.ErrDisabled:
		return &apiError{status: 403, code: "account_disabled", message: "the account is disabled"}
	case quota.ErrOutsidePeriod:
		return &apiError{status: 409, code: "pool_outside_period", message: "the message pool is outside its period"}
	case mailing.ErrClosed:
		return &apiError{status: 503, code: "unavailable", message: "shutting down, try again"}
	}
	return invalid() // an address, the content, the sender, the size, the recipients, the account name
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decode reads a JSON body strictly: unknown fields are errors.
func decode(r *http.Request, v any) error {
	// No Content-Type is taken as JSON; a media type is case-insensitive
	// and may carry parameters (application/json; charset=utf-8).
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := strings.Cut(ct, ";")
		if mt = strings.TrimSpace(mt); !strings.EqualFold(mt, "application/json") {
			if len(mt) > 80 {
				mt = mt[:80] + "…"
			}
			return &apiError{status: 415, code: "unsupported_media_type", message: fmt.Sprintf("the body was sent as %q: send it as JSON "+
				"with Content-Type: application/json (curl: -H 'Content-Type: application/json')", mt)}
		}
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return &apiError{status: 400, code: "malformed_json", message: "the body is not valid JSON for this endpoint: " + jsonProblem(err)}
	}
	if _, err := dec.Token(); err != io.EOF {
		return &apiError{status: 400, code: "malformed_json", message: "the body holds more than one JSON value"}
	}
	return nil
}

func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		return fmt.Sprintf("field %q must be %s", te.Field, te.Type)
	case strings.HasPrefix(err.Error(), "json: unknown field"):
		return strings.TrimPrefix(err.Error(), "json: ")
	case errors.Is(err, io.EOF):
		return "empty body"
	}
	return "unreadable"
}

func (a *API) healthz(w http.ResponseWriter, r *http.Request, _ apitoken.Token) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	if err := a.cfg.Mailer.Ping(ctx); err != nil {
		a.cfg.Logger.Warn("health check: database unreachable", "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "database unreachable"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

// Route is a method and path the API serves.
type Route struct{ Method, Path string }

// Routes lists what the API serves (its OpenAPI document describes each).
func Routes() []Route {
	out := make([]Route, len(routes))
	for i, r := range routes {
		out[i] = Route{r.method, r.path}
	}
	return out
}
