package httpapi

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/servir-pe/envios/internal/apitoken"
	"github.com/servir-pe/envios/mailing/contacts"
)

// The imports of contact files over the API: POST /v1/imports streams the
// file to the job's file on disk (never into memory: the body is not
// bounded by Config.MaxBody but by contacts.Jobs.MaxFileSize) and answers
// 202 with the queued job; the job is followed with GET /v1/imports/{id}
// or its Server-Sent Events, cancelled with DELETE, and its rejected rows
// read as CSV or JSON.

// unboundedBody are the routes whose body wrap does not bound with
// Config.MaxBody: they stream it to disk under their own limit.
var unboundedBody = map[string]bool{"POST /v1/imports": true}

const (
	importPoll      = 500 * time.Millisecond // how often an import's stream reads its row
	importHeartbeat = 15 * time.Second       // an idle stream's keep-alive comment
	uploadIdle      = 2 * time.Minute        // an upload that sends nothing for this long ends
)

// uploadTypes are the media types an import's file may be sent as (none
// is taken as application/octet-stream).
var uploadTypes = map[string]bool{"text/csv": true, "application/octet-stream": true,
	"application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": true}

func (a *API) importJobs() (*contacts.Jobs, error) {
	if a.cfg.Imports == nil {
		return nil, errNoImports
	}
	return a.cfg.Imports, nil
}

// postImport queues an import of the body into ?list=, with ?mode= (add,
// update, unsubscribe, blocklist), ?map= (column overrides,
// email=Correo,name=Nombre), ?dry_run= and ?file_name= (or the
// Content-Disposition filename): 202 with the job and its Location.
func (a *API) postImport(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	jobs, err := a.importJobs()
	if err == nil {
		err = uploadType(r)
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	q := r.URL.Query()
	acct, err := account(tok, q.Get("account"))
	var dry bool
	if err == nil {
		dry, err = queryBool(r, "dry_run")
	}
	if err == nil && strings.TrimSpace(q.Get("list")) == "" {
		err = badField("list", "required: the list to import into (GET /v1/lists)")
	}
	if err == nil && r.ContentLength > jobs.MaxSize() {
		err = jobs.TooLarge()
	}
	if err != nil {
		w.Header().Set("Connection", "close") // the body is not read
		writeError(w, a.cfg.Logger, err)
		return
	}
	body := &uploadBody{r: r.Body, rc: http.NewResponseController(w)}
	im, err := jobs.Submit(r.Context(), body, contacts.ImportOptions{Account: acct, List: q.Get("list"), Mode: contacts.Mode(q.Get("mode")),
		Map: q.Get("map"), FileName: fileName(r), DryRun: dry, Actor: actor(tok)})
	if err != nil {
		w.Header().Set("Connection", "close")
		writeError(w, a.cfg.Logger, err)
		return
	}
	w.Header().Set("Location", fmt.Sprintf("/v1/imports/%d", im.ID))
	writeJSON(w, http.StatusAccepted, im)
}

// uploadType refuses a body sent as anything but a contacts file.
func uploadType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err == nil && uploadTypes[mt] {
		return nil
	}
	if len(ct) > 80 {
		ct = ct[:80] + "…"
	}
	return &apiError{status: http.StatusUnsupportedMediaType, code: "unsupported_media_type", message: fmt.Sprintf("the file was sent as %q: "+
		"send it as text/csv, application/vnd.openxmlformats-officedocument.spreadsheetml.sheet or application/octet-stream "+
		"(curl: --data-binary @contactos.csv -H 'Content-Type: text/csv')", ct)}
}

// fileName is the name the client gives the file.
func fileName(r *http.Request) string {
	if n := r.URL.Query().Get("file_name"); n != "" {
		return n
	}
	if _, ps, err := mime.ParseMediaType(r.Header.Get("Content-Disposition")); err == nil {
		return ps["filename"]
	}
	return ""
}

// uploadBody is a request body that may take as long as it needs while
// bytes keep coming (the server's ReadTimeout would end a big upload):
// each read pushes the read deadline uploadIdle ahead.
type uploadBody struct {
	r    io.Reader
	rc   *http.ResponseController
	next time.Time // when to push the deadline again
}

func (b *uploadBody) Read(p []byte) (int, error) {
	if now := time.Now(); now.After(b.next) {
		_ = b.rc.SetReadDeadline(now.Add(uploadIdle))
		b.next = now.Add(time.Second)
	}
	return b.r.Read(p)
}

// getImports lists the imports, the newest first (?limit=, default 100,
// at most 1,000).
func (a *API) getImports(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	jobs, err := a.importJobs()
	var limit int64
	if err == nil {
		limit, err = queryInt(r, "limit", 100)
	}
	var ims []contacts.Import
	if err == nil {
		ims, err = jobs.JobsList(r.Context(), readScope(tok, r), int(min(limit, 1000)))
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"imports": ims})
}

