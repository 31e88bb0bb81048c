package contacts

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/audit"
)

// Jobs runs imports in the background, for uploads over the HTTPS API.
// Submit records the import (status queued), streams the file to Dir and
// queues it; Run's workers apply queued imports with Store.Import; Cancel
// stops one. A job's progress is kept in its contact_imports row
// (bytes_read of bytes_total, read), so a reloaded page or another node
// on the same PostgreSQL follows it; on SQLite the running import's
// transaction holds the only write lock, so the progress of a running job
// is kept in memory instead and Job reads it there (one process owns a
// SQLite database).
//
// A job belongs to the node that received its file (Node): the file is
// on that node's disk, so only that node runs it. A job queued on a node
// that is down waits for that node; the others cannot take it over.
//
// The zero value is not usable: set Store and Dir. Run once; the other
// methods may be called from any goroutine, before or during Run.
type Jobs struct {
	Store *Store // required
	// Dir holds the uploaded files until their import ends. Required;
	// created (mode 0700) when missing.
	Dir string
	// Node names this process in the rows of the jobs it received.
	// Default "HOSTNAME:DIR" (Dir made absolute).
	Node string
	// Logger receives what the job rows do not say. Default slog.Default().
	Logger *slog.Logger
	// MaxFileSize bounds an uploaded file, in bytes. Default 2 GiB.
	MaxFileSize int64
	// Workers is how many imports run at once. Default 1 (imports of one
	// account run one after the other anyway).
	Workers int

	once    sync.Once
	initErr error
	wake    chan struct{} // a job was queued
	started time.Time     // rows older than this are a previous process's

	mu     sync.Mutex
	active map[int64]*job // the jobs this process's workers hold
}

// DefaultMaxFileSize is Jobs.MaxFileSize's default.
const DefaultMaxFileSize = 2 << 30

// progressEvery is how often a running job's progress is written and
// its row checked for a cancel request from another node.
const progressEvery = time.Second

// The errors of jobs that a dead process left behind.
const (
	msgInterrupted       = "interrupted: relayd stopped during the import; submit the file again"
	msgUploadInterrupted = "interrupted: relayd stopped during the upload; submit the file again"
)

// errStopping cancels the running jobs when Run's context ends: they go
// back to the queue and run again at the next start.
var errStopping = errors.New("contacts: the import jobs are stopping")

// cancelled is the cause of a job cancelled by someone.
type cancelled struct{ actor string }

func (c *cancelled) Error() string { return "cancelled by " + c.actor }

func (j *Jobs) setup() error {
	j.once.Do(func() {
		if j.Store == nil || j.Store.DB == nil || j.Dir == "" {
			j.initErr = errors.New("contacts: Jobs needs a Store and a Dir")
			return
		}
		if err := os.MkdirAll(j.Dir, 0o700); err != nil {
			j.initErr = fmt.Errorf("contacts: the imports directory: %w", err)
			return
		}
		if j.Node == "" {
			host, _ := os.Hostname()
			dir, _ := filepath.Abs(j.Dir)
			j.Node = host + ":" + dir
		}
		if j.Logger == nil {
			j.Logger = slog.Default()
		}
		if j.MaxFileSize <= 0 {
			j.MaxFileSize = DefaultMaxFileSize
		}
		j.Workers = max(j.Workers, 1)
		j.wake = make(chan struct{}, 1)
		j.active = map[int64]*job{}
		j.started = j.Store.now()
	})
	return j.initErr
}

// MaxSize is the largest file Submit takes.
func (j *Jobs) MaxSize() int64 {
	if j.setup() != nil {
		return DefaultMaxFileSize
	}
	return j.MaxFileSize
}

// TooLarge is the error of a file over the limit (Submit's, or a caller's
// that knows the size before reading).
func (j *Jobs) TooLarge() error {
	return errorf(ErrInvalid, "the file is larger than the limit of %s", sizeText(j.MaxSize()))
}

