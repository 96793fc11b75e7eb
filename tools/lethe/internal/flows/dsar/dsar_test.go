package dsar_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/dsar"
	"github.com/lethe-privacy/lethe/services/retention"
)

var (
	sdk    = commonv1.AnswerMode_ANSWER_MODE_SDK
	manual = commonv1.AnswerMode_ANSWER_MODE_MANUAL
)

var accountingLaw = &eventsv1.Retention{
	Categories:  []*commonv1.DataCategory{{Id: "user.financial.invoice"}},
	LegalBasis:  commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
	BasisDetail: "Swedish Accounting Act (1999:1078), ch. 7 § 2",
	Until:       timestamppb.New(time.Date(2031, 12, 31, 0, 0, 0, 0, time.UTC)),
	Exemption:   eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION,
	Law:         "Bokföringslagen (1999:1078) 7 kap. 2 §",
}

// TestErasureCompletesWhenEverySystemAnswered: Cleura's erasure reaches
// every system that holds the subject's data; a held category is not sent
// and is reported held; billing answers "retained under accounting law
// until 2031-12-31", so the request is partially completed with that basis;
// a silent system leaves it in progress with a stalled task until its late
// answer completes it. Systems fetch identifiers by claim check, only as
// themselves and only while their task is open.
func TestErasureCompletesWhenEverySystemAnswered(t *testing.T) {
	f := start(t)
	f.tenant(t, "cleura", &registryv1.TenantSettings{Country: "SE"})
	f.system(t, "cleura", "crm", sdk, nil, "user.contact", "user.name")
	f.system(t, "cleura", "billing", sdk, nil, "user.financial")
	f.system(t, "cleura", "newsletter", sdk, nil, "user.contact.email")
	f.system(t, "cleura", "mailer", sdk, nil, "user.contact.email")
	f.system(t, "cleura", "support", sdk, nil, "user.contact")
	f.system(t, "cleura", "processor", manual, nil, "user.contact")
	f.system(t, "cleura", "analytics", sdk, nil, "user.behavior")
	if _, err := f.retention.PlaceHold(f.ctx, &retentionv1.PlaceHoldRequest{RequestId: f.id(), TenantId: "cleura",
		Hold: &retentionv1.Hold{HoldId: "audit-2026", Reason: "tax audit 2026", Category: &commonv1.DataCategory{Id: "user.behavior"}}}); err != nil {
		t.Fatal(err)
	}

	var claimed atomic.Value
	var claimErrs atomic.Int64
	crm := f.subscribe(t, "cleura", "crm", "", func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		// The SDK's claim check, as crm.
		ids, err := ev.Identifiers(asSystem("crm"))
		if err != nil {
			return subscriber.Outcome{}, err
		}
		claimed.Store(ids[0].Value)
		// Another system may not claim as crm.
		if _, err := f.dsar.GetIdentifiers(asSystem("billing"), &dsarv1.GetIdentifiersRequest{TenantId: "cleura", DsarId: ev.Cause().Id, SystemId: "crm"}); code(err) == codes.PermissionDenied {
			claimErrs.Add(1)
		}
		return subscriber.Erased(), nil
	})
	f.subscribe(t, "cleura", "billing", "", answer(subscriber.Retained(accountingLaw)))
	f.subscribe(t, "cleura", "newsletter", "", answer(subscriber.Erased()))
	f.subscribe(t, "cleura", "mailer", "", answer(subscriber.NotFound()))

	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Erasure: &dsarv1.ErasureDetails{}})
	if r.State != dsarv1.RequestState_REQUEST_STATE_RECEIVED || r.DsarId == "" {
		t.Fatalf("filed request = %v", r)
	}
	// Nothing fans out before verification: no event, no task. settled
	// sweeps and waits until crm took everything sent, so an event sent
	// for the unverified request would be in crm.seen() now.
	f.settled(t, crm)
	if got := f.get(t, "cleura", r.DsarId); len(crm.seen()) != 0 || len(got.GetResult().GetTasks()) != 0 {
		t.Fatalf("before verification: %d events at crm, systems %v", len(crm.seen()), got.GetResult().GetTasks())
	}
	f.attest(t, "cleura", r.DsarId)

	// Everyone but the silent support system and the manual processor
	// answers; the request stays in progress.
	eventually.True(t, "four SDK systems answered", func() bool {
		got := f.get(t, "cleura", r.DsarId)
		final := 0
		for _, s := range got.Result.Tasks {
			if s.State == commonv1.TaskState_TASK_STATE_FINAL {
				final++
			}
		}
		return final == 4
	})
	if claimed.Load() != adaEmail || claimErrs.Load() == 0 {
		t.Fatalf("crm claimed %v; impersonation refused %d times", claimed.Load(), claimErrs.Load())
	}
	got := f.get(t, "cleura", r.DsarId)
	if got.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS || got.Result.Complete {
		t.Fatalf("with two systems silent the request is %s (complete %v)", got.State, got.Result.Complete)
	}
	states := map[string]commonv1.TaskState{}
	for _, s := range got.Result.Tasks {
		states[s.SystemId] = s.State
	}
	if states["analytics"] != commonv1.TaskState_TASK_STATE_HELD || states["support"] != commonv1.TaskState_TASK_STATE_OPEN || len(states) != 7 {
		t.Fatalf("system states = %v", states)
	}
	// The held category was not sent to anyone.
	ev := crm.seen()[0].GetErasureRequested()
	for _, c := range ev.Scope.Categories {
		if contract.CategoryCovers("user.behavior", c.Id) || contract.CategoryCovers(c.Id, "user.behavior") {
			t.Fatalf("the erasure's scope %v reaches the held user.behavior", ev.Scope.Categories)
		}
	}
	if ev.Scope.All {
		t.Fatal("with a hold in force the erasure was sent for all data")
	}

	// The silent system's task stalls and is re-sent.
	f.clock.Advance(2 * time.Hour)
	if n, err := f.svc.ResendDue(f.ctx); err != nil || n != 1 {
		t.Fatalf("ResendDue = %d, %v; want the support task", n, err)
	}
	if s := taskOf(f.get(t, "cleura", r.DsarId), "support"); s.State != commonv1.TaskState_TASK_STATE_STALLED {
		t.Fatalf("support = %v, want stalled", s)
	}
	// The operator answers for the manual processor; the wrong outcome
	// kind is refused.
	if _, err := f.dsar.CompleteTask(f.ctx, &dsarv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId,
		SystemId: "processor", Outcome: eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED}); code(err) != codes.InvalidArgument || fields(err) != "outcome" {
		t.Fatalf("a limit outcome for an erasure = %v", err)
	}
	if _, err := f.dsar.CompleteTask(f.ctx, &dsarv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId,
		SystemId: "crm", Outcome: eventsv1.OutcomeKind_OUTCOME_KIND_ERASED}); code(err) != codes.FailedPrecondition {
		t.Fatalf("an operator answering for an SDK system = %v", err)
	}
	done, err := f.dsar.CompleteTask(f.ctx, &dsarv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId,
		SystemId: "processor", Outcome: eventsv1.OutcomeKind_OUTCOME_KIND_ERASED})
	if err != nil || done.Request.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
		t.Fatalf("complete processor = %v, %v", done, err)
	}

	// The late answer completes the request.
	f.subscribe(t, "cleura", "support", "", answer(subscriber.Erased()))
	final := f.waitState(t, "cleura", r.DsarId, dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED)
	if len(final.Result.Retained) != 1 || final.Result.Retained[0].BasisDetail != accountingLaw.BasisDetail ||
		!final.Result.Retained[0].Until.AsTime().Equal(accountingLaw.Until.AsTime()) {
		t.Fatalf("retained = %v, want the accounting law until 2031-12-31", final.Result.Retained)
	}
	if len(final.Result.Held) != 1 || final.Result.Held[0].HoldId != "audit-2026" || final.Result.Held[0].Category.Id != "user.behavior" {
		t.Fatalf("held = %v", final.Result.Held)
	}
	if !final.KeyDestroyed || final.ClosedAt == nil {
		t.Fatalf("closed request: key destroyed %v, closed at %v", final.KeyDestroyed, final.ClosedAt)
	}

	// The claim check closes with the task.
	if _, err := f.dsar.GetIdentifiers(asSystem("crm"), &dsarv1.GetIdentifiersRequest{TenantId: "cleura", DsarId: r.DsarId, SystemId: "crm"}); code(err) != codes.FailedPrecondition {
		t.Fatalf("claim after the task closed = %v", err)
	}

	// The receipt lists every system with its outcome and sits on a
	// verified chain.
	receipt, err := f.dsar.GetReceipt(f.ctx, &dsarv1.GetReceiptRequest{TenantId: "cleura", DsarId: r.DsarId})
	if err != nil || len(receipt.Receipt.Entries) != 7 || len(receipt.Receipt.Hash) != 32 || receipt.Receipt.State != final.State {
		t.Fatalf("receipt = %v, %v", receipt, err)
	}
	if n, err := f.svc.VerifyReceipts(); err != nil || n != 1 {
		t.Fatalf("receipt chain = %d, %v", n, err)
	}
	// Every transition is in the history with time and actor.
	var steps []string
	for _, h := range final.History {
		steps = append(steps, strings.TrimPrefix(h.To.String(), "REQUEST_STATE_")+"@"+h.Actor)
		if h.At == nil {
			t.Fatalf("transition without a time: %v", h)
		}
	}
	if strings.Join(steps, ",") != "RECEIVED@dev:local,IN_PROGRESS@dev:local,PARTIALLY_COMPLETED@lethe/dsar" {
		t.Fatalf("history = %v", steps)
	}
}

