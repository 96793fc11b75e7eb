package consent_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
	"github.com/lethe-privacy/lethe/services/consent"
)

// TestOneTraceFromRequestToHandler: a withdrawal recorded over gRPC is
// published through the consent service's outbox and relay to NATS, and
// the newsletter system's SDK handler runs in the same trace as the
// gRPC call that caused it, as a child of the subscriber's span, with
// its context carrying that span. The subscriber has its own tracer
// provider and exporter, as a separate process would: only the
// traceparent header on the event connects the two.
func TestOneTraceFromRequestToHandler(t *testing.T) {
	ctx := context.Background()
	serverSpans := tracetest.NewInMemoryExporter()
	providers, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "lethe-consent", SpanExporter: serverSpans})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = providers.Shutdown(context.Background()) })
	f := startOn(t, servicetest.Options{Clock: clock.Real{}, Logger: quiet,
		Server: server.Config{Telemetry: providers}}, nil)
	js := f.host.JetStream

	f.tenant(t, "clio")
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", DirectMarketing: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	if _, err := f.registry.RegisterSystem(ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: &registryv1.System{
		SystemId: "newsletter", Name: "Newsletter", Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "DK",
		Categories: []*commonv1.DataCategory{{Id: "user.contact.email"}}, PurposeIds: []string{"newsletter"},
		AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK, DpaSignedAt: timestamppb.Now()}}); err != nil {
		t.Fatal(err)
	}

	// The newsletter system, in its own "process".
	handlerSpans := tracetest.NewInMemoryExporter()
	sysTelemetry, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "newsletter", SpanExporter: handlerSpans})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sysTelemetry.Shutdown(context.Background()) })
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	handled := make(chan trace.SpanContext, 4)
	sub, err := subscriber.New(subscriber.Config{SystemID: "newsletter", Tenant: "clio", JetStream: js, Ledger: l, Logger: quiet,
		TracerProvider: sysTelemetry.Tracer,
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindConsentWithdrawn: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
				handled <- trace.SpanContextFromContext(ctx)
				return subscriber.Applied(), nil
			},
		}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, sub, l.Close)

	f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	serverSpans.Reset()
	withdrawal := f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)

	var inHandler trace.SpanContext
	select {
	case inHandler = <-handled:
	case <-time.After(15 * time.Second):
		t.Fatal("the newsletter's handler never ran")
	}
	var rpc tracetest.SpanStub
	for _, s := range serverSpans.GetSpans() {
		if s.Name == consent.ServiceName+"/RecordConsent" && s.SpanKind == trace.SpanKindServer {
			rpc = s
		}
	}
	if !rpc.SpanContext.IsValid() {
		t.Fatalf("no server span of RecordConsent among %d spans", len(serverSpans.GetSpans()))
	}
	if !inHandler.IsValid() || inHandler.TraceID() != rpc.SpanContext.TraceID() {
		t.Fatalf("the handler's context is in trace %s, the gRPC call in %s", inHandler.TraceID(), rpc.SpanContext.TraceID())
	}

	// The handler's span is the subscriber's consumer span, a child of
	// the gRPC server span that committed the withdrawal (the outbox
	// captured it at commit), and it ends once the outcome is reported.
	f.waitFanout(t, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: withdrawal.RecordId}, "newsletter=APPLIED")
	var process tracetest.SpanStub
	for _, s := range handlerSpans.GetSpans() {
		if s.SpanContext.SpanID() == inHandler.SpanID() {
			process = s
		}
	}
	switch {
	case !process.SpanContext.IsValid():
		t.Fatalf("the handler's span %s was not exported by the system", inHandler.SpanID())
	case process.SpanKind != trace.SpanKindConsumer || process.Name != "process lethe.clio.consent.withdrawn":
		t.Errorf("handler span %q of kind %s, want the consumer span of the event", process.Name, process.SpanKind)
	case process.Parent.SpanID() != rpc.SpanContext.SpanID() || !process.Parent.IsRemote():
		t.Errorf("handler span's parent is span %s, want the gRPC server span %s, remote", process.Parent.SpanID(), rpc.SpanContext.SpanID())
	}
}
