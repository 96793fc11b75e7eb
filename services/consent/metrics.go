package consent

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// registerRecoveryMetrics reports whether a gap stands.
func (s *Service) registerRecoveryMetrics() error {
	incomplete, err := s.Meter.Int64ObservableGauge("lethe.consent.recovery.incomplete",
		metric.WithDescription("1 while the consent store, restored from a backup older than the event stream reaches, may lack limits and Check refuses to answer; 0 otherwise."))
	if err != nil {
		return err
	}
	s.recoveryMetrics, err = s.Meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		v := int64(0)
		if s.gap.Load() != nil {
			v = 1
		}
		obs.ObserveInt64(incomplete, v)
		return nil
	}, incomplete)
	return err
}
