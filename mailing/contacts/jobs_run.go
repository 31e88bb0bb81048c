package contacts

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"github.com/uptrace/bun"
)

// Run runs the queued jobs of this node until ctx ends, Workers at once.
// It first marks failed the jobs a dead process of this node left running
// (their transaction died with it; the file may be what killed it, so it
// is not run again) and removes the files no job waits for. When ctx ends
// the running imports are cancelled, roll back and go back to the queue:
// they run again at the next start. Run returns once they have.
func (j *Jobs) Run(ctx context.Context) error {
	if err := j.setup(); err != nil {
		return err
	}
	if err := j.recoverJobs(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return err
	}
	var wg sync.WaitGroup
	for range j.Workers {
		wg.Go(func() { j.work(ctx) })
	}
	<-ctx.Done()
	j.mu.Lock()
	for _, a := range j.active {
		a.cancel(errStopping)
	}
	j.mu.Unlock()
	wg.Wait()
	return nil
}

// recoverJobs fails what a previous process of this node left unfinished
// and removes the files of the jobs that ended.
func (j *Jobs) recoverJobs(ctx context.Context) error {
	now := j.Store.now()
	for _, u := range []struct {
		msg, where string
		args       []any
	}{
		{msgInterrupted, "status = 'running'", nil},
		{msgUploadInterrupted, "status = 'queued' AND file_path = '' AND created_at < ?", []any{j.started}},
	} {
		q := j.Store.DB.NewUpdate().Table("contact_imports").Set("status = 'failed', error = ?, finished_at = ?", u.msg, now).
			Where("node = ?", j.Node).Where(u.where, u.args...)
		if _, err := q.Exec(ctx); err != nil {
			return fmt.Errorf("contacts: recover interrupted imports: %w", err)
		}
	}
	var waiting []int64 // queued, or being uploaded to this process
	if err := j.Store.DB.NewRaw("SELECT id FROM contact_imports WHERE node = ? AND status IN ('queued', 'running')", j.Node).
		Scan(ctx, &waiting); err != nil {
		return fmt.Errorf("contacts: read queued imports: %w", err)
	}
	keep := map[string]bool{}
	for _, id := range waiting {
		keep[j.fileOf(id)] = true
	}
	files, _ := filepath.Glob(filepath.Join(j.Dir, "import-*.upload"))
	for _, f := range files {
		if !keep[f] {
			_ = os.Remove(f)
		}
	}
	return nil
}

// fileOf is where the file of job id is kept.
func (j *Jobs) fileOf(id int64) string {
	return filepath.Join(j.Dir, fmt.Sprintf("import-%d.upload", id))
}

// work is one worker: it runs queued jobs until ctx ends.
func (j *Jobs) work(ctx context.Context) {
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		r, a, err := j.claim(ctx)
		if err != nil && ctx.Err() == nil {
			j.Logger.Error("contacts: read the import queue", "err", err)
			retry.Reset(5 * time.Second)
			select {
			case <-ctx.Done():
				return
			case <-retry.C:
			}
			continue
		}
		if a != nil {
			j.signal() // another worker may take the next one
			j.run(ctx, r, a)
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-j.wake:
		}
	}
}

// claim takes the oldest queued job of this node that no worker holds,
// or returns a nil *job when there is none (or ctx ended).
func (j *Jobs) claim(ctx context.Context) (jobRow, *job, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if ctx.Err() != nil {
		return jobRow{}, nil, nil
	}
	var rows []jobRow
	err := j.query(&rows).Where("i.node = ? AND i.status = 'queued' AND i.file_path <> ''", j.Node).
		OrderExpr("i.id").Limit(int64(len(j.active) + 1)).Scan(ctx)
	if err != nil {
		return jobRow{}, nil, fmt.Errorf("contacts: read queued imports: %w", err)
	}
	for _, r := range rows {
		if j.active[r.ID] == nil {
			a := &job{total: r.BytesTotal}
			a.ctx, a.cancel = context.WithCancelCause(context.WithoutCancel(ctx))
			j.active[r.ID] = a
			return r, a, nil
		}
	}
	return jobRow{}, nil, nil
}

// run imports the file of job r and records how it ended.
func (j *Jobs) run(ctx context.Context, r jobRow, a *job) {
	defer func() {
		j.mu.Lock()
		delete(j.active, r.ID)
		j.mu.Unlock()
		a.cancel(nil)
	}()
	im, err := j.importFile(a, r)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	var c *cancelled
	cause := context.Cause(a.ctx)
	switch {
	case err == nil:
		err = j.done(ctx, r, im)
	case errors.As(cause, &c):
		err = j.end(ctx, r.ID, true, "cancelled", c.Error(), c.actor)
	case errors.Is(cause, errStopping) && !errors.Is(err, ErrInvalid):
		_, err = j.Store.DB.NewUpdate().Table("contact_imports").Set("status = 'queued', started_at = NULL, read = 0, bytes_read = 0").
			Where("id = ? AND status IN ('queued', 'running')", r.ID).Exec(ctx)
		if err == nil {
			j.Logger.Info("contacts: import stopped; it runs again at the next start", "import", r.ID)
			return // the file stays
		}
	default:
		err = j.end(ctx, r.ID, true, "failed", j.publicError(r.ID, err), "")
	}
	if err != nil {
		j.Logger.Error("contacts: record the end of an import", "import", r.ID, "err", err)
	}
	_ = os.Remove(r.FilePath)
}