// importRef is the import a request names, as the token may see it.
func (a *API) importRef(r *http.Request, tok apitoken.Token) (*contacts.Jobs, contacts.Import, error) {
	jobs, err := a.importJobs()
	if err != nil {
		return nil, contacts.Import{}, err
	}
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		return nil, contacts.Import{}, &apiError{status: http.StatusNotFound, code: "not_found", message: "not found"}
	}
	im, err := jobs.Job(r.Context(), readScope(tok, r), id)
	return jobs, im, err
}

func (a *API) getImport(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	_, im, err := a.importRef(r, tok)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	writeJSON(w, http.StatusOK, im)
}

// deleteImport cancels an import: 200 when it is cancelled, 202 when it
// was running and stops shortly (follow it); 422 when it had ended.
func (a *API) deleteImport(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	jobs, im, err := a.importRef(r, tok)
	if err == nil {
		im, err = jobs.Cancel(r.Context(), readScope(tok, r), im.ID, actor(tok))
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	status := http.StatusOK
	if im.Status != "cancelled" {
		status = http.StatusAccepted
	}
	writeJSON(w, status, im)
}

// ended reports whether an import's status is final.
func ended(status string) bool {
	return status == "done" || status == "failed" || status == "cancelled"
}

// getImportEvents streams an import's progress as Server-Sent Events: an
// event progress with the job whenever it changes, then one event named
// after how it ended (done, failed or cancelled), and the stream closes.
func (a *API) getImportEvents(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	jobs, im, err := a.importRef(r, tok)
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeError(w, a.cfg.Logger, fmt.Errorf("httpapi: response cannot stream"))
		return
	}
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{}) // a stream reads nothing more
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, "retry: %d\n\n", time.Second.Milliseconds())
	flusher.Flush()
	tick := time.NewTicker(importPoll)
	defer tick.Stop()
	var last []byte
	idle := time.Now()
	for {
		_ = rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
		data, _ := json.Marshal(im)
		switch {
		case ended(im.Status):
			fmt.Fprintf(w, "event: %s\ndata: %s\n\n", im.Status, data)
			flusher.Flush()
			return
		case !bytes.Equal(data, last):
			if _, err := fmt.Fprintf(w, "event: progress\ndata: %s\n\n", data); err != nil {
				return
			}
			flusher.Flush()
			last, idle = data, time.Now()
		case time.Since(idle) > importHeartbeat: // proxies close idle streams
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
		id := im.ID
		if im, err = jobs.Job(r.Context(), readScope(tok, r), id); err != nil {
			if r.Context().Err() == nil {
				a.cfg.Logger.Error("api: import stream", "import", id, "err", err)
			}
			return
		}
	}
}

// getImportRejects is an import's reject report: all of it as CSV
// (line,reason,raw; cells a spreadsheet would run as a formula get a
// leading '), or with ?format=json one page of ?limit= (default 1,000, at
// most 10,000) rejects after line ?after=, with next, the after of the
// next page (0 on the last).
func (a *API) getImportRejects(w http.ResponseWriter, r *http.Request, tok apitoken.Token) {
	jobs, im, err := a.importRef(r, tok)
	var after, limit int64
	if err == nil {
		if after, err = queryInt(r, "after", 0); err == nil {
			limit, err = queryInt(r, "limit", 1000)
			limit = min(max(limit, 1), 10000)
		}
	}
	format := r.URL.Query().Get("format")
	if err == nil && format != "" && format != "csv" && format != "json" {
		err = badField("format", "csv (the default) or json")
	}
	var rs []contacts.Reject
	if err == nil {
		rs, err = jobs.Store.Rejects(r.Context(), im.ID, after, int(limit))
	}
	if err != nil {
		writeError(w, a.cfg.Logger, err)
		return
	}
	if format == "json" {
		var next int64
		if int64(len(rs)) == limit {
			next = rs[len(rs)-1].Line
		}
		if rs == nil {
			rs = []contacts.Reject{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"rejects": rs, "next": next})
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", fmt.Sprintf(`attachment; filename="import-%d-rejects.csv"`, im.ID))
	w.Header().Set("Cache-Control", "no-store")
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"line", "reason", "raw"})
	for {
		for _, x := range rs {
			_ = cw.Write([]string{strconv.FormatInt(x.Line, 10), csvCell(x.Reason), csvCell(x.Raw)})
		}
		if cw.Flush(); cw.Error() != nil || int64(len(rs)) < limit {
			return
		}
		if rs, err = jobs.Store.Rejects(r.Context(), im.ID, rs[len(rs)-1].Line, int(limit)); err != nil {
			a.cfg.Logger.Error("api: reject report cut short", "import", im.ID, "err", err)
			panic(http.ErrAbortHandler) // the client must not take a partial report for a whole one
		}
	}
}

// csvCell escapes a cell a spreadsheet would run as a formula (CSV
// injection), as report's exports do.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}