// taskOf returns the request's task for system, or nil.
func taskOf(r *dsarv1.Request, system string) *dsarv1.Task {
	for _, s := range r.Result.Tasks {
		if s.SystemId == system {
			return s
		}
	}
	return nil
}

// TestACrashedSubscriberGetsItsTaskAgain: a subscriber that stops in the
// middle of its erasure, before it committed, gets the event again after
// restarting with the same ledger; the request completes and the erasure
// is applied once.
func TestACrashedSubscriberGetsItsTaskAgain(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio", nil)
	f.system(t, "clio", "newsletter", sdk, nil, "user.contact.email")
	ledgerPath := filepath.Join(t.TempDir(), "newsletter.db")

	var applied atomic.Int64
	entered := make(chan struct{}, 1)
	crashing := f.subscribe(t, "clio", "newsletter", ledgerPath, func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		entered <- struct{}{}
		<-ctx.Done() // the process dies mid-task: nothing is committed
		return subscriber.Outcome{}, ctx.Err()
	})
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Erasure: &dsarv1.ErasureDetails{}})
	f.attest(t, "clio", r.DsarId)
	<-entered
	crashing.cancel()
	if got := f.get(t, "clio", r.DsarId); got.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
		t.Fatalf("after the crash the request is %s", got.State)
	}

	erase := func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		return subscriber.Erased(), nil
	}
	var restarted *testSystem
	restarted = f.subscribe(t, "clio", "newsletter", ledgerPath, func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		out, _ := erase(ctx, ev)
		err := bboltUpdate(restarted.ledger, func(tx *bbolt.Tx) error {
			tx.OnCommit(func() { applied.Add(1) })
			return ev.Record(tx, out)
		})
		return out, err
	})
	f.waitState(t, "clio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	// A re-send (the same event again, under a new message id as the
	// tracker's re-send has) is answered from the ledger, without calling
	// the handler. The request is complete, so nothing else re-sends: the
	// test sends it itself, then waits until the newsletter's consumers
	// have nothing pending or unacknowledged, i.e. the SDK took the
	// re-send and acknowledged it.
	seen := restarted.seen()
	if len(seen) != 1 {
		t.Fatalf("the restarted newsletter was handed %d events, want the erasure once", len(seen))
	}
	before := f.delivered(t, restarted)
	resend(t, f.deps.JetStream, seen[0])
	f.settled(t, restarted)
	if after := f.delivered(t, restarted); after <= before {
		t.Fatalf("the re-send was not delivered (%d deliveries before, %d after)", before, after)
	}
	if n, calls := applied.Load(), len(restarted.seen()); n != 1 || calls != 1 {
		t.Fatalf("the erasure was applied %d times and its handler called %d times, want once each", n, calls)
	}
}

