package httpapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/report"
)

// getEvents is the live event stream, as Server-Sent Events: one event per
// recipient acceptance and per attempt or final change, each with an id. A
// client that reconnects with Last-Event-ID (or ?after=) continues after
// the last event it saw; none is skipped or repeated. The stream runs a
// couple of seconds behind the commits (report.EventsFilter.Lag).
func (a *API) getEvents(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	after := r.Header.Get("Last-Event-ID")
	if after == "" {
		after = r.URL.Query().Get("after")
	}
	cur, err := report.ParseCursor(after)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	account := readScope(tok, r)
	// Check the scope once before the stream starts (an unknown account is
	// a 404 answer, not a broken stream).
	if _, _, err := a.cfg.Reports.Events(r.Context(), report.EventsFilter{Account: account, After: cur, Limit: 1}); err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, a.cfg.Logger, fmt.Errorf("httpapi: response cannot stream"))
		return
	}
	rc := http.NewResponseController(w)
	// The server's ReadTimeout would end a long stream: a stream reads
	// nothing more from the client, so it has no read deadline.
	_ = rc.SetReadDeadline(time.Time{})
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", a.cfg.EventPoll.Milliseconds())
	flusher.Flush()
	tick := time.NewTicker(a.cfg.EventPoll)
	defer tick.Stop()
	idle := time.Now()
	for {
		evs, next, err := a.cfg.Reports.Events(r.Context(), report.EventsFilter{Account: account, After: cur, Lag: a.cfg.EventLag})
		if err != nil {
			if r.Context().Err() == nil {
				a.cfg.Logger.Error("api: event stream", "err", err)
			}
			return
		}
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for _, ev := range evs {
			data, _ := json.Marshal(ev)
			if _, err := fmt.Fprintf(w, "id: %s\nevent: %s\ndata: %s\n\n", ev.ID, ev.Type, data); err != nil {
				return
			}
		}
		cur = next
		if len(evs) > 0 {
			flusher.Flush()
			idle = time.Now()
			continue // there may be more right away
		}
		if time.Since(idle) > 15*time.Second { // a comment keeps proxies from closing an idle stream
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil {
				return
			}
			flusher.Flush()
			idle = time.Now()
		}
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}
