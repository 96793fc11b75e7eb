package consent

import (
	"sync"

	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
)

// sequencer applies committed changes to memory in revision order. bbolt
// runs a transaction's OnCommit handlers after it has released the writer
// lock, so the handlers of two transactions can run in either order; were
// the in-memory index updated in that order, a grant committed before a
// withdrawal could be applied after it and Check would answer from the
// grant. Every change has a per-tenant revision assigned in its
// transaction, so applying strictly by revision applies in commit order.
type sequencer struct {
	mu      sync.Mutex
	next    map[string]uint64
	pending map[string]map[uint64]func()
	// revisions is, per tenant, the last revision applied, which Check
	// reports and waits for (min_revision).
	revisions *appliedRevisions
}

func newSequencer() *sequencer {
	return &sequencer{next: map[string]uint64{}, pending: map[string]map[uint64]func(){}, revisions: newAppliedRevisions()}
}

// start sets where a tenant's revisions continue after a restart.
func (q *sequencer) start(tenant string, last uint64) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.next[tenant] = last + 1
	q.revisions.set(tenant, last)
}

// committed runs fn for the change of revision rev once every earlier
// revision of the tenant has run.
func (q *sequencer) committed(tenant string, rev uint64, fn func()) {
	q.mu.Lock()
	defer q.mu.Unlock()
	next, ok := q.next[tenant]
	if !ok {
		next = 1
	}
	if rev != next {
		if q.pending[tenant] == nil {
			q.pending[tenant] = map[uint64]func(){}
		}
		q.pending[tenant][rev] = fn
		return
	}
	for fn != nil {
		fn()
		next++
		fn = q.pending[tenant][next]
		delete(q.pending[tenant], next)
	}
	q.next[tenant] = next
	q.revisions.set(tenant, next-1)
}

// cut takes a cut of ix between two changes. The sequencer applies a
// change to the index and sets the tenant's revision together, under its
// lock, so the cut holds each tenant's changes up to the revision it
// records and none after: an exact cut.
func (q *sequencer) cut(ix *decision.Index) *decision.Cut {
	q.mu.Lock()
	defer q.mu.Unlock()
	return ix.Cut()
}