// TestObjectionMakesCheckDeny: an objection to direct marketing filed as a
// request is applied through the consent service with the request as its
// cause; Check then denies the purposes objected to, and the request
// completes when every system honoured the limit.
func TestObjectionMakesCheckDeny(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevio", nil)
	for _, p := range []*consentv1.Purpose{
		{PurposeId: "marketing.email", Name: "E-mail marketing", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DirectMarketing: true},
		{PurposeId: "course.messages", Name: "Course messages", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONTRACT},
	} {
		if _, err := f.consent.PutPurpose(f.ctx, &consentv1.PutPurposeRequest{RequestId: f.id(), TenantId: "clevio", Purpose: p}); err != nil {
			t.Fatal(err)
		}
	}
	f.system(t, "clevio", "mailer", sdk, []string{"marketing.email", "course.messages"}, "user.contact.email")
	mailer := f.subscribe(t, "clevio", "mailer", "", answer(subscriber.Erased()))
	if _, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clevio", SubjectId: "subject-ada",
		PurposeId: "marketing.email", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM}); err != nil {
		t.Fatal(err)
	}
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio",
		Objection: &dsarv1.ObjectionDetails{Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING}})
	f.attest(t, "clevio", r.DsarId)
	final := f.waitState(t, "clevio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)

	check, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clevio", SubjectId: "subject-ada", PurposeId: "marketing.email"})
	if err != nil || check.Decision.Allowed || check.Decision.Reason != consentv1.Reason_REASON_OBJECTED {
		t.Fatalf("check after the objection = %v, %v", check, err)
	}
	// Clevio: transactional messages continue.
	check, err = f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clevio", SubjectId: "subject-ada", PurposeId: "course.messages"})
	if err != nil || !check.Decision.Allowed {
		t.Fatalf("check of course messages = %v, %v", check, err)
	}
	var objection *eventsv1.Event
	for _, ev := range mailer.seen() {
		if ev.GetObjectionRecorded() != nil {
			objection = ev
		}
	}
	if objection == nil || objection.Cause.Kind != commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST || objection.Cause.Id != r.DsarId {
		t.Fatalf("objection event = %v, want the request %s as its cause", objection, r.DsarId)
	}
	if len(final.ConsentCauses) != 1 || taskOf(final, "mailer").GetOutcome() != eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED {
		t.Fatalf("final result = %v", final.Result)
	}

	// A withdrawal follows the consent record the consent service made.
	w := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", Withdrawal: &dsarv1.WithdrawalDetails{PurposeIds: []string{"marketing.email"}}})
	f.attest(t, "clevio", w.DsarId)
	done := f.waitState(t, "clevio", w.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	if len(done.ConsentCauses) != 1 || done.ConsentCauses[0].Kind != commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD {
		t.Fatalf("withdrawal causes = %v", done.ConsentCauses)
	}
}

// TestNeighboursOverMutualTLS: the DSAR service reaches consent and
// retention through the connections the kit dials for its declared
// neighbours, over mutual TLS to production servers, as a deployment runs
// it: an erasure learns retention's hold, and an objection and a
// withdrawal are applied by the consent service. The neighbours' default
// addresses are the services' own.
func TestNeighboursOverMutualTLS(t *testing.T) {
	for _, n := range dsar.Neighbours {
		if want := map[string]string{"consent": consent.DefaultAddr, "retention": retention.DefaultAddr}[n.Name]; n.DevAddr != want {
			t.Errorf("neighbour %s: development address %q, want the service's DefaultAddr %q", n.Name, n.DevAddr, want)
		}
	}
	if !slices.Equal(dsar.Factory.Neighbours, dsar.Neighbours) {
		t.Fatal("the factory does not declare the DSAR service's neighbours")
	}
	f := startWith(t, options{tlsNeighbours: true})
	f.tenant(t, "clevio", nil)
	if _, err := f.consent.PutPurpose(f.ctx, &consentv1.PutPurposeRequest{RequestId: f.id(), TenantId: "clevio",
		Purpose: &consentv1.Purpose{PurposeId: "marketing.email", Name: "E-mail marketing", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DirectMarketing: true}}); err != nil {
		t.Fatal(err)
	}
	f.system(t, "clevio", "mailer", sdk, []string{"marketing.email"}, "user.contact.email")
	f.system(t, "clevio", "analytics", sdk, nil, "user.behavior")
	f.subscribe(t, "clevio", "mailer", "", answer(subscriber.Erased()))
	if _, err := f.retention.PlaceHold(f.ctx, &retentionv1.PlaceHoldRequest{RequestId: f.id(), TenantId: "clevio",
		Hold: &retentionv1.Hold{HoldId: "audit-2026", Reason: "tax audit 2026", Category: &commonv1.DataCategory{Id: "user.behavior"}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clevio", SubjectId: "subject-ada",
		PurposeId: "marketing.email", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM}); err != nil {
		t.Fatal(err)
	}

	erasure := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", Erasure: &dsarv1.ErasureDetails{}})
	f.attest(t, "clevio", erasure.DsarId)
	eventually.True(t, "the erasure reports retention's hold", func() bool {
		return taskOf(f.get(t, "clevio", erasure.DsarId), "analytics").GetState() == commonv1.TaskState_TASK_STATE_HELD
	})

	w := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", Withdrawal: &dsarv1.WithdrawalDetails{PurposeIds: []string{"marketing.email"}}})
	f.attest(t, "clevio", w.DsarId)
	done := f.waitState(t, "clevio", w.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	if len(done.ConsentCauses) != 1 || done.ConsentCauses[0].Kind != commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD {
		t.Fatalf("withdrawal causes = %v", done.ConsentCauses)
	}
	check, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clevio", SubjectId: "subject-ada", PurposeId: "marketing.email"})
	if err != nil || check.Decision.Allowed {
		t.Fatalf("check after the withdrawal = %v, %v", check, err)
	}
}

// TestAStuckFanOutIsLoud: an erasure whose fan-out cannot reach the
// retention service (nothing listens at its address yet) stays verified
// with no system asked, and says so everywhere an operator looks: the
// request shows the failing step, its error, since when and how many
// attempts (fanout_problem); lethe.dsar.fanout.failing counts it under the
// step, with the age of the oldest failure growing with the clock; and
// once it has failed for longer than FanoutUnhealthyAfter the health
// detail FanoutHealthName turns NOT_SERVING while the service's readiness
// stays SERVING. When the retention service comes up, the next retry
// fans the request out and all of it clears.
func TestAStuckFanOutIsLoud(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "lethe-dsar"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = providers.Shutdown(context.Background()) })
	gone := unservedAddr(t)
	f := startWith(t, options{retentionAddr: gone, telemetry: providers})
	f.tenant(t, "clio", nil)
	f.system(t, "clio", "crm", sdk, nil, "user.contact")
	health := healthpb.NewHealthClient(f.dsarConn)
	status := func(name string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := health.Check(f.ctx, &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			t.Fatalf("health of %s: %v", name, err)
		}
		return resp.Status
	}

	gauge := func(name string) (float64, map[string]string) {
		families, err := providers.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range families {
			if mf.GetName() != name {
				continue
			}
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				return m.GetGauge().GetValue(), labels
			}
		}
		return 0, nil
	}
	if n, _ := gauge("lethe_dsar_fanout_failing"); n != 0 {
		t.Fatalf("failing fan-outs before any request = %v", n)
	}
	if st := status(dsar.FanoutHealthName); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("fan-out health before any request = %v", st)
	}
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Erasure: &dsarv1.ErasureDetails{}})
	verifiedAt := f.clock.Now()
	f.attest(t, "clio", r.DsarId)
	var problem *dsarv1.FanoutProblem
	eventually.True(t, "the request shows its failing fan-out, retried", func() bool {
		problem = f.get(t, "clio", r.DsarId).GetFanoutProblem()
		return problem.GetAttempts() >= 2
	})
	if problem.Step != dsarv1.FanoutStep_FANOUT_STEP_RETENTION || !strings.Contains(problem.Error, "retention: list holds") ||
		!problem.FirstFailedAt.AsTime().Equal(verifiedAt) || problem.LastFailedAt.AsTime().Before(verifiedAt) {
		t.Fatalf("fan-out problem = %v, want step retention, its error, first failed at %s", problem, verifiedAt)
	}
	if strings.Contains(problem.Error, "subject-ada") {
		t.Fatalf("the fan-out problem names the subject: %q", problem.Error)
	}
	listed, err := f.dsar.ListRequests(f.ctx, &dsarv1.ListRequestsRequest{TenantId: "clio"})
	if err != nil || len(listed.Requests) != 1 || listed.Requests[0].GetFanoutProblem().GetStep() != dsarv1.FanoutStep_FANOUT_STEP_RETENTION {
		t.Fatalf("listed = %v, %v; want the request with its fan-out problem", listed, err)
	}
	n, labels := gauge("lethe_dsar_fanout_failing")
	if n != 1 || labels["step"] != "retention" || labels["tenant"] != "clio" {
		t.Fatalf("failing fan-outs = %v %v, want 1 under step retention, tenant clio", n, labels)
	}
	// Two attempts failed at the same clock time: younger than the
	// threshold, the fan-out is still reported healthy (the report
	// follows each attempt, so the second one's is already made).
	if st := status(dsar.FanoutHealthName); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("fan-out health after a fresh failure = %v, want SERVING below the threshold", st)
	}

	f.clock.Advance(3 * time.Minute)
	eventually.True(t, "the fan-out's health detail turns NOT_SERVING after two minutes of failures", func() bool {
		return status(dsar.FanoutHealthName) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if st := status(dsar.ServiceName); st != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("readiness of %s = %v while a fan-out fails; intake must go on", dsar.ServiceName, st)
	}
	if age, _ := gauge("lethe_dsar_fanout_failing_oldest_age_seconds"); age < 180 {
		t.Fatalf("oldest failing fan-out age = %vs after 3 minutes, want at least 180", age)
	}
	got := f.get(t, "clio", r.DsarId)
	if got.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS || len(got.GetResult().GetTasks()) != 0 {
		t.Fatalf("a request whose fan-out fails is %s with systems %v", got.State, got.GetResult().GetTasks())
	}
	if p := got.FanoutProblem; !p.FirstFailedAt.AsTime().Equal(verifiedAt) || !p.LastFailedAt.AsTime().After(verifiedAt) || p.Attempts <= problem.Attempts {
		t.Fatalf("after 3 minutes the problem is %v; want the same first failure, a later last one and more attempts than %d", p, problem.Attempts)
	}

	// The retention service comes up where the DSAR service dials it.
	back, err := net.Listen("tcp", gone)
	if err != nil {
		t.Fatalf("listen again on %s: %v", gone, err)
	}
	servertest.ServeTCP(t, server.Config{Clock: f.clock, Logger: quiet, Authenticator: testAuthenticator{}}, back, f.ret.Register)
	eventually.True(t, "the fan-out succeeds once retention answers", func() bool {
		got = f.get(t, "clio", r.DsarId)
		return len(got.GetResult().GetTasks()) == 1
	})
	if got.FanoutProblem != nil || got.Result.Tasks[0].SystemId != "crm" {
		t.Fatalf("after the fan-out: problem %v, systems %v", got.FanoutProblem, got.Result.Tasks)
	}
	// The record is cleared right after the commit that the request
	// already shows.
	eventually.True(t, "the fan-out's health detail and the metric clear", func() bool {
		n, _ := gauge("lethe_dsar_fanout_failing")
		return status(dsar.FanoutHealthName) == healthpb.HealthCheckResponse_SERVING && n == 0
	})
}

