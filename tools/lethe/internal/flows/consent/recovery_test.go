package consent_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// question is one Check, and the decision it got before the restore.
type question struct{ subject, purpose string }

// withBackups gives the consent service a backup folder, restarts it with
// it, and returns the folder.
func (f *fixture) withBackups(t *testing.T) string {
	t.Helper()
	f.stopConsent()
	f.backup.Dir = t.TempDir()
	f.restart(t)
	return f.backup.Dir
}

// restart starts the services again on their data folder, the consent
// service with a meter whose readings the returned reader collects.
func (f *fixture) restart(t *testing.T) *sdkmetric.ManualReader {
	t.Helper()
	reader := sdkmetric.NewManualReader()
	f.telemetry = &telemetry.Providers{Meter: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))}
	f.host.Restart(t)
	return reader
}

// restoreFrom stops the consent service and puts the backup in place of
// its file, as an operator restoring the volume does.
func (f *fixture) restoreFrom(t *testing.T, backupDir string) {
	t.Helper()
	f.stopConsent()
	in, err := os.Open(filepath.Join(backupDir, "consent.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(filepath.Join(f.host.DataDir, "consent.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}

// drained waits until the relay has published every staged event.
func (f *fixture) drained(t *testing.T) {
	t.Helper()
	eventually.Succeeds(t, "the relay publishes every staged event", func() error {
		if n := f.svc.Outbox.Depth(); n > 0 {
			return fmt.Errorf("%d events unpublished", n)
		}
		return nil
	})
}

// limitMessages counts the limit events on the platform stream, by kind.
func (f *fixture) limitMessages(t *testing.T) map[contract.Kind]uint64 {
	t.Helper()
	stream, err := f.deps.JetStream.Stream(f.ctx, broker.DefaultStreamConfig().Name)
	if err != nil {
		t.Fatal(err)
	}
	out := map[contract.Kind]uint64{}
	for _, k := range contract.Limits {
		natsSubject, err := contract.KindSubject(contract.AllTenants, k)
		if err != nil {
			t.Fatal(err)
		}
		info, err := stream.Info(f.ctx, jetstream.WithSubjectFilter(natsSubject))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range info.State.Subjects {
			out[k] += n
		}
	}
	return out
}

// metricValue reads a counter's sum or a gauge's value; -1 when absent.
func metricValue(t *testing.T, reader *sdkmetric.ManualReader, name string) int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != name {
				continue
			}
			var v int64
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					v += p.Value
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					v += p.Value
				}
			}
			return v
		}
	}
	return -1
}