// importFile runs Store.Import on job r's file, a panic failing the job.
func (j *Jobs) importFile(a *job, r jobRow) (im Import, err error) {
	defer func() {
		if p := recover(); p != nil {
			j.Logger.Error("contacts: import panicked", "import", r.ID, "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("contacts: import panicked: %v", p)
		}
	}()
	f, err := os.Open(r.FilePath)
	if err != nil {
		j.Logger.Error("contacts: open an import's file", "import", r.ID, "err", err)
		return Import{}, errorf(ErrNotFound, "the uploaded file is gone from %s: submit it again", j.Dir)
	}
	defer f.Close()
	stop := j.watch(a, r.ID)
	defer stop()
	return j.Store.Import(a.ctx, &jobFile{f: f, a: a}, ImportOptions{Account: r.AccountName, List: r.ListName, Mode: r.Mode, Map: r.ColumnMap,
		FileName: r.FileName, DryRun: r.DryRunFlag, Actor: r.Actor, Job: r.ID, Progress: a.report})
}

// watch writes job id's progress every second (PostgreSQL: on SQLite the
// import holds the write lock, and Job reads the progress in memory) and
// cancels the job when its row asks for it (a cancel on another node).
func (j *Jobs) watch(a *job, id int64) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	pg := isPG(j.Store.DB)
	wg.Go(func() {
		t := time.NewTicker(progressEvery)
		defer t.Stop()
		var wrote [2]int64
		for {
			select {
			case <-done:
				return
			case <-a.ctx.Done():
				return
			case <-t.C:
			}
			var by string
			if err := j.Store.DB.NewRaw("SELECT cancelled_by FROM contact_imports WHERE id = ?", id).Scan(a.ctx, &by); err == nil && by != "" {
				a.cancel(&cancelled{by})
			}
			if rows, read := a.progress(); pg && [2]int64{rows, read} != wrote {
				if _, err := j.Store.DB.NewUpdate().Table("contact_imports").Set("read = ?, bytes_read = ?", rows, read).
					Where("id = ? AND status = 'running'", id).Exec(a.ctx); err == nil {
					wrote = [2]int64{rows, read}
				}
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

// done records a job that ended well: its counts, and for a dry run (whose
// rejects Import does not store) the sample of rejects it returned.
func (j *Jobs) done(ctx context.Context, r jobRow, im Import) error {
	return j.Store.DB.RunInTx(ctx, nil, func(ctx context.Context, tx bun.Tx) error {
		if _, err := tx.NewUpdate().Table("contact_imports").Set("status = 'done', error = '', bytes_read = bytes_total, finished_at = ?", j.Store.now()).
			Set("encoding = ?, delimiter = ?, read = ?, added = ?, updated = ?, unchanged = ?, rejected = ?", im.Encoding, im.Delimiter, im.Read,
				im.Added, im.Updated, im.Unchanged, im.Rejected).Where("id = ? AND status IN ('queued', 'running')", r.ID).Exec(ctx); err != nil {
			return fmt.Errorf("contacts: record import %d: %w", r.ID, err)
		}
		if !r.DryRunFlag || len(im.Rejects) == 0 {
			return nil
		}
		rs := make([]Reject, len(im.Rejects))
		for i, x := range im.Rejects {
			rs[i] = Reject{ImportID: r.ID, Line: x.Line, Raw: x.Raw, Reason: x.Reason}
		}
		if _, err := tx.NewInsert().Model(&rs).Exec(ctx); err != nil {
			return fmt.Errorf("contacts: record the rejects of import %d: %w", r.ID, err)
		}
		return nil
	})
}

// job is a job a worker holds, with its progress.
type job struct {
	ctx    context.Context
	cancel context.CancelCauseFunc

	mu                 sync.Mutex
	rows, bytes, total int64 // rows and bytes Import reported; the file's size
	fileBytes, lines   int64 // bytes and line ends read from the file
	last               byte  // the last byte read
	eof                bool  // the whole file was read: the apply phase
}

// report is Import's Progress: lines is the physical line a row starts
// on (the header is line 1).
func (a *job) report(lines int, bytes int64) {
	a.mu.Lock()
	a.rows, a.bytes = max(a.rows, int64(lines)-1), max(a.bytes, bytes)
	a.mu.Unlock()
}

// progress is the rows and bytes read so far, never less than before:
// once the file is read, the rows are all its lines but the header; the
// bytes reach the total only when the job is done.
func (a *job) progress() (rows, read int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	rows, read = a.rows, max(a.bytes, a.fileBytes)
	if a.eof {
		lines := a.lines
		if a.fileBytes > 0 && a.last != '\n' {
			lines++
		}
		rows = max(rows, lines-1)
	}
	if a.total > 0 {
		read = min(read, a.total-1)
	}
	return rows, read
}

// jobFile is a job's file, counting what is read of it.
type jobFile struct {
	f *os.File
	a *job
}

func (c *jobFile) Read(p []byte) (int, error) {
	n, err := c.f.Read(p)
	c.a.mu.Lock()
	c.a.fileBytes += int64(n)
	c.a.lines += int64(bytes.Count(p[:n], []byte{'\n'}))
	if n > 0 {
		c.a.last = p[n-1]
	}
	c.a.eof = c.a.eof || errors.Is(err, io.EOF)
	c.a.mu.Unlock()
	return n, err
}

// ReadAt and Stat serve readers that need random access (a zip file).
func (c *jobFile) ReadAt(p []byte, off int64) (int, error) { return c.f.ReadAt(p, off) }
func (c *jobFile) Stat() (os.FileInfo, error)              { return c.f.Stat() }

// publicError is what a job's row says of err: a kind error's text;
// anything else is logged and named only.
func (j *Jobs) publicError(id int64, err error) string {
	if errors.Is(err, ErrInvalid) || errors.Is(err, ErrNotFound) || errors.Is(err, ErrExists) {
		return err.Error()
	}
	j.Logger.Error("contacts: import failed", "import", id, "err", err)
	return fmt.Sprintf("the import failed on an internal error (relayd's log has it, import=%d)", id)
}
