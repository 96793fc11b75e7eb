package server_test

import (
	"context"
	"flag"
	"io"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

// TestCallsAreTracedButHealthIsNot: with every read sampled, every call
// gets a server span, except health checks, which probes send every few
// seconds and which would drown the traces that matter.
func TestCallsAreTracedButHealthIsNot(t *testing.T) {
	spans := tracetest.NewInMemoryExporter()
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "traced", SpanExporter: spans, ReadRatio: 1})
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

// traced builds the kit test service with its spans exported to memory
// and reads traced at ratio (telemetry.Config.ReadRatio), logging to logs,
// and runs it; stop stops it, after which every call's end is handled.
func traced(t *testing.T, ratio float64, logs *logbuf.Buffer) (f *fixture, spans *tracetest.InMemoryExporter, providers *telemetry.Providers, stop func()) {
	t.Helper()
	spans = tracetest.NewInMemoryExporter()
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "sampled", SpanExporter: spans, ReadRatio: ratio})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = providers.Shutdown(context.Background()) })
	cfg := server.Config{Telemetry: providers}
	if logs != nil {
		cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil))
	}
	f, run := build(t, cfg)
	return f, spans, providers, servertest.Run(t, run)
}

// spanNames are the names of spans, method names only.
func spanNames(spans tracetest.SpanStubs) []string {
	var names []string
	for _, s := range spans {
		names = append(names, s.Name[strings.LastIndex(s.Name, "/")+1:])
	}
	return names
}

func attr(s tracetest.SpanStub, key string) string {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value.String()
		}
	}
	return ""
}

