package delivery

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/servir-pe/envios/internal/bounce"
	"github.com/servir-pe/envios/internal/dkimkey"
	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing/smtpout"
)

// deliver builds and signs the message of a group of recipients (one
// message, one domain; see group), sends it in one transaction and says
// what happened to each recipient. A panic is recovered: every recipient
// of the group is deferred, none is lost. Before anything is built, admit
// decides whether it goes now.
func (e *Engine) deliver(ctx context.Context, g []mailstore.Claimed) (out []outcome) {
	out = make([]outcome, len(g))
	for i, it := range g {
		out[i].it = it
	}
	going := len(g) // the recipients that go now (see admit)
	every := func(res smtpout.Result) []outcome {
		for i := range out[:going] {
			out[i].res = res
		}
		return out
	}
	defer func() {
		if p := recover(); p != nil {
			e.st.Logger.Error("delivery panicked", "recipient", g[0].ID, "recipients", len(g), "panic", p)
			out = make([]outcome, len(g))
			for i, it := range g {
				out[i] = outcome{it: it, res: smtpout.Result{Text: fmt.Sprintf("internal error: %v", p)}}
			}
		}
	}()
	first := g[0]
	adm := e.admit(ctx, g, out)
	if adm == nil {
		return out // waiting, unattempted: see admit
	}
	going = adm.n
	defer func() { e.finish(ctx, adm, out[:adm.n]) }()
	src, err := e.source(ctx, first.MessageID)
	if err != nil {
		return every(smtpout.Result{Text: "reading the message: " + err.Error()}) // the database: try again later
	}
	raw, err := src.Render(mailstore.RecipientRow{ID: first.ID, Address: first.Address, Name: first.Name, Data: first.Data, RFCMessageID: first.RFCMessageID})
	if err != nil {
		for i := range out {
			out[i].failed = "message could not be built: " + err.Error()
		}
		return out
	}
	raw, err = e.prepare(ctx, first, src, raw)
	if err != nil {
		return every(smtpout.Result{Text: err.Error()})
	}
	domain := domainOf(first.Address)
	to := make([]string, adm.n)
	for i, it := range g[:adm.n] {
		to[i] = it.Address
	}
	results := e.cfg.Transport.Deliver(ctx, e.ReturnPath(first.ID), to, raw)
	policy := -1
	for i := range out[:adm.n] {
		out[i].res, out[i].attempted = results[i], true
		if r := results[i]; r.Permanent() && bounce.Classify(r.Code, r.Enhanced, r.Text) == bounce.Policy {
			policy = i
		}
	}
	if policy >= 0 {
		e.policyRefusal(domain, results[policy])
	}
	return out
}

// admission is what a transaction took before it is sent: a slot of its
// destinations' limits and its share of the warm-up cap.
type admission struct {
	slot *slot
	warm *warmTake // nil: no cap counted
	n    int       // its first n recipients go now; the rest wait for the warm-up plan's next day
}

// admit decides, before the message is built, whether a transaction goes
// now. It waits, unattempted (out says until when), when a policy refusal
// paused bulk mail to the domain; past the warm-up plan's cap for the day
// (bulk mail: those over it wait for the next day); or when its
// destinations' limits (limiter.acquire: the domain's fixed entry, the
// smarthost or the domain's MX group, found by the transport's Route) are
// full for longer than 250 ms. nil: nothing goes now.
func (e *Engine) admit(ctx context.Context, g []mailstore.Claimed, out []outcome) *admission {
	first := g[0]
	domain := domainOf(first.Address)
	wait := func(from int, text string, d time.Duration) {
		for i := from; i < len(out); i++ {
			out[i].res, out[i].retryIn = smtpout.Result{Text: text}, d
		}
	}
	if d := e.limits.bulkPaused(domain, e.st.Now()); first.Priority > 0 && d > 0 {
		// A policy refusal paused bulk mail to the destination: it waits,
		// unattempted; transactional mail still goes.
		wait(0, "bulk mail to "+domain+" paused after a policy refusal", d)
		return nil
	}
	rt := e.route(ctx, domain)
	n, take, next, err := e.takeWarmUp(ctx, rt, domain, g)
	if err != nil {
		wait(0, "warm-up count: "+err.Error(), e.backoff(1))
		return nil
	}
	if n < len(g) {
		wait(n, "warm-up plan: today's cap for "+take.group+" is reached; it waits for the next day", max(time.Second, next.Sub(e.st.Now())))
	}
	if n == 0 {
		return nil
	}
	s, d := e.limits.acquire(ctx, rt, domain, 250*time.Millisecond)
	if s == nil {
		// The destination's limits are full: try again when they are not,
		// without counting an attempt or holding a worker.
		e.giveBackWarmUp(ctx, take, out[:n])
		wait(0, "waiting for "+domain+"'s delivery rate limit", d)
		return nil
	}
	return &admission{slot: s, warm: take, n: n}
}

