package httpapi

import (
	"net/http"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/mailing/contacts"
)

// Segments over the API: an account's saved filters on its contacts
// (GET and POST /v1/segments) and how many active contacts one selects
// (GET /v1/segments/count?expression=E or ?name=N).

func (a *API) getSegments(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	cs, err := a.contactsStore()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	ss, err := cs.Segments(r.Context(), readScope(tok, r))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	if ss == nil {
		ss = []contacts.Segment{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"segments": ss})
}

type segmentRequest struct {
	Account    string `json:"account"`
	Name       string `json:"name"`
	Expression string `json:"expression"`
}

func (a *API) postSegment(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	cs, err := a.contactsStore()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var req segmentRequest
	if err := decode(r, &req); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	account, err := ownAccount(tok, req.Account)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	sg, err := cs.SaveSegment(r.Context(), account, req.Name, req.Expression, actor(tok))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	n, err := cs.CountSegment(r.Context(), account, sg.Expression)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"segment": sg, "contacts": n})
}

func (a *API) getSegmentCount(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	cs, err := a.contactsStore()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	q := r.URL.Query()
	account, err := ownAccount(tok, q.Get("account"))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	expr := q.Get("expression")
	if name := q.Get("name"); name != "" {
		sg, err := cs.Segment(r.Context(), account, name)
		if err != nil {
			writeError(w, a.cfg.Logger, err)
			return
		}
		expr = sg.Expression
	}
	if expr == "" {
		writeError(w, a.cfg.Logger, invalidField("expression", "give ?expression=E or ?name=N"))
		return
	}
	n, err := cs.CountSegment(r.Context(), account, expr)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"expression": expr, "contacts": n})
}
