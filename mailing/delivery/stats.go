package delivery

import (
	"maps"
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
	return out
}
