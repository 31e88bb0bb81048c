package delivery

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
)

// group splits claimed recipients (in claim order) into transactions: the
// transactional recipients of one single message at one domain go
// together, up to MaxRecipientsPerTransaction; every other recipient goes
// alone. A group keeps the claim order, so its first recipient has the
// lowest id; the groups are ordered by their first recipient.
func (e *Engine) group(ctx context.Context, items []mailstore.Claimed) [][]mailstore.Claimed {
	type key struct{ message, domain string }
	open := map[key]int{}       // the group of each key still taking recipients
	shared := map[string]bool{} // per message: do its recipients get the same bytes?
	groups := make([][]mailstore.Claimed, 0, len(items))
	for _, it := range items {
		if it.Priority > 0 || e.cfg.MaxRecipientsPerTransaction < 2 {
			groups = append(groups, []mailstore.Claimed{it}) // bulk: a List-Unsubscribe token each
			continue
		}
		k := key{it.MessageID, domainOf(it.Address)}
		if i, ok := open[k]; ok && e.sameBytes(ctx, shared, it.MessageID) {
			groups[i] = append(groups[i], it)
			if len(groups[i]) >= e.cfg.MaxRecipientsPerTransaction {
				delete(open, k)
			}
			continue
		}
		open[k] = len(groups)
		groups = append(groups, []mailstore.Claimed{it})
	}
	return groups
}

// sameBytes reports whether every recipient of a message is sent the same
// bytes: a single message (Send), not a batch, whose recipients are each
// rendered from their own data. It is asked only for messages with
// several recipients claimed together, and remembers its answers in known.
// A message that cannot be read is not grouped (its delivery reports why).
func (e *Engine) sameBytes(ctx context.Context, known map[string]bool, messageID string) bool {
	same, ok := known[messageID]
	if !ok {
		src, err := e.source(ctx, messageID)
		same = err == nil && !src.Personal()
		known[messageID] = same
	}
	return same
}

func domainOf(addr string) string {
	return strings.ToLower(addr[strings.LastIndexByte(addr, '@')+1:])
}

func (e *Engine) claim(ctx context.Context) ([]mailstore.Claimed, error) {
	now := e.st.Now()
	if _, err := mailstore.ExpireLeases(ctx, e.st.DB, now); err != nil {
		return nil, err
	}
	return mailstore.ClaimDue(ctx, e.st.DB, e.cfg.Owner, now, now.Add(e.cfg.Lease), e.cfg.Batch)
}