// unservedAddr is a loopback address nothing serves.
func unservedAddr(t *testing.T) string {
	return fmt.Sprintf("127.0.0.1:%d", brokertest.FreePort(t))
}

// TestAFanOutProblemNamesTheConsentStep: a withdrawal filed while the
// consent service cannot be reached (its intake files it without knowing
// the purpose) fails its fan-out at every retry; the request shows the
// consent step with the error, and cancelling it clears the problem and
// the health detail.
func TestAFanOutProblemNamesTheConsentStep(t *testing.T) {
	f := startWith(t, options{consentAddr: unservedAddr(t)})
	f.tenant(t, "clio", nil)
	health := healthpb.NewHealthClient(f.dsarConn)
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Withdrawal: &dsarv1.WithdrawalDetails{PurposeIds: []string{"no-such-purpose"}}})
	f.attest(t, "clio", r.DsarId)
	var problem *dsarv1.FanoutProblem
	eventually.True(t, "the request shows its failing fan-out", func() bool {
		problem = f.get(t, "clio", r.DsarId).GetFanoutProblem()
		return problem != nil
	})
	if problem.Step != dsarv1.FanoutStep_FANOUT_STEP_CONSENT || !strings.Contains(problem.Error, "consent: withdraw no-such-purpose") ||
		!strings.Contains(problem.Error, "Unavailable") {
		t.Fatalf("fan-out problem = %v, want the consent step with the error", problem)
	}
	f.clock.Advance(5 * time.Minute)
	eventually.True(t, "the fan-out's health detail turns NOT_SERVING", func() bool {
		resp, err := health.Check(f.ctx, &healthpb.HealthCheckRequest{Service: dsar.FanoutHealthName})
		return err == nil && resp.Status == healthpb.HealthCheckResponse_NOT_SERVING
	})
	if _, err := f.dsar.CancelRequest(f.ctx, &dsarv1.CancelRequestRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "a cancelled request's fan-out problem is forgotten", func() bool {
		resp, err := health.Check(f.ctx, &healthpb.HealthCheckRequest{Service: dsar.FanoutHealthName})
		return err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING
	})
	if got := f.get(t, "clio", r.DsarId); got.State != dsarv1.RequestState_REQUEST_STATE_CANCELLED || got.FanoutProblem != nil {
		t.Fatalf("cancelled request: %s with problem %v", got.State, got.FanoutProblem)
	}
}

