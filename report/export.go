package report

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"strconv"
	"time"

	"github.com/uptrace/bun"
)

// All streams every row f selects, in recipient id order, from one query
// whose rows are read as they arrive: memory stays flat however many rows
// match. f.After skips to after a recipient id (to resume); a positive
// f.Limit stops after that many rows. Stopping the loop early closes the
// query. The query holds a database connection until the loop ends, so a
// slow consumer holds it that long.
func (r *Reporter) All(ctx context.Context, f Filter) iter.Seq2[Row, error] {
	q, err := r.rowQuery(ctx, f)
	if err != nil {
		return func(yield func(Row, error) bool) { yield(Row{}, err) }
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit))
	}
	return r.stream(ctx, q)
}

// stream runs q (selecting rowColumns) and yields its rows as they arrive.
func (r *Reporter) stream(ctx context.Context, q *bun.SelectQuery) iter.Seq2[Row, error] {
	return func(yield func(Row, error) bool) {
		rows, err := q.Rows(ctx)
		if err != nil {
			yield(Row{}, fmt.Errorf("report: read rows: %w", err))
			return
		}
		defer rows.Close()
		for rows.Next() {
			var x Row
			if err := r.scan(rows, &x); err != nil {
				yield(Row{}, err)
				return
			}
			if !yield(x, nil) {
				return
			}
		}
		if err := rows.Err(); err != nil {
			yield(Row{}, fmt.Errorf("report: read rows: %w", err))
		}
	}
}

// Format is an export format.
type Format string

// The export formats.
const (
	CSV       Format = "csv"   // RFC 4180 with a header row; formula-like cells escaped
	JSONLines Format = "jsonl" // one JSON object per line (jsonlines.org)
)

// Columns are the export's columns, in order: the CSV header and the keys
// of each JSON Lines object.
var Columns = []string{"id", "account", "origin", "message_id", "campaign", "subject", "address", "kind", "status",
	"accepted_at", "attempts", "last_attempt_at", "final_at", "remote_host", "reply", "rfc_message_id"}

// exportRow is a Row as exported: times as RFC 3339 text, to the second,
// in the Reporter's Location; null (JSON) or empty (CSV) when they have
// not happened.
type exportRow struct {
	ID            int64   `json:"id"`
	Account       string  `json:"account"`
	Origin        string  `json:"origin"`
	MessageID     string  `json:"message_id"`
	Campaign      string  `json:"campaign"`
	Subject       string  `json:"subject"`
	Address       string  `json:"address"`
	Kind          string  `json:"kind"`
	Status        string  `json:"status"`
	AcceptedAt    string  `json:"accepted_at"`
	Attempts      int     `json:"attempts"`
	LastAttemptAt *string `json:"last_attempt_at"`
	FinalAt       *string `json:"final_at"`
	RemoteHost    string  `json:"remote_host"`
	Reply         string  `json:"reply"`
	RFCMessageID  string  `json:"rfc_message_id"`
}

func stamp(t time.Time) *string {
	if t.IsZero() {
		return nil
	}
	s := t.Format(time.RFC3339)
	return &s
}

func (x *Row) export() exportRow {
	return exportRow{x.ID, x.Account, string(x.Origin), x.MessageID, x.Campaign, x.Subject, x.Address, x.Kind, string(x.Status),
		x.AcceptedAt.Format(time.RFC3339), x.Attempts, stamp(x.LastAttemptAt), stamp(x.FinalAt), x.RemoteHost, x.Reply, x.RFCMessageID}
}

// Export writes every row f selects to w in format, streamed (see All),
// and returns how many rows it wrote. An error after some rows were
// written leaves w holding a partial export: the caller must not present
// it as complete.
func (r *Reporter) Export(ctx context.Context, w io.Writer, format Format, f Filter) (int64, error) {
	q, err := r.rowQuery(ctx, f)
	if err != nil {
		return 0, err
	}
	if f.Limit > 0 {
		q = q.Limit(int64(f.Limit))
	}
	var write func(*Row) error
	var flush func() error
	switch format {
	case CSV:
		cw := csv.NewWriter(w)
		if err := cw.Write(Columns); err != nil {
			return 0, fmt.Errorf("report: export: %w", err)
		}
		rec := make([]string, len(Columns))
		write = func(x *Row) error {
			e := x.export()
			rec[0] = strconv.FormatInt(e.ID, 10)
			rec[1], rec[2], rec[3], rec[4] = escapeCell(e.Account), escapeCell(e.Origin), escapeCell(e.MessageID), escapeCell(e.Campaign)
			rec[5], rec[6], rec[7], rec[8] = escapeCell(e.Subject), escapeCell(e.Address), escapeCell(e.Kind), escapeCell(e.Status)
			rec[9], rec[10], rec[11], rec[12] = e.AcceptedAt, strconv.Itoa(e.Attempts), orEmpty(e.LastAttemptAt), orEmpty(e.FinalAt)
			rec[13], rec[14], rec[15] = escapeCell(e.RemoteHost), escapeCell(e.Reply), escapeCell(e.RFCMessageID)
			return cw.Write(rec)
		}
		flush = func() error { cw.Flush(); return cw.Error() }
	case JSONLines:
		bw := bufio.NewWriterSize(w, 64<<10)
		enc := json.NewEncoder(bw)
		enc.SetEscapeHTML(false)
		write = func(x *Row) error { return enc.Encode(x.export()) }
		flush = bw.Flush
	default:
		return 0, fmt.Errorf("%w: export format %q (csv or jsonl)", ErrInvalid, format)
	}
	var n int64
	for x, err := range r.stream(ctx, q) {
		if err != nil {
			_ = flush()
			return n, err
		}
		if err := write(&x); err != nil {
			return n, fmt.Errorf("report: export: %w", err)
		}
		n++
	}
	if err := flush(); err != nil {
		return n, fmt.Errorf("report: export: %w", err)
	}
	return n, nil
}

func orEmpty(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// escapeCell defuses a CSV cell that a spreadsheet would evaluate: one
// starting with '=', '+', '-', '@', a tab or a carriage return gets a
// leading single quote, so it is shown as text (OWASP, CSV injection).
// Anything else is returned unchanged.
func escapeCell(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}
