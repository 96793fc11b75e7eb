package subscriber_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

var outcomeSubject = "lethe." + tenant + ".outcome." + system

func TestHandlesAnEventOnceAndReportsItsOutcome(t *testing.T) {
	_, _, js := sdktest.Stream(t)
	var calls counter
	var seen struct {
		sync.Mutex
		kind            contract.Kind
		subject, cause  string
		seq             uint64
		delivered       int
		traceID         string
		identifiersErr  error
		erasureScopeAll bool
	}
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			calls.add(ev.ID())
			seen.Lock()
			defer seen.Unlock()
			seen.kind, seen.subject, seen.cause = ev.Kind(), ev.SubjectID(), ev.Cause().GetId()
			seen.seq, seen.delivered = ev.Sequence(), ev.Delivered()
			seen.traceID = trace.SpanContextFromContext(ctx).TraceID().String()
			_, seen.identifiersErr = ev.Identifiers(ctx)
			seen.erasureScopeAll = ev.Proto().GetErasureRequested().GetScope().GetAll()
			return subscriber.Erased(), nil
		},
	})
	sub := sdktest.Run(t, cfg)
	if got := sub.ConsumerNames(); !slices.Equal(got, []string{"newsletter@clio~erasure_requested"}) {
		t.Errorf("ConsumerNames() = %q, want newsletter@clio~erasure_requested", got)
	}

	ev := newEvent("ev-1", contract.KindErasureRequested, 3)
	publish(t, js, ev, "")
	got := sdktest.WaitOutcomes(t, js, outcomeSubject, 1)[0]
	info := waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))

	if n := calls.get("ev-1"); n != 1 {
		t.Errorf("handler called %d times, want once", n)
	}
	seen.Lock()
	if seen.kind != contract.KindErasureRequested || seen.subject != "subject-42" || seen.cause != "req-ev-1" ||
		seen.seq != 3 || seen.delivered != 1 || !seen.erasureScopeAll {
		t.Errorf("handler saw kind %q, subject %q, cause %q, sequence %d, delivery %d, scope all %v",
			seen.kind, seen.subject, seen.cause, seen.seq, seen.delivered, seen.erasureScopeAll)
	}
	if seen.traceID != traceID {
		t.Errorf("handler's trace id = %s, want the event's %s", seen.traceID, traceID)
	}
	if !errors.Is(seen.identifiersErr, subscriber.ErrNoIdentifierFetcher) {
		t.Errorf("Identifiers without a fetcher = %v, want ErrNoIdentifierFetcher", seen.identifiersErr)
	}
	seen.Unlock()

	o := got.Outcome
	if o.GetEventId() != "ev-1" || o.GetTenantId() != tenant || o.GetSystemId() != system ||
		o.GetSubjectId() != "subject-42" || !proto.Equal(o.GetCause(), ev.GetCause()) ||
		o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED || o.GetReportedAt() == nil {
		t.Errorf("outcome = %v", o)
	}
	wantHeader := contract.OutcomeHeaders(o)
	for k := range wantHeader {
		if got.Header.Get(k) != wantHeader.Get(k) {
			t.Errorf("outcome header %s = %q, want %q", k, got.Header.Get(k), wantHeader.Get(k))
		}
	}
	if got.Header.Get(nats.MsgIdHdr) != "ev-1/newsletter" {
		t.Errorf("outcome Nats-Msg-Id = %q, want ev-1/newsletter", got.Header.Get(nats.MsgIdHdr))
	}
	if tp := got.Header.Get("traceparent"); !strings.Contains(tp, traceID) {
		t.Errorf("outcome traceparent = %q, want trace %s", tp, traceID)
	}

	if info.Config.Metadata[contract.MetadataSystem] != system || info.Config.Metadata[contract.MetadataTenant] != tenant {
		t.Errorf("consumer metadata = %v", info.Config.Metadata)
	}
	if info.Config.FilterSubject != "lethe.clio.erasure.requested" || len(info.Config.FilterSubjects) != 0 ||
		info.Config.Metadata[contract.MetadataKind] != string(contract.KindErasureRequested) {
		t.Errorf("consumer filter = %q %v, kind %q; want the erasure subject alone", info.Config.FilterSubject,
			info.Config.FilterSubjects, info.Config.Metadata[contract.MetadataKind])
	}
	if info.Config.AckPolicy != jetstream.AckExplicitPolicy || info.Config.DeliverPolicy != jetstream.DeliverAllPolicy ||
		info.Config.MaxDeliver != subscriber.DefaultMaxDeliver {
		t.Errorf("consumer config = %+v", info.Config)
	}
	if info.NumRedelivered != 0 {
		t.Errorf("%d events redelivered, want none", info.NumRedelivered)
	}
}