// TestDeadlines: one month by calendar-month arithmetic (31 January + 1
// month = the last day of February, in leap years too; Art. 12(3) GDPR,
// Regulation 1182/71 Art. 3(2)(c)), ending at the end of the day in
// Helsinki for Clevenio (FI), and on the Monday when that day is a Sunday
// or a Saturday (Art. 3(4)); Clevenio's 14-day SLA beside it, one
// extension within the first month and its refusal after, the overdue and
// due-soon listings, and the verification pause.
func TestDeadlines(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", &registryv1.TenantSettings{Country: "FI", DsarSla: durationpb.New(14 * 24 * time.Hour)})
	f.tenant(t, "clevio", &registryv1.TenantSettings{VerificationPausesDeadline: true})
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 9, 30, 0, 0, time.UTC) }
	helsinki, err := time.LoadLocation("Europe/Helsinki")
	if err != nil {
		t.Fatal(err)
	}
	// end is the last instant of a day in loc: 23:59:59.999999999.
	end := func(y int, m time.Month, d int, loc *time.Location) time.Time {
		return time.Date(y, m, d, 23, 59, 59, 999_999_999, loc)
	}
	fi := func(y int, m time.Month, d int) time.Time { return end(y, m, d, helsinki) }
	access := func(tenant string) *dsarv1.Request {
		return f.file(t, &dsarv1.CreateRequestRequest{TenantId: tenant, Access: &dsarv1.AccessDetails{}})
	}
	for _, tc := range []struct {
		received, statutory time.Time
	}{
		{day(2027, 1, 31), fi(2027, 3, 1)},   // 28 February 2027 is a Sunday
		{day(2028, 1, 31), fi(2028, 2, 29)},  // a Tuesday of a leap year
		{day(2027, 3, 31), fi(2027, 4, 30)},  // a Friday
		{day(2027, 12, 15), fi(2028, 1, 17)}, // 15 January 2028 is a Saturday
	} {
		f.clock.Set(tc.received)
		r := access("clevenio")
		if got := r.Deadline.StatutoryDueAt.AsTime(); !got.Equal(tc.statutory) {
			t.Errorf("received %s: statutory due %s, want %s", tc.received, got, tc.statutory)
		}
		if got, want := r.Deadline.StatutoryDueDate, tc.statutory.Format(time.DateOnly); got != want {
			t.Errorf("received %s: statutory due date %s, want %s", tc.received, got, want)
		}
		if r.Deadline.TimeZone != "Europe/Helsinki" || r.Deadline.HolidayCalendar != "FI" {
			t.Errorf("a Finnish tenant's deadline counts in %q with holidays of %q", r.Deadline.TimeZone, r.Deadline.HolidayCalendar)
		}
		y, m, d := tc.received.Date()
		if got := r.Deadline.SlaDueAt.AsTime(); !got.Equal(fi(y, m, d+14)) {
			t.Errorf("received %s: SLA due %s, want the end of the 14th day after", tc.received, got)
		}
	}

	f.clock.Set(day(2029, 1, 31))
	r := access("clevenio")
	extend := func(id string, months int32) (*dsarv1.ExtendDeadlineResponse, error) {
		return f.dsar.ExtendDeadline(f.ctx, &dsarv1.ExtendDeadlineRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: id,
			Months: months, Reason: "the request is complex: 40 systems"})
	}
	f.clock.Advance(20 * 24 * time.Hour)
	ext, err := extend(r.DsarId, 2)
	if err != nil {
		t.Fatal(err)
	}
	if got := ext.Request.Deadline.StatutoryDueAt.AsTime(); !got.Equal(fi(2029, 4, 30)) {
		t.Fatalf("extended by two months: due %s, want 2029-04-30", got)
	}
	if got := ext.Request.Deadline.SlaDueAt.AsTime(); !got.Equal(fi(2029, 2, 14)) {
		t.Fatalf("the extension moved the SLA to %s", got)
	}
	if _, err := extend(r.DsarId, 1); code(err) != codes.FailedPrecondition || reasonOf(err) != "EXTENSION_REFUSED" {
		t.Fatalf("a second extension = %v", err)
	}
	late := access("clevenio")
	f.clock.Advance(32 * 24 * time.Hour)
	if _, err := extend(late.DsarId, 1); code(err) != codes.FailedPrecondition || reasonOf(err) != "EXTENSION_REFUSED" {
		t.Fatalf("an extension after the first month = %v", err)
	}
	if _, err := extend(late.DsarId, 3); code(err) != codes.InvalidArgument || fields(err) != "months" {
		t.Fatalf("a three-month extension = %v", err)
	}

	// Now (2029-03-24): late is overdue on both deadlines, r only on its
	// SLA; the 2027/2028 requests are long overdue.
	list := func(filter dsarv1.DeadlineFilter, within time.Duration) []string {
		req := &dsarv1.ListRequestsRequest{TenantId: "clevenio", Deadline: filter}
		if within > 0 {
			req.DueWithin = durationpb.New(within)
		}
		resp, err := f.dsar.ListRequests(f.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, x := range resp.Requests {
			ids = append(ids, x.DsarId)
		}
		return ids
	}
	overdue := list(dsarv1.DeadlineFilter_DEADLINE_FILTER_OVERDUE, 0)
	if len(overdue) != 6 {
		t.Fatalf("overdue = %d requests, want all six", len(overdue))
	}
	f.clock.Set(day(2030, 6, 1))
	fresh := access("clevenio")
	f.clock.Advance(10 * 24 * time.Hour)
	if soon := list(dsarv1.DeadlineFilter_DEADLINE_FILTER_DUE_SOON, 5*24*time.Hour); len(soon) != 1 || soon[0] != fresh.DsarId {
		t.Fatalf("due within five days = %v, want the fresh request (SLA in four days)", soon)
	}
	if soon := list(dsarv1.DeadlineFilter_DEADLINE_FILTER_DUE_SOON, 2*24*time.Hour); len(soon) != 0 {
		t.Fatalf("due within two days = %v", soon)
	}

	// Clevio pauses the clock while identity is verified: three days of
	// verification move the deadline by three days.
	f.clock.Set(day(2027, 1, 31))
	p := access("clevio")
	if !p.Deadline.VerificationPausesDeadline || p.Deadline.PausedSince == nil {
		t.Fatalf("a paused request's deadline = %v", p.Deadline)
	}
	f.clock.Advance(3 * 24 * time.Hour)
	verified := f.attest(t, "clevio", p.DsarId)
	if got := verified.Deadline.StatutoryDueAt.AsTime(); !got.Equal(end(2027, 3, 3, time.UTC)) {
		t.Fatalf("after a three-day pause the deadline is %s, want 2027-03-03 (3 February + 1 month)", got)
	}
	if verified.Deadline.Paused.AsDuration() != 72*time.Hour || verified.Deadline.PausedSince != nil {
		t.Fatalf("pause = %v", verified.Deadline)
	}
}

