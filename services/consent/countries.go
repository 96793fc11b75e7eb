package consent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// The age of digital consent (Art. 8(1)) is the subject's country's; a
// caller that names no country is taken to mean the tenant's, the country
// of the controller's establishment the registry keeps in
// TenantSettings.country. Check answers from memory, so the service keeps
// each tenant's country: in memory for Check, in its store for restarts
// while the registry is down, refreshed from the registry when a tenant is
// registered or changed (the registry's events carry no settings) and, for
// tenants whose country it does not know yet, on every tick.

// countryQueue holds the tenants whose country is to be read from the
// registry, each once.
type countryQueue struct {
	mu      sync.Mutex
	pending map[string]bool
	wake    chan struct{}
}

func newCountryQueue() *countryQueue {
	return &countryQueue{pending: map[string]bool{}, wake: make(chan struct{}, 1)}
}

// want queues a tenant; it never blocks.
func (q *countryQueue) want(tenant string) {
	q.mu.Lock()
	q.pending[tenant] = true
	q.mu.Unlock()
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// take returns the queued tenants and empties the queue.
func (q *countryQueue) take() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	out := make([]string, 0, len(q.pending))
	for t := range q.pending {
		out = append(out, t)
	}
	clear(q.pending)
	return out
}

// countryFetchTimeout bounds one read of a tenant from the registry.
const countryFetchTimeout = 10 * time.Second

// followCountries reads tenants' countries from the registry until ctx
// ends: those the registry announces as registered or changed, and those
// the tick finds unknown.
func (s *Service) followCountries(ctx context.Context) error {
	if s.registryRPC == nil {
		return nil
	}
	if nc := s.deps.NATS; nc != nil {
		// A plain subscription, not a durable consumer: an event missed
		// while the service was down is made up for by the tick, which
		// reads every tenant whose country is unknown, and a change missed
		// is made up for at start, when every known tenant is read again.
		for _, k := range []contract.Kind{contract.KindTenantRegistered, contract.KindTenantChanged} {
			natsSubject, err := contract.KindSubject("*", k)
			if err != nil {
				return err
			}
			sub, err := nc.Subscribe(natsSubject, func(m *nats.Msg) {
				ev := &eventsv1.Event{}
				if proto.Unmarshal(m.Data, ev) == nil && contract.ValidToken(ev.TenantId) {
					s.countries.want(ev.TenantId)
				}
			})
			if err != nil {
				return err
			}
			defer func() { _ = sub.Unsubscribe() }()
		}
	}
	if err := s.wantCountries(false); err != nil {
		return err
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.countries.wake:
		}
		for _, tenant := range s.countries.take() {
			if err := s.refreshCountry(ctx, tenant); err != nil && ctx.Err() == nil {
				// The tick asks again while the country is unknown; a
				// changed country is asked again at the next change.
				s.Logger.Warn("consent: reading the tenant's country from the registry failed", "tenant", tenant, "error", err)
			}
		}
	}
}

// wantCountries queues the known tenants: all of them, or those whose
// country the service does not know yet.
func (s *Service) wantCountries(unknownOnly bool) error {
	return s.DB.View(func(tx *bolt.Tx) error {
		return storage.Each(tx, store.BucketTenantDirectory, nil, func(k, _ []byte) error {
			tenant := string(k)
			if s.tenants.RequireTx(tx, tenant) != nil {
				return nil // removed
			}
			if _, known := s.index.Country(tenant); !unknownOnly || !known {
				s.countries.want(tenant)
			}
			return nil
		})
	})
}

// refreshCountry reads a tenant's country from the registry and keeps it.
func (s *Service) refreshCountry(ctx context.Context, tenant string) error {
	ctx, cancel := context.WithTimeout(ctx, countryFetchTimeout)
	defer cancel()
	resp, err := s.registryRPC.GetTenant(ctx, &registryv1.GetTenantRequest{TenantId: tenant})
	if status.Code(err) == codes.NotFound {
		return nil // removed since
	}
	if err != nil {
		return err
	}
	country := resp.GetTenant().GetSettings().GetCountry()
	if old, known := s.index.Country(tenant); known && old == country {
		return nil
	}
	err = s.DB.Update(func(tx *bolt.Tx) error {
		if err := storage.PutTenantCountryTx(tx, tenant, country); err != nil {
			return err
		}
		// Replicas judge the age of digital consent by it too. A country
		// is not a change of the tenant's log (no revision): replicas
		// apply the latest they read. It carries the tenant's revision, for
		// a restarted writer comparing its store with what it published
		// (settleEpoch). A fresh id, as a heartbeat's: one made of the
		// clock's reading gave two countries set at one reading (a stopped
		// test clock) one id, and the duplicate window dropped the second.
		e := countryEntry(tenant, country)
		e.GetCountry().Revision = revisionTx(tx, tenant)
		return s.replicateTx(tx, e, s.opts.Shard+"."+tenant+".country."+outbox.NewEventID())
	})
	if err != nil {
		return errors.Join(errors.New("consent: storing the tenant's country"), err)
	}
	s.index.SetCountry(tenant, country)
	return nil
}