// finish gives back what a transaction took: its slot, with the
// destination's feedback if it was attempted, and the warm-up count of
// the recipients not handed over.
func (e *Engine) finish(ctx context.Context, a *admission, out []outcome) {
	if len(out) > 0 && out[0].attempted {
		results := make([]smtpout.Result, len(out))
		for i, o := range out {
			results[i] = o.res
		}
		a.slot.done(results)
	} else {
		a.slot.release()
	}
	e.giveBackWarmUp(ctx, a.warm, out)
}

// router is a transport that tells where a domain's mail goes before
// delivering it (smtpout.Smarthost and smtpout.DirectMX do).
type router interface {
	Route(ctx context.Context, domain string) smtpout.Route
}

// route is where the transport sends domain's mail: what its limits are
// keyed on. A transport that cannot tell gives each domain its own.
func (e *Engine) route(ctx context.Context, domain string) smtpout.Route {
	r, ok := e.cfg.Transport.(router)
	if !ok {
		return smtpout.Route{Key: domain, Group: domain}
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return r.Route(ctx, domain)
}

// PolicyPause is how long bulk mail to a destination waits after it
// refused a message for policy (5.7.x: our reputation, DMARC, PTR,
// Outlook's 5.7.515): the refusal names our configuration, not the
// recipient, so nothing is suppressed; an operator is alerted instead.
const PolicyPause = 30 * time.Minute

// policyRefusal raises the alarm for a policy refusal and pauses bulk
// mail to the destination.
func (e *Engine) policyRefusal(domain string, r smtpout.Result) {
	e.PauseBulk(domain, r.Host, r.Reply())
}

// PauseBulk raises the alarm for a policy refusal of mail to domain —
// during delivery, or reported later by a DSN (internal/feedback) — and
// holds the engine's bulk mail to the domain for PolicyPause; transactional
// mail goes on. host and reply say who refused and how.
func (e *Engine) PauseBulk(domain, host, reply string) {
	domain = strings.ToLower(domain)
	until := e.st.Now().Add(PolicyPause)
	e.limits.pauseBulk(domain, until)
	e.stats.policy(domain)
	e.st.Logger.Error("ALARM: a destination refused our mail for policy (reputation, DMARC, SPF/DKIM, PTR): check the sending domain's DNS and reputation; bulk mail to it is paused",
		"domain", domain, "host", host, "reply", reply, "paused_until", until.UTC().Format(time.RFC3339))
}

// DestinationRate is the messages per second the engine allows a domain's
// own destination now: its Config.Limits entry if it has one, else the
// smarthost or its MX group (+Inf: unlimited). Throttling lowers it.
func (e *Engine) DestinationRate(domain string) float64 {
	return e.limits.rate(strings.ToLower(domain))
}

// source returns the shared parts of a message, from a small cache: a
// batch's recipients are claimed together, so one read serves thousands.
func (e *Engine) source(ctx context.Context, messageID string) (*mailstore.Source, error) {
	e.cacheMu.Lock()
	src, ok := e.cache[messageID]
	e.cacheMu.Unlock()
	if ok {
		return src, nil
	}
	err := store.RetryConnLost(ctx, e.st.DB, func() (err error) {
		src, err = e.st.Load(ctx, messageID)
		return err
	})
	if err != nil {
		return nil, err
	}
	e.cacheMu.Lock()
	if len(e.cache) >= 256 {
		clear(e.cache) // messages are immutable: dropping them only costs a re-read
	}
	e.cache[messageID] = src
	e.cacheMu.Unlock()
	return src, nil
}

type cachedKeys struct {
	keys []dkimkey.Key
	err  error
	at   time.Time
}

// keys returns the signing keys of a domain, read at most every 30 seconds
// (a rotation or a new key takes effect within that).
func (e *Engine) keys(ctx context.Context, domain string) ([]dkimkey.Key, error) {
	e.cacheMu.Lock()
	c, ok := e.keyCache[domain]
	e.cacheMu.Unlock()
	if ok && time.Since(c.at) < 30*time.Second {
		return c.keys, c.err
	}
	var keys []dkimkey.Key
	err := store.RetryConnLost(ctx, e.st.DB, func() (err error) {
		keys, err = dkimkey.Signing(ctx, e.st.DB, e.st.Sealer, domain)
		return err
	})
	if err != nil && !errors.Is(err, dkimkey.ErrNotFound) {
		return nil, err // a database error is not cached
	}
	e.cacheMu.Lock()
	e.keyCache[domain] = cachedKeys{keys, err, time.Now()}
	e.cacheMu.Unlock()
	return keys, err
}

// prepare adds the per-recipient headers and the DKIM signatures for the
// From domain.
func (e *Engine) prepare(ctx context.Context, it mailstore.Claimed, src *mailstore.Source, raw []byte) ([]byte, error) {
	from := src.From().Domain()
	var extra bytes.Buffer
	if it.Priority > 0 { // bulk: RFC 2369 + RFC 8058 one-click unsubscribe, and Gmail's feedback loop
		tok := e.Token(it.ID)
		fmt.Fprintf(&extra, "List-Unsubscribe: <%s%s>, <mailto:u+%s@%s>\r\n", e.cfg.UnsubscribeURL, tok, tok, e.cfg.ReturnPathDomain)
		extra.WriteString("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
		fmt.Fprintf(&extra, "Feedback-ID: %s\r\n", feedbackID(src.Msg))
	}
	msg := append(extra.Bytes(), raw...)
	keys, err := e.keys(ctx, from)
	if errors.Is(err, dkimkey.ErrNotFound) {
		if e.unsigned[from] {
			return msg, nil
		}
		return nil, fmt.Errorf("no DKIM key for %s: add one with `relayd domain add %s` (mail is not sent unsigned)", from, from)
	}
	if err != nil {
		return nil, err
	}
	return dkimkey.Sign(msg, keys, e.st.Now(), e.cfg.SignatureTTL)
}

// feedbackID is the Feedback-ID field of bulk mail (Gmail's feedback loop:
// a:b:c:SenderId, signed with the message): the campaign (or "bulk"), the
// account's id and the origin, and "envios"; Gmail's Postmaster Tools
// report complaint rates by each part.
func feedbackID(m mailstore.MessageRow) string {
	campaign := feedbackPart(m.Campaign)
	if campaign == "" {
		campaign = "bulk"
	}
	return fmt.Sprintf("%s:%d:%s:envios", campaign, m.AccountID, feedbackPart(string(m.Origin)))
}

// feedbackPart keeps letters, digits, '.', '_' and '-' (no ':', which
// separates the parts), at most 64 bytes.
func feedbackPart(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			b.WriteRune(r)
		} else if b.Len() > 0 {
			b.WriteByte('-')
		}
		if b.Len() >= 64 {
			break
		}
	}
	return strings.TrimRight(b.String(), "-")
}
