package telemetry

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	otelcodes "go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/semconv/v1.43.0/rpcconv"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// scope names the instrumentation in traces and metrics (otel_scope_name).
const scope = "github.com/lethe-privacy/lethe/platform/telemetry"

// NewServerHandler returns the gRPC server's stats handler: a server span
// and the rpc.server.call.duration histogram (Prometheus
// rpc_server_call_duration_seconds, labels rpc_method,
// rpc_response_status_code and, for server errors, error_type) for every
// call whose method skip does not name, with the names and attributes the
// OpenTelemetry RPC conventions give (as otelgrpc's handler, which it
// replaces).
//
// It is built for the hot path of reads. Whether a span is recorded is the
// providers' sampler's decision (NewSampler): a read that is not sampled
// costs a non-recording span. The attributes of each known method are
// built once, and its histogram attribute sets once per status code, so a
// call allocates none. A call that fails without a recorded span gets one
// when it ends, started at the call's start and marked with error.type,
// which the sampler always keeps: every failed call is traced, under the
// trace id the call carried (the one its log line names).
func NewServerHandler(p *Providers, skip func(fullMethod string) bool) (stats.Handler, error) {
	h := &serverHandler{
		tracer:     p.Tracer.Tracer(scope),
		propagator: p.Propagator,
		fields:     p.Propagator.Fields(),
		skip:       skip,
	}
	meter := p.Meter.Meter(scope)
	duration, err := rpcconv.NewServerCallDuration(meter, metric.WithExplicitBucketBoundaries(
		0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	if err != nil {
		return nil, fmt.Errorf("rpc.server.call.duration: %w", err)
	}
	h.duration = duration.Inst()
	h.other = newMethodStats("_OTHER", "_OTHER")
	return h, nil
}

type serverHandler struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	// fields are the metadata keys the propagator reads.
	fields   []string
	duration metric.Float64Histogram
	skip     func(fullMethod string) bool
	// methods holds the stats of each method the process knows, by full
	// method name; other calls (to a method that does not exist) share
	// other, so that no caller can grow the map or the metric's series.
	methods sync.Map // string → *methodStats
	other   *methodStats
}

// methodStats is what every call of one method shares.
type methodStats struct {
	// name is the span name, "package.Service/Method".
	name string
	// start are the span start options: server kind and rpc attributes.
	start []trace.SpanStartOption
	// attrs are the span attributes.
	attrs []attribute.KeyValue
	// record are the histogram's record options by status code, each a
	// slice of its own so that Record's variadic argument is not built per
	// call.
	record [codes.Unauthenticated + 1][]metric.RecordOption
}

func newMethodStats(spanName, method string) *methodStats {
	m := &methodStats{name: spanName, attrs: []attribute.KeyValue{semconv.RPCMethod(method), semconv.RPCSystemNameGRPC}}
	m.start = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(m.attrs...)}
	for c := range m.record {
		attrs := append([]attribute.KeyValue{semconv.RPCMethod(method), semconv.RPCSystemNameGRPC}, statusAttrs(codes.Code(c))...)
		m.record[c] = []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))}
	}
	return m
}

// statusAttrs are a call's status code and, for the codes that are the
// server's failure (as the conventions classify them), its error.type.
func statusAttrs(c codes.Code) []attribute.KeyValue {
	code := semconv.RPCResponseStatusCode(canonical(c))
	if serverError(c) {
		return []attribute.KeyValue{code, semconv.ErrorTypeKey.String(canonical(c))}
	}
	return []attribute.KeyValue{code}
}

// serverError reports whether c is the server's failure rather than the
// caller's, as the OpenTelemetry RPC conventions classify gRPC codes.
func serverError(c codes.Code) bool {
	switch c {
	case codes.Unknown, codes.DeadlineExceeded, codes.Unimplemented, codes.Internal, codes.Unavailable, codes.DataLoss:
		return true
	}
	return false
}

// codeNames are the codes' names as the gRPC specification spells them.
var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// canonical is a code's name as the gRPC specification spells it.
func canonical(c codes.Code) string {
	if int(c) < len(codeNames) {
		return codeNames[c]
	}
	return c.String() // Code(n)
}

