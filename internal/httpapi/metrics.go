package httpapi

import (
	"bufio"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
)

// getMetrics is the Prometheus text exposition (version 0.0.4): the
// recipients counted by account, origin and kind (from the report
// counters, so every node of a cluster reports the same), the queue, and
// what the serving process adds (Config.Metrics: SMTP sessions, failed
// logins, delivery outcomes and latency). Admin tokens only.
func (a *API) getMetrics(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	if !tok.Admin() {
		writeError(w, a.cfg.Logger, &apiError{status: 404, code: "not_found", message: "not found"})
		return
	}
	cs, err := a.cfg.Reports.CounterTotals(r.Context())
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	q, err := a.cfg.Reports.Queue(r.Context())
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	supp, err := a.cfg.Reports.ActiveSuppressions(r.Context(), a.cfg.Now())
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	b := bufio.NewWriter(w)
	fmt.Fprintln(b, "# HELP envios_recipients_total Recipients by what happened to them: accepted, sent, deferred (attempts), bounced, failed, cancelled.")
	fmt.Fprintln(b, "# TYPE envios_recipients_total counter")
	for _, c := range cs {
		fmt.Fprintf(b, "envios_recipients_total{account=%q,origin=%q,kind=%q} %d\n", label(c.Account), label(string(c.Origin)), label(c.Kind), c.N)
	}
	fmt.Fprintln(b, "# HELP envios_queue_recipients Recipients not yet final, by status.")
	fmt.Fprintln(b, "# TYPE envios_queue_recipients gauge")
	for _, s := range []string{"queued", "scheduled", "deferred", "sending"} {
		fmt.Fprintf(b, "envios_queue_recipients{status=%q} %d\n", s, q.ByStatus[s])
	}
	fmt.Fprintln(b, "# HELP envios_queue_oldest_due_seconds How long the longest-waiting due recipient has been due.")
	fmt.Fprintln(b, "# TYPE envios_queue_oldest_due_seconds gauge")
	age := 0.0
	if !q.OldestDue.IsZero() {
		age = time.Since(q.OldestDue).Seconds()
	}
	fmt.Fprintf(b, "envios_queue_oldest_due_seconds %.3f\n", age)
	fmt.Fprintln(b, "# HELP envios_suppressions Suppression-list entries that stop mail now, by reason and scope.")
	fmt.Fprintln(b, "# TYPE envios_suppressions gauge")
	for _, x := range supp {
		fmt.Fprintf(b, "envios_suppressions{reason=%q,scope=%q} %d\n", label(x.Reason), label(x.Scope), x.N)
	}
	if a.cfg.Metrics != nil {
		a.cfg.Metrics(b)
	}
	_ = b.Flush()
}

// label escapes a label value for the text format (%q adds the quotes).
func label(s string) string { return strings.ToValidUTF8(s, "") }