// TestRestoreRecoversLimitsFromTheStream: the consent store is restored
// from an hour's-old-style backup taken before a withdrawal (Art. 7(3)), an
// objection (Art. 21), a restriction (Art. 18) and two lifts, and before a
// grant's lifetime ran out. At start the service reads its own limit events
// back from the stream and answers every Check exactly as before the
// restore, without publishing any of them again; a second restart
// recovers nothing.
func TestRestoreRecoversLimitsFromTheStream(t *testing.T) {
	f := start(t)
	backups := f.withBackups(t)
	clio(t, f)
	teacher := &consentv1.SubjectAttributes{Role: "teacher"}
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.record(t, "clio", "dag", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.record(t, "clio", "gil", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	restrict := func(subject string) string {
		t.Helper()
		resp, err := f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: subject,
			Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED})
		if err != nil {
			t.Fatal(err)
		}
		return resp.RestrictionId
	}
	lift := func(id string) {
		t.Helper()
		if _, err := f.consent.LiftRestriction(f.ctx, &consentv1.LiftRestrictionRequest{RequestId: f.id(), TenantId: "clio", RestrictionId: id,
			SubjectInformedAt: timestamppb.New(f.clock.Now())}); err != nil {
			t.Fatal(err)
		}
	}
	eveRestriction := restrict("eve")

	f.drained(t)
	if err := f.svc.BackupNow(); err != nil {
		t.Fatal(err)
	}

	// After the backup: ada withdraws, bo objects to profiling, cy's data
	// is restricted, eve's restriction (from before the backup) is lifted,
	// fay's is applied and lifted, and dag's statistics consent runs out.
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	_, err := f.consent.RecordObjection(f.ctx, &consentv1.RecordObjectionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "bo",
		Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES, PurposeIds: []string{"profiling"}})
	if err != nil {
		t.Fatal(err)
	}
	cyRestriction := restrict("cy")
	lift(eveRestriction)
	lift(restrict("fay"))
	// On the same subjects, bytes that are no event and a withdrawal that
	// another source published: neither is the consent service's to
	// recover, and neither stops the catch-up.
	natsSubject, err := contract.KindSubject("clio", contract.KindConsentWithdrawn)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := contract.Marshal(&eventsv1.Event{Id: "0193a1b2-0000-7000-8000-000000000001", TenantId: "clio", SubjectId: "gil", Sequence: 1,
		Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: "not-a-record"}, OccurredAt: timestamppb.New(f.clock.Now()),
		Source: "lethe/dsar", Body: &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: []string{"marketing"}}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, data := range [][]byte{[]byte("\xff not an event"), foreign} {
		if _, err := f.deps.JetStream.Publish(f.ctx, natsSubject, data); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(366 * 24 * time.Hour) // the statistics cookie lives a year
	if n, err := f.svc.ExpireDue(f.ctx); err != nil || n != 1 {
		t.Fatalf("expired %d, %v; want dag's statistics consent", n, err)
	}
	f.drained(t)

	questions := []question{{"ada", "marketing"}, {"bo", "profiling"}, {"bo", "marketing"}, {"cy", "profiling"}, {"cy", "mail.transactional"},
		{"eve", "profiling"}, {"fay", "profiling"}, {"dag", "cookies.statistics"}, {"gil", "marketing"}}
	before := map[question]*consentv1.Decision{}
	for _, q := range questions {
		before[q] = f.check(t, "clio", q.subject, q.purpose, teacher)
	}
	// The answers the restore must not change, as the law has them.
	expect(t, before[question{"ada", "marketing"}], false, consentv1.Reason_REASON_WITHDRAWN)
	expect(t, before[question{"bo", "profiling"}], false, consentv1.Reason_REASON_OBJECTED)
	expect(t, before[question{"cy", "profiling"}], false, consentv1.Reason_REASON_RESTRICTED)
	expect(t, before[question{"eve", "profiling"}], true, consentv1.Reason_REASON_LEGITIMATE_INTEREST)
	expect(t, before[question{"dag", "cookies.statistics"}], false, consentv1.Reason_REASON_EXPIRED)
	expect(t, before[question{"gil", "marketing"}], true, consentv1.Reason_REASON_GRANTED)
	published := f.limitMessages(t)
	want := map[contract.Kind]uint64{contract.KindConsentWithdrawn: 4, contract.KindObjectionRecorded: 1,
		contract.KindRestrictionApplied: 3, contract.KindRestrictionLifted: 2}
	for k, n := range want {
		if published[k] != n {
			t.Fatalf("stream holds %v, want %v", published, want)
		}
	}

	f.restoreFrom(t, backups)
	metrics := f.restart(t)

	// The recovered changes reach the read replicas (their replication
	// entries go through the outbox too), but no limit event is published
	// again: the systems have it.
	f.drained(t)
	if again := f.limitMessages(t); !maps.Equal(again, published) {
		t.Fatalf("after recovery the stream holds %v limit events, before it %v: recovery published some again", again, published)
	}
	for _, q := range questions {
		got, was := f.check(t, "clio", q.subject, q.purpose, teacher), before[q]
		if got.Allowed != was.Allowed || got.Reason != was.Reason {
			t.Errorf("%s/%s after the restore: %v %s, before it: %v %s", q.subject, q.purpose, got.Allowed, got.Reason, was.Allowed, was.Reason)
		}
	}
	// ada's withdrawal, bo's objection, cy's restriction, eve's lift,
	// fay's restriction and lift, dag's expiry.
	if n := metricValue(t, metrics, "lethe.consent.recovery.recovered"); n != 7 {
		t.Errorf("recovered %d limit events, want 7", n)
	}
	if n := metricValue(t, metrics, "lethe.consent.recovery.incomplete"); n != 0 {
		t.Errorf("recovery incomplete = %d, want 0", n)
	}
	// The expiry was recovered, not left for the sweep to publish again.
	if n, err := f.svc.ExpireDue(f.ctx); err != nil || n != 0 {
		t.Fatalf("the sweep expired %d (%v) after the restore, want 0", n, err)
	}
	// Whatever was staged (the writer's heartbeats, for its replicas)
	// is published; no limit event among it.
	f.drained(t)
	if got := f.limitMessages(t); !maps.Equal(got, published) {
		t.Fatalf("stream holds %v after the restore, %v before it", got, published)
	}

	// The recovered withdrawal says where it came from.
	history, err := f.consent.ListConsentHistory(f.ctx, &consentv1.ListConsentHistoryRequest{TenantId: "clio", SubjectId: "ada"})
	if err != nil {
		t.Fatal(err)
	}
	last := history.Records[len(history.Records)-1]
	if len(history.Records) != 2 || last.Action != consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW ||
		last.RecoveredFrom.GetEventId() == "" || last.RecoveredFrom.GetStreamSequence() == 0 {
		t.Fatalf("ada's history after the restore: %v", history.Records)
	}
	// The recovered restriction keeps its id: the lift the systems know
	// it by works, and says it was made after the recovery.
	lifted, err := f.consent.LiftRestriction(f.ctx, &consentv1.LiftRestrictionRequest{RequestId: f.id(), TenantId: "clio", RestrictionId: cyRestriction,
		SubjectInformedAt: timestamppb.New(f.clock.Now())})
	if err != nil {
		t.Fatal(err)
	}
	if lifted.Restriction.RecoveredFrom.GetEventId() == "" || lifted.Restriction.LiftRecoveredFrom != nil {
		t.Fatalf("lifted recovered restriction: %v", lifted.Restriction)
	}
	// A new event about the subject continues the subject's sequence
	// past the lost ones, so that no subscriber takes it for an old one.
	lastSeq := f.subjectSequences(t, "cy")
	if len(lastSeq) != 2 || lastSeq[1] <= lastSeq[0] {
		t.Fatalf("cy's event sequences %v: the lift after the restore must follow the recovered restriction", lastSeq)
	}

	// A second restart finds everything held.
	f.stopConsent()
	metrics = f.restart(t)
	if n := metricValue(t, metrics, "lethe.consent.recovery.recovered"); n > 0 {
		t.Errorf("the second restart recovered %d events", n)
	}
	expect(t, f.check(t, "clio", "ada", "marketing", teacher), false, consentv1.Reason_REASON_WITHDRAWN)
	if history, err := f.consent.ListConsentHistory(f.ctx, &consentv1.ListConsentHistoryRequest{TenantId: "clio", SubjectId: "ada"}); err != nil || len(history.Records) != 2 {
		t.Fatalf("ada's history after a second restart: %v, %v", history.GetRecords(), err)
	}
}

