package delivery

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/servir-pe/envios/internal/mailstore"
)

// LatencyBuckets are the upper bounds, in seconds, of the delivery latency
// histogram: from acceptance to the 2xx reply.
var LatencyBuckets = []float64{1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600}

// Stats are an engine's counters since it started.
type Stats struct {
	Outcomes map[mailstore.Status]int64 // recipients recorded, by the status they got (sent, deferred, bounced, failed)
	// Latency of the recipients sent: Buckets[i] counts those sent within
	// LatencyBuckets[i] seconds of acceptance (cumulative, as Prometheus
	// histograms are); Count and Sum cover them all.
	Buckets    []int64
	Count      int64
	SumSeconds float64
	// PolicyRefusals counts, by destination domain, the 5xx replies of
	// class policy (reputation, DMARC, PTR): each raised an alarm and
	// paused bulk mail to the domain.
	PolicyRefusals map[string]int64
	// Destinations are the per-destination limits as they stand, by name
	// (and mode): the smarthost, each MX group of direct delivery, each
	// Config.Limits entry in use.
	Destinations []DestinationStats
	// WarmUp is the warm-up plan's state by provider group, as this
	// engine last saw it; nil without a plan.
	WarmUp map[string]WarmUpStats
}

// DestinationStats are one destination's limits now.
type DestinationStats struct {
	Name string // the smarthost's address, an MX group (google.com), or a Config.Limits key
	Mode string // "smarthost", "adaptive" or "fixed"
	// Concurrency and PerSecond are the limits allowed now (PerSecond
	// +Inf: unlimited); InFlight the transactions under way.
	Concurrency, InFlight int
	PerSecond             float64
	// Throttled counts the throttling signals it gave (421, 4.7.x, failed
	// connections); Waited the transactions deferred, unattempted, because
	// its limits were full.
	Throttled, Waited int64
	LastUsed          time.Time
}

// WarmUpStats are one provider group's warm-up state.
type WarmUpStats struct {
	Day  string // the plan's day, YYYY-MM-DD in its time zone
	Cap  int64  // that day's cap; -1: none (the plan is over for the group)
	Sent int64  // counted against it (by every engine), as last read
	Held int64  // recipients this engine held over the cap until the next day
}

type engineStats struct {
	mu sync.Mutex
	s  Stats
}

func (st *engineStats) record(status mailstore.Status, accepted, now time.Time) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s.Outcomes == nil {
		st.s.Outcomes = map[mailstore.Status]int64{}
		st.s.Buckets = make([]int64, len(LatencyBuckets))
	}
	st.s.Outcomes[status]++
	if status != mailstore.StatusSent {
		return
	}
	d := now.Sub(accepted).Seconds()
	for i, b := range LatencyBuckets {
		if d <= b {
			st.s.Buckets[i]++
		}
	}
	st.s.Count++
	st.s.SumSeconds += d
}

func (st *engineStats) policy(domain string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.s.PolicyRefusals == nil {
		st.s.PolicyRefusals = map[string]int64{}
	}
	st.s.PolicyRefusals[domain]++
}

// Stats returns the engine's counters.
func (e *Engine) Stats() Stats {
	e.stats.mu.Lock()
	defer e.stats.mu.Unlock()
	out := e.stats.s
	out.Outcomes = map[mailstore.Status]int64{}
	for k, v := range e.stats.s.Outcomes {
		out.Outcomes[k] = v
	}
	out.PolicyRefusals = maps.Clone(e.stats.s.PolicyRefusals)
	out.Buckets = append([]int64(nil), e.stats.s.Buckets...)
	if out.Buckets == nil {
		out.Buckets = make([]int64, len(LatencyBuckets))
	}
	out.Destinations = e.limits.snapshot()
	if e.warm != nil {
		out.WarmUp = e.warm.snapshot()
	}
	return out
}

// destinationIdle is how long a destination without mail in flight stays
// in the metrics after its last transaction.
const destinationIdle = time.Hour

// WriteDestinationMetrics writes the per-destination gauges and counters
// (and the warm-up plan's) in the Prometheus text format, as relayd's
// /metrics serves them. Destinations idle for an hour are left out.
func (s Stats) WriteDestinationMetrics(w io.Writer) {
	now := time.Now()
	var live []DestinationStats
	for _, d := range s.Destinations {
		if d.InFlight > 0 || now.Sub(d.LastUsed) < destinationIdle {
			live = append(live, d)
		}
	}
	family := func(name, kind, help string, v func(DestinationStats) string) {
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
		for _, d := range live {
			fmt.Fprintf(w, "%s{destination=%q,mode=%q} %s\n", name, d.Name, d.Mode, v(d))
		}
	}
	num := func(f float64) string {
		if math.IsInf(f, 1) {
			return "+Inf"
		}
		return fmt.Sprintf("%g", f)
	}
	family("envios_delivery_destination_rate", "gauge", "Messages per second a destination (smarthost, MX group, fixed limit) is allowed now; +Inf: unlimited.",
		func(d DestinationStats) string { return num(d.PerSecond) })
	family("envios_delivery_destination_concurrency", "gauge", "Transactions a destination may have in flight now.",
		func(d DestinationStats) string { return fmt.Sprint(d.Concurrency) })
	family("envios_delivery_destination_in_flight", "gauge", "Transactions in flight to a destination.",
		func(d DestinationStats) string { return fmt.Sprint(d.InFlight) })
	family("envios_delivery_destination_throttled_total", "counter", "Throttling signals from a destination (421, 4.7.x, failed connections).",
		func(d DestinationStats) string { return fmt.Sprint(d.Throttled) })
	family("envios_delivery_destination_waited_total", "counter", "Transactions deferred, unattempted, because a destination's limits were full.",
		func(d DestinationStats) string { return fmt.Sprint(d.Waited) })
	if s.WarmUp == nil {
		return
	}
	groups := slices.Sorted(maps.Keys(s.WarmUp))
	for _, m := range []struct {
		name, help string
		v          func(WarmUpStats) int64
	}{
		{"envios_delivery_warmup_cap", "Today's warm-up cap of a provider group (-1: none).", func(x WarmUpStats) int64 { return x.Cap }},
		{"envios_delivery_warmup_sent", "Recipients counted against today's warm-up cap of a provider group.", func(x WarmUpStats) int64 { return x.Sent }},
		{"envios_delivery_warmup_held_total", "Recipients this engine held over a warm-up cap until the next day.", func(x WarmUpStats) int64 { return x.Held }},
	} {
		kind := "gauge"
		if m.name == "envios_delivery_warmup_held_total" {
			kind = "counter"
		}
		fmt.Fprintf(w, "# HELP %s %s\n# TYPE %s %s\n", m.name, m.help, m.name, kind)
		for _, g := range groups {
			fmt.Fprintf(w, "%s{group=%q} %d\n", m.name, g, m.v(s.WarmUp[g]))
		}
	}
}
