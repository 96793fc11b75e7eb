package server_test

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// TestCallsAreTracedButHealthIsNot: every call gets a server span, except
// health checks, which probes send every few seconds and which would drown
// the traces that matter.
func TestCallsAreTracedButHealthIsNot(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "traced", SpanExporter: spans})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	f := start(t, server.Config{Telemetry: providers})

	ctx := context.Background()
	if _, err := f.health.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Noop(ctx, &kittestv1.NoopRequest{}); err != nil {
		t.Fatal(err)
	}
	// The server ends a call's span after the response is on its way, so
	// the client may see the response first.
	var names []string
	eventually.True(t, "the server ended a span", func() bool {
		names = names[:0]
		for _, s := range spans.GetSpans() {
			names = append(names, s.Name)
		}
		return len(names) > 0
	})
	if len(names) != 1 || names[0] != "lethe.kittest.v1.KitTestService/Noop" {
		t.Fatalf("spans = %v, want the Noop call only", names)
	}
}

// TestMetricsAreExposed: RPC metrics reach the Prometheus exposition.
func TestMetricsAreExposed(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "metered"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	f := start(t, server.Config{Telemetry: providers})
	if _, err := f.client.Noop(context.Background(), &kittestv1.NoopRequest{}); err != nil {
		t.Fatal(err)
	}
	// The server records the call when it ends, which may be just after
	// the client has its answer.
	eventually.True(t, "an rpc_server_* metric after a call", func() bool {
		families, err := providers.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range families {
			if strings.HasPrefix(mf.GetName(), "rpc_server_") {
				return true
			}
		}
		return false
	})
}