func (e *Engine) unclaim(ctx context.Context, items []mailstore.Claimed) {
	ids := make([]int64, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	if err := mailstore.ReturnLeases(ctx, e.st.DB, e.cfg.Owner, ids); err != nil {
		e.st.Logger.Error("returning leases failed; they expire on their own", "err", err)
	}
}

// ErrAlreadyRunning reports that Run found its name's lock held by a live
// engine, or, on SQLite, another engine delivering from the file.
var ErrAlreadyRunning = errors.New("delivery: already running")

// runningError is an ErrAlreadyRunning that says which.
type runningError struct{ msg string }

func (e *runningError) Error() string        { return e.msg }
func (e *runningError) Is(target error) bool { return target == ErrAlreadyRunning }

// nodeLock is the name of the lock an engine holds on its Owner while it
// runs; soleLock is the SQLite file's delivery lock.
func nodeLock(owner string) string { return "delivery.node." + owner }

const soleLock = "delivery.sqlite"

// lockWait is how long Run waits for its name's lock before it calls the
// name taken: another node that found this one stopped holds it while it
// takes back the claims (a statement's time), and PostgreSQL may take a
// moment to end the session of a killed process.
const lockWait = 3 * time.Second

// locks are what a running engine holds.
type locks struct {
	node func() // the lock of its name
	sole func() // on SQLite, the file's delivery lock; nil elsewhere
}

func (l *locks) release() {
	if l.sole != nil {
		l.sole()
	}
	l.node()
}

// lock takes the engine's locks for Run; nil, nil if ctx ended first.
func (e *Engine) lock(ctx context.Context) (*locks, error) {
	wait := time.NewTicker(100 * time.Millisecond)
	defer wait.Stop()
	for give := time.Now().Add(lockWait); ; {
		release, ok, err := e.tryLock(ctx, nodeLock(e.cfg.Owner))
		if err != nil {
			return nil, fmt.Errorf("delivery: lock node %q: %w", e.cfg.Owner, err)
		}
		if ok {
			l := &locks{node: release}
			if e.sole {
				return l, e.lockSole(ctx, l)
			}
			return l, nil
		}
		if time.Now().After(give) {
			return nil, &runningError{fmt.Sprintf("delivery: node %q is already running (another relayd with the same --node / delivery.node?)", e.cfg.Owner)}
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-wait.C:
		}
	}
}

// tryLock is store.TryLock, tried once more on a fresh connection if the
// first was found lost (after a database restart every idle one is dead).
// A lock taken on a connection then lost died with its session.
func (e *Engine) tryLock(ctx context.Context, name string) (release func(), ok bool, err error) {
	err = store.RetryConnLost(ctx, e.st.DB, func() (err error) {
		release, ok, err = store.TryLock(ctx, e.st.DB, name)
		return err
	})
	return release, ok, err
}

// lockSole adds the SQLite file's delivery lock to l, or releases l.
func (e *Engine) lockSole(ctx context.Context, l *locks) error {
	release, ok, err := e.tryLock(ctx, soleLock)
	if err != nil || !ok {
		l.node()
		if err != nil {
			return fmt.Errorf("delivery: lock the SQLite database: %w", err)
		}
		return &runningError{"delivery: another engine is already delivering from this SQLite database " +
			"(one relayd serves a SQLite file; several nodes need PostgreSQL)"}
	}
	l.sole = release
	return nil
}

// takeBack expires every claim of owner, whose engine has stopped.
func (e *Engine) takeBack(ctx context.Context, owner string) error {
	var n int
	err := store.RunInTx(ctx, e.st.DB, func(ctx context.Context, tx bun.Tx) (err error) {
		n, err = mailstore.ExpireOwner(ctx, tx, owner, e.st.Now())
		return err
	})
	if err != nil {
		return fmt.Errorf("delivery: %w", err)
	}
	if n > 0 {
		e.st.Logger.Info("took back the claims of a stopped engine: they are due again, counted as attempted", "node", owner, "recipients", n)
	}
	return nil
}

// checkLiveness takes back the claims of the engines that have stopped,
// other than this one: those whose lock it can take. Names of the older
// form (with "/"), which hold no lock, are left to their lease, but for
// the sole engine of a SQLite file starting, for which every other claim
// is a stopped engine's. Past the first check it makes sure first that
// this engine still holds its own lock: a PostgreSQL restart, or a lost
// connection, drops it, and then it is taken again and the others are
// not judged until the next check (they may not have taken theirs back
// yet). It returns when the next check is due.
func (e *Engine) checkLiveness(ctx context.Context, l *locks, first bool) time.Time {
	next := e.st.Now().Add(e.cfg.LivenessCheck)
	if !first && store.EngineOfDB(e.st.DB) == store.Postgres {
		release, ok, err := e.tryLock(ctx, nodeLock(e.cfg.Owner))
		if err != nil {
			e.checkFailed(ctx, e.cfg.Owner, err)
			return next
		}
		if ok {
			e.st.Logger.Warn("this engine had lost the lock of its name (the database restarted or the connection broke); took it again", "node", e.cfg.Owner)
			old := l.node
			l.node = release
			old()
			return next
		}
	}
	owners, err := mailstore.ClaimOwners(ctx, e.st.DB)
	if err != nil {
		e.checkFailed(ctx, "", err)
		return next
	}
	for _, o := range owners {
		if o == e.cfg.Owner || o == "" || strings.Contains(o, "/") && !(first && l.sole != nil) {
			continue
		}
		release, ok, err := e.tryLock(ctx, nodeLock(o))
		if err != nil {
			e.checkFailed(ctx, o, err)
			continue
		}
		if !ok {
			continue // alive: its claims stay
		}
		if err := e.takeBack(ctx, o); err != nil {
			e.checkFailed(ctx, o, err)
		}
		release()
	}
	return next
}

// checkFailed logs a liveness check's failure, unless the engine is
// stopping; the next check tries again.
func (e *Engine) checkFailed(ctx context.Context, node string, err error) {
	if ctx.Err() == nil {
		e.st.Logger.Error("liveness check failed; the next one tries again", "node", node, "err", err)
	}
}
