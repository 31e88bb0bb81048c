package contacts_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing/contacts"
)

// jobs returns Jobs on a test store, and runs them until the test ends
// unless run is false.
func jobs(t *testing.T, s *contacts.Store, run bool) *contacts.Jobs {
	t.Helper()
	j := &contacts.Jobs{Store: s, Dir: filepath.Join(t.TempDir(), "imports")}
	if run {
		runJobs(t, j)
	}
	return j
}

// runJobs runs j until the test ends (or until the returned stop).
func runJobs(t *testing.T, j *contacts.Jobs) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx) }()
	var err error
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			err = <-done
		}
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	}
	t.Cleanup(stop)
	return stop
}

// waitJob polls job id until ok says so, and returns it.
func waitJob(t *testing.T, j *contacts.Jobs, account string, id int64, ok func(contacts.Import) bool) contacts.Import {
	t.Helper()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		im, err := j.Job(context.Background(), account, id)
		if err != nil {
			t.Fatal(err)
		}
		if ok(im) {
			return im
		}
		if time.Now().After(deadline) {
			t.Fatalf("import %d: still %+v", id, im)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ended(im contacts.Import) bool {
	return im.Status == "done" || im.Status == "failed" || im.Status == "cancelled"
}

// bigCSV is a file of n valid rows.
func bigCSV(n int) string {
	var b strings.Builder
	b.WriteString("email,name,city\n")
	for i := range n {
		fmt.Fprintf(&b, "persona%07d@example.org,Persona %d,Lima\n", i, i)
	}
	return b.String()
}

func uploads(t *testing.T, j *contacts.Jobs) []string {
	t.Helper()
	fs, err := filepath.Glob(filepath.Join(j.Dir, "*"))
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func countContacts(t *testing.T, db *bun.DB, account string) int {
	t.Helper()
	var n int
	if err := db.NewRaw("SELECT count(*) FROM contacts AS c JOIN quota_accounts AS a ON a.id = c.account_id WHERE a.name = ?", account).
		Scan(context.Background(), &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A submitted file is queued, run, and recorded done with its counts and
// its whole size read; its file is gone; other accounts do not see it.
func TestJobsRun(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		j := jobs(t, s, true)
		ctx := context.Background()
		body := "correo,nombre\nana@example.org,Ana\nno-es-correo,X\nluis@example.org,Luis\n"
		im, err := j.Submit(ctx, strings.NewReader(body), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Map: "email=correo",
			FileName: "socios.csv", Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if im.ID == 0 || im.BytesTotal != int64(len(body)) || im.Account != "enap/eventos" || im.List != "boletin" || im.FileName != "socios.csv" {
			t.Fatalf("submitted %+v", im)
		}
		im = waitJob(t, j, "enap/eventos", im.ID, ended)
		if im.Status != "done" || im.Read != 3 || im.Added != 2 || im.Rejected != 1 || im.BytesRead != im.BytesTotal || im.StartedAt == nil || im.FinishedAt == nil {
			t.Fatalf("done %+v", im)
		}
		rs, err := s.Rejects(ctx, im.ID, 0, 0)
		if err != nil || len(rs) != 1 || rs[0].Line != 3 {
			t.Fatalf("rejects %+v %v", rs, err)
		}
		if fs := uploads(t, j); len(fs) != 0 {
			t.Errorf("files left: %v", fs)
		}
		if _, err := j.Job(ctx, "sjti/talento", im.ID); !errors.Is(err, contacts.ErrNotFound) {
			t.Errorf("another account's import: %v", err)
		}
		ls, err := j.JobsList(ctx, "enap/eventos", 0)
		if err != nil || len(ls) != 1 || ls[0].ID != im.ID {
			t.Errorf("list %+v %v", ls, err)
		}
		if ls, _ := j.JobsList(ctx, "sjti/talento", 0); len(ls) != 0 {
			t.Errorf("another account's list: %+v", ls)
		}
		if _, err := j.Cancel(ctx, "enap/eventos", im.ID, "test"); err == nil || err.Error() != fmt.Sprintf("import %d is already done", im.ID) {
			t.Errorf("cancel a done import: %v", err)
		}

		// A dry run changes nothing and keeps its sample of rejects.
		dry, err := j.Submit(ctx, strings.NewReader("email\nnuevo@example.org\nmalo\n"), contacts.ImportOptions{Account: "enap/eventos",
			List: "boletin", DryRun: true, Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		dry = waitJob(t, j, "", dry.ID, ended)
		if dry.Status != "done" || !dry.DryRun || dry.Added != 1 || dry.Rejected != 1 || countContacts(t, db, "enap/eventos") != 2 {
			t.Fatalf("dry run %+v", dry)
		}
		if rs, err := s.Rejects(ctx, dry.ID, 0, 0); err != nil || len(rs) != 1 {
			t.Errorf("dry-run rejects %+v %v", rs, err)
		}
	})
}

// What Submit refuses: an unknown list or mode before anything is
// recorded; a file over the limit (recorded failed, its part removed).
func TestJobsSubmitRefuses(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		j := jobs(t, s, false)
		j.MaxFileSize = 100
		ctx := context.Background()
		for _, c := range []struct {
			o    contacts.ImportOptions
			kind error
			msg  string
		}{
			{contacts.ImportOptions{Account: "enap/eventos", List: "nada"}, contacts.ErrNotFound, `enap/eventos has no list "nada" (relayd list create)`},
			{contacts.ImportOptions{Account: "enap/nadie", List: "boletin"}, contacts.ErrNotFound, `no account "enap/nadie"`},
			{contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Mode: "borrar"}, contacts.ErrInvalid,
				`mode "borrar" is not add, update, unsubscribe or blocklist`},
		} {
			if _, err := j.Submit(ctx, strings.NewReader("email\na@example.org\n"), c.o); !errors.Is(err, c.kind) || err.Error() != c.msg {
				t.Errorf("%+v: %v", c.o, err)
			}
		}
		if ls, _ := j.JobsList(ctx, "", 0); len(ls) != 0 {
			t.Fatalf("refused submissions recorded: %+v", ls)
		}
		_, err := j.Submit(ctx, strings.NewReader(bigCSV(10)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
		if !errors.Is(err, contacts.ErrInvalid) || err.Error() != "the file is larger than the limit of 100 bytes" {
			t.Fatalf("oversize: %v", err)
		}
		ls, _ := j.JobsList(ctx, "", 0)
		if len(ls) != 1 || ls[0].Status != "failed" || ls[0].Error != err.Error() {
			t.Fatalf("oversize recorded %+v", ls)
		}
		if fs := uploads(t, j); len(fs) != 0 {
			t.Errorf("partial file left: %v", fs)
		}
	})
}

// A queued import is cancelled at once; cancelling it again says so.
func TestJobsCancelQueued(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		j := jobs(t, s, false) // no worker: it stays queued
		ctx := context.Background()
		im, err := j.Submit(ctx, strings.NewReader(bigCSV(5)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
		if err != nil || im.Status != "queued" {
			t.Fatalf("%+v %v", im, err)
		}
		if _, err := j.Cancel(ctx, "sjti/talento", im.ID, "otro"); !errors.Is(err, contacts.ErrNotFound) {
			t.Errorf("cancel by another account: %v", err)
		}
		im, err = j.Cancel(ctx, "enap/eventos", im.ID, "ana")
		if err != nil || im.Status != "cancelled" || im.Error != "cancelled by ana" {
			t.Fatalf("cancel: %+v %v", im, err)
		}
		if fs := uploads(t, j); len(fs) != 0 {
			t.Errorf("file left: %v", fs)
		}
		if _, err := j.Cancel(ctx, "", im.ID, "ana"); !errors.Is(err, contacts.ErrInvalid) || err.Error() != fmt.Sprintf("import %d is already cancelled", im.ID) {
			t.Errorf("cancel again: %v", err)
		}
		runJobs(t, j)
		next, err := j.Submit(ctx, strings.NewReader(bigCSV(1)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, j, "", next.ID, ended)
		if im, _ := j.Job(ctx, "", im.ID); im.Status != "cancelled" || countContacts(t, db, "enap/eventos") != 1 {
			t.Errorf("a cancelled import ran: %+v", im)
		}
	})
}

// A running import cancelled rolls back whole; one running when Run stops
// goes back to the queue and runs whole at the next start.
func TestJobsCancelRunning(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		j := jobs(t, s, false)
		stop := runJobs(t, j)
		ctx := context.Background()
		running := func(im contacts.Import) bool { return im.Status == "running" || ended(im) }
		im, err := j.Submit(ctx, strings.NewReader(bigCSV(300_000)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		if im = waitJob(t, j, "", im.ID, running); im.Status != "running" {
			t.Fatalf("not running: %+v", im)
		}
		if im, err = j.Cancel(ctx, "enap/eventos", im.ID, "ana"); err != nil {
			t.Fatal(err)
		}
		im = waitJob(t, j, "", im.ID, ended)
		if im.Status != "cancelled" || im.Error != "cancelled by ana" || im.Added != 0 || countContacts(t, db, "enap/eventos") != 0 {
			t.Fatalf("cancelled: %+v, %d contacts", im, countContacts(t, db, "enap/eventos"))
		}

		// Stopping Run puts the running import back in the queue.
		im, err = j.Submit(ctx, strings.NewReader(bigCSV(20_000)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		waitJob(t, j, "", im.ID, running)
		stop()
		if im, _ = j.Job(ctx, "", im.ID); im.Status != "queued" && im.Status != "done" {
			t.Fatalf("after the stop: %+v", im)
		}
		j2 := &contacts.Jobs{Store: s, Dir: j.Dir}
		runJobs(t, j2)
		if im = waitJob(t, j2, "", im.ID, ended); im.Status != "done" || im.Added != 20_000 || countContacts(t, db, "enap/eventos") != 20_000 {
			t.Fatalf("run again: %+v", im)
		}
	})
}

// A job a dead process left running is failed at the next start, its
// file removed; a queued one whose file is there runs.
func TestJobsRecoverInterrupted(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		s := store(t, db)
		j := jobs(t, s, false)
		ctx := context.Background()
		var ids []int64
		for range 2 {
			im, err := j.Submit(ctx, strings.NewReader(bigCSV(3)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
			if err != nil {
				t.Fatal(err)
			}
			ids = append(ids, im.ID)
		}
		// The first was running when its process died.
		if _, err := db.NewRaw("UPDATE contact_imports SET status = 'running' WHERE id = ?", ids[0]).Exec(ctx); err != nil {
			t.Fatal(err)
		}
		stray := filepath.Join(j.Dir, "import-999.upload")
		if err := os.WriteFile(stray, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		j2 := &contacts.Jobs{Store: s, Dir: j.Dir} // the next process
		runJobs(t, j2)
		dead := waitJob(t, j2, "", ids[0], ended)
		if dead.Status != "failed" || dead.Error != "interrupted: relayd stopped during the import; submit the file again" {
			t.Errorf("interrupted job: %+v", dead)
		}
		if queued := waitJob(t, j2, "", ids[1], ended); queued.Status != "done" || queued.Added != 3 {
			t.Errorf("queued job: %+v", queued)
		}
		if fs := uploads(t, j2); len(fs) != 0 {
			t.Errorf("files left: %v", fs)
		}
		// Another node's jobs are not this one's to recover.
		other := &contacts.Jobs{Store: s, Dir: filepath.Join(t.TempDir(), "b")}
		im, err := other.Submit(ctx, strings.NewReader(bigCSV(3)), contacts.ImportOptions{Account: "enap/eventos", List: "boletin", Actor: "test"})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(300 * time.Millisecond)
		if im, _ = j2.Job(ctx, "", im.ID); im.Status != "queued" {
			t.Errorf("another node's job: %+v", im)
		}
	})
}
