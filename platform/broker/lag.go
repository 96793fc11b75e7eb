package broker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/lethe-privacy/lethe/sdk/contract"
)

// DefaultLagEvery is how often a LagMonitor asks the server about its
// consumers. Consumer lag is an alert over minutes; a scrape must not wait
// for a round trip to the server, so the gauges report the last poll.
const DefaultLagEvery = 15 * time.Second

// LagConfig says which durable consumers a LagMonitor watches.
type LagConfig struct {
	JetStream jetstream.JetStream
	// Meter receives the gauges; required.
	Meter metric.Meter
	// Stream is the stream whose consumers are watched.
	Stream string
	// Names are consumers watched by name: a service's own.
	Names []string
	// Select, when set, also watches every consumer of Stream that it
	// accepts, listed afresh at each poll, since systems' consumers come
	// and go with the systems. It needs permission to list the stream's
	// consumers.
	Select func(*jetstream.ConsumerInfo) bool
	// Every is the polling period; DefaultLagEvery when zero.
	Every  time.Duration
	Logger *slog.Logger
}

// SystemConsumers selects the consumers of systems that hold personal data,
// which the SDK marks with the system's id in their metadata.
func SystemConsumers(info *jetstream.ConsumerInfo) bool {
	return info.Config.Metadata[contract.MetadataSystem] != ""
}

// LagMonitor reports how far durable consumers are behind, as observable
// gauges, from JetStream's consumer info polled periodically:
//
//   - lethe.consumer.pending: messages of the stream that match the
//     consumer's filter and have not been delivered yet (num_pending);
//   - lethe.consumer.ack_pending: delivered and not yet acknowledged;
//   - lethe.consumer.redelivered: of those, delivered more than once.
//
// Each carries the stream and consumer, and for a system's consumer the
// system, tenant and kind from its metadata. A consumer that disappears
// stops being reported.
type LagMonitor struct {
	cfg        LagConfig
	registered metric.Registration

	mu      sync.Mutex
	samples map[string]lagSample
}

type lagSample struct {
	attrs                            attribute.Set
	pending, ackPending, redelivered int64
}

// NewLagMonitor registers the gauges. Run polls; Close unregisters.
func NewLagMonitor(cfg LagConfig) (*LagMonitor, error) {
	switch {
	case cfg.JetStream == nil || cfg.Meter == nil || cfg.Stream == "":
		return nil, errors.New("broker: a lag monitor needs JetStream, a meter and a stream")
	case len(cfg.Names) == 0 && cfg.Select == nil:
		return nil, errors.New("broker: a lag monitor needs consumer names or a selection")
	}
	if cfg.Every <= 0 {
		cfg.Every = DefaultLagEvery
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	m := &LagMonitor{cfg: cfg, samples: map[string]lagSample{}}
	pending, err := cfg.Meter.Int64ObservableGauge("lethe.consumer.pending",
		metric.WithDescription("Messages matching a durable consumer's filter that it has not delivered yet (JetStream num_pending)."))
	if err != nil {
		return nil, err
	}
	ackPending, err := cfg.Meter.Int64ObservableGauge("lethe.consumer.ack_pending",
		metric.WithDescription("Messages a durable consumer delivered that are not acknowledged yet."))
	if err != nil {
		return nil, err
	}
	redelivered, err := cfg.Meter.Int64ObservableGauge("lethe.consumer.redelivered",
		metric.WithDescription("Unacknowledged messages a durable consumer delivered more than once."))
	if err != nil {
		return nil, err
	}
	m.registered, err = cfg.Meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		m.mu.Lock()
		defer m.mu.Unlock()
		for _, s := range m.samples {
			obs.ObserveInt64(pending, s.pending, metric.WithAttributeSet(s.attrs))
			obs.ObserveInt64(ackPending, s.ackPending, metric.WithAttributeSet(s.attrs))
			obs.ObserveInt64(redelivered, s.redelivered, metric.WithAttributeSet(s.attrs))
		}
		return nil
	}, pending, ackPending, redelivered)
	if err != nil {
		return nil, err
	}
	return m, nil
}

// Run polls now and every period until ctx ends. A failed poll is logged
// and keeps the last figures: the server may be failing over.
func (m *LagMonitor) Run(ctx context.Context) {
	t := time.NewTicker(m.cfg.Every)
	defer t.Stop()
	for {
		if err := m.Poll(ctx); err != nil && ctx.Err() == nil {
			m.cfg.Logger.Warn("consumer lag: poll failed", "stream", m.cfg.Stream, "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Poll asks the server about the watched consumers once.
func (m *LagMonitor) Poll(ctx context.Context) error {
	stream, err := m.cfg.JetStream.Stream(ctx, m.cfg.Stream)
	if err != nil {
		return fmt.Errorf("stream %s: %w", m.cfg.Stream, err)
	}
	samples := map[string]lagSample{}
	var errs []error
	for _, name := range m.cfg.Names {
		c, err := stream.Consumer(ctx, name)
		if errors.Is(err, jetstream.ErrConsumerNotFound) {
			continue // not created yet, or deleted
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("consumer %s: %w", name, err))
			if old, ok := m.sample(name); ok {
				samples[name] = old
			}
			continue
		}
		samples[name] = m.sampleOf(c.CachedInfo())
	}
	if m.cfg.Select != nil {
		list := stream.ListConsumers(ctx)
		listed := map[string]lagSample{}
		for info := range list.Info() {
			if m.cfg.Select(info) {
				listed[info.Name] = m.sampleOf(info)
			}
		}
		if err := list.Err(); err != nil {
			// Keep the last figures of the selected consumers rather
			// than report them gone.
			errs = append(errs, fmt.Errorf("list consumers of %s: %w", m.cfg.Stream, err))
			m.mu.Lock()
			for name, s := range m.samples {
				if _, named := samples[name]; !named {
					listed[name] = s
				}
			}
			m.mu.Unlock()
		}
		for name, s := range listed {
			samples[name] = s
		}
	}
	m.mu.Lock()
	m.samples = samples
	m.mu.Unlock()
	return errors.Join(errs...)
}

func (m *LagMonitor) sample(name string) (lagSample, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, ok := m.samples[name]
	return s, ok
}

func (m *LagMonitor) sampleOf(info *jetstream.ConsumerInfo) lagSample {
	kv := []attribute.KeyValue{
		attribute.String("stream", m.cfg.Stream),
		attribute.String("consumer", info.Name),
	}
	for key, attr := range map[string]string{
		contract.MetadataSystem: "system",
		contract.MetadataTenant: "tenant",
		contract.MetadataKind:   "kind",
	} {
		if v := info.Config.Metadata[key]; v != "" {
			kv = append(kv, attribute.String(attr, v))
		}
	}
	return lagSample{
		attrs:       attribute.NewSet(kv...),
		pending:     int64(info.NumPending),
		ackPending:  int64(info.NumAckPending),
		redelivered: int64(info.NumRedelivered),
	}
}

// Close unregisters the gauges.
func (m *LagMonitor) Close() error { return m.registered.Unregister() }
