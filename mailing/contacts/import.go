package contacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/address"
	"github.com/servir-pe/envios/internal/audit"
)

// Mode is what an import does with the rows of its file.
type Mode string

// The import modes.
const (
	ModeAdd         Mode = "add"         // new contacts are added; existing ones keep their data; all are subscribed to the list
	ModeUpdate      Mode = "update"      // as add, and existing contacts get the file's name and attributes
	ModeUnsubscribe Mode = "unsubscribe" // the contacts of the file leave the list
	ModeBlocklist   Mode = "blocklist"   // the contacts of the file (added if new) are blocklisted: never mailed by a campaign
)

// ImportOptions say what to import where.
type ImportOptions struct {
	Account, List string
	Mode          Mode   // default ModeAdd
	Map           string // column overrides, "email=Correo,name=Nombre" (csvin.Map)
	FileName      string // recorded with the import
	DryRun        bool   // read, check and count everything, change nothing
	Actor         string
	// Progress, when set, is called every 10,000 rows with the lines and
	// bytes of the file read so far.
	Progress func(lines int, bytes int64)
	// Job, when set, is the queued contact_imports row to use (Jobs):
	// Import marks it running instead of recording a new one, and leaves
	// the record of its end to the caller.
	Job int64
}

// Import is one import and what it did: Read = Added + Updated +
// Unchanged + Rejected.
type Import struct {
	bun.BaseModel `bun:"table:contact_imports,alias:i"`
	ID            int64      `bun:",pk,autoincrement" json:"id"`
	AccountID     int64      `json:"-"`
	ListID        int64      `json:"-"`
	Account       string     `bun:"-" json:"account"`
	List          string     `bun:"-" json:"list"`
	FileName      string     `json:"file_name"`
	Mode          Mode       `json:"mode"`
	Status        string     `json:"status"` // queued, running, done, failed, cancelled
	Encoding      string     `json:"encoding"`
	Delimiter     string     `json:"delimiter"`
	Read          int64      `json:"read"`
	Added         int64      `json:"added"`
	Updated       int64      `json:"updated"`
	Unchanged     int64      `json:"unchanged"`
	Rejected      int64      `json:"rejected"`
	Error         string     `json:"error,omitempty"`
	Actor         string     `json:"actor"`
	CreatedAt     time.Time  `json:"created_at"`
	StartedAt     *time.Time `json:"started_at"`
	FinishedAt    *time.Time `json:"finished_at"`
	DryRun        bool       `bun:"-" json:"dry_run"`
	BytesTotal    int64      `json:"bytes_total"` // the file's size (an import of Jobs)
	BytesRead     int64      `json:"bytes_read"`  // how much of it was read: bytes_total once done
	// Rejects are the first SampleRejects rejected rows (all of them are
	// stored: Store.Rejects).
	Rejects []Reject `bun:"-" json:"rejects"`
}

// Reject is a row of an import that did not land.
type Reject struct {
	bun.BaseModel `bun:"table:contact_import_rejects"`
	ImportID      int64  `json:"-"`
	Line          int64  `json:"line"`
	Raw           string `json:"raw"`
	Reason        string `json:"reason"`
}

// errDryRun rolls a dry run back.
var errDryRun = errors.New("dry run")

// Import reads a contacts file (CSV, any of the encodings and delimiters
// csvin detects) and applies it to a list in one transaction: the rows
// are staged (PostgreSQL: COPY), then checked and applied with a few
// set-based statements — duplicates in the file, suppressed addresses,
// contacts unsubscribed or blocklisted, memberships left — so memory stays
// flat whatever the file's size. The import is recorded (contact_imports)
// with its counts and its rejects (contact_import_rejects), unless DryRun.
func (s *Store) Import(ctx context.Context, r io.Reader, o ImportOptions) (Import, error) {
	if o.Mode == "" {
		o.Mode = ModeAdd
	}
	switch o.Mode {
	case ModeAdd, ModeUpdate, ModeUnsubscribe, ModeBlocklist:
	default:
		return Import{}, errorf(ErrInvalid, "mode %q is not add, update, unsubscribe or blocklist", o.Mode)
	}
	l, err := list(ctx, s.DB, o.Account, o.List)
	if err != nil {
		return Import{}, err
	}
	in, err := openCSV(r)
	if err != nil {
		return Import{}, errorf(ErrInvalid, "%v", err)
	}
	defer in.close()
	m, err := mapColumns(in.header, o.Map)
	if err != nil {
		return Import{}, errorf(ErrInvalid, "%v", err)
	}
	now := s.now()
	im := Import{AccountID: l.AccountID, ListID: l.ID, Account: o.Account, List: o.List, FileName: o.FileName, Mode: o.Mode, Status: "running",
		Encoding: in.encoding, Delimiter: string(in.delimiter), Actor: o.Actor, CreatedAt: now, StartedAt: &now, DryRun: o.DryRun}
	switch {
	case o.Job != 0:
		if err := s.startJob(ctx, &im, o.Job); err != nil {
			return im, err
		}
	case !o.DryRun:
		if _, err := s.DB.NewInsert().Model(&im).Returning("id").Exec(ctx); err != nil {
			return im, fmt.Errorf("contacts: record import: %w", err)
		}
	}
	err = s.apply(ctx, in, m, &im, o)
	if errors.Is(err, errDryRun) {
		err = nil
	}
	end := s.now()
	im.FinishedAt = &end
	im.Status = "done"
	if err != nil {
		im.Status, im.Error = "failed", err.Error()
	}
	if !o.DryRun && o.Job == 0 {
		if _, uerr := s.DB.NewUpdate().Model(&im).Column("status", "encoding", "delimiter", "read", "added", "updated", "unchanged", "rejected",
			"error", "finished_at").WherePK().Exec(context.WithoutCancel(ctx)); uerr != nil && err == nil {
			err = fmt.Errorf("contacts: record import: %w", uerr)
		}
	}
	return im, err
}

