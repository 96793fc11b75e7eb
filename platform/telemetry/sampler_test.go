package telemetry_test

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/lethe-privacy/lethe/platform/telemetry"

	// The kit's test service: its protos mark Noop NO_SIDE_EFFECTS and Put not.
	_ "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
)

// TestSamplerKeepsWhatChangesState: with no read sampled, the spans under
// a read that was not sampled are dropped with it, while a mutation's
// server span and a message consumer's span are kept even when their
// caller did not sample its trace: a change of state is always traced.
func TestSamplerKeepsWhatChangesState(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spans), sdktrace.WithSampler(telemetry.NewSampler(0)))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	tracer := tp.Tracer("test")
	unsampled := trace.ContextWithRemoteSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{0: 1}, SpanID: trace.SpanID{0: 1}}))

	ctx, read := tracer.Start(unsampled, "lethe.kittest.v1.KitTestService/Noop", trace.WithSpanKind(trace.SpanKindServer))
	_, child := tracer.Start(ctx, "read the store")
	child.End()
	read.End()
	_, put := tracer.Start(unsampled, "lethe.kittest.v1.KitTestService/Put", trace.WithSpanKind(trace.SpanKindServer))
	put.End()
	_, consume := tracer.Start(unsampled, "LETHE consume", trace.WithSpanKind(trace.SpanKindConsumer))
	consume.End()
	_, unknown := tracer.Start(unsampled, "lethe.nowhere.v1.Gone/Read", trace.WithSpanKind(trace.SpanKindServer))
	unknown.End()

	var names []string
	for _, s := range spans.GetSpans() {
		names = append(names, s.Name)
	}
	want := []string{"lethe.kittest.v1.KitTestService/Put", "LETHE consume", "lethe.nowhere.v1.Gone/Read"}
	if len(names) != len(want) || names[0] != want[0] || names[1] != want[1] || names[2] != want[2] {
		t.Fatalf("spans %v, want %v: the mutation, the consumer and the unknown method (not known to be a read), not the read or its child", names, want)
	}
}

// TestReadMethodFollowsTheProto: a read is what the proto marks
// NO_SIDE_EFFECTS; an unknown method is not one.
func TestReadMethodFollowsTheProto(t *testing.T) {
	for method, want := range map[string]bool{
		"/lethe.kittest.v1.KitTestService/Noop": true,
		"/lethe.kittest.v1.KitTestService/Put":  false,
		"/lethe.kittest.v1.KitTestService/Nope": false,
		"/lethe.nowhere.v1.Gone/Read":           false,
		"garbage":                               false,
	} {
		if got := telemetry.ReadMethod(method); got != want {
			t.Errorf("ReadMethod(%q) = %v, want %v", method, got, want)
		}
	}
}
