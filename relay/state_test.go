package relay

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/servir-pe/envios/internal/credential"
)

// A request made while a query runs is answered by the next query, never
// by the running one; the requests waiting together share one query,
// whatever their credentials; an error reaches every waiter.
func TestStateReaderNeverAnswersFromAnEarlierQuery(t *testing.T) {
	type call struct {
		ids     []int64
		release chan error
	}
	calls := make(chan call)
	query := 0
	read := func(ctx context.Context, ids []int64) (map[int64]credential.State, error) {
		query++
		c := call{ids, make(chan error)}
		calls <- c
		if err := <-c.release; err != nil {
			return nil, err
		}
		// Remaining tells which query answered.
		out := map[int64]credential.State{}
		for _, id := range ids {
			out[id] = credential.State{Active: true, Remaining: int64(query)}
		}
		return out, nil
	}
	r := newStateReader(context.Background(), read, time.Minute)
	a := r.ask(1)
	first := <-calls           // query 1 runs, for request a
	b, c := r.ask(1), r.ask(2) // asked while query 1 runs: they wait for the next
	first.release <- nil
	if got := <-a; got.err != nil || got.st.Remaining != 1 {
		t.Fatalf("a: %+v", got)
	}
	second := <-calls
	if len(second.ids) != 2 {
		t.Fatalf("the waiting requests did not share a query: %v", second.ids)
	}
	second.release <- nil
	for _, ch := range []<-chan stateResult{b, c} {
		if got := <-ch; got.err != nil || got.st.Remaining != 2 || !got.st.Active {
			t.Fatalf("a request made while query 1 ran got %+v, want query 2's answer", got)
		}
	}
	// An error reaches the waiters of the query that failed.
	d := r.ask(3)
	third := <-calls
	e, f := r.ask(4), r.ask(5)
	boom := errors.New("database down")
	third.release <- boom
	if got := <-d; !errors.Is(got.err, boom) {
		t.Fatalf("d: %+v", got)
	}
	fourth := <-calls
	fourth.release <- boom
	for _, ch := range []<-chan stateResult{e, f} {
		if got := <-ch; !errors.Is(got.err, boom) || len(fourth.ids) != 2 {
			t.Fatalf("error not passed on: %+v (query of %v)", got, fourth.ids)
		}
	}
}
