package retention

import (
	"context"
	"errors"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// maxDueCounted bounds the due subjects the lethe.retention.due gauge
// counts at each collection: past it, the backlog is large enough to alert
// on, and counting further would only slow the scrape.
const maxDueCounted = 100_000

// metrics are the service's own instruments; the kit adds the outbox's and
// the tracker's.
type metrics struct {
	directives metric.Int64Counter
	failures   metric.Int64Counter
	parked     metric.Int64Counter
	registered metric.Registration
}

func (s *Service) registerMetrics() error {
	var err error
	if s.metrics.directives, err = s.Meter.Int64Counter("lethe.retention.directives",
		metric.WithDescription("Erasure directives issued by sweeps, by action.")); err != nil {
		return err
	}
	if s.metrics.failures, err = s.Meter.Int64Counter("lethe.retention.sweep_failures",
		metric.WithDescription("Sweeps that failed and are retried at the next tick.")); err != nil {
		return err
	}
	if s.metrics.parked, err = s.Meter.Int64Counter("lethe.retention.parked",
		metric.WithDescription("Signals and subjects set aside because they cannot be handled (see the retention.parked bucket), by kind.")); err != nil {
		return err
	}
	due, err := s.Meter.Int64ObservableGauge("lethe.retention.due",
		metric.WithDescription("Subjects whose purge date has come and that no sweep has fired yet (counted up to 100,000)."))
	if err != nil {
		return err
	}
	s.metrics.registered, err = s.Meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		n := 0
		err := s.DB.View(func(tx *bolt.Tx) error {
			return s.scheduler.Between(tx, time.Time{}, s.Clock.Now(), func([]byte, time.Time, []byte) error {
				if n++; n >= maxDueCounted {
					return errEnough
				}
				return nil
			})
		})
		if err != nil && !errors.Is(err, errEnough) {
			return err
		}
		obs.ObserveInt64(due, int64(n))
		return nil
	}, due)
	return err
}

// directiveIssued counts a directive once its transaction committed.
func (s *Service) directiveIssued(tx *bolt.Tx, action string) {
	tx.OnCommit(func() {
		s.metrics.directives.Add(context.Background(), 1, metric.WithAttributes(attribute.String("action", action)))
	})
}