func TestDuplicateIsAnsweredWithTheRecordedOutcome(t *testing.T) {
	_, nc, js := sdktest.Stream(t)
	// A core subscription sees every send, including those the stream
	// drops as duplicates of the first outcome.
	sends, err := nc.SubscribeSync(outcomeSubject)
	if err != nil {
		t.Fatal(err)
	}
	defer sends.Unsubscribe()
	var calls counter
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			calls.add(ev.ID())
			return subscriber.NotFound(), nil
		},
	})
	sub := sdktest.Run(t, cfg)

	ev := newEvent("ev-1", contract.KindErasureRequested, 1)
	// Past the stream's duplicate window a re-sent event is stored again:
	// a different Nats-Msg-Id has the same effect.
	publish(t, js, ev, "first")
	publish(t, js, ev, "second")

	var sent [][]byte
	for range 2 {
		msg, err := sends.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for outcome %d: %v", len(sent)+1, err)
		}
		sent = append(sent, msg.Data)
	}
	waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))
	if n := calls.get("ev-1"); n != 1 {
		t.Errorf("handler called %d times, want once", n)
	}
	if string(sent[0]) != string(sent[1]) {
		t.Error("the duplicate was answered with another outcome than the first")
	}
	if got := sdktest.Outcomes(t, js, outcomeSubject); len(got) != 1 {
		t.Errorf("the stream holds %d outcomes, want 1: the re-sent one shares the first's Nats-Msg-Id", len(got))
	}
}

func TestOlderRestrictionEventIsNotApplied(t *testing.T) {
	_, _, js := sdktest.Stream(t)
	var (
		mu         sync.Mutex
		restricted = map[string]bool{}
		calls      counter
	)
	restrict := func(on bool) subscriber.Handler {
		return func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			calls.add(ev.ID())
			mu.Lock()
			defer mu.Unlock()
			restricted[ev.SubjectID()] = on
			return subscriber.Applied(), nil
		}
	}
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindRestrictionApplied: restrict(true),
		contract.KindRestrictionLifted:  restrict(false),
	})
	sub := sdktest.Run(t, cfg)

	// Each kind has its own consumer, so the stream's order does not
	// decide which is handled first: the lifting (sequence 2) is answered
	// before the older applying (sequence 1) arrives.
	publish(t, js, newEvent("lifted", contract.KindRestrictionLifted, 2), "")
	sdktest.WaitOutcomes(t, js, outcomeSubject, 1)
	publish(t, js, newEvent("applied", contract.KindRestrictionApplied, 1), "")
	got := sdktest.WaitOutcomes(t, js, outcomeSubject, 2)
	waitAllSettled(t, js, sub)

	kinds := map[string]eventsv1.OutcomeKind{}
	for _, o := range got {
		kinds[o.Outcome.GetEventId()] = o.Outcome.GetKind()
	}
	if kinds["lifted"] != eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED || kinds["applied"] != eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE {
		t.Errorf("outcomes = %v, want lifted APPLIED and applied NOT_APPLICABLE", kinds)
	}
	if calls.get("applied") != 0 {
		t.Error("the handler was called for the superseded event")
	}
	mu.Lock()
	defer mu.Unlock()
	if restricted["subject-42"] {
		t.Error("the subject ended restricted")
	}
}

