package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/base64"
	"errors"
	"html/template"
	"mime"
	"net/http"
	"strconv"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/internal/rcpttoken"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/suppress"
)

// One-click unsubscribe (RFC 8058; the link is the HTTPS URI of the
// List-Unsubscribe header, RFC 2369): POST /u/TOKEN, with a body sent as
// application/x-www-form-urlencoded (List-Unsubscribe=One-Click),
// multipart/form-data or nothing, records the unsubscribe and answers 200
// with a short page; anyone holding the message may POST it, again and
// again: the second time changes nothing. GET and HEAD /u/TOKEN change
// nothing (link scanners fetch them): they show a page whose button POSTs
// the form back to the same URL. No token, no cookie, never a redirect; a
// link whose token does not verify is 404, whatever the address.

// maxUnsubscribeBody bounds what is read of a POST's body: the one field
// RFC 8058 sends, or our page's.
const maxUnsubscribeBody = 16 << 10

// pageKind is which page an unsubscribe link shows.
type pageKind string

const (
	pageConfirm     pageKind = "confirm"     // GET: the button
	pageDone        pageKind = "done"        // POST: unsubscribed
	pageAlready     pageKind = "already"     // GET: the address no longer gets that mail
	pageInvalid     pageKind = "invalid"     // 404: the token does not verify
	pageUnavailable pageKind = "unavailable" // 5xx: try again later
)

// pageData is what a page says of the mail it is about.
type pageData struct {
	Kind    pageKind
	Sender  string // the From of the message: its display name, or its address
	Account string // the sending account, e.g. enap/eventos
	Topic   string // the campaign label the unsubscribe is about; "" all of the account's bulk mail
}

const pageStyle = `body{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#1a1a1a}` +
	`h1{font-size:1.4rem}h2{font-size:1.1rem}section{margin-top:2rem;padding-top:1rem;border-top:1px solid #ccc;color:#444}` +
	`button{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:.3rem;background:#b00020;color:#fff;cursor:pointer}` +
	`small{color:#555}`

// pageCSP allows the page nothing but its own style and a form posting to
// its own origin: no script, no frame, no other resource.
var pageCSP = func() string {
	sum := sha256.Sum256([]byte(pageStyle))
	return "default-src 'none'; style-src 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'; " +
		"form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
}()