// TestVerificationByCode: a one-time code (kept only as a salted hash)
// with limited attempts and expiry; nothing fans out before it passes.
func TestVerificationByCode(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", &registryv1.TenantSettings{VerificationMethod: commonv1.VerificationMethod_VERIFICATION_METHOD_EMAIL_CODE})
	f.system(t, "clevenio", "crm", sdk, nil, "user.contact")
	crm := f.subscribe(t, "clevenio", "crm", "", answer(subscriber.Erased()))
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Erasure: &dsarv1.ErasureDetails{}})
	verify := func(c string) (*dsarv1.VerifyIdentityResponse, error) {
		return f.dsar.VerifyIdentity(f.ctx, &dsarv1.VerifyIdentityRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: r.DsarId, Code: c})
	}
	if _, err := verify("000000"); code(err) != codes.FailedPrecondition {
		t.Fatalf("verify before a code was sent = %v", err)
	}
	sent, err := f.dsar.StartVerification(f.ctx, &dsarv1.StartVerificationRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: r.DsarId})
	if err != nil || sent.Attempts != 5 {
		t.Fatalf("start verification = %v, %v", sent, err)
	}
	good := f.codes.Last(r.DsarId)
	wrong := "999999"
	if wrong == good {
		wrong = "999998"
	}
	resp, err := verify(wrong)
	if err != nil || resp.Verified || resp.AttemptsLeft != 4 || resp.Request.State != dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY {
		t.Fatalf("a wrong code = %v, %v", resp, err)
	}
	f.settled(t, crm)
	if len(crm.seen()) != 0 {
		t.Fatal("an unverified request fanned out")
	}
	// The code expires.
	f.clock.Advance(16 * time.Minute)
	if _, err := verify(good); code(err) != codes.FailedPrecondition || reasonOf(err) != "CODE_SPENT" {
		t.Fatalf("an expired code = %v", err)
	}
	if _, err := f.dsar.StartVerification(f.ctx, &dsarv1.StartVerificationRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: r.DsarId}); err != nil {
		t.Fatal(err)
	}
	resp, err = verify(f.codes.Last(r.DsarId))
	if err != nil || !resp.Verified || resp.Request.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
		t.Fatalf("the right code = %v, %v", resp, err)
	}
	f.waitState(t, "clevenio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)

	// Spending every attempt of every code rejects the request.
	x := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Erasure: &dsarv1.ErasureDetails{}})
	for range 3 {
		if _, err := f.dsar.StartVerification(f.ctx, &dsarv1.StartVerificationRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: x.DsarId}); err != nil {
			t.Fatal(err)
		}
		c := f.codes.Last(x.DsarId)
		bad := "123456"
		if bad == c {
			bad = "654321"
		}
		for range 5 {
			if _, err := f.dsar.VerifyIdentity(f.ctx, &dsarv1.VerifyIdentityRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: x.DsarId, Code: bad}); err != nil {
				t.Fatal(err)
			}
		}
	}
	got := f.get(t, "clevenio", x.DsarId)
	if got.State != dsarv1.RequestState_REQUEST_STATE_REJECTED || got.Rejection.Reason != dsarv1.RejectionReason_REJECTION_REASON_IDENTITY_NOT_VERIFIED || !got.KeyDestroyed {
		t.Fatalf("after every attempt failed: %s %v key destroyed %v", got.State, got.Rejection, got.KeyDestroyed)
	}
}

// submit streams a system's records for an access request.
func (f *fixture) submit(t testing.TB, tenant, id, system string, recs ...*dsarv1.SubmittedRecord) *dsarv1.SubmitDataResponse {
	t.Helper()
	stream, err := f.dsar.SubmitData(asSystem(system))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&dsarv1.SubmitDataRequest{Part: &dsarv1.SubmitDataRequest_Header{Header: &dsarv1.SubmissionHeader{TenantId: tenant, DsarId: id, SystemId: system}}}); err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if err := stream.Send(&dsarv1.SubmitDataRequest{Part: &dsarv1.SubmitDataRequest_Record{Record: r}}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := stream.CloseAndRecv()
	if err != nil {
		t.Fatalf("submit %s: %v", system, err)
	}
	return resp
}