func TestPoisonEventIsReportedFailedAfterMaxDeliver(t *testing.T) {
	for _, tc := range []struct {
		name    string
		handler subscriber.Handler
		reason  string
	}{{
		name: "error",
		handler: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.Outcome{}, errors.New("database unavailable")
		},
		reason: "gave up after 3 deliveries: database unavailable",
	}, {
		name: "panic",
		handler: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			panic("nil map")
		},
		reason: "gave up after 3 deliveries: the handler panicked: nil map",
	}, {
		name: "invalid outcome",
		handler: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.Retained(), nil // lists nothing retained
		},
		reason: "gave up after 3 deliveries: the handler returned an invalid outcome: a RETAINED outcome lists what is retained",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, js := sdktest.Stream(t)
			var calls counter
			cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
				contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
					calls.add(fmt.Sprint(ev.Delivered()))
					return tc.handler(ctx, ev)
				},
			})
			cfg.MaxDeliver = 3
			cfg.BackOff = []time.Duration{time.Millisecond, 5 * time.Millisecond}
			sub := sdktest.Run(t, cfg)

			publish(t, js, newEvent("ev-1", contract.KindErasureRequested, 1), "")
			o := sdktest.WaitOutcomes(t, js, outcomeSubject, 1)[0].Outcome
			waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))

			if o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || o.GetReason() != tc.reason {
				t.Errorf("outcome = %s %q, want FAILED %q", o.GetKind(), o.GetReason(), tc.reason)
			}
			for d := 1; d <= 3; d++ {
				if calls.get(fmt.Sprint(d)) != 1 {
					t.Errorf("delivery %d called the handler %d times, want once", d, calls.get(fmt.Sprint(d)))
				}
			}
		})
	}
}

func TestFailedOutcomePublishIsRetriedFromTheLedger(t *testing.T) {
	s := sdktest.StartServer(t)
	_, js := sdktest.Connect(t, s)
	ctx := context.Background()
	// A stream that does not capture outcomes: publishing one fails.
	if _, err := js.CreateStream(ctx, sdktest.StreamConfig("lethe.*.erasure.>")); err != nil {
		t.Fatal(err)
	}
	var calls counter
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			calls.add(ev.ID())
			return subscriber.Erased(), nil
		},
	})
	cfg.BackOff = []time.Duration{20 * time.Millisecond}
	sub := sdktest.Run(t, cfg)

	publish(t, js, newEvent("ev-1", contract.KindErasureRequested, 1), "")
	eventually.True(t, "the event to be redelivered", func() bool {
		info := consumerInfo(js, sub.ConsumerName(contract.KindErasureRequested))
		return info != nil && info.Delivered.Consumer >= 2
	})
	if n := calls.get("ev-1"); n != 1 {
		t.Fatalf("handler called %d times before the outcome was published, want once", n)
	}

	if _, err := js.UpdateStream(ctx, sdktest.StreamConfig(contract.AllSubjects)); err != nil {
		t.Fatal(err)
	}
	o := sdktest.WaitOutcomes(t, js, outcomeSubject, 1)[0].Outcome
	waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))
	if o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Errorf("outcome = %s, want ERASED", o.GetKind())
	}
	if n := calls.get("ev-1"); n != 1 {
		t.Errorf("handler called %d times, want once", n)
	}
}

func TestInvalidEventsAreTerminated(t *testing.T) {
	_, _, js := sdktest.Stream(t)
	var calls counter
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			calls.add(ev.ID())
			return subscriber.Erased(), nil
		},
	})
	sub := sdktest.Run(t, cfg)

	sdktest.Publish(t, js, &nats.Msg{Subject: "lethe.clio.erasure.requested", Data: []byte("\xff not protobuf")})
	otherTenant := newEvent("other-tenant", contract.KindErasureRequested, 1)
	otherTenant.TenantId = "acme"
	data, _ := contract.Marshal(otherTenant)
	sdktest.Publish(t, js, &nats.Msg{Subject: "lethe.clio.erasure.requested", Data: data})
	noCause := newEvent("no-cause", contract.KindErasureRequested, 1)
	noCause.Cause = nil
	data, _ = contract.Marshal(noCause)
	sdktest.Publish(t, js, &nats.Msg{Subject: "lethe.clio.erasure.requested", Data: data})
	// A valid event behind them is still answered.
	publish(t, js, newEvent("ev-1", contract.KindErasureRequested, 1), "")

	got := sdktest.WaitOutcomes(t, js, outcomeSubject, 1)
	waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))
	if got[0].Outcome.GetEventId() != "ev-1" {
		t.Errorf("outcome for %q, want ev-1", got[0].Outcome.GetEventId())
	}
	if calls.get("other-tenant")+calls.get("no-cause") != 0 {
		t.Error("the handler was called for an invalid event")
	}
}