// apply stages the rows and applies them, in one transaction on one
// connection (the staging table is temporary).
func (s *Store) apply(ctx context.Context, in *csvFile, m mapping, im *Import, o ImportOptions) error {
	conn, err := s.DB.Conn(ctx)
	if err != nil {
		return fmt.Errorf("contacts: connect: %w", err)
	}
	defer conn.Close()
	tx, err := conn.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("contacts: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	pg := isPG(s.DB)
	if pg {
		// One import of an account at a time: its checks of which
		// contacts exist stay true until it commits. (SQLite has one
		// writer anyway.)
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock(hashtextextended('contacts.import', ?))", im.AccountID); err != nil {
			return fmt.Errorf("contacts: lock the account's imports: %w", err)
		}
	}
	if err := createStage(ctx, tx, pg); err != nil {
		return err
	}
	rows := newRowSource(in, m, o.Progress)
	defer rows.stop()
	var st staged
	if pg {
		st, err = copyStage(ctx, conn, rows)
	} else {
		st, err = insertStage(ctx, tx, rows)
	}
	if err != nil {
		return err
	}
	ap := applier{tx: tx, pg: pg, im: im, now: s.now(), st: st}
	if err := ap.run(ctx); err != nil {
		return err
	}
	if o.DryRun {
		return errDryRun
	}
	if err := audit.Record(ctx, tx, audit.Event{At: ap.now, Actor: o.Actor, Action: "contacts.import", Subject: o.Account,
		Detail: fmt.Sprintf("import=%d list=%s mode=%s read=%d added=%d updated=%d unchanged=%d rejected=%d", im.ID, o.List, o.Mode,
			im.Read, im.Added, im.Updated, im.Unchanged, im.Rejected)}); err != nil {
		return err
	}
	return tx.Commit()
}

// stageRow is one row of the file as staged: its address normalised, or
// why it was rejected before reaching the database.
type stageRow struct {
	line                              int64
	address, name, attrs, raw, reject string
}

// rowSource turns the file's records into stage rows, in a pipeline of
// two goroutines — one reads and decodes the file, one validates and
// builds the rows — while the caller's goroutine sends them to the
// database: on two cores an import is bounded by the database, not by
// parsing.
type rowSource struct {
	in       *csvFile
	m        mapping
	progress func(int, int64)
	names    []string // attribute names, sorted

	out  chan rowBatch
	done chan struct{} // closed by stop: the goroutines give up
	cur  []stageRow
	err  error
}

// rowBatch is what the pipeline hands on: rows, or the error that ends it.
type rowBatch struct {
	rows []stageRow
	err  error
}

// recBatch is the read stage's output: records (fields copied) or row
// errors, or the error that ends the file.
type recBatch struct {
	recs []any // record or *rowError
	err  error
}

const pipeBatch = 512

func newRowSource(in *csvFile, m mapping, progress func(int, int64)) *rowSource {
	rs := &rowSource{in: in, m: m, progress: progress, out: make(chan rowBatch, 4), done: make(chan struct{})}
	for k := range m.attrs {
		rs.names = append(rs.names, k)
	}
	sort.Strings(rs.names)
	recs := make(chan recBatch, 4)
	go rs.read(recs)
	go rs.build(recs)
	return rs
}

