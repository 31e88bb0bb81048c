package delivery

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"math"
	"strings"
	"sync"
	"time"

	"github.com/uptrace/bun"

	"github.com/servir-pe/envios/internal/mailstore"
	"github.com/servir-pe/envios/internal/store"
	"github.com/servir-pe/envios/mailing/smtpout"
)

// WarmUp is a warm-up plan for a new sending domain or IP address: how
// many recipients each provider group may be sent a day, growing on a
// schedule, so that the mailbox providers learn the new sender's
// reputation before they see its full volume.
//
// The cap counts every recipient handed to the group's servers (sent or
// bounced) that day, in the database (mail_warmup), so every engine
// sharing the database shares it and a restart does not reset it. Bulk
// mail over the day's cap waits for the next day unattempted: deferred
// without an attempt, like mail waiting for a destination's limits, and
// never charged again (it was charged once, at acceptance); past MaxAge it
// fails, and, never attempted, has its charge released. Transactional
// mail is never held back by a plan, but counts against the cap, so bulk
// gets what it leaves.
type WarmUp struct {
	// Start is the plan's first day: its date in Location. Before it the
	// first day's cap applies.
	Start time.Time
	// Location is where days begin at midnight. Default UTC.
	Location *time.Location
	// Groups are the schedules by provider group: an MX group of direct
	// delivery (smtpout.MXGroup: google.com, outlook.com, yahoodns.net),
	// or a recipient domain (gmail.com; the only kind there is through a
	// smarthost, as relayd does not look MX hosts up then). "*" is the
	// schedule every other group gets, each its own cap. A group with no
	// schedule has no cap.
	Groups map[string]WarmUpGroup
}

// WarmUpGroup is one provider group's schedule of daily caps.
type WarmUpGroup struct {
	// Daily are the caps of the plan's first days, in order.
	Daily []int64
	// First is the first day's cap when Daily is empty.
	First int64
	// Growth multiplies each day's cap after Daily (or from First on):
	// 1.5 grows it by half every day. 0: after Daily no cap, and with
	// First alone the same cap every day.
	Growth float64
	// Max ends the plan for the group: from the first day whose cap would
	// reach it, no cap. 0: never.
	Max int64
}

// Cap is the cap of the plan's day-th day (0 is the first); -1: no cap.
func (g WarmUpGroup) Cap(day int) int64 {
	day = max(day, 0)
	var c float64
	switch {
	case day < len(g.Daily):
		c = float64(g.Daily[day])
	case len(g.Daily) > 0 && g.Growth <= 0:
		return -1
	case len(g.Daily) > 0:
		c = float64(g.Daily[len(g.Daily)-1]) * math.Pow(g.Growth, float64(day-len(g.Daily)+1))
	case g.Growth > 0:
		c = float64(g.First) * math.Pow(g.Growth, float64(day))
	default:
		c = float64(g.First)
	}
	if g.Max > 0 && c >= float64(g.Max) || c >= 1e15 {
		return -1
	}
	return int64(c)
}

// warmUp is an engine's warm-up plan and what it saw of it.
type warmUp struct {
	plan  WarmUp
	mu    sync.Mutex
	stats map[string]WarmUpStats
}

func newWarmUp(p WarmUp) (*warmUp, error) {
	if p.Location == nil {
		p.Location = time.UTC
	}
	if p.Start.IsZero() {
		return nil, errors.New("delivery: WarmUp.Start is required")
	}
	groups := map[string]WarmUpGroup{}
	for k, g := range p.Groups {
		if len(g.Daily) == 0 && g.First <= 0 {
			return nil, fmt.Errorf("delivery: warm-up group %q needs Daily caps or First", k)
		}
		groups[strings.ToLower(k)] = g
	}
	p.Groups = groups
	return &warmUp{plan: p, stats: map[string]WarmUpStats{}}, nil
}

// group is the counter and schedule of a transaction to domain along rt:
// the domain's own, else its group's, else "*"'s (counted by its group).
func (w *warmUp) group(rt smtpout.Route, domain string) (string, WarmUpGroup, bool) {
	for _, k := range []string{domain, rt.Group} {
		if g, ok := w.plan.Groups[k]; ok {
			return k, g, true
		}
	}
	g, ok := w.plan.Groups["*"]
	return rt.Group, g, ok
}

// today is the plan's day at now: its index, its date, and when the next
// one begins.
func (w *warmUp) today(now time.Time) (int, string, time.Time) {
	loc := w.plan.Location
	t := now.In(loc)
	midnight := time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, loc)
	s := w.plan.Start.In(loc)
	first := time.Date(s.Year(), s.Month(), s.Day(), 0, 0, 0, 0, loc)
	day := int(math.Round(midnight.Sub(first).Hours() / 24)) // DST days are 23 or 25 hours
	return day, midnight.Format(time.DateOnly), midnight.AddDate(0, 0, 1)
}

