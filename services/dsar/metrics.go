package dsar

import (
	"context"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/store"
)

// summary is what the metrics need of a request.
type summary struct {
	id, tenant string
	state      dsarv1.RequestState
	deadline   *dsarv1.Deadline
	// steps orders updates of one request: OnCommit handlers of two
	// transactions may run in either order, and an older snapshot must
	// not overwrite a newer one.
	steps int
}

func summaryOf(r *dsarv1.Request) summary {
	return summary{id: r.DsarId, tenant: r.TenantId, state: r.State, deadline: proto.Clone(r.Deadline).(*dsarv1.Deadline), steps: len(r.History)}
}

// metrics reports requests by state and, for open requests, by days left
// before their earlier deadline.
type metrics struct {
	s    *Service
	mu   sync.Mutex
	reqs map[string]summary
}

// daysLeftBuckets group open requests by whole days left.
var daysLeftBuckets = []struct {
	name string
	max  int
}{{"overdue", -1}, {"0-2", 2}, {"3-7", 7}, {"8-14", 14}, {"15+", 1 << 30}}

func newMetrics(s *Service) (*metrics, error) {
	m := &metrics{s: s, reqs: map[string]summary{}}
	err := s.DB.View(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, bucketRequests).ForEach(func(_, v []byte) error {
			r := &dsarv1.Request{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			m.reqs[r.DsarId] = summaryOf(r)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	byState, err := s.Meter.Int64ObservableGauge("lethe.dsar.requests",
		metric.WithDescription("Data-subject requests by tenant, type and state."))
	if err != nil {
		return nil, err
	}
	daysLeft, err := s.Meter.Int64ObservableGauge("lethe.dsar.requests.days_left",
		metric.WithDescription("Open data-subject requests by tenant, deadline (statutory or sla) and days left before it."))
	if err != nil {
		return nil, err
	}
	_, err = s.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := s.Clock.Now()
		type stateKey struct {
			tenant string
			state  dsarv1.RequestState
		}
		type dueKey struct{ tenant, deadline, bucket string }
		states, dues := map[stateKey]int64{}, map[dueKey]int64{}
		m.mu.Lock()
		for _, r := range m.reqs {
			states[stateKey{r.tenant, r.state}]++
			if !isOpen(r.state) {
				continue
			}
			d := proto.Clone(r.deadline).(*dsarv1.Deadline)
			computeDeadlines(d, now)
			dues[dueKey{r.tenant, "statutory", bucketOf(d.StatutoryDueAt.AsTime(), now)}]++
			if d.SlaDueAt != nil {
				dues[dueKey{r.tenant, "sla", bucketOf(d.SlaDueAt.AsTime(), now)}]++
			}
		}
		m.mu.Unlock()
		for k, n := range states {
			o.ObserveInt64(byState, n, metric.WithAttributes(attribute.String("tenant", k.tenant), attribute.String("state", k.state.String())))
		}
		for k, n := range dues {
			o.ObserveInt64(daysLeft, n, metric.WithAttributes(attribute.String("tenant", k.tenant),
				attribute.String("deadline", k.deadline), attribute.String("days_left", k.bucket)))
		}
		return nil
	}, byState, daysLeft)
	return m, err
}

func bucketOf(due, now time.Time) string {
	if now.After(due) {
		return daysLeftBuckets[0].name
	}
	days := int(due.Sub(now) / (24 * time.Hour))
	for _, b := range daysLeftBuckets[1:] {
		if days <= b.max {
			return b.name
		}
	}
	return daysLeftBuckets[len(daysLeftBuckets)-1].name
}

// update records a committed request.
func (m *metrics) update(r summary) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if old, ok := m.reqs[r.id]; ok && old.steps > r.steps {
		return
	}
	m.reqs[r.id] = r
}

// registerFanoutMetrics reports the failing fan-outs: how many, by tenant
// and step, and how long the oldest has been failing.
func (s *Service) registerFanoutMetrics() error {
	failing, err := s.Meter.Int64ObservableGauge("lethe.dsar.fanout.failing",
		metric.WithDescription("Verified data-subject requests whose fan-out failed at its last attempt, by tenant and step (registry, retention, consent, commit)."))
	if err != nil {
		return err
	}
	oldest, err := s.Meter.Float64ObservableGauge("lethe.dsar.fanout.failing_oldest_age", metric.WithUnit("s"),
		metric.WithDescription("How long the oldest failing fan-out has been failing; 0 when none is."))
	if err != nil {
		return err
	}
	_, err = s.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		now := s.Clock.Now()
		type key struct{ tenant, step string }
		counts := map[key]int64{}
		var age float64
		for _, rec := range s.fanout.snapshot() {
			counts[key{rec.tenant, stepLabel(rec.step)}]++
			age = max(age, now.Sub(rec.since).Seconds())
		}
		for k, n := range counts {
			o.ObserveInt64(failing, n, metric.WithAttributes(attribute.String("tenant", k.tenant), attribute.String("step", k.step)))
		}
		o.ObserveFloat64(oldest, age)
		return nil
	}, failing, oldest)
	return err
}