func record(cat string, basis commonv1.LegalBasis, source, value string) *dsarv1.SubmittedRecord {
	return &dsarv1.SubmittedRecord{Category: &commonv1.DataCategory{Id: cat}, LegalBasis: basis, Source: source, JsonValue: []byte(value)}
}

func (f *fixture) download(t testing.TB, tenant, id string) ([]byte, *dsarv1.PackageInfo) {
	t.Helper()
	stream, err := f.dsar.DownloadPackage(f.ctx, &dsarv1.DownloadPackageRequest{TenantId: tenant, DsarId: id})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	var info *dsarv1.PackageInfo
	for {
		msg, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return buf.Bytes(), info
		}
		if err != nil {
			t.Fatalf("download: %v", err)
		}
		if msg.Info != nil {
			info = msg.Info
		}
		buf.Write(msg.Chunk)
	}
}

type pkg struct {
	Manifest struct {
		Portability bool `json:"portability"`
		LeftOut     int  `json:"left_out"`
		Systems     []struct {
			SystemID string `json:"system_id"`
			Records  int    `json:"records"`
		} `json:"systems"`
	} `json:"manifest"`
	Information struct {
		Controller struct {
			Name string `json:"name"`
		} `json:"controller"`
		Purposes []struct {
			Purpose    string   `json:"purpose"`
			LegalBasis string   `json:"legal_basis"`
			Retention  string   `json:"retention"`
			Recipients []string `json:"recipients"`
		} `json:"purposes"`
		Recipients []struct {
			SystemID string `json:"system_id"`
			Country  string `json:"country"`
		} `json:"recipients"`
		RightToComplain *struct {
			Name string `json:"name"`
		} `json:"right_to_complain"`
	} `json:"information"`
	Data map[string][]struct {
		Category   string          `json:"category"`
		LegalBasis string          `json:"legal_basis"`
		Source     string          `json:"source"`
		Value      json.RawMessage `json:"value"`
	} `json:"Data"`
}

// TestAccessPackage: access across three systems is one package with
// every system's data, its provenance and the Art. 15(1) information;
// portability leaves out data processed on legitimate interests only.
// Confirming delivery destroys the package.
func TestAccessPackage(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", &registryv1.TenantSettings{Country: "FI",
		SupervisoryAuthority: &registryv1.SupervisoryAuthority{Name: "Tietosuojavaltuutetun toimisto", Country: "FI"}})
	f.system(t, "clevenio", "crm", sdk, nil, "user.contact", "user.name")
	f.system(t, "clevenio", "enrichment", sdk, nil, "user.contact.email")
	f.system(t, "clevenio", "billing", manual, nil, "user.financial")
	if _, err := f.registry.PutActivity(f.ctx, &registryv1.PutActivityRequest{RequestId: f.id(), TenantId: "clevenio", Activity: &registryv1.ProcessingActivity{
		ActivityId: "sales", Name: "B2B sales", Purpose: "Selling to business contacts", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS,
		DataSubjectCategories: []string{"business contacts"}, Categories: []*commonv1.DataCategory{{Id: "user.contact"}},
		RecipientSystemIds: []string{"crm", "enrichment"}, Retention: "until the subject asks for deletion"}}); err != nil {
		t.Fatal(err)
	}
	// The SDK systems submit when they receive the access directive.
	submitting := func(system string, recs ...*dsarv1.SubmittedRecord) handler {
		return func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			f.submit(t, ev.Tenant(), ev.Cause().Id, system, recs...)
			return subscriber.DataSubmitted(), nil
		}
	}
	f.subscribe(t, "clevenio", "crm", "", submitting("crm",
		record("user.contact.email", commonv1.LegalBasis_LEGAL_BASIS_CONTRACT, "the subject", `"`+adaEmail+`"`),
		record("user.name", commonv1.LegalBasis_LEGAL_BASIS_CONSENT, "the subject", `{"first":"Ada"}`)))
	f.subscribe(t, "clevenio", "enrichment", "", submitting("enrichment",
		record("user.contact.email", commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS, "https://registry.example.fi/companies/123", `"ada@company.example"`)))

	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Access: &dsarv1.AccessDetails{}})
	f.attest(t, "clevenio", r.DsarId)
	eventually.True(t, "the SDK systems submitted", func() bool {
		got := f.get(t, "clevenio", r.DsarId)
		return taskOf(got, "crm").GetState() == commonv1.TaskState_TASK_STATE_FINAL &&
			taskOf(got, "enrichment").GetState() == commonv1.TaskState_TASK_STATE_FINAL
	})
	// The operator submits for the manual billing system, then closes its
	// task by the stream's end.
	f.submit(t, "clevenio", r.DsarId, "billing", record("user.financial.invoice", commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION, "invoicing", `{"invoice":"2026-17"}`))
	done := f.waitState(t, "clevenio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	if done.Package == nil || done.KeyDestroyed {
		t.Fatalf("completed access request: package %v, key destroyed %v", done.Package, done.KeyDestroyed)
	}
	body, info := f.download(t, "clevenio", r.DsarId)
	if info == nil || info.SizeBytes != int64(len(body)) {
		t.Fatalf("package info %v for %d bytes", info, len(body))
	}
	var p pkg
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatalf("package is not JSON: %v", err)
	}
	if len(p.Data) != 3 || len(p.Data["crm"]) != 2 || len(p.Data["enrichment"]) != 1 || len(p.Data["billing"]) != 1 {
		t.Fatalf("package data = %v", p.Data)
	}
	if p.Data["enrichment"][0].Source != "https://registry.example.fi/companies/123" {
		t.Fatalf("provenance lost: %v", p.Data["enrichment"])
	}
	if len(p.Information.Purposes) != 1 || p.Information.Purposes[0].Retention == "" || len(p.Information.Recipients) != 3 ||
		p.Information.RightToComplain == nil || p.Information.Controller.Name != "clevenio" {
		t.Fatalf("Art. 15(1) information = %+v", p.Information)
	}

	// Portability: only consent and contract data.
	port := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Portability: &dsarv1.PortabilityDetails{}})
	f.attest(t, "clevenio", port.DsarId)
	eventually.True(t, "the SDK systems submitted the portable copy", func() bool {
		return taskOf(f.get(t, "clevenio", port.DsarId), "enrichment").GetState() == commonv1.TaskState_TASK_STATE_FINAL
	})
	f.submit(t, "clevenio", port.DsarId, "billing", record("user.financial.invoice", commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION, "invoicing", `{}`))
	f.waitState(t, "clevenio", port.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	body, _ = f.download(t, "clevenio", port.DsarId)
	var pp pkg
	if err := json.Unmarshal(body, &pp); err != nil {
		t.Fatal(err)
	}
	if !pp.Manifest.Portability || pp.Manifest.LeftOut != 2 || len(pp.Data["crm"]) != 2 || len(pp.Data["enrichment"]) != 0 || len(pp.Data["billing"]) != 0 {
		t.Fatalf("portability package: left out %d, data %v", pp.Manifest.LeftOut, pp.Data)
	}

	// Delivery destroys the package.
	if _, err := f.dsar.ConfirmDelivery(f.ctx, &dsarv1.ConfirmDeliveryRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: r.DsarId}); err != nil {
		t.Fatal(err)
	}
	stream, err := f.dsar.DownloadPackage(f.ctx, &dsarv1.DownloadPackageRequest{TenantId: "clevenio", DsarId: r.DsarId})
	if err == nil {
		_, err = stream.Recv()
	}
	if code(err) != codes.FailedPrecondition {
		t.Fatalf("download after delivery = %v", err)
	}

	// The portable copy was never confirmed: the sweep destroys it when its
	// time is up, not before.
	f.svc.Sweep(f.ctx)
	if f.get(t, "clevenio", port.DsarId).KeyDestroyed {
		t.Fatal("an unconfirmed package was destroyed before its time")
	}
	f.clock.Advance(31 * 24 * time.Hour)
	f.svc.Sweep(f.ctx)
	if !f.get(t, "clevenio", port.DsarId).KeyDestroyed {
		t.Fatal("an unconfirmed package outlived its time")
	}
}

