package consent

import (
	"context"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// notices remembers when each purpose's next notice version takes effect.
// A tenant may publish a changed notice ahead of time; from its effective
// date on, decisions must judge consents by it (a material change asks for
// consent again), so the purpose is recompiled then.
type notices struct {
	mu  sync.Mutex
	due map[[2]string]time.Time // (tenant, purpose) → next effective time
}

// schedule records the next notice version of p after now, if any.
func (n *notices) schedule(tenant string, p *consentv1.Purpose, now time.Time) {
	var next time.Time
	for _, v := range p.NoticeVersions {
		if at := v.EffectiveAt.AsTime(); at.After(now) && (next.IsZero() || at.Before(next)) {
			next = at
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.due == nil {
		n.due = map[[2]string]time.Time{}
	}
	key := [2]string{tenant, p.PurposeId}
	if next.IsZero() {
		delete(n.due, key)
	} else {
		n.due[key] = next
	}
}

// dueAt returns the purposes whose next notice version is in effect at now.
func (n *notices) dueAt(now time.Time) [][2]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var out [][2]string
	for key, at := range n.due {
		if !at.After(now) {
			out = append(out, key)
		}
	}
	return out
}

// ApplyDueNotices brings into effect the notice versions whose effective
// time has come: each purpose is recompiled and a PURPOSE_CHANGED change
// tells watchers that decisions may differ. Run calls it every
// ExpirySweepEvery; it returns how many purposes it recompiled.
func (s *Service) ApplyDueNotices(_ context.Context) (int, error) {
	now := s.Clock.Now()
	due := s.notices.dueAt(now)
	for _, key := range due {
		tenant, id := key[0], key[1]
		err := s.DB.Update(func(tx *bolt.Tx) error {
			p, ok, err := storage.PurposeTx(tx, tenant, id)
			if err != nil || !ok {
				return err
			}
			return s.changeTx(tx, tenant, &consentv1.Change{
				Kind: consentv1.ChangeKind_CHANGE_KIND_PURPOSE_CHANGED, PurposeIds: []string{id}, At: timestamppb.New(now),
			}, purposeEntry(p))
		})
		if err != nil {
			return 0, err
		}
	}
	return len(due), nil
}