// reasonOf returns the ErrorInfo reason of a gRPC error.
func reasonOf(err error) string {
	reason, _ := infoOf(err)
	return reason
}

// infoOf returns the reason and metadata of an error's ErrorInfo.
func infoOf(err error) (string, map[string]string) {
	for _, d := range status.Convert(err).Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Reason, info.Metadata
		}
	}
	return "", nil
}

// streamEvents returns the consent service's events on the stream, in
// stream order.
func (f *fixture) streamEvents(t *testing.T) []*eventsv1.Event {
	t.Helper()
	stream, err := f.deps.JetStream.Stream(f.ctx, broker.DefaultStreamConfig().Name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(f.ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []*eventsv1.Event
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		msg, err := stream.GetMsg(f.ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		ev := &eventsv1.Event{}
		if err := proto.Unmarshal(msg.Data, ev); err == nil && ev.Source == "lethe/consent" {
			out = append(out, ev)
		}
	}
	return out
}

// subjectSequences returns the sequences of the subject's events on the
// stream, in stream order.
func (f *fixture) subjectSequences(t *testing.T, subject string) []uint64 {
	t.Helper()
	f.drained(t)
	var out []uint64
	for _, ev := range f.streamEvents(t) {
		if ev.SubjectId == subject {
			out = append(out, ev.Sequence)
		}
	}
	return out
}

// TestRestoreBeyondTheStreamsReachFailsClosed: a backup older than what
// the stream still holds cannot be proven complete (a withdrawal in the
// lost span would be gone), so the restored service refuses Check with
// FAILED_PRECONDITION, reports lethe.consent.recovery.incomplete, and keeps
// refusing across restarts until an operator accepts the loss.
func TestRestoreBeyondTheStreamsReachFailsClosed(t *testing.T) {
	f := start(t)
	backups := f.withBackups(t)
	clio(t, f)
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.drained(t)
	if err := f.svc.BackupNow(); err != nil {
		t.Fatal(err)
	}
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	f.drained(t)

	// The stream keeps events a second now: the withdrawal ages out.
	cfg := broker.DefaultStreamConfig()
	cfg.MaxAge, cfg.Duplicates = time.Second, time.Second
	stream, err := broker.EnsureStream(f.ctx, f.deps.JetStream, cfg)
	if err != nil {
		t.Fatal(err)
	}
	eventually.Poll{Interval: 50 * time.Millisecond}.Succeeds(t, "the stream's events age out", func() error {
		info, err := stream.Info(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs > 0 {
			return fmt.Errorf("the stream holds %d messages", info.State.Msgs)
		}
		return nil
	})

	f.restoreFrom(t, backups)
	metrics := f.restart(t)
	refused := func() {
		t.Helper()
		_, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing"})
		if status.Code(err) != codes.FailedPrecondition || reasonOf(err) != apierror.ReasonRecoveryIncomplete ||
			!strings.Contains(err.Error(), "restored from a backup older than the event stream reaches") {
			t.Fatalf("Check after a restore beyond the stream's reach: %v", err)
		}
		if _, err := f.consent.CheckBatch(f.ctx, &consentv1.CheckBatchRequest{TenantId: "clio", Items: []*consentv1.CheckBatchItem{{SubjectId: "ada", PurposeId: "marketing"}}}); status.Code(err) != codes.FailedPrecondition {
			t.Fatalf("CheckBatch after a restore beyond the stream's reach: %v", err)
		}
	}
	refused()
	if n := metricValue(t, metrics, "lethe.consent.recovery.incomplete"); n != 1 {
		t.Fatalf("recovery incomplete = %d, want 1", n)
	}

	f.stopConsent()
	metrics = f.restart(t)
	refused()
	if n := metricValue(t, metrics, "lethe.consent.recovery.incomplete"); n != 1 {
		t.Fatalf("after a restart, recovery incomplete = %d, want 1", n)
	}

	// An operator accepts the loss: Check answers again, from what the
	// store holds, which is the cost of accepting (ada's withdrawal is
	// gone with the gap).
	if _, err := f.consent.AcceptRecoveryGap(f.ctx, &consentv1.AcceptRecoveryGapRequest{RequestId: f.id()}); violations(t, err)[0] != "reason" {
		t.Fatalf("accepting without a reason: %v", err)
	}
	accept := &consentv1.AcceptRecoveryGapRequest{RequestId: f.id(), Reason: "incident 7: the newsletter and CRM owners re-applied the week's unsubscribes by hand"}
	first, err := f.consent.AcceptRecoveryGap(f.ctx, accept)
	if err != nil {
		t.Fatal(err)
	}
	if first.GapUntil == nil || first.GapFrom == nil || !first.GapFrom.AsTime().Before(first.GapUntil.AsTime()) {
		t.Fatalf("accepted gap %v", first)
	}
	again, err := f.consent.AcceptRecoveryGap(f.ctx, accept)
	if err != nil || !proto.Equal(again, first) {
		t.Fatalf("the same acceptance again: %v, %v; want %v", again, err, first)
	}
	if _, err := f.consent.AcceptRecoveryGap(f.ctx, &consentv1.AcceptRecoveryGapRequest{RequestId: f.id(), Reason: "again"}); reasonOf(err) != "NO_RECOVERY_GAP" {
		t.Fatalf("accepting when no gap stands: %v", err)
	}
	expect(t, f.check(t, "clio", "ada", "marketing", nil), true, consentv1.Reason_REASON_GRANTED)
	if n := metricValue(t, metrics, "lethe.consent.recovery.incomplete"); n != 0 {
		t.Fatalf("after the acceptance, recovery incomplete = %d, want 0", n)
	}
	// The acceptance lasts: the next start replays from it, and with the
	// stream keeping its thirty days again nothing it needs is gone.
	if _, err := broker.EnsureStream(f.ctx, f.deps.JetStream, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	f.stopConsent()
	metrics = f.restart(t)
	expect(t, f.check(t, "clio", "ada", "marketing", nil), true, consentv1.Reason_REASON_GRANTED)
	if n := metricValue(t, metrics, "lethe.consent.recovery.incomplete"); n != 0 {
		t.Fatalf("after the acceptance and a restart, recovery incomplete = %d, want 0", n)
	}
}
