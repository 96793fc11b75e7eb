package registry

import (
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// systemsLag returns the registry's only instruments: how many events wait
// for each registered system's consumers, by system, tenant and kind
// (lethe.consumer.pending, .ack_pending and .redelivered, from package
// broker). Run runs the monitor.
func (s *Service) systemsLag() (*broker.LagMonitor, error) {
	return broker.NewLagMonitor(broker.LagConfig{JetStream: s.js, Meter: s.Meter, Stream: contract.StreamName,
		Select: broker.SystemConsumers, Logger: s.Logger})
}
