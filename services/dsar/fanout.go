package dsar

import (
	"context"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// fanoutFailure is a request whose fan-out failed at its last attempt: a
// neighbour (consent, retention, the registry) could not be asked what to
// send. The sweep retries it; until one attempt succeeds it is counted in
// lethe.dsar.fanout.failing, so that an unreachable neighbour shows in
// minutes rather than at the request's deadline.
type fanoutFailure struct {
	tenant string
	// step is the neighbour whose call failed, or "dsar".
	step string
	err  string
	// since is the first failure of the current run of failures, since
	// the process started (the record is not kept across restarts).
	since time.Time
}

// fanoutFailures are the requests whose fan-out is failing, by id.
type fanoutFailures struct {
	mu sync.Mutex
	m  map[string]fanoutFailure
}

// record notes that id's fan-out failed at now and returns the record.
func (f *fanoutFailures) record(id, tenant string, err error, now time.Time) fanoutFailure {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.m == nil {
		f.m = map[string]fanoutFailure{}
	}
	rec, ok := f.m[id]
	if !ok {
		rec.since = now
	}
	rec.tenant, rec.step, rec.err = tenant, stepOf(err), err.Error()
	f.m[id] = rec
	return rec
}

// clear forgets id: its fan-out committed, or it is no longer pending.
func (f *fanoutFailures) clear(id string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.m, id)
}

// keepOnly forgets every request that is not in pending (cancelled or
// closed while its fan-out was failing).
func (f *fanoutFailures) keepOnly(pending map[string]string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for id := range f.m {
		if _, ok := pending[id]; !ok {
			delete(f.m, id)
		}
	}
}

// snapshot returns the failing requests.
func (f *fanoutFailures) snapshot() []fanoutFailure {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]fanoutFailure, 0, len(f.m))
	for _, rec := range f.m {
		out = append(out, rec)
	}
	return out
}

// stepOf names the neighbour a fan-out error came from: plan's errors
// start with the neighbour's name ("retention: list holds: …").
func stepOf(err error) string {
	prefix, _, ok := strings.Cut(err.Error(), ":")
	if ok {
		switch prefix {
		case "consent", "retention", "registry":
			return prefix
		}
	}
	return "dsar"
}

// registerFanoutMetrics reports the failing fan-outs: how many, by tenant
// and step, and how long the oldest has been failing.
func (s *Service) registerFanoutMetrics() error {
	failing, err := s.Meter.Int64ObservableGauge("lethe.dsar.fanout.failing",
		metric.WithDescription("Verified data-subject requests whose fan-out failed at its last attempt, by tenant and step (the neighbour that could not be asked)."))
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
			counts[key{rec.tenant, rec.step}]++
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