// method returns the stats of fullMethod.
func (h *serverHandler) method(fullMethod string) *methodStats {
	if m, ok := h.methods.Load(fullMethod); ok {
		return m.(*methodStats)
	}
	if _, known := methodKind(fullMethod); !known {
		return h.other
	}
	name := strings.TrimPrefix(fullMethod, "/")
	m, _ := h.methods.LoadOrStore(fullMethod, newMethodStats(name, name))
	return m.(*methodStats)
}

// callKey carries a call's *methodStats from TagRPC to HandleRPC.
type callKey struct{}

// TagRPC starts the call's span, as a child of the caller's span when the
// call carries a W3C traceparent.
func (h *serverHandler) TagRPC(ctx context.Context, info *stats.RPCTagInfo) context.Context {
	if h.skip != nil && h.skip(info.FullMethodName) {
		return ctx
	}
	m := h.method(info.FullMethodName)
	if h.carriesContext(ctx) {
		ctx = h.propagator.Extract(ctx, incomingCarrier{ctx})
	}
	ctx, _ = h.tracer.Start(ctx, m.name, m.start...)
	return context.WithValue(ctx, callKey{}, m)
}

// HandleRPC records a call when it ends: the histogram, and the span's
// status.
func (h *serverHandler) HandleRPC(ctx context.Context, rs stats.RPCStats) {
	end, ok := rs.(*stats.End)
	if !ok {
		return
	}
	m, ok := ctx.Value(callKey{}).(*methodStats)
	if !ok {
		return
	}
	code := status.Code(end.Error)
	elapsed := end.EndTime.Sub(end.BeginTime).Seconds()
	if int(code) < len(m.record) {
		h.duration.Record(ctx, elapsed, m.record[code]...)
	} else {
		h.duration.Record(ctx, elapsed, metric.WithAttributes(append(append([]attribute.KeyValue{}, m.attrs...), statusAttrs(code)...)...))
	}

	span := trace.SpanFromContext(ctx)
	if !span.IsRecording() {
		if code == codes.OK {
			return
		}
		// A read that was not sampled, and failed: trace it now, from its
		// start. error.type makes the sampler keep it.
		attrs := append(append([]attribute.KeyValue{}, m.attrs...), semconv.RPCResponseStatusCode(canonical(code)),
			semconv.ErrorTypeKey.String(canonical(code)))
		_, span = h.tracer.Start(ctx, m.name, trace.WithSpanKind(trace.SpanKindServer),
			trace.WithTimestamp(end.BeginTime), trace.WithAttributes(attrs...))
	} else {
		span.SetAttributes(semconv.RPCResponseStatusCode(canonical(code)))
	}
	if serverError(code) {
		span.SetStatus(otelcodes.Error, status.Convert(end.Error).Message())
	}
	span.End(trace.WithTimestamp(end.EndTime))
}

// TagConn implements stats.Handler.
func (h *serverHandler) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context {
	return ctx
}

// HandleConn implements stats.Handler.
func (h *serverHandler) HandleConn(context.Context, stats.ConnStats) {}

// carriesContext reports whether a call's metadata holds any of the
// propagator's fields (W3C traceparent, baggage): most calls carry none,
// and skip the extraction.
func (h *serverHandler) carriesContext(ctx context.Context) bool {
	for _, f := range h.fields {
		if metadata.ValueFromIncomingContext(ctx, f) != nil {
			return true
		}
	}
	return false
}

// incomingCarrier reads a call's incoming metadata for the propagator
// without copying it (metadata.FromIncomingContext copies every key).
type incomingCarrier struct{ ctx context.Context }

// Get implements propagation.TextMapCarrier.
func (c incomingCarrier) Get(key string) string {
	vs := metadata.ValueFromIncomingContext(c.ctx, key)
	if len(vs) == 0 {
		return ""
	}
	return strings.Join(vs, ",")
}

// Set implements propagation.TextMapCarrier; incoming metadata is read
// only.
func (c incomingCarrier) Set(string, string) {}

// Keys implements propagation.TextMapCarrier.
func (c incomingCarrier) Keys() []string {
	md, _ := metadata.FromIncomingContext(c.ctx)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	return keys
}
