package broker_test

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// lagMetrics returns the lethe_consumer_* gauges as Prometheus exposes
// them, keyed "<metric>{consumer,kind}".
func lagMetrics(t *testing.T, p *telemetry.Providers) map[string]float64 {
	t.Helper()
	families, err := p.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		if !strings.HasPrefix(mf.GetName(), "lethe_consumer_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["stream"] != "LAG" {
				t.Errorf("%s: stream label %q", mf.GetName(), labels["stream"])
			}
			got[fmt.Sprintf("%s{%s,%s}", mf.GetName(), labels["consumer"], labels["kind"])] = m.GetGauge().GetValue()
		}
	}
	return got
}

func keys(m map[string]float64) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

// TestConsumerLagIsExported: a service's own consumer, watched by name,
// and a system's consumer, found by its metadata, report how many events
// wait for them and how many they hold unacknowledged; a consumer that is
// deleted stops being reported.
func TestConsumerLagIsExported(t *testing.T) {
	ctx := testContext(t)
	_, js := brokertest.Connect(t, brokertest.Start(t))
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "LAG", Subjects: []string{"lag.>"}}); err != nil {
		t.Fatal(err)
	}
	_, err := js.CreateOrUpdateConsumer(ctx, "LAG", jetstream.ConsumerConfig{Durable: "lethe-consent-outcomes",
		FilterSubject: "lag.outcome", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	system, err := js.CreateOrUpdateConsumer(ctx, "LAG", jetstream.ConsumerConfig{Durable: "newsletter@clio~erasure_requested",
		FilterSubject: "lag.erasure", AckPolicy: jetstream.AckExplicitPolicy,
		Metadata: map[string]string{contract.MetadataSystem: "newsletter", contract.MetadataTenant: "clio", contract.MetadataKind: "erasure.requested"}})
	if err != nil {
		t.Fatal(err)
	}
	// Neither named nor a system's: not reported.
	if _, err := js.CreateOrUpdateConsumer(ctx, "LAG", jetstream.ConsumerConfig{Durable: "other", AckPolicy: jetstream.AckExplicitPolicy}); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		if _, err := js.Publish(ctx, "lag.erasure", nil); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if _, err := js.Publish(ctx, "lag.outcome", nil); err != nil {
			t.Fatal(err)
		}
	}
	// The server counts a consumer's pending messages after it has
	// acknowledged their publish: wait until it has, so that the gauges
	// are compared with what the server reports, not with a race.
	for name, want := range map[string]uint64{"lethe-consent-outcomes": 2, "newsletter@clio~erasure_requested": 5} {
		eventually.Succeeds(t, fmt.Sprintf("consumer %s counts %d pending messages", name, want), func() error {
			info, err := js.Consumer(ctx, "LAG", name)
			if err != nil {
				t.Fatal(err)
			}
			ci, err := info.Info(ctx)
			if err != nil {
				return err
			}
			if ci.NumPending != want {
				return fmt.Errorf("%d pending", ci.NumPending)
			}
			return nil
		})
	}

	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "lag"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	m, err := broker.NewLagMonitor(broker.LagConfig{JetStream: js, Meter: providers.Meter.Meter("test"), Stream: "LAG",
		Names: []string{"lethe-consent-outcomes", "lethe-consent-not-yet-created"}, Select: broker.SystemConsumers})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"lethe_consumer_pending{lethe-consent-outcomes,}":                                 2,
		"lethe_consumer_ack_pending{lethe-consent-outcomes,}":                             0,
		"lethe_consumer_redelivered{lethe-consent-outcomes,}":                             0,
		"lethe_consumer_pending{newsletter@clio~erasure_requested,erasure.requested}":     5,
		"lethe_consumer_ack_pending{newsletter@clio~erasure_requested,erasure.requested}": 0,
		"lethe_consumer_redelivered{newsletter@clio~erasure_requested,erasure.requested}": 0,
	}
	if got := lagMetrics(t, providers); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("gauges\n%v\nwant\n%v", got, want)
	}

	// The system takes three events and acknowledges one.
	batch, err := system.Fetch(3, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []jetstream.Msg
	for msg := range batch.Messages() {
		msgs = append(msgs, msg)
	}
	if len(msgs) != 3 {
		t.Fatalf("fetched %d", len(msgs))
	}
	if err := msgs[0].DoubleAck(ctx); err != nil {
		t.Fatal(err)
	}
	systemGauges := func() (pending, ackPending, redelivered float64) {
		t.Helper()
		if err := m.Poll(ctx); err != nil {
			t.Fatal(err)
		}
		got := lagMetrics(t, providers)
		const labels = "{newsletter@clio~erasure_requested,erasure.requested}"
		return got["lethe_consumer_pending"+labels], got["lethe_consumer_ack_pending"+labels], got["lethe_consumer_redelivered"+labels]
	}
	if p, a, r := systemGauges(); p != 2 || a != 2 || r != 0 {
		t.Errorf("after taking 3 of 5 and acknowledging 1: pending %v, ack pending %v, redelivered %v; want 2, 2, 0", p, a, r)
	}
	// It hands one back, which is delivered again.
	if err := msgs[1].Nak(); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the handed-back event is delivered again", func() bool {
		again, err := system.Next(jetstream.FetchMaxWait(time.Second))
		if err != nil {
			return false
		}
		md, _ := again.Metadata()
		return md != nil && md.NumDelivered == 2
	})
	if _, a, r := systemGauges(); a < 2 || r != 1 {
		t.Errorf("after a redelivery: ack pending %v, redelivered %v; want at least 2 and 1", a, r)
	}

	// A deleted consumer is no longer reported.
	if err := js.DeleteConsumer(ctx, "LAG", system.CachedInfo().Name); err != nil {
		t.Fatal(err)
	}
	if err := m.Poll(ctx); err != nil {
		t.Fatal(err)
	}
	if got := keys(lagMetrics(t, providers)); len(got) != 3 || !strings.Contains(got[0], "lethe-consent-outcomes") {
		t.Errorf("after deleting the system's consumer: %v", got)
	}
}