func sizeText(n int64) string {
	for _, u := range []struct {
		n    int64
		name string
	}{{1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.n && n%u.n == 0 {
			return fmt.Sprintf("%d %s", n/u.n, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}

// jobRow is a contact_imports row with what only jobs use.
type jobRow struct {
	Import      `bun:",extend"`
	Node        string
	FilePath    string
	ColumnMap   string
	DryRunFlag  bool `bun:"dry_run"`
	CancelledBy string
	AccountName string `bun:",scanonly"`
	ListName    string `bun:",scanonly"`
}

func (j *Jobs) query(rows *[]jobRow) *bun.SelectQuery {
	return j.Store.DB.NewSelect().Model(rows).ColumnExpr("?TableColumns").ColumnExpr("a.name AS account_name, l.name AS list_name").
		Join("JOIN quota_accounts AS a ON a.id = i.account_id").Join("JOIN contact_lists AS l ON l.id = i.list_id")
}

// present is a row as callers see it: a running job's progress from
// memory when this process runs it; a finished one read whole.
func (j *Jobs) present(r jobRow) Import {
	im := r.Import
	im.Account, im.List, im.DryRun = r.AccountName, r.ListName, r.DryRunFlag
	j.mu.Lock()
	a := j.active[im.ID]
	j.mu.Unlock()
	if a != nil && im.Status == "running" {
		rows, read := a.progress()
		im.Read, im.BytesRead = max(im.Read, rows), max(im.BytesRead, read)
	}
	if im.Status == "done" {
		im.BytesRead = im.BytesTotal
	}
	return im
}

// Job returns import id of account (any account's when account is "").
// Another account's import is not found, as one that does not exist.
func (j *Jobs) Job(ctx context.Context, account string, id int64) (Import, error) {
	if err := j.setup(); err != nil {
		return Import{}, err
	}
	var rows []jobRow
	q := j.query(&rows).Where("i.id = ?", id)
	if account != "" {
		q = q.Where("a.name = ?", account)
	}
	if err := q.Scan(ctx); err != nil {
		return Import{}, fmt.Errorf("contacts: read import: %w", err)
	}
	if len(rows) == 0 {
		return Import{}, errorf(ErrNotFound, "no import %d", id)
	}
	return j.present(rows[0]), nil
}

// JobsList returns account's imports (every account's when account is
// ""), the newest first, at most limit (default 100, at most 1,000).
// Imports run by relayd contacts import are there too.
func (j *Jobs) JobsList(ctx context.Context, account string, limit int) ([]Import, error) {
	if err := j.setup(); err != nil {
		return nil, err
	}
	switch {
	case limit <= 0:
		limit = 100
	case limit > 1000:
		limit = 1000
	}
	var rows []jobRow
	q := j.query(&rows).OrderExpr("i.id DESC").Limit(int64(limit))
	if account != "" {
		q = q.Where("a.name = ?", account)
	}
	if err := q.Scan(ctx); err != nil {
		return nil, fmt.Errorf("contacts: read imports: %w", err)
	}
	out := make([]Import, len(rows))
	for i, r := range rows {
		out[i] = j.present(r)
	}
	return out, nil
}

// Submit records an import of the file r into o.List, stores the file in
// Dir and queues the import for Run; it returns the queued job. o.Job and
// o.Progress are ignored. The account, list and mode are checked first;
// a file over MaxFileSize, an empty one or one cut short is refused (the
// job is then recorded failed).
func (j *Jobs) Submit(ctx context.Context, r io.Reader, o ImportOptions) (Import, error) {
	if err := j.setup(); err != nil {
		return Import{}, err
	}
	if o.Mode == "" {
		o.Mode = ModeAdd
	}
	switch o.Mode {
	case ModeAdd, ModeUpdate, ModeUnsubscribe, ModeBlocklist:
	default:
		return Import{}, errorf(ErrInvalid, "mode %q is not add, update, unsubscribe or blocklist", o.Mode)
	}
	l, err := list(ctx, j.Store.DB, o.Account, o.List)
	if err != nil {
		return Import{}, err
	}
	row := jobRow{Import: Import{AccountID: l.AccountID, ListID: l.ID, FileName: truncate(o.FileName, 255), Mode: o.Mode, Status: "queued",
		Actor: o.Actor, CreatedAt: j.Store.now()}, Node: j.Node, ColumnMap: o.Map, DryRunFlag: o.DryRun}
	if err := j.Store.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		_, err := tx.NewInsert().Model(&row).Returning("id").Exec(ctx)
		return err
	}); err != nil {
		return Import{}, fmt.Errorf("contacts: record import: %w", err)
	}
	path, size, err := j.receive(ctx, row.ID, r)
	if err != nil {
		msg := "the upload did not complete: " + err.Error()
		if errors.Is(err, ErrInvalid) {
			msg = err.Error()
		}
		if ferr := j.end(context.WithoutCancel(ctx), row.ID, false, "failed", msg, ""); ferr != nil {
			j.Logger.Error("contacts: record a failed upload", "import", row.ID, "err", ferr)
		}
		return Import{}, err
	}
	res, err := j.Store.DB.NewUpdate().Table("contact_imports").Set("file_path = ?, bytes_total = ?", path, size).
		Where("id = ? AND status = 'queued'", row.ID).Exec(ctx)
	if err != nil {
		_ = os.Remove(path)
		return Import{}, fmt.Errorf("contacts: queue import %d: %w", row.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 { // cancelled during the upload
		_ = os.Remove(path)
	}
	j.signal()
	return j.Job(ctx, "", row.ID)
}

// receive streams r to the file of import id.
func (j *Jobs) receive(ctx context.Context, id int64, r io.Reader) (string, int64, error) {
	path := j.fileOf(id)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("contacts: store the file: %w", err)
	}
	n, err := io.Copy(f, io.LimitReader(ctxReader{ctx, r}, j.MaxFileSize+1))
	switch {
	case err != nil:
	case n > j.MaxFileSize:
		err = j.TooLarge()
	case n == 0:
		err = errorf(ErrInvalid, "the file is empty")
	default:
		err = f.Sync() // queued means kept: the file survives a crash
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("contacts: store the file: %w", cerr)
	}
	if err != nil {
		_ = os.Remove(path)
		return "", 0, err
	}
	return path, n, nil
}

// ctxReader stops reading when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// signal wakes a waiting worker (the queue itself is in the database).
func (j *Jobs) signal() {
	select {
	case j.wake <- struct{}{}:
	default: // one is pending already
	}
}

// end records the end (failed or cancelled) of a job that is queued, or
// with running also of one that runs, with an audit event for a cancel.
func (j *Jobs) end(ctx context.Context, id int64, running bool, status, msg, by string) error {
	now := j.Store.now()
	from := "status = 'queued'"
	if running {
		from = "status IN ('queued', 'running')"
	}
	return j.Store.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		res, err := tx.NewUpdate().Table("contact_imports").Set("status = ?, error = ?, cancelled_by = ?, finished_at = ?", status, msg, by, now).
			Where("id = ?", id).Where(from).Exec(ctx)
		if err != nil {
			return fmt.Errorf("contacts: record import %d %s: %w", id, status, err)
		}
		if n, _ := res.RowsAffected(); n == 0 || by == "" {
			return nil
		}
		return audit.Record(ctx, tx, audit.Event{At: now, Actor: by, Action: "contacts.import.cancel", Subject: fmt.Sprint(id)})
	})
}

// Cancel stops import id of account (any account's when account is ""):
// a queued one is cancelled at once; a running one is asked to stop (its
// transaction rolls back, nothing of it lands) and is cancelled within a
// second or so, unless it committed first. It returns the job as it is
// then. A finished job is ErrInvalid.
func (j *Jobs) Cancel(ctx context.Context, account string, id int64, actor string) (Import, error) {
	im, err := j.Job(ctx, account, id)
	if err != nil {
		return im, err
	}
	if im.Status == "queued" {
		if err := j.end(ctx, id, false, "cancelled", "cancelled by "+actor, actor); err != nil {
			return im, err
		}
		if im, err = j.Job(ctx, account, id); err != nil || im.Status == "cancelled" {
			j.stop(id, actor)
			j.removeFile(ctx, id)
			return im, err
		}
	}
	if im.Status != "running" {
		return im, errorf(ErrInvalid, "import %d is already %s", id, im.Status)
	}
	if !j.stop(id, actor) { // another node runs it: it looks every second
		if _, err := j.Store.DB.NewUpdate().Table("contact_imports").Set("cancelled_by = ?", actor).
			Where("id = ? AND status = 'running'", id).Exec(ctx); err != nil {
			return im, fmt.Errorf("contacts: cancel import %d: %w", id, err)
		}
	}
	return j.Job(ctx, account, id)
}

// stop cancels job id if this process runs it.
func (j *Jobs) stop(id int64, actor string) bool {
	j.mu.Lock()
	a := j.active[id]
	j.mu.Unlock()
	if a != nil {
		a.cancel(&cancelled{actor})
	}
	return a != nil
}

// removeFile removes the file of a queued job this node received.
func (j *Jobs) removeFile(ctx context.Context, id int64) {
	var path string
	if err := j.Store.DB.NewRaw("SELECT file_path FROM contact_imports WHERE id = ? AND node = ?", id, j.Node).Scan(ctx, &path); err == nil && path != "" {
		_ = os.Remove(path)
	}
}

// startJob marks the queued job id running, for Store.Import.
func (s *Store) startJob(ctx context.Context, im *Import, id int64) error {
	im.ID = id
	res, err := s.DB.NewUpdate().Model(im).Column("status", "encoding", "delimiter", "started_at").WherePK().
		Where("status = 'queued' AND account_id = ? AND list_id = ?", im.AccountID, im.ListID).Exec(ctx)
	if err != nil {
		return fmt.Errorf("contacts: record import: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return errorf(ErrInvalid, "import %d is not a queued import of %s into %q", id, im.Account, im.List)
	}
	return nil
}
