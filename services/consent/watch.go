package consent

import (
	"fmt"
	"slices"
	"strings"
	"sync"

	bolt "go.etcd.io/bbolt"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// watchBuffer is how many changes a watcher may fall behind before it is
// disconnected; it then resumes from its last revision, so a slow watcher
// costs itself a reconnect and never holds up writers.
const watchBuffer = 1024

// watchPage bounds the changes read from the log per round of a catch-up.
const watchPage = 500

// hub fans committed changes out to the tenant's watchers.
type hub struct {
	mu       sync.Mutex
	watchers map[string]map[*watcher]struct{}
	// stopping is closed when the service stops, ending every Watch.
	stopping chan struct{}
}

type watcher struct {
	changes chan *consentv1.Change
	// lagged is closed when the watcher fell behind and was dropped.
	lagged chan struct{}
}

func newHub() *hub {
	return &hub{watchers: map[string]map[*watcher]struct{}{}, stopping: make(chan struct{})}
}

func (h *hub) subscribe(tenant string) *watcher {
	w := &watcher{changes: make(chan *consentv1.Change, watchBuffer), lagged: make(chan struct{})}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.watchers[tenant] == nil {
		h.watchers[tenant] = map[*watcher]struct{}{}
	}
	h.watchers[tenant][w] = struct{}{}
	return w
}

func (h *hub) unsubscribe(tenant string, w *watcher) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.watchers[tenant], w)
}

// publish hands a committed change to every watcher of its tenant. The
// sequencer calls it in revision order.
func (h *hub) publish(tenant string, c *consentv1.Change) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for w := range h.watchers[tenant] {
		select {
		case w.changes <- c:
		default:
			delete(h.watchers[tenant], w)
			close(w.lagged)
		}
	}
}

// closeAll ends every Watch when the service stops, so that graceful
// shutdown does not wait for streams that never end by themselves.
func (h *hub) closeAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	select {
	case <-h.stopping:
	default:
		close(h.stopping)
	}
}

// sendLive sends stream the changes w receives after revision last, until
// the caller leaves, w falls behind or the hub stops: the live half of a
// Watch, on the writer and on a replica.
func (h *hub) sendLive(stream consentv1.ConsentService_WatchServer, w *watcher, last uint64) error {
	for {
		select {
		case <-stream.Context().Done():
			return stream.Context().Err()
		case <-w.lagged:
			return apierror.Unavailable(apierror.ReasonWatchLagged, "the watcher fell behind; reconnect with the last revision received", 0)
		case <-h.stopping:
			return apierror.Unavailable(apierror.ReasonShuttingDown, "the service is stopping; reconnect with the last revision received", 0)
		case c := <-w.changes:
			if c.Revision <= last {
				continue
			}
			if err := stream.Send(&consentv1.WatchResponse{Changes: []*consentv1.Change{c}}); err != nil {
				return err
			}
			last = c.Revision
		}
	}
}

// Watch implements ConsentService. It subscribes to live changes first and
// only then reads the log, skipping live changes it already sent from the
// log, so that no change falls between the two.
func (s *Service) Watch(req *consentv1.WatchRequest, stream consentv1.ConsentService_WatchServer) error {
	if err := s.tenants.Require(req.TenantId); err != nil {
		return err
	}
	if err := s.resumable(req.TenantId, req.AfterRevision); err != nil {
		return err
	}
	w := s.watchers.subscribe(req.TenantId)
	defer s.watchers.unsubscribe(req.TenantId, w)

	last := req.AfterRevision
	for from0 := last == 0; ; from0 = false {
		var page []*consentv1.Change
		if err := s.DB.View(func(tx *bolt.Tx) (err error) {
			// Within the read of the page, so that a trim cannot fall
			// between the two and the page skip what it took.
			if trimmed := storage.TrimmedTx(tx, req.TenantId); last < trimmed {
				if !from0 {
					return historyTrimmed(req.TenantId, trimmed)
				}
				last = trimmed
			}
			page, err = storage.ChangesTx(tx, req.TenantId, last, watchPage)
			return err
		}); err != nil {
			return err
		}
		if len(page) > 0 {
			if err := stream.Send(&consentv1.WatchResponse{Changes: page}); err != nil {
				return err
			}
			last = page[len(page)-1].Revision
		}
		if len(page) < watchPage {
			break
		}
	}
	return s.watchers.sendLive(stream, w, last)
}

// sortBy sorts items by the string key returns.
func sortBy[T any](items []T, key func(T) string) {
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}

// resumable refuses a Watch that resumes after a revision a restore
// undid: the watcher took changes that the writer no longer holds, and
// the changes after its revision would not tell it so.
func (s *Service) resumable(tenant string, after uint64) error {
	if after == 0 {
		return nil
	}
	var spans []storage.Undone
	if err := s.DB.View(func(tx *bolt.Tx) (err error) {
		spans, err = storage.UndoneTx(tx, tenant)
		return err
	}); err != nil {
		return err
	}
	for _, u := range spans {
		if u.After < after && after <= u.Through {
			return apierror.FailedPrecondition(apierror.ReasonHistoryUndone, fmt.Sprintf(
				"the changes of tenant %q after revision %d up to %d were undone by a restore of the consent store from a backup: revert what came of them and watch again from revision %d",
				tenant, u.After, u.Through, u.After)).
				WithMetadata(map[string]string{"undone_after": fmt.Sprint(u.After), "undone_through": fmt.Sprint(u.Through)})
		}
	}
	return nil
}

// historyTrimmed refuses a Watch that resumes before the changes its
// tenant's log still keeps (Options.ChangesKeptFor).
func historyTrimmed(tenant string, trimmed uint64) error {
	return apierror.FailedPrecondition(apierror.ReasonHistoryTrimmed, fmt.Sprintf(
		"the changes of tenant %q up to revision %d are no longer kept: check again what you keep of its decisions and watch again from revision %d",
		tenant, trimmed, trimmed)).
		WithMetadata(map[string]string{"trimmed_through": fmt.Sprint(trimmed)})
}

// changeTx records a change in the tenant's log and stages its
// replication entry e (nil for a change that leaves the decision state as
// it is, an expiry) in the same transaction (replication.go). Once the
// transaction commits, and after every earlier change of the tenant, the
// entry is applied to the in-memory state and watchers are told.
func (s *Service) changeTx(tx *bolt.Tx, tenant string, c *consentv1.Change, e *consentv1.ReplicationEntry) error {
	rev, err := storage.AddChangeTx(tx, tenant, c)
	if err != nil {
		return err
	}
	if e == nil {
		e = &consentv1.ReplicationEntry{}
	}
	e.TenantId, e.Change = tenant, c
	if err := s.replicateTx(tx, e, s.changeMsgID(tenant, rev)); err != nil {
		return err
	}
	tx.OnCommit(func() {
		s.changesSinceSnapshot.Add(1)
		s.applied.committed(tenant, rev, func() {
			applyEntry(s.index, &s.notices, e, s.Clock.Now())
			// The index now holds every change up to rev: a snapshot
			// taken from here on covers it.
			s.index.SetRevision(tenant, rev)
			s.watchers.publish(tenant, c)
		})
	})
	return nil
}