// stop ends the pipeline (the caller is done with it, at the end or not).
func (rs *rowSource) stop() {
	select {
	case <-rs.done:
	default:
		close(rs.done)
	}
}

// read is the first stage: records from the file.
func (rs *rowSource) read(out chan<- recBatch) {
	defer close(out)
	n := 0
	for {
		b := recBatch{recs: make([]any, 0, pipeBatch)}
		for len(b.recs) < pipeBatch {
			rec, err := rs.in.next()
			if errors.Is(err, io.EOF) {
				break
			}
			var re *rowError
			if errors.As(err, &re) {
				b.recs = append(b.recs, re)
				continue
			}
			if err != nil {
				b.err = fmt.Errorf("contacts: read the file: %w", err)
				break
			}
			b.recs = append(b.recs, rec)
			if n++; rs.progress != nil && n%10000 == 0 {
				rs.progress(rec.line, rs.in.bytesRead())
			}
		}
		last := b.err != nil || len(b.recs) < pipeBatch
		if len(b.recs) > 0 || b.err != nil {
			select {
			case out <- b:
			case <-rs.done:
				return
			}
		}
		if last {
			return
		}
	}
}

// build is the second stage: records to stage rows.
func (rs *rowSource) build(in <-chan recBatch) {
	defer close(rs.out)
	for b := range in {
		rows := make([]stageRow, len(b.recs))
		for i, x := range b.recs {
			switch x := x.(type) {
			case *rowError:
				rows[i] = stageRow{line: int64(x.line), raw: x.raw, attrs: "{}", reject: "unreadable row: " + x.err.Error()}
			case record:
				rows[i] = rs.row(x)
			}
		}
		select {
		case rs.out <- rowBatch{rows: rows, err: b.err}:
		case <-rs.done:
			return
		}
	}
}

// next returns the next row, or false at the end.
func (rs *rowSource) next() (stageRow, bool, error) {
	for len(rs.cur) == 0 {
		if rs.err != nil {
			return stageRow{}, false, rs.err
		}
		b, ok := <-rs.out
		if !ok {
			return stageRow{}, false, nil
		}
		rs.cur, rs.err = b.rows, b.err
	}
	r := rs.cur[0]
	rs.cur = rs.cur[1:]
	return r, true, nil
}

// row validates one record.
func (rs *rowSource) row(rec record) stageRow {
	row := stageRow{line: int64(rec.line), raw: rec.raw, attrs: "{}"}
	field := func(i int) string {
		if i < 0 || i >= len(rec.fields) {
			return ""
		}
		return strings.TrimSpace(rec.fields[i])
	}
	addr := field(rs.m.address)
	switch a, err := address.Parse(addr); {
	case addr == "":
		row.reject = "no address"
	case err != nil:
		row.reject = "invalid address: " + strings.TrimPrefix(strings.TrimPrefix(err.Error(), "mailing: "), "invalid address: ")
	default:
		row.address = strings.ToLower(a.Addr)
	}
	row.name = truncate(field(rs.m.name), 500)
	row.attrs = attrsJSON(rs.names, func(k string) string { return truncate(field(rs.m.attrs[k]), 2000) })
	return row
}

// attrsJSON is the attributes with a value, as a compact JSON object with
// sorted keys (one text for one content: SQLite compares it as text).
func attrsJSON(names []string, value func(string) string) string {
	var b strings.Builder
	b.WriteByte('{')
	first := true
	for _, k := range names {
		v := value(k)
		if v == "" {
			continue
		}
		if !first {
			b.WriteByte(',')
		}
		first = false
		jsonString(&b, k)
		b.WriteByte(':')
		jsonString(&b, v)
	}
	b.WriteByte('}')
	return b.String()
}

func jsonString(b *strings.Builder, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Rejects returns an import's rejected rows after line afterLine, in line
// order, at most limit (default 1,000).
func (s *Store) Rejects(ctx context.Context, importID, afterLine int64, limit int) ([]Reject, error) {
	if limit <= 0 {
		limit = 1000
	}
	n, err := s.DB.NewSelect().Model((*Import)(nil)).Where("id = ?", importID).Count(ctx)
	if err != nil {
		return nil, fmt.Errorf("contacts: read import: %w", err)
	}
	if n == 0 {
		return nil, errorf(ErrNotFound, "no import %d", importID)
	}
	var rs []Reject
	if err := s.DB.NewSelect().Model(&rs).Where("import_id = ? AND line > ?", importID, afterLine).Order("line").Limit(int64(limit)).Scan(ctx); err != nil {
		return nil, fmt.Errorf("contacts: read rejects: %w", err)
	}
	return rs, nil
}
