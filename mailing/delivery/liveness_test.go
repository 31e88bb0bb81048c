package delivery_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/internal/storetest"
	"github.com/servir-pe/envios/mailing"
	"github.com/servir-pe/envios/mailing/delivery"
	"github.com/servir-pe/envios/mailing/mailtest"
)

// nodeLock is the lock an engine holds on its name while it runs (the
// tests check it is the one: TestSameNodeTwiceIsRefused).
func nodeLock(node string) string { return "delivery.node." + node }

// leftClaimed accepts n messages of one recipient each and claims them as
// owner, which then "dies": it never records them nor returns the leases.
// The lease is the default 10 minutes, and the tests' clock stands still
// unless they move it: what is taken back is not taken for an expired lease.
func leftClaimed(t *testing.T, e env, owner string, n int) []int64 {
	t.Helper()
	ctx := context.Background()
	for i := range n {
		m := basic()
		m.Account, m.To = "enap/eventos", []string{fmt.Sprintf("r%d@example.com", i)}
		if _, err := e.M.Send(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	now := e.Clock.Now()
	items, err := mailstore.ClaimDue(ctx, e.DB, owner, now, now.Add(10*time.Minute), 100)
	if err != nil || len(items) != n {
		t.Fatalf("claim as %s: %d claimed, %v", owner, len(items), err)
	}
	ids := make([]int64, n)
	for i, it := range items {
		ids[i] = it.ID
	}
	return ids
}

// run starts eng.Run and returns its stop, which cancels it and returns
// what Run returned.
func run(t *testing.T, eng *mailing.Engine) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- eng.Run(ctx) }()
	stopped := false
	stop = func() error {
		if stopped {
			return nil
		}
		stopped = true
		cancel()
		return <-ran
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}

// waitDelivered waits until the sink has n messages, and says how long it
// took.
func waitDelivered(t *testing.T, sink *mailtest.Sink, n int, within time.Duration) time.Duration {
	t.Helper()
	began := time.Now()
	for len(sink.Messages()) < n {
		if time.Since(began) > within {
			t.Fatalf("%d of %d delivered after %v", len(sink.Messages()), n, within)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(began)
}

// tookBack checks that each recipient was delivered once, is sent, and
// counts the attempt its dead engine may have made: attempts 2, and in its
// history a deferred attempt with the "lease expired" reply before the
// sent one; the deferred counters agree with the events.
func tookBack(t *testing.T, db *bun.DB, sink *mailtest.Sink, ids []int64) {
	t.Helper()
	ctx := context.Background()
	seen := map[string]int{}
	for _, m := range sink.Messages() {
		for _, to := range m.To {
			seen[to]++
		}
	}
	if len(seen) != len(ids) {
		t.Fatalf("the sink saw %d recipients, want %d: %v", len(seen), len(ids), seen)
	}
	for to, n := range seen {
		if n != 1 {
			t.Fatalf("%s delivered %d times", to, n)
		}
	}
	for _, id := range ids {
		var r struct {
			Status   string
			Attempts int
			Owner    string
		}
		if err := db.NewRaw("SELECT status, attempts, lease_owner AS owner FROM mail_recipients WHERE id = ?", id).Scan(ctx, &r); err != nil {
			t.Fatal(err)
		}
		var history []struct {
			Type    string
			Attempt bool
			Reply   string
		}
		if err := db.NewRaw("SELECT type, attempt, reply FROM mail_events WHERE recipient_id = ? ORDER BY id", id).Scan(ctx, &history); err != nil {
			t.Fatal(err)
		}
		if r.Status != "sent" || r.Attempts != 2 || r.Owner != "" || len(history) != 2 || history[0].Type != "deferred" || !history[0].Attempt ||
			!strings.HasPrefix(history[0].Reply, "lease expired: ") || history[1].Type != "sent" {
			t.Fatalf("recipient %d: %+v, history %+v; want sent after 2 attempts, the first a 'lease expired' one", id, r, history)
		}
	}
	var events, counted int
	if err := db.NewRaw("SELECT (SELECT count(*) FROM mail_events WHERE type = 'deferred'), "+
		"(SELECT COALESCE(sum(n), 0) FROM mail_counters WHERE kind = 'deferred')").Scan(ctx, &events, &counted); err != nil {
		t.Fatal(err)
	}
	if events != len(ids) || counted != events {
		t.Fatalf("%d deferred events and %d counted, want %d", events, counted, len(ids))
	}
}

// A node killed with recipients claimed, restarted under its name, takes
// them back and delivers them at once, not when their lease ends.
func TestRestartedNodeTakesBackItsClaims(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		ids := leftClaimed(t, e, "n1", 3)
		sink := mailtest.NewSink(t)
		stop := run(t, engine(t, e, sink, mailing.EngineConfig{Node: "n1", Poll: 10 * time.Millisecond}))
		took := waitDelivered(t, sink, 3, 10*time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		tookBack(t, db, sink, ids)
		t.Logf("the restarted node delivered its 3 claims %v after its start", took.Round(time.Millisecond))
	})
}

// The claims of a node that died (its lock is free: it never took it, or
// it is gone with its process) are taken by another node: on SQLite, by the
// one engine as it starts; on PostgreSQL, by the first liveness check,
// which Run also makes as it starts.
func TestAnotherNodeTakesADeadNodesClaims(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		ids := leftClaimed(t, e, "n1", 3)
		sink := mailtest.NewSink(t)
		stop := run(t, engine(t, e, sink, mailing.EngineConfig{Node: "n2", Poll: 10 * time.Millisecond}))
		took := waitDelivered(t, sink, 3, 10*time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		tookBack(t, db, sink, ids)
		t.Logf("node n2 delivered dead n1's 3 claims %v after its start", took.Round(time.Millisecond))
	})
}

// While the lock of a node is held (it lives), no other node takes its
// claims, however many liveness checks pass; once it is free, the next
// check takes them.
func TestLiveNodeKeepsItsClaims(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		release, ok, err := store.TryLock(ctx, db, nodeLock("n1"))
		if err != nil || !ok {
			t.Fatalf("lock n1: %v %v", ok, err)
		}
		ids := leftClaimed(t, e, "n1", 3)
		sink := mailtest.NewSink(t)
		const check = 10 * time.Second // the default
		stop := run(t, engine(t, e, sink, mailing.EngineConfig{Node: "n2", Poll: 5 * time.Millisecond}))
		for range 5 {
			time.Sleep(100 * time.Millisecond) // rounds, and with the clock moved, a check
			e.Clock.Add(check)
		}
		time.Sleep(100 * time.Millisecond)
		if n := len(sink.Messages()); n != 0 || countStatus(t, db, "sending") != 3 {
			t.Fatalf("a live node's claims were taken: %d delivered, %d still sending", n, countStatus(t, db, "sending"))
		}
		release() // n1 dies
		e.Clock.Add(check)
		took := waitDelivered(t, sink, 3, 10*time.Second)
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		tookBack(t, db, sink, ids)
		t.Logf("n1's claims delivered %v after its lock was freed and the clock reached the next check", took.Round(time.Millisecond))
	})
}