func (w *warmUp) snapshot() map[string]WarmUpStats {
	w.mu.Lock()
	defer w.mu.Unlock()
	return maps.Clone(w.stats)
}

func (w *warmUp) note(group, day string, limit, sent, held int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stats[group]
	if s.Day != day {
		s.Day, s.Sent = day, 0
	}
	s.Cap, s.Held = limit, s.Held+held
	s.Sent = max(s.Sent, sent)
	w.stats[group] = s
}

// warmTake is a transaction's share of its group's cap for the day.
type warmTake struct {
	group, day string
	n          int64
}

// takeWarmUp decides how many of g (all to domain, along rt) go now under
// the warm-up plan: k, the first k; the rest wait until next. take is what
// was counted, to give back what is not delivered (nil: no cap).
func (e *Engine) takeWarmUp(ctx context.Context, rt smtpout.Route, domain string, g []mailstore.Claimed) (k int, take *warmTake, next time.Time, err error) {
	if e.warm == nil {
		return len(g), nil, time.Time{}, nil
	}
	group, sched, ok := e.warm.group(rt, domain)
	if !ok {
		return len(g), nil, time.Time{}, nil
	}
	day, date, next := e.warm.today(e.st.Now())
	limit := sched.Cap(day)
	if limit < 0 {
		e.warm.note(group, date, -1, 0, 0)
		return len(g), nil, next, nil
	}
	if g[0].Priority == 0 {
		limit = -1 // transactional: counted, never held
	}
	var got, sent int64
	err = store.RetryConnLost(ctx, e.st.DB, func() (err error) {
		got, sent, err = takeCap(ctx, e.st.DB, group, date, int64(len(g)), limit)
		return err
	})
	if err != nil {
		return 0, nil, next, err
	}
	e.warm.note(group, date, sched.Cap(day), sent, int64(len(g))-got)
	return int(got), &warmTake{group, date, got}, next, nil
}

// giveBackWarmUp returns to the day's count the recipients of take that
// were not handed over (deferred, not attempted).
func (e *Engine) giveBackWarmUp(ctx context.Context, take *warmTake, out []outcome) {
	var n int64
	for _, o := range out {
		if r := o.res; !o.attempted || !r.Delivered() && !r.Permanent() && !r.LostAfterData {
			n++
		}
	}
	if take == nil || n == 0 {
		return
	}
	err := store.RetryConnLost(ctx, e.st.DB, func() error {
		_, err := e.st.DB.NewRaw("UPDATE mail_warmup SET sent = sent - ? WHERE provider_group = ? AND plan_day = ?", n, take.group, take.day).Exec(ctx)
		return err
	})
	if err != nil {
		// The count stays higher than what was sent: the cap errs on the safe side.
		e.st.Logger.Warn("warm-up: giving back undelivered recipients failed", "group", take.group, "recipients", n, "err", err)
	}
}

// takeCap counts up to n recipients against the cap limit of group on
// day (limit < 0: all n, uncapped) with conditional updates, so that no
// interleaving of engines goes over it, and returns how many it counted
// and the day's count after.
func takeCap(ctx context.Context, idb bun.IDB, group, day string, n, limit int64) (got, sent int64, err error) {
	for range 4 {
		want := n
		if limit >= 0 {
			want = min(n, limit-sent)
		}
		if want <= 0 {
			return 0, sent, nil
		}
		cond := ""
		args := []any{group, day, want}
		if limit >= 0 {
			cond, args = " WHERE mail_warmup.sent + excluded.sent <= ?", append(args, limit)
		}
		err = idb.NewRaw("INSERT INTO mail_warmup (provider_group, plan_day, sent) VALUES (?, ?, ?) "+
			"ON CONFLICT (provider_group, plan_day) DO UPDATE SET sent = mail_warmup.sent + excluded.sent"+cond+" RETURNING sent", args...).Scan(ctx, &sent)
		if err == nil {
			return want, sent, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, 0, fmt.Errorf("delivery: warm-up count: %w", err)
		}
		// Over the cap: take what is left of it, if anything.
		if err = idb.NewRaw("SELECT sent FROM mail_warmup WHERE provider_group = ? AND plan_day = ?", group, day).Scan(ctx, &sent); err != nil {
			return 0, 0, fmt.Errorf("delivery: warm-up count: %w", err)
		}
	}
	return 0, sent, nil
}
