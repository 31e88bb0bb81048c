package relay

import (
	"context"
	"sync"
	"time"

	"github.com/servir-pe/envios/internal/credential"
)

// stateReader reads credential states for every session in shared
// queries. Each SMTP transaction command must see a revocation committed
// before it arrived, so a request is never answered by a query already
// running when it was made: requests made while a query runs wait for the
// next one, and that one answers all of them, whatever their credentials.
// With 32 busy sessions this is a query per few commands instead of one
// per command (the query was the largest share of PostgreSQL's CPU per
// message).
type stateReader struct {
	read    func(context.Context, []int64) (map[int64]credential.State, error) // credential.Store.States
	ctx     context.Context                                                    // the server's: a query serves many sessions
	timeout time.Duration

	mu      sync.Mutex
	waiting map[int64][]chan stateResult
	running bool
}

type stateResult struct {
	st  credential.State
	err error
}

func newStateReader(ctx context.Context, read func(context.Context, []int64) (map[int64]credential.State, error), timeout time.Duration) *stateReader {
	return &stateReader{read: read, ctx: ctx, timeout: timeout, waiting: map[int64][]chan stateResult{}}
}

// ask requests credential id's state, to be read by a query that starts
// after the call, and returns where the answer will come. A credential
// that does not exist is neither active nor disabled (the zero State).
func (r *stateReader) ask(id int64) <-chan stateResult {
	ch := make(chan stateResult, 1)
	r.mu.Lock()
	r.waiting[id] = append(r.waiting[id], ch)
	if !r.running {
		r.running = true
		go r.run()
	}
	r.mu.Unlock()
	return ch
}

// run answers the waiting requests, a query at a time, until none waits.
func (r *stateReader) run() {
	for {
		r.mu.Lock()
		batch := r.waiting
		if len(batch) == 0 {
			r.running = false
			r.mu.Unlock()
			return
		}
		r.waiting = map[int64][]chan stateResult{}
		r.mu.Unlock()
		ids := make([]int64, 0, len(batch))
		for id := range batch {
			ids = append(ids, id)
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.timeout)
		states, err := r.read(ctx, ids)
		cancel()
		for id, chans := range batch {
			for _, ch := range chans {
				ch <- stateResult{states[id], err}
			}
		}
	}
}