// Two engines with one node name: the second is refused with an error that
// says why, and the first goes on. On SQLite a second engine, even with
// another name, is refused too (one engine delivers from a file); on
// PostgreSQL it runs beside the first.
func TestSameNodeTwiceIsRefused(t *testing.T) {
	storetest.Each(t, func(t *testing.T, db *bun.DB) {
		ctx := context.Background()
		e := setup(t, db, map[string]int64{"enap/eventos": 100}, mailing.Config{})
		sink := mailtest.NewSink(t)
		stop := run(t, engine(t, e, sink, mailing.EngineConfig{Node: "n1", Poll: 10 * time.Millisecond}))
		sendOne(t, e)
		waitDelivered(t, sink, 1, 10*time.Second) // n1 runs
		if release, ok, err := store.TryLock(ctx, db, nodeLock("n1")); err != nil || ok {
			if ok {
				release()
			}
			t.Fatalf("the lock %q is not held while n1 runs (%v): the tests name the wrong lock", nodeLock("n1"), err)
		}
		began := time.Now()
		err := engine(t, e, sink, mailing.EngineConfig{Node: "n1"}).Run(ctx)
		want := `delivery: node "n1" is already running (another relayd with the same --node / delivery.node?)`
		if !errors.Is(err, delivery.ErrAlreadyRunning) || err.Error() != want {
			t.Fatalf("a second n1: %v, want %q", err, want)
		}
		t.Logf("a second n1 was refused after %v", time.Since(began).Round(time.Millisecond))

		other := run(t, engine(t, e, sink, mailing.EngineConfig{Node: "n2", Poll: 10 * time.Millisecond}))
		sendOne(t, e)
		sendOne(t, e)
		waitDelivered(t, sink, 3, 10*time.Second) // the first, at least, goes on
		err = other()
		if isPostgres(db) {
			if err != nil {
				t.Fatalf("n2 beside n1 on PostgreSQL: %v", err)
			}
		} else if !errors.Is(err, delivery.ErrAlreadyRunning) || !strings.Contains(err.Error(), "already delivering from this SQLite database") {
			t.Fatalf("n2 beside n1 on SQLite: %v, want refused", err)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		if release, ok, err := store.TryLock(ctx, db, nodeLock("n1")); err != nil || !ok {
			t.Fatalf("n1's lock is still held after Run returned: %v %v", ok, err)
		} else {
			release()
		}
	})
}

// PostgreSQL dropping every session (a restart) drops the engine's lock
// with it: the next liveness check finds it free and takes it again, so
// the engine is not taken for dead for longer than a check.
func TestLostLockIsTakenAgain(t *testing.T) {
	ctx := context.Background()
	e, db, proxy := behindProxy(t)
	sink := mailtest.NewSink(t)
	run(t, engine(t, e, sink, mailing.EngineConfig{Node: "n1", Poll: 10 * time.Millisecond}))
	sendOne(t, e)
	waitDelivered(t, sink, 1, 10*time.Second)
	proxy.Down()
	proxy.Up()
	store.DropIdle(db) // the test's own pool lost its connections too
	release, ok, err := store.TryLock(ctx, db, nodeLock("n1"))
	if err != nil || !ok {
		t.Fatalf("the lock survived the sessions' end? %v %v", ok, err)
	}
	release()
	for deadline := time.Now().Add(10 * time.Second); ; {
		e.Clock.Add(10 * time.Second) // the next check is due
		time.Sleep(50 * time.Millisecond)
		release, ok, err := store.TryLock(ctx, db, nodeLock("n1"))
		if err == nil && !ok {
			break // held: the engine has it again
		}
		if ok {
			release() // the check had not run yet (or met ours): again
		}
		if time.Now().After(deadline) {
			t.Fatalf("the engine did not take its lock again: %v", err)
		}
	}
	sendOne(t, e)
	waitDelivered(t, sink, 2, 10*time.Second)
}
