package telemetry

import (
	"fmt"
	"strings"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"
)

// DefaultReadRatio is the share of reads traced when nothing else asks for
// their trace: one in a hundred. Reads are the bulk of the calls (every
// marketing send asks Check), and a span exported for each cost the
// consent service a quarter of its Check throughput.
const DefaultReadRatio = 0.01

// NewSampler returns the sampler of Lethe's traces. It never loses the
// trace of a change of state, and samples reads:
//
//   - a server span of a read — a gRPC method the proto marks
//     idempotency_level = NO_SIDE_EFFECTS (Check, CheckBatch, Watch, the
//     List and Get methods) — is sampled when its caller's trace is
//     (an upstream-sampled traceparent is honoured), and otherwise at
//     readRatio, decided on the trace id so that every Lethe service
//     decides a trace alike;
//   - a span that starts with an error.type attribute is always sampled:
//     the server handler starts one, after the fact, for a read that
//     failed and was not sampled (see NewServerHandler), so every failed
//     call is traced;
//   - any other span is sampled, whatever its caller decided (a mutation,
//     the events it publishes and their consumers), except the local
//     children of a read that was not sampled.
//
// readRatio is clamped to [0, 1].
func NewSampler(readRatio float64) sdktrace.Sampler {
	readRatio = min(max(readRatio, 0), 1)
	return &sampler{reads: sdktrace.TraceIDRatioBased(readRatio), ratio: readRatio}
}

type sampler struct {
	reads sdktrace.Sampler
	ratio float64
	// readSpans caches, by span name, whether a server span names a read;
	// only the names of methods the process knows, which are finitely
	// many whatever callers send.
	readSpans sync.Map // string → bool
}

func (s *sampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	parent := trace.SpanContextFromContext(p.ParentContext)
	switch {
	case hasErrorType(p.Attributes):
		return s.decide(parent, sdktrace.RecordAndSample)
	case p.Kind == trace.SpanKindServer && s.isRead(p.Name):
		if parent.IsSampled() {
			return s.decide(parent, sdktrace.RecordAndSample)
		}
		return s.reads.ShouldSample(p)
	case parent.IsValid() && !parent.IsRemote() && !parent.IsSampled():
		// Under a read that was not sampled.
		return s.decide(parent, sdktrace.Drop)
	}
	return s.decide(parent, sdktrace.RecordAndSample)
}

// decide returns d with the parent's trace state, as the SDK's samplers do.
func (s *sampler) decide(parent trace.SpanContext, d sdktrace.SamplingDecision) sdktrace.SamplingResult {
	return sdktrace.SamplingResult{Decision: d, Tracestate: parent.TraceState()}
}

func (s *sampler) Description() string {
	return fmt.Sprintf("LetheSampler{reads=%g}", s.ratio)
}

// isRead reports whether a server span's name ("package.Service/Method",
// as gRPC instrumentation names it) is that of a read.
func (s *sampler) isRead(name string) bool {
	if v, ok := s.readSpans.Load(name); ok {
		return v.(bool)
	}
	read, known := methodKind("/" + name)
	if known {
		s.readSpans.Store(name, read)
	}
	return read
}

// hasErrorType reports whether attrs carry error.type.
func hasErrorType(attrs []attribute.KeyValue) bool {
	for _, a := range attrs {
		if a.Key == semconv.ErrorTypeKey {
			return true
		}
	}
	return false
}

// ReadMethod reports whether the gRPC method fullMethod
// ("/package.Service/Method") is a read: declared free of side effects
// (idempotency_level = NO_SIDE_EFFECTS) in a proto linked into the
// process. Unknown methods are not reads, so that what is not known to
// be harmless is audited and traced.
func ReadMethod(fullMethod string) bool {
	read, _ := methodKind(fullMethod)
	return read
}

// methodKind reports whether fullMethod is a read, and whether the
// process knows the method at all.
func methodKind(fullMethod string) (read, known bool) {
	service, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if !ok {
		return false, false
	}
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(service + "." + method))
	if err != nil {
		return false, false
	}
	md, ok := d.(protoreflect.MethodDescriptor)
	if !ok {
		return false, false
	}
	opts, _ := md.Options().(*descriptorpb.MethodOptions)
	return opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS, true
}
