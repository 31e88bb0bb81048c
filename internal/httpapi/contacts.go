package httpapi

import (
	"net/http"
	"strings"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/mailing/contacts"
)

// The contacts over the API: an account's lists (GET and POST /v1/lists),
// the deletion of a contact (DELETE /v1/contacts/{address}, the right to
// deletion of Ley 29733) and the imports of files into lists (imports.go).
// An account token acts on its own account; an admin token names one with
// ?account= (reads without it see every account).

// errNoContacts answers the contacts routes of an API configured without
// Config.Contacts (or, for the imports, Config.Imports).
var (
	errNoContacts = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "contacts are not available on this server"}
	errNoImports  = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "imports are not available on this server"}
)

func (a *API) contactsStore() (*contacts.Store, error) {
	if a.cfg.Contacts == nil {
		return nil, errNoContacts
	}
	return a.cfg.Contacts, nil
}

// badField is a 422 about one request field, as every refusal of the API.
func badField(field, msg string) *apiError {
	return &apiError{status: http.StatusUnprocessableEntity, code: "invalid", message: field + ": " + msg, fields: map[string]string{field: msg}}
}

// getLists lists the lists, by name, with how many contacts each has
// subscribed and unsubscribed.
func (a *API) getLists(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	cs, err := a.contactsStore()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ls, err := cs.Lists(r.Context(), readScope(tok, r))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	if ls == nil {
		ls = []contacts.List{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"lists": ls})
}

// listRequest is POST /v1/lists.
type listRequest struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

// postList adds a list: 201 with it; 409 when the account has one of that
// name.
func (a *API) postList(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	cs, err := a.contactsStore()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var req listRequest
	if err := decode(r, &req); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	acct, err := account(tok, r.URL.Query().Get("account"))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	l, err := cs.CreateList(r.Context(), acct, req.Name, req.Description, actor(tok))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusCreated, l)
}

// deleteContact deletes a contact and its list memberships, with why
// (?why= or a JSON body {"why": …}), kept in the audit log. The records
// of mail already sent to the address stay.
func (a *API) deleteContact(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	cs, err := a.contactsStore()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
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
		writeError(w, a.cfg.Logger, badField("why", "required: why the contact is deleted (Ley 29733; kept in the audit log)"))
		return
	}
	acct, err := account(tok, r.URL.Query().Get("account"))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	addr := strings.ToLower(strings.TrimSpace(r.PathValue("address")))
	if err := cs.Delete(r.Context(), acct, addr, actor(tok), why); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"deleted": addr, "account": acct})
}
