package httpapi

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/mailing/campaign"
)

// Templates, campaigns and segments over the API. An account token acts
// on its own account's (another account's campaign is 404, whatever its
// id); an admin token on any, naming the account where one is created.

var errNoCampaigns = &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "campaigns are not available on this server"}

func (a *API) campaigns() (*campaign.Store, error) {
	if a.cfg.Campaigns == nil {
		return nil, errNoCampaigns
	}
	return a.cfg.Campaigns, nil
}

// ownAccount is the account a request creates something in: an account
// token's own (naming another is 404), or the one an admin token names
// (required).
func ownAccount(tok apitoken.Token, named string) (string, error) {
	named = strings.TrimSpace(named)
	if tok.Admin() {
		if named == "" {
			return "", invalidField("account", "an admin token must name the account")
		}
		return named, nil
	}
	if named != "" && !strings.EqualFold(named, tok.Account) {
		return "", &apiError{status: 404, code: "not_found", message: "not found"}
	}
	return tok.Account, nil
}

// campaignRequest is a campaign as created or changed.
type campaignRequest struct {
	Account  string    `json:"account"`
	Name     string    `json:"name"`
	From     string    `json:"from"`
	ReplyTo  []string  `json:"reply_to"`
	Template string    `json:"template"`
	Subject  string    `json:"subject"`
	Text     string    `json:"text"`
	HTML     string    `json:"html"`
	Lists    []string  `json:"lists"`
	Segment  string    `json:"segment"`
	Topic    string    `json:"topic"`
	Tags     []string  `json:"tags"`
	SendAt   time.Time `json:"send_at"`
}

func (req campaignRequest) spec(account string) campaign.Spec {
	return campaign.Spec{Account: account, Name: req.Name, From: req.From, ReplyTo: req.ReplyTo, Template: req.Template, Subject: req.Subject,
		Text: req.Text, HTML: req.HTML, Lists: req.Lists, Segment: req.Segment, Topic: req.Topic, Tags: req.Tags, SendAt: req.SendAt}
}

func (a *API) postCampaign(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	a.saveCampaign(w, r, tok, 0)
}

func (a *API) putCampaign(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	id, err := pathID(r)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	a.saveCampaign(w, r, tok, id)
}

func (a *API) saveCampaign(w http.ResponseWriter, r *http.Request, tok apitoken.Token, id int64) {
	s, err := a.campaigns()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var req campaignRequest
	if err := decode(r, &req); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	account, err := ownAccount(tok, req.Account)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var c campaign.Campaign
	status := http.StatusCreated
	if id == 0 {
		c, err = s.Create(r.Context(), req.spec(account), actor(tok))
	} else {
		if _, err = s.Get(r.Context(), scope(tok), id); err == nil {
			c, err = s.Update(r.Context(), id, req.spec(account), actor(tok))
		}
		status = http.StatusOK
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	if id == 0 {
		w.Header().Set("Location", "/v1/campaigns/"+strconv.FormatInt(c.ID, 10))
	}
	writeJSON(w, status, c)
}

// pathID is the {id} of the path, a positive number.
func pathID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return 0, &apiError{status: 404, code: "not_found", message: "not found"}
	}
	return id, nil
}

func (a *API) getCampaigns(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	s, err := a.campaigns()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	before, err := queryInt(r, "before", 0)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	limit, err := queryInt(r, "limit", 100)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	account := scope(tok)
	if tok.Admin() {
		account = r.URL.Query().Get("account")
	}
	cs, err := s.List(r.Context(), account, campaign.ListOptions{Status: campaign.Status(r.URL.Query().Get("status")), BeforeID: before, Limit: int(limit)})
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"campaigns": cs})
}

// campaignCall runs one call on the campaign of the path, in the token's
// account, and writes its result (status 200).
func (a *API) campaignCall(w http.ResponseWriter, r *http.Request, tok apitoken.Token, call func(s *campaign.Store, account string, id int64) (any, error)) {
	s, err := a.campaigns()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	id, err := pathID(r)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	out, err := call(s, scope(tok), id)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *API) getCampaign(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	a.campaignCall(w, r, tok, func(s *campaign.Store, account string, id int64) (any, error) {
		return s.Progress(r.Context(), account, id)
	})
}