// TestNothingIsLeftOfTheIdentifiers: once requests are closed and
// answered, a byte scan of every file under the data folder — the bbolt
// files of every service, the key file and the JetStream store — finds
// none of the subject's contact identifiers, while the receipts remain.
func TestNothingIsLeftOfTheIdentifiers(t *testing.T) {
	f := startWith(t, options{syncAlways: true})
	f.tenant(t, "cleura", nil)
	f.system(t, "cleura", "crm", sdk, nil, "user.contact", "user.name")
	f.subscribe(t, "cleura", "crm", "", func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		if _, err := f.dsar.GetIdentifiers(asSystem("crm"), &dsarv1.GetIdentifiersRequest{TenantId: "cleura", DsarId: ev.Cause().Id, SystemId: "crm"}); err != nil {
			return subscriber.Outcome{}, err
		}
		if ev.Kind() == contract.KindAccessRequested {
			f.submit(t, "cleura", ev.Cause().Id, "crm", record("user.contact.email", commonv1.LegalBasis_LEGAL_BASIS_CONTRACT, "the subject", `"`+adaEmail+`"`))
			return subscriber.DataSubmitted(), nil
		}
		if ev.Kind() == contract.KindRectificationRequested {
			return subscriber.Rectified(), nil
		}
		return subscriber.Erased(), nil
	})
	erasure := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Erasure: &dsarv1.ErasureDetails{}})
	f.attest(t, "cleura", erasure.DsarId)
	rect := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Rectification: &dsarv1.RectificationDetails{
		Corrections: []*dsarv1.Correction{{Category: &commonv1.DataCategory{Id: "user.contact.phone_number"}, Value: "+46709999999"}}}})
	f.attest(t, "cleura", rect.DsarId)
	access := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Access: &dsarv1.AccessDetails{}})
	f.attest(t, "cleura", access.DsarId)
	cancelled := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Erasure: &dsarv1.ErasureDetails{}})
	if _, err := f.dsar.CancelRequest(f.ctx, &dsarv1.CancelRequestRequest{RequestId: f.id(), TenantId: "cleura", DsarId: cancelled.DsarId}); err != nil {
		t.Fatal(err)
	}
	f.waitState(t, "cleura", erasure.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	f.waitState(t, "cleura", rect.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	f.waitState(t, "cleura", access.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	body, _ := f.download(t, "cleura", access.DsarId)
	if !bytes.Contains(body, []byte(adaEmail)) {
		t.Fatal("the package lacks the submitted e-mail; the scan below would prove nothing")
	}
	// Before delivery the package is still readable: the scan must find
	// nothing in plain text even now.
	secrets := [][]byte{[]byte(adaEmail), []byte(adaPhone), []byte(adaName), []byte("+46709999999")}
	if hits := scan(t, f.data, secrets); len(hits) > 0 {
		t.Fatalf("identifiers in plain text before delivery: %v", hits)
	}
	if _, err := f.dsar.ConfirmDelivery(f.ctx, &dsarv1.ConfirmDeliveryRequest{RequestId: f.id(), TenantId: "cleura", DsarId: access.DsarId}); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{erasure.DsarId, rect.DsarId, access.DsarId, cancelled.DsarId} {
		if r := f.get(t, "cleura", id); !r.KeyDestroyed {
			t.Fatalf("request %s is closed and answered but its key lives", id)
		}
	}
	if hits := scan(t, f.data, secrets); len(hits) > 0 {
		t.Fatalf("identifiers found after close: %v", hits)
	}
	// Every key is gone from the key file: only zeros remain.
	keys, err := os.ReadFile(filepath.Join(f.data, "dsar.keys"))
	if err != nil || len(keys) == 0 || len(bytes.Trim(keys, "\x00")) != 0 {
		t.Fatalf("key file after close: %d bytes, %d not zero, %v", len(keys), len(bytes.Trim(keys, "\x00")), err)
	}
	// The proof remains.
	if n, err := f.svc.VerifyReceipts(); err != nil || n != 4 {
		t.Fatalf("receipts = %d, %v", n, err)
	}
}

// scan reads every file under dir and reports which of secrets it holds.
func scan(t testing.TB, dir string, secrets [][]byte) []string {
	t.Helper()
	var hits []string
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for _, s := range secrets {
			if bytes.Contains(b, s) {
				hits = append(hits, string(s)+" in "+path)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 5 {
		t.Fatalf("scanned only %d files", files)
	}
	return hits
}