// TestChangesOfStateAndFailuresAreAlwaysTraced: with no read sampled, a
// mutation is traced, a successful read is not, and a read that fails —
// the caller's error (NotFound) or the server's (Internal) — is traced
// from its start, under the trace id its log line names; the RPC metric
// still counts every call.
func TestChangesOfStateAndFailuresAreAlwaysTraced(t *testing.T) {
	var logs logbuf.Buffer
	f, spans, providers, stop := traced(t, -1, &logs)
	ctx := context.Background()
	for range 3 {
		if _, err := f.client.Noop(ctx, &kittestv1.NoopRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.client.Put(ctx, put("req-1", "k", "v")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Get(ctx, &kittestv1.GetRequest{TenantId: "clio", Key: "missing"}); status.Code(err) != codes.NotFound {
		t.Fatalf("Get of a missing key: %v, want NotFound", err)
	}
	before := time.Now()
	if _, err := f.client.Fail(ctx, &kittestv1.FailRequest{SecretDetail: "disk"}); status.Code(err) != codes.Internal {
		t.Fatalf("Fail: %v, want Internal", err)
	}
	stop()

	// The server ends a span after the answer is on its way: the spans
	// may end in another order than the calls.
	got := spans.GetSpans()
	byName := map[string]tracetest.SpanStub{}
	for i, name := range spanNames(got) {
		byName[name] = got[i]
	}
	if names := slices.Sorted(maps.Keys(byName)); len(got) != 3 || !slices.Equal(names, []string{"Fail", "Get", "Put"}) {
		t.Fatalf("spans = %v, want Put, Get, Fail: the mutation and the failed reads, not the successful reads", spanNames(got))
	}
	get, fail := byName["Get"], byName["Fail"]
	if attr(get, "rpc.response.status_code") != "NOT_FOUND" || attr(get, "error.type") != "NOT_FOUND" || get.Status.Code != otelcodes.Unset {
		t.Errorf("Get span: attributes %v, status %v; want NOT_FOUND, error.type NOT_FOUND, status unset (the caller's error)", get.Attributes, get.Status)
	}
	if fail.Status.Code != otelcodes.Error || attr(fail, "error.type") != "INTERNAL" {
		t.Errorf("Fail span: attributes %v, status %v; want error.type INTERNAL, status Error", fail.Attributes, fail.Status)
	}
	if fail.StartTime.Before(before) || !fail.StartTime.Before(fail.EndTime) || fail.SpanKind != trace.SpanKindServer {
		t.Errorf("Fail span from %s to %s (%s), want a server span from the call's start (after %s) to its end", fail.StartTime, fail.EndTime, fail.SpanKind, before)
	}
	if want := `"trace_id":"` + fail.SpanContext.TraceID().String() + `"`; !strings.Contains(logs.String(), want) {
		t.Errorf("the failed call's log line does not name its span's trace (%s):\n%s", want, logs.String())
	}

	counts := callCounts(t, providers)
	want := map[string]uint64{"Noop OK": 3, "Put OK": 1, "Get NOT_FOUND": 1, "Fail INTERNAL": 1}
	if !maps.Equal(counts, want) {
		t.Errorf("rpc_server_call_duration_seconds counts = %v, want %v: every call counted, health checks aside", counts, want)
	}
}

// callCounts reads rpc_server_call_duration_seconds from the Prometheus
// registry: the count of calls by "method code".
func callCounts(t *testing.T, providers *telemetry.Providers) map[string]uint64 {
	t.Helper()
	families, err := providers.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]uint64{}
	for _, mf := range families {
		if mf.GetName() != "rpc_server_call_duration_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			method := labels["rpc_method"][strings.LastIndex(labels["rpc_method"], "/")+1:]
			counts[method+" "+labels["rpc_response_status_code"]] += m.GetHistogram().GetSampleCount()
		}
	}
	return counts
}

// Trace ids whose sampling at any ratio strictly between 0 and 1 is known:
// the SDK's ratio sampler keeps a trace when the id's last 8 bytes, shifted
// right by one, fall below ratio × 2⁶³.
const (
	lowTraceID  = "00000000000000000000000000000001" // kept at any ratio above 0
	highTraceID = "0000000000000000ffffffffffffffff" // kept only at ratio 1
)

// withTraceparent is ctx carrying a W3C traceparent for traceID, sampled
// or not by the caller.
func withTraceparent(ctx context.Context, traceID string, sampled bool) context.Context {
	flags := "00"
	if sampled {
		flags = "01"
	}
	return metadata.AppendToOutgoingContext(ctx, "traceparent", "00-"+traceID+"-00f067aa0ba902b7-"+flags)
}

// TestReadsAreTracedAtTheRatio: every read is traced at ratio 1; at 0.5
// the decision follows the trace id, so that every Lethe service decides
// a trace alike; a caller that did not sample its trace does not stop a
// read from being sampled here.
func TestReadsAreTracedAtTheRatio(t *testing.T) {
	ctx := context.Background()
	f, spans, _, stop := traced(t, 1, nil)
	for range 5 {
		if _, err := f.client.Noop(ctx, &kittestv1.NoopRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	if n := len(spans.GetSpans()); n != 5 {
		t.Errorf("ratio 1: %d spans for 5 reads", n)
	}

	f, spans, _, stop = traced(t, 0.5, nil)
	for _, id := range []string{lowTraceID, highTraceID} {
		if _, err := f.client.Noop(withTraceparent(ctx, id, false), &kittestv1.NoopRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	stop()
	got := spans.GetSpans()
	if len(got) != 1 || got[0].SpanContext.TraceID().String() != lowTraceID {
		t.Errorf("ratio 0.5: spans %v, want the read of trace %s only", got, lowTraceID)
	}
}

// TestAnUpstreamSampledTraceIsHonoured: with no read sampled of its own, a
// read whose caller sampled its trace is traced, as a child of the
// caller's span in the caller's trace.
func TestAnUpstreamSampledTraceIsHonoured(t *testing.T) {
	f, spans, _, stop := traced(t, -1, nil)
	ctx := context.Background()
	if _, err := f.client.Noop(withTraceparent(ctx, highTraceID, true), &kittestv1.NoopRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Noop(withTraceparent(ctx, lowTraceID, false), &kittestv1.NoopRequest{}); err != nil {
		t.Fatal(err)
	}
	stop()
	got := spans.GetSpans()
	if len(got) != 1 {
		t.Fatalf("spans %v, want the read the caller sampled only", spanNames(got))
	}
	if s := got[0]; s.SpanContext.TraceID().String() != highTraceID || s.Parent.SpanID().String() != "00f067aa0ba902b7" || !s.Parent.IsRemote() {
		t.Errorf("span in trace %s under %s, want trace %s under the caller's span 00f067aa0ba902b7", s.SpanContext.TraceID(), s.Parent.SpanID(), highTraceID)
	}
}

// TestTraceReadRatioFlag: --trace-read-ratio is a share from 0 (no read
// traced of Lethe's own accord) to 1, 1% when not given.
func TestTraceReadRatioFlag(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want float64 // in the Config; negative is none
		ok   bool
	}{
		{nil, telemetry.DefaultReadRatio, true},
		{[]string{"--trace-read-ratio", "0.25"}, 0.25, true},
		{[]string{"--trace-read-ratio", "1"}, 1, true},
		{[]string{"--trace-read-ratio", "0"}, -1, true},
		{[]string{"--trace-read-ratio", "1.5"}, 0, false},
		{[]string{"--trace-read-ratio", "-0.1"}, 0, false},
		{[]string{"--trace-read-ratio", "often"}, 0, false},
	} {
		var cfg server.Config
		fs := flag.NewFlagSet("test", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg.RegisterFlags(fs, "127.0.0.1:0")
		err := fs.Parse(tc.args)
		if (err == nil) != tc.ok || (tc.ok && cfg.TraceReadRatio != tc.want) {
			t.Errorf("%v: ratio %g, error %v; want %g, ok %v", tc.args, cfg.TraceReadRatio, err, tc.want, tc.ok)
		}
	}
}