func (a *API) getPreflight(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	a.campaignCall(w, r, tok, func(s *campaign.Store, account string, id int64) (any, error) {
		return s.Preflight(r.Context(), account, id)
	})
}

func (a *API) getPreview(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	a.campaignCall(w, r, tok, func(s *campaign.Store, account string, id int64) (any, error) {
		return s.Preview(r.Context(), account, id, r.URL.Query().Get("as"))
	})
}

func (a *API) getCampaignRecipients(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	a.campaignCall(w, r, tok, func(s *campaign.Store, account string, id int64) (any, error) {
		after := -1
		if v := r.URL.Query().Get("after"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < -1 {
				return nil, invalidField("after", "a recipient seq, or -1")
			}
			after = n
		}
		limit, err := queryInt(r, "limit", 1000)
		if err != nil || limit > 10000 {
			return nil, invalidField("limit", "1 to 10,000")
		}
		rs, err := s.Recipients(r.Context(), account, id, after, int(limit))
		return map[string]any{"recipients": recipientsOut(rs)}, err
	})
}

func (a *API) postCampaignAction(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	a.campaignCall(w, r, tok, func(s *campaign.Store, account string, id int64) (any, error) {
		ctx, who := r.Context(), actor(tok)
		switch action := r.PathValue("action"); action {
		case "start":
			c, p, err := s.Start(ctx, account, id, who) // Run materialises it
			return map[string]any{"campaign": c, "preflight": p}, err
		case "pause":
			return s.Pause(ctx, account, id, who)
		case "resume":
			return s.Resume(ctx, account, id, who)
		case "cancel":
			return s.Cancel(ctx, account, id, who)
		case "extend":
			n, err := s.Extend(ctx, account, id, who)
			return map[string]any{"added": n}, err
		case "clone":
			var req struct {
				Name string `json:"name"`
			}
			if r.ContentLength != 0 {
				if err := decode(r, &req); err != nil {
					return nil, err
				}
			}
			return s.Clone(ctx, account, id, req.Name, who)
		case "test":
			var req struct {
				To string `json:"to"`
				As string `json:"as"`
			}
			if err := decode(r, &req); err != nil {
				return nil, err
			}
			if req.To == "" {
				return nil, invalidField("to", "the address to send the test to")
			}
			return s.Test(ctx, account, id, req.To, req.As, who)
		default:
			return nil, &apiError{status: 404, code: "not_found", message: "no campaign action " + strconv.Quote(action) +
				" (start, pause, resume, cancel, extend, clone, test)"}
		}
	})
}

type templateRequest struct {
	Account string `json:"account"`
	Shared  bool   `json:"shared"` // admin only: a template every account may use
	Name    string `json:"name"`
	Subject string `json:"subject"`
	Text    string `json:"text"`
	HTML    string `json:"html"`
}

func (a *API) postTemplate(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	s, err := a.campaigns()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	var req templateRequest
	if err := decode(r, &req); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	account := ""
	switch {
	case req.Shared && !tok.Admin():
		err = &apiError{status: 403, code: "forbidden", message: "shared templates are an admin's: an admin token is needed"}
	case req.Shared && req.Account != "":
		err = invalidField("account", "a shared template has no account")
	case !req.Shared:
		account, err = ownAccount(tok, req.Account)
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	t, err := s.SaveTemplate(r.Context(), campaign.Template{Account: account, Name: req.Name, Subject: req.Subject, Text: req.Text, HTML: req.HTML}, actor(tok))
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, t)
}

func (a *API) getTemplates(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	s, err := a.campaigns()
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	account := scope(tok)
	if tok.Admin() {
		account = r.URL.Query().Get("account")
	}
	ts, err := s.Templates(r.Context(), account)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"templates": ts})
}