var pageTemplate = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="es-PE">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex, nofollow">
<title>{{template "title" .}}</title>
<style>` + pageStyle + `</style>
</head>
<body>
<main>
{{- if eq .Kind "confirm"}}
<h1>¿Anular su suscripción?</h1>
<p>Si confirma, ya no recibirá correos masivos de <strong>{{.Sender}}</strong>{{if .Topic}} sobre «{{.Topic}}»{{end}} (cuenta {{.Account}}).</p>
<form method="post">
<input type="hidden" name="source" value="page">
<button type="submit">Anular suscripción / Unsubscribe</button>
</form>
<p><small>Seguirá recibiendo los correos sobre sus trámites y cuentas (transaccionales).</small></p>
<section lang="en">
<h2>Unsubscribe?</h2>
<p>Once you confirm with the button above, you will no longer receive bulk mail from <strong>{{.Sender}}</strong>{{if .Topic}} about “{{.Topic}}”{{end}} (account {{.Account}}).</p>
<p><small>You will still receive mail about your own procedures and accounts (transactional).</small></p>
</section>
{{- else if eq .Kind "done"}}
<h1>Se anuló su suscripción</h1>
<p>Ya no recibirá correos masivos de <strong>{{.Sender}}</strong>{{if .Topic}} sobre «{{.Topic}}»{{end}} (cuenta {{.Account}}).</p>
<section lang="en">
<h2>You have been unsubscribed</h2>
<p>You will no longer receive bulk mail from <strong>{{.Sender}}</strong>{{if .Topic}} about “{{.Topic}}”{{end}} (account {{.Account}}).</p>
</section>
{{- else if eq .Kind "already"}}
<h1>Su suscripción ya está anulada</h1>
<p>Ya no recibe correos masivos de <strong>{{.Sender}}</strong>{{if .Topic}} sobre «{{.Topic}}»{{end}} (cuenta {{.Account}}).</p>
<section lang="en">
<h2>You are already unsubscribed</h2>
<p>You no longer receive bulk mail from <strong>{{.Sender}}</strong>{{if .Topic}} about “{{.Topic}}”{{end}} (account {{.Account}}).</p>
</section>
{{- else if eq .Kind "invalid"}}
<h1>Enlace no válido</h1>
<p>Este enlace para anular una suscripción no es válido. Use el enlace del correo que recibió, completo.</p>
<section lang="en">
<h2>Invalid link</h2>
<p>This unsubscribe link is not valid. Use the whole link from the message you received.</p>
</section>
{{- else}}
<h1>Servicio no disponible</h1>
<p>No pudimos atender su pedido. Inténtelo de nuevo en unos minutos.</p>
<section lang="en">
<h2>Service unavailable</h2>
<p>We could not handle your request. Please try again in a few minutes.</p>
</section>
{{- end}}
</main>
</body>
</html>
{{define "title"}}{{if eq .Kind "confirm"}}Anular suscripción / Unsubscribe{{else if eq .Kind "done"}}Se anuló su suscripción / You have been unsubscribed{{else if eq .Kind "already"}}Suscripción anulada / Unsubscribed{{else if eq .Kind "invalid"}}Enlace no válido / Invalid link{{else}}Servicio no disponible / Service unavailable{{end}}{{end}}
`))

// writePage answers with a page: never cached, indexed, framed or
// scripted, and never a cookie.
func (a *API) writePage(w http.ResponseWriter, r *http.Request, status int, kind pageKind, d pageData) {
	d.Kind = kind
	var b bytes.Buffer
	if err := pageTemplate.Execute(&b, d); err != nil {
		a.cfg.Logger.Error("api: unsubscribe page", "err", err)
		status = http.StatusInternalServerError
		b.Reset()
		b.WriteString("Servicio no disponible / Service unavailable\n")
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(b.Len()))
	h.Set("Content-Language", "es-PE, en")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Robots-Tag", "noindex, nofollow")
	h.Set("Content-Security-Policy", pageCSP)
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(b.Bytes())
	}
}

// writePageError answers err as a page: its status decided by answer, the
// invalid-link page for 404, else the try-again page.
func (a *API) writePageError(w http.ResponseWriter, r *http.Request, err error) {
	ae := answer(w, a.cfg.Logger, err)
	kind := pageUnavailable
	if ae.status == http.StatusNotFound {
		kind = pageInvalid
	}
	a.writePage(w, r, ae.status, kind, pageData{})
}

var errBadLink = &apiError{status: http.StatusNotFound, code: "not_found", message: "not found"}

// recipientTokens is the keyring of the tokens of unsubscribe links.
func (a *API) recipientTokens(ctx context.Context) (*rcpttoken.Keyring, error) {
	a.keysMu.Lock()
	defer a.keysMu.Unlock()
	if a.keys != nil {
		return a.keys, nil
	}
	db, err := a.listDB()
	if err != nil {
		return nil, err
	}
	k, err := rcpttoken.Load(ctx, db, nil, a.cfg.Now())
	if err != nil {
		return nil, err // sealed: the caller must give Config.RecipientTokens
	}
	a.keys = k
	return k, nil
}

// linkRecipient is what a page says of the recipient a link names.
type linkRecipient struct {
	ID        int64
	Address   string
	AccountID int64
	Account   string
	FromName  string
	FromAddr  string
	Campaign  string
}

// recipientOfLink checks the token of a link and reads the recipient it
// names; errBadLink when it does not verify or names no recipient.
func (a *API) recipientOfLink(ctx context.Context, token string) (linkRecipient, error) {
	var lr linkRecipient
	keys, err := a.recipientTokens(ctx)
	if err != nil {
		return lr, err
	}
	id, ok := keys.Recipient(token)
	if !ok {
		return lr, errBadLink
	}
	err = a.cfg.DB.NewSelect().TableExpr("mail_recipients AS r").
		ColumnExpr("r.id, r.address, r.account_id, a.name AS account, m.from_name, m.from_addr, m.campaign").
		Join("JOIN mail_messages AS m ON m.id = r.message_id").
		Join("JOIN quota_accounts AS a ON a.id = r.account_id").
		Where("r.id = ?", id).Scan(ctx, &lr)
	if errors.Is(err, sql.ErrNoRows) {
		return lr, errBadLink
	}
	return lr, err
}

func (lr linkRecipient) page() pageData {
	d := pageData{Sender: lr.FromName, Account: lr.Account, Topic: lr.Campaign}
	if d.Sender == "" {
		d.Sender = lr.FromAddr
	}
	return d
}

// unsubscribePage is GET and HEAD /u/{token}: it reads, and changes
// nothing.
func (a *API) unsubscribePage(w http.ResponseWriter, r *http.Request, _ apitoken.Token) {
	ctx := r.Context()
	lr, err := a.recipientOfLink(ctx, r.PathValue("token"))
	if err != nil {
		a.writePageError(w, r, err)
		return
	}
	stops, err := suppress.Check(ctx, a.cfg.DB, suppress.Mail{AccountID: lr.AccountID, Bulk: true, Topic: lr.Campaign}, []string{lr.Address}, a.cfg.Now())
	if err != nil {
		a.writePageError(w, r, err)
		return
	}
	kind := pageConfirm
	if len(stops) > 0 {
		kind = pageAlready
	}
	a.writePage(w, r, http.StatusOK, kind, lr.page())
}

// unsubscribe is POST /u/{token}: the one-click unsubscribe (method
// one-click), or our page's button (method page).
func (a *API) unsubscribe(w http.ResponseWriter, r *http.Request, _ apitoken.Token) {
	method := unsubscribeMethod(w, r)
	ctx := r.Context()
	lr, err := a.recipientOfLink(ctx, r.PathValue("token"))
	if err != nil {
		a.writePageError(w, r, err)
		return
	}
	var e suppress.Entry
	var added bool
	err = store.RunInTx(ctx, a.cfg.DB, func(ctx context.Context, tx bun.Tx) error {
		var err error
		e, added, err = suppress.Unsubscribe(ctx, tx, lr.ID, method, "recipient:"+strconv.FormatInt(lr.ID, 10), a.cfg.Now())
		return err
	})
	if err != nil {
		a.writePageError(w, r, err)
		return
	}
	if added {
		a.cfg.Logger.Info("unsubscribed", "recipient", lr.ID, "account", lr.Account, "topic", e.Topic, "method", method, "suppression", e.ID)
	}
	a.writePage(w, r, http.StatusOK, pageDone, lr.page())
}

// unsubscribeMethod reads the POST's body, whatever it is: "page" when it
// is our page's form (source=page), else "one-click". A body it cannot
// read is a one-click POST all the same (RFC 8058 allows it empty).
func unsubscribeMethod(w http.ResponseWriter, r *http.Request) string {
	r.Body = http.MaxBytesReader(w, r.Body, maxUnsubscribeBody)
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	switch mt {
	case "multipart/form-data":
		if err := r.ParseMultipartForm(maxUnsubscribeBody); err == nil {
			defer r.MultipartForm.RemoveAll()
		}
	case "application/x-www-form-urlencoded":
		_ = r.ParseForm()
	}
	if r.PostForm.Get("source") == "page" {
		return "page"
	}
	return "one-click"
}
