// Package httpapi is the HTTPS JSON API of relayd: the agency's systems
// written in any language send mail (POST /v1/messages, the semantics of
// package mailing), cancel it, and read what happened to it, with bearer
// tokens scoped to one account (or admin). Errors are JSON
// {"error": {"code", "message", "fields"}}, made in one function, writeError.
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
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing"
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
}

// API serves the routes.
type API struct {
	cfg Config
	mux *http.ServeMux
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
	a := &API{cfg: cfg, mux: http.NewServeMux()}
	for _, r := range routes {
		a.mux.HandleFunc(r.method+" "+r.path, a.wrap(r))
	}
	a.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, a.cfg.Logger, &apiError{status: http.StatusNotFound, code: "not_found", message: "no such endpoint"})
	})
	return a, nil
}

// Handler is the API's http.Handler.
func (a *API) Handler() http.Handler { return a.mux }

func (a *API) wrap(rt route) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		r.Body = http.MaxBytesReader(w, r.Body, a.cfg.MaxBody)
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

// writeError is the one place where errors become HTTP answers. Internal
// error text never reaches the client.
func writeError(w http.ResponseWriter, log *slog.Logger, err error) {
	var ae *apiError
	var me *mailing.Error
	var mbe *http.MaxBytesError
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
	body := map[string]any{"code": ae.code, "message": ae.message}
	if len(ae.fields) > 0 {
		body["fields"] = ae.fields
	}
	for k, v := range ae.extra {
		body[k] = v
	}
	writeJSON(w, ae.status, map[string]any{"error": body})
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
