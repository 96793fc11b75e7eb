package consent

import (
	"context"

	"go.opentelemetry.io/otel/metric"
)

// registerMetrics creates the consent service's instruments: how many
// limit events the catch-up after a restore re-applied (recovery.go), how
// many replication epochs it started (replication.go), how many changes
// it trimmed from the change logs (TrimChanges),
// whether a gap stands that makes Check refuse to answer, and the public
// endpoint's requests (public.go).
func (s *Service) registerMetrics() error {
	var err error
	s.recoveredEvents, err = s.Meter.Int64Counter("lethe.consent.recovery.recovered",
		metric.WithDescription("Limit events the consent service re-applied from the event stream at start because its store, restored from a backup, lacked them."))
	if err != nil {
		return err
	}
	s.publicRequests, err = s.Meter.Int64Counter("lethe.public.requests",
		metric.WithDescription("Requests to the public consent endpoint, by route and HTTP status code."))
	if err != nil {
		return err
	}
	s.epochsStarted, err = s.Meter.Int64Counter("lethe.consent.replication.epochs_started",
		metric.WithDescription("Replication epochs the consent writer started because its store's history was behind what it had published (restored from a backup); its replicas restore the new epoch's first snapshot."))
	if err != nil {
		return err
	}
	s.changesTrimmed, err = s.Meter.Int64Counter("lethe.consent.changes_trimmed",
		metric.WithDescription("Changes the consent writer deleted from its tenants' change logs, being older than --changes-kept-for and covered by the index snapshot."))
	if err != nil {
		return err
	}
	incomplete, err := s.Meter.Int64ObservableGauge("lethe.consent.recovery.incomplete",
		metric.WithDescription("1 while the consent store, restored from a backup older than the event stream reaches, may lack limits and Check refuses to answer; 0 otherwise."))
	if err != nil {
		return err
	}
	s.metrics, err = s.Meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		v := int64(0)
		if s.gap.Load() != nil {
			v = 1
		}
		obs.ObserveInt64(incomplete, v)
		return nil
	}, incomplete)
	return err
}