func TestAllTenants(t *testing.T) {
	_, _, js := sdktest.Stream(t)
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindConsentWithdrawn: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.NotApplicable("no such purpose"), nil
		},
		contract.KindErasureRequested: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.NotFound(), nil
		},
	})
	cfg.Tenant = contract.AllTenants
	sub := sdktest.Run(t, cfg)

	clio := newEvent("clio-1", contract.KindConsentWithdrawn, 1)
	acme := newEvent("acme-1", contract.KindConsentWithdrawn, 1)
	acme.TenantId = "acme"
	publish(t, js, clio, "")
	publish(t, js, acme, "")
	sdktest.WaitOutcomes(t, js, "lethe.clio.outcome.newsletter", 1)
	sdktest.WaitOutcomes(t, js, "lethe.acme.outcome.newsletter", 1)

	var got []string
	for _, info := range waitAllSettled(t, js, sub) {
		if info.Config.Metadata[contract.MetadataTenant] != "*" {
			t.Errorf("consumer %s with metadata %v", info.Name, info.Config.Metadata)
		}
		got = append(got, info.Name+"="+info.Config.FilterSubject)
	}
	if want := []string{"newsletter@_all~erasure_requested=lethe.*.erasure.requested",
		"newsletter@_all~consent_withdrawn=lethe.*.consent.withdrawn"}; !slices.Equal(got, want) {
		t.Errorf("consumers = %v, want %v", got, want)
	}
}

func TestRunRefusesALedgerThatForgetsTooSoon(t *testing.T) {
	_, _, js := sdktest.Stream(t) // the stream keeps events an hour
	l, err := ledger.Open(t.TempDir()+"/short.db", ledger.Options{Retention: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	sub, err := subscriber.New(config(t, js, l, map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.Erased(), nil
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "retention") {
		t.Errorf("Run = %v, want an error about the ledger's retention", err)
	}
}

func TestNewChecksTheConfig(t *testing.T) {
	s := sdktest.StartServer(t)
	_, js := sdktest.Connect(t, s)
	l := sdktest.OpenLedger(t, "newsletter.db")
	erase := func(context.Context, *subscriber.Event) (subscriber.Outcome, error) { return subscriber.Erased(), nil }
	valid := func() subscriber.Config {
		return subscriber.Config{
			SystemID: system, Tenant: tenant, JetStream: js, Ledger: l,
			Handlers: map[contract.Kind]subscriber.Handler{contract.KindErasureRequested: erase},
		}
	}
	if _, err := subscriber.New(valid()); err != nil {
		t.Fatalf("New(valid config) = %v", err)
	}
	for name, mutate := range map[string]func(*subscriber.Config){
		"system id":         func(c *subscriber.Config) { c.SystemID = "News Letter" },
		"tenant":            func(c *subscriber.Config) { c.Tenant = "" },
		"no JetStream":      func(c *subscriber.Config) { c.JetStream = nil },
		"no ledger":         func(c *subscriber.Config) { c.Ledger = nil },
		"no handlers":       func(c *subscriber.Config) { c.Handlers = nil },
		"nil handler":       func(c *subscriber.Config) { c.Handlers[contract.KindAccessRequested] = nil },
		"registry kind":     func(c *subscriber.Config) { c.Handlers[contract.KindTenantRegistered] = erase },
		"negative workers":  func(c *subscriber.Config) { c.Workers = -1 },
		"negative deliver":  func(c *subscriber.Config) { c.MaxDeliver = -1 },
		"negative prefetch": func(c *subscriber.Config) { c.Prefetch = -1 },
		"zero back-off":     func(c *subscriber.Config) { c.BackOff = []time.Duration{time.Second, 0} },
	} {
		cfg := valid()
		mutate(&cfg)
		if _, err := subscriber.New(cfg); err == nil {
			t.Errorf("New accepted a config with a bad %s", name)
		}
	}
}
