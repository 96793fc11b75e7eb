package registry_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/registry"
)

// TestSystemsConsumerLagIsExported: the registry reports how many events
// wait for each system's consumer, labelled with the system, tenant and
// kind, so that an operator sees a system that stopped answering before
// its tasks stall. Lethe's own consumers are left to their owners.
func TestSystemsConsumerLagIsExported(t *testing.T) {
	ns := brokertest.Start(t)
	nc, js := brokertest.Connect(t, ns)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	// The newsletter's erasure consumer, as the SDK creates it, with two
	// erasures waiting; and a consumer of Lethe's own.
	if _, err := js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
		Durable: "newsletter@clio~erasure_requested", FilterSubject: "lethe.clio.erasure.requested", AckPolicy: jetstream.AckExplicitPolicy,
		Metadata: map[string]string{contract.MetadataSystem: "newsletter", contract.MetadataTenant: "clio", contract.MetadataKind: "erasure.requested"},
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
		Durable: "lethe-dsar-outcomes", FilterSubject: contract.AllOutcomes, AckPolicy: jetstream.AckExplicitPolicy,
	}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := js.Publish(ctx, "lethe.clio.erasure.requested", nil); err != nil {
			t.Fatal(err)
		}
	}

	providers, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "lethe-registry"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	svc, err := registry.New(service.Deps{DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		NATS: nc, JetStream: js, Telemetry: providers}, registry.Options{})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := svc.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()

	// The first poll runs as the service starts.
	eventually.Succeeds(t, "lethe_consumer_pending has the newsletter's series alone, at 2", func() error {
		families, err := providers.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		var series []string
		var pending float64
		for _, mf := range families {
			if mf.GetName() != "lethe_consumer_pending" {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				series = append(series, labels["consumer"])
				if labels["consumer"] == "newsletter@clio~erasure_requested" && labels["system"] == "newsletter" &&
					labels["tenant"] == "clio" && labels["kind"] == "erasure.requested" && labels["stream"] == "LETHE" {
					pending = m.GetGauge().GetValue()
				}
			}
		}
		if len(series) != 1 || pending != 2 {
			return fmt.Errorf("series %v, the newsletter's at %v", series, pending)
		}
		return nil
	})
}
