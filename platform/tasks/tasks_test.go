package tasks_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tasks/taskstest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

// The tracker runs as an owning service runs it (platform/tasks/taskstest).
var (
	bucketCompleted = taskstest.BucketCompleted
	bucketFinal     = taskstest.BucketFinal
	schema          = taskstest.Schema
	erasure         = taskstest.Erasure
	sdk             = taskstest.SDK
)

type fixture struct{ *taskstest.Fixture }

func start(t testing.TB) *fixture { return startWith(t, taskstest.Options{}) }

func startWith(t testing.TB, opts taskstest.Options) *fixture {
	t.Helper()
	return &fixture{taskstest.Start(t, opts)}
}

// answer publishes an outcome as a system does, on a subject naming
// subjectSystem (normally the reporting system itself).
func (f *fixture) answer(t *testing.T, ev *eventsv1.Event, subjectSystem, system string, kind eventsv1.OutcomeKind) {
	t.Helper()
	o := &eventsv1.Outcome{
		EventId: ev.Id, TenantId: ev.TenantId, SystemId: system, SubjectId: ev.SubjectId, Cause: ev.Cause,
		Kind: kind, ReportedAt: timestamppb.New(f.Clock.Now()),
	}
	if kind == eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED {
		o.Retained = []*eventsv1.Retention{{
			Categories:  []*commonv1.DataCategory{{Id: "user.financial.invoice"}},
			LegalBasis:  commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
			BasisDetail: "Swedish Accounting Act (1999:1078), ch. 7 § 2",
			Until:       timestamppb.New(time.Date(2031, 12, 31, 0, 0, 0, 0, time.UTC)),
		}}
	}
	f.send(t, subjectSystem, o)
}

// send publishes o on the outcome subject of subjectSystem.
func (f *fixture) send(t *testing.T, subjectSystem string, o *eventsv1.Outcome) {
	t.Helper()
	natsSubject, err := contract.OutcomeSubject(o.TenantId, subjectSystem)
	if err != nil {
		t.Fatal(err)
	}
	payload, err := contract.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	msg := &nats.Msg{Subject: natsSubject, Data: payload, Header: contract.OutcomeHeaders(o)}
	if _, err := f.JS.PublishMsg(context.Background(), msg); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) waitTask(t *testing.T, eventID, system string, want tasks.State) tasks.Task {
	t.Helper()
	var found tasks.Task
	eventually.Succeeds(t, fmt.Sprintf("task %s/%s becomes %s", eventID, system, want), func() error {
		all, err := f.Tracker.List(tasks.Filter{SystemID: system})
		if err != nil {
			t.Fatal(err)
		}
		for _, task := range all {
			if task.EventID == eventID && task.State == want {
				found = task
				return nil
			}
		}
		return fmt.Errorf("tasks: %+v", all)
	})
	return found
}

func TestCauseCompletesWhenEverySystemAnswered(t *testing.T) {
	f := start(t)
	ev := erasure("req-1")
	f.Publish(t, ev, append(sdk("crm", "billing"), tasks.Expect{SystemID: "carrier", Mode: commonv1.AnswerMode_ANSWER_MODE_MANUAL}))

	f.answer(t, ev, "crm", "crm", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	f.waitTask(t, ev.Id, "crm", tasks.StateFinal)
	f.answer(t, ev, "billing", "billing", eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED)
	f.waitTask(t, ev.Id, "billing", tasks.StateFinal)
	if got := f.Completed(t, "req-1"); got != "" {
		t.Fatalf("cause completed (%s) while the manual task is open", got)
	}

	// An operator answers for the manual system.
	manual := &eventsv1.Outcome{EventId: ev.Id, TenantId: "clio", SystemId: "carrier", Cause: ev.Cause,
		Kind: eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND, ReportedAt: timestamppb.New(f.Clock.Now())}
	if err := f.Tracker.RecordOutcome(manual); err != nil {
		t.Fatal(err)
	}
	if got, want := f.Completed(t, "req-1"), "billing=RETAINED,carrier=NOT_FOUND,crm=ERASED"; got != want {
		t.Fatalf("completion = %q, want %q", got, want)
	}

	// A duplicate answer changes nothing and completes nothing twice (the
	// OnCauseComplete above fails on a second completion).
	f.answer(t, ev, "crm", "crm", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	if err := f.Tracker.RecordOutcome(manual); err != nil {
		t.Fatal(err)
	}
	f.waitTask(t, ev.Id, "crm", tasks.StateFinal)
	var finals []string
	if err := f.DB.View(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, bucketFinal).ForEach(func(k, v []byte) error {
			finals = append(finals, strings.TrimPrefix(string(k), ev.Id+"/")+"="+string(v))
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if got, want := strings.Join(finals, ","), "billing=RETAINED,carrier=NOT_FOUND,crm=ERASED"; got != want {
		t.Fatalf("OnTaskFinal saw %q, want each task once: %q", got, want)
	}
	unknown := &eventsv1.Outcome{EventId: "no-such-event", SystemId: "crm"}
	if err := f.Tracker.RecordOutcome(unknown); err != tasks.ErrNoSuchTask {
		t.Fatalf("RecordOutcome for an unknown task = %v, want ErrNoSuchTask", err)
	}
}

func TestNoExpectedSystemCompletesAtOnce(t *testing.T) {
	f := start(t)
	f.Publish(t, erasure("req-empty"), nil)
	var found bool
	if err := f.DB.View(func(tx *bolt.Tx) error {
		found = store.BucketTx(tx, bucketCompleted).Get([]byte("clio/req-empty")) != nil
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !found {
		t.Fatal("a cause with no system to answer did not complete")
	}
}

// A cause published to no system is published, and complete; one never
// published, or published for another tenant, is not, including in a file
// written before the tracker marked causes without tasks.
func TestFanoutTellsACauseWithoutTasksFromAnUnknownOne(t *testing.T) {
	f := start(t)
	f.Publish(t, erasure("req-empty"), nil)
	f.Publish(t, erasure("req-tasks"), sdk("crm"))
	cause := func(id string) *commonv1.Cause {
		return &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: id}
	}
	want := func(tr *tasks.Tracker, tenant, id string, published bool, n int) {
		t.Helper()
		got, ok, err := tr.Fanout(tenant, cause(id))
		if err != nil || ok != published || len(got) != n {
			t.Fatalf("fan-out of %s/%s = %d tasks, published %v (%v); want %d, %v", tenant, id, len(got), ok, err, n, published)
		}
	}
	want(f.Tracker, "clio", "req-empty", true, 0)
	want(f.Tracker, "clio", "req-tasks", true, 1)
	want(f.Tracker, "clio", "req-none", false, 0)
	want(f.Tracker, "cleura", "req-empty", false, 0)

	// As a file of an earlier version: no marker, and no record that
	// markers were made. A tracker opened on it makes them.
	if err := f.DB.Update(func(tx *bolt.Tx) error {
		c := store.BucketTx(tx, store.BucketTasksByCause).Cursor()
		for k, _ := c.First(); k != nil; k, _ = c.Next() {
			if strings.HasSuffix(string(k), "\x00\x00") { // a marker: its system id is empty
				if err := c.Delete(); err != nil {
					return err
				}
			}
		}
		return store.BucketTx(tx, store.BucketMeta).Delete([]byte("tasks.cause_markers"))
	}); err != nil {
		t.Fatal(err)
	}
	want(f.Tracker, "clio", "req-empty", false, 0)
	ob, err := outbox.New(f.DB, outbox.Config{Source: "lethe/test", Clock: f.Clock, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	reopened, err := tasks.New(f.DB, tasks.Config{Owner: "test", Outbox: ob, Clock: f.Clock})
	if err != nil {
		t.Fatal(err)
	}
	want(reopened, "clio", "req-empty", true, 0)
	want(reopened, "clio", "req-tasks", true, 1)
	want(reopened, "clio", "req-none", false, 0)
}

func TestSystemCannotAnswerForAnother(t *testing.T) {
	f := start(t)
	ev := erasure("req-2")
	f.Publish(t, ev, sdk("crm", "newsletter"))
	// newsletter publishes, on its own subject, an outcome claiming to be crm's.
	f.answer(t, ev, "newsletter", "crm", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	// Then answers for itself; its task closes, crm's stays open.
	f.answer(t, ev, "newsletter", "newsletter", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	f.waitTask(t, ev.Id, "newsletter", tasks.StateFinal)
	f.waitTask(t, ev.Id, "crm", tasks.StateOpen)
}

// An outcome comes from a system, not through the gRPC edge: the tracker
// is its edge. One kept "until" the year 34089, or a RETAINED answer that
// says nothing of what it keeps, closes its task FAILED with the reason,
// and nothing of it is kept.
func TestOutcomeOutsideTheContractFailsItsTask(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "tasks"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	f := startWith(t, taskstest.Options{Meter: providers.Meter.Meter("test")})
	retained := func(ev *eventsv1.Event, until time.Time) *eventsv1.Outcome {
		return &eventsv1.Outcome{
			EventId: ev.Id, TenantId: ev.TenantId, SystemId: "billing", SubjectId: ev.SubjectId, Cause: ev.Cause,
			Kind: eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, ReportedAt: timestamppb.New(f.Clock.Now()),
			Retained: []*eventsv1.Retention{{
				Categories:  []*commonv1.DataCategory{{Id: "user.financial.invoice"}},
				LegalBasis:  commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
				BasisDetail: "Swedish Accounting Act (1999:1078), ch. 7 § 2",
				Until:       timestamppb.New(until),
			}},
		}
	}
	far, unlisted, valid := erasure("req-far"), erasure("req-unlisted"), erasure("req-valid")
	for _, ev := range []*eventsv1.Event{far, unlisted, valid} {
		f.Publish(t, ev, sdk("billing"))
	}
	f.send(t, "billing", retained(far, time.Date(34089, 1, 1, 0, 0, 0, 0, time.UTC)))
	bare := retained(unlisted, time.Time{})
	bare.Retained = nil
	f.send(t, "billing", bare)
	f.send(t, "billing", retained(valid, time.Date(2031, 12, 31, 0, 0, 0, 0, time.UTC)))

	for ev, field := range map[*eventsv1.Event]string{far: "retained[0].until", unlisted: "retained"} {
		task := f.waitTask(t, ev.Id, "billing", tasks.StateFinal)
		o, err := task.OutcomeProto()
		if err != nil {
			t.Fatal(err)
		}
		if o.Kind != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || len(o.Retained) != 0 || !strings.Contains(o.Reason, "breaks the contract") {
			t.Fatalf("task of %s closed on %v, want FAILED naming the breach and keeping nothing of it", ev.Cause.Id, o)
		}
		if ev == far && !strings.Contains(o.Reason, field) {
			t.Fatalf("reason %q does not name %s", o.Reason, field)
		}
	}
	task := f.waitTask(t, valid.Id, "billing", tasks.StateFinal)
	if o, err := task.OutcomeProto(); err != nil || o.Kind != eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED {
		t.Fatalf("the outcome within the contract closed its task as %v (%v)", o, err)
	}
	if n := refusedOutcomes(t, providers); n != 2 {
		t.Fatalf("lethe_tasks_outcomes_refused_total = %v, want 2", n)
	}
}

func refusedOutcomes(t *testing.T, providers *telemetry.Providers) float64 {
	t.Helper()
	families, err := providers.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() == "lethe_tasks_outcomes_refused_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}

func TestStalledTaskIsResentAndALateAnswerClosesIt(t *testing.T) {
	f := start(t)
	ev := erasure("req-3")
	f.Publish(t, ev, sdk("crm", "silent"))
	f.answer(t, ev, "crm", "crm", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	f.waitTask(t, ev.Id, "crm", tasks.StateFinal)

	if n, err := f.Tracker.Resend(context.Background()); err != nil || n != 0 {
		t.Fatalf("Resend before anything is due = %d, %v", n, err)
	}
	f.Clock.Advance(61 * time.Minute)
	if n, err := f.Tracker.Resend(context.Background()); err != nil || n != 1 {
		t.Fatalf("Resend = %d, %v; want the silent system's task only", n, err)
	}
	stalled := f.waitTask(t, ev.Id, "silent", tasks.StateStalled)
	if stalled.Resends != 1 {
		t.Fatalf("resends = %d, want 1", stalled.Resends)
	}

	// The re-send reaches the stream with the same event id.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := f.JS.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"lethe.clio.erasure.requested"}})
	if err != nil {
		t.Fatal(err)
	}
	copies := 0
	for copies < 2 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %d copies: %v", copies, err)
		}
		if msg.Headers().Get(contract.HeaderID) == ev.Id {
			copies++
		}
	}

	f.answer(t, ev, "silent", "silent", eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND)
	f.waitTask(t, ev.Id, "silent", tasks.StateFinal)
	if got := f.Completed(t, "req-3"); got != "crm=ERASED,silent=NOT_FOUND" {
		t.Fatalf("completion = %q", got)
	}
	f.Clock.Advance(2 * time.Hour)
	if n, err := f.Tracker.Resend(context.Background()); err != nil || n != 0 {
		t.Fatalf("Resend after the answer = %d, %v; want nothing", n, err)
	}
}

func TestRemovedSystemClosesItsOpenTasks(t *testing.T) {
	f := start(t)
	ev := erasure("req-4")
	f.Publish(t, ev, sdk("crm", "retired"))
	f.answer(t, ev, "crm", "crm", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED)
	f.waitTask(t, ev.Id, "crm", tasks.StateFinal)
	if err := f.DB.Update(func(tx *bolt.Tx) error { return f.Tracker.CloseSystemTx(tx, "clio", "retired") }); err != nil {
		t.Fatal(err)
	}
	task := f.waitTask(t, ev.Id, "retired", tasks.StateFinal)
	if task.Resolution != tasks.ResolutionSystemRemoved {
		t.Fatalf("resolution = %s", task.Resolution)
	}
	if got := f.Completed(t, "req-4"); got != "crm=ERASED,retired=NOT_APPLICABLE" {
		t.Fatalf("completion = %q", got)
	}
}

// TestDeadLetteredTaskFails gives up on an event the way a system's
// consumer does after its maximum deliveries; JetStream's MAX_DELIVERIES
// advisory reaches the tracker through the dead-letter stream and the task
// fails where an operator listing shows it.
func TestDeadLetteredTaskFails(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "tasks"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	f := startWith(t, taskstest.Options{Meter: providers.Meter.Meter("test")})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cons, err := f.JS.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
		Durable:       "poisoned",
		FilterSubject: "lethe.clio.erasure.requested",
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxDeliver:    2,
		Metadata:      map[string]string{contract.MetadataSystem: "poisoned"},
	})
	if err != nil {
		t.Fatal(err)
	}
	ev := erasure("req-5")
	f.Publish(t, ev, sdk("poisoned"))
	for range 2 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := msg.Nak(); err != nil {
			t.Fatal(err)
		}
	}
	// The server notices the exhausted message, and publishes the advisory,
	// when the consumer pulls again, as a subscriber keeps doing. The pull
	// is the trigger, not the check: a short wait proves nothing.
	third, _ := cons.Next(jetstream.FetchMaxWait(200 * time.Millisecond))
	task := f.waitTask(t, ev.Id, "poisoned", tasks.StateFinal)
	// The advisory reached the tracker, so the server has given up on the
	// message: it is delivered no more and nothing waits to be.
	info, err := cons.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if third != nil || info.Delivered.Consumer != 2 || info.NumPending != 0 || info.NumAckPending != 0 {
		t.Fatalf("after MaxDeliver 2: third delivery %v, %d delivered, %d pending, %d unacknowledged", third != nil, info.Delivered.Consumer, info.NumPending, info.NumAckPending)
	}
	o, err := task.OutcomeProto()
	if err != nil {
		t.Fatal(err)
	}
	if task.Resolution != tasks.ResolutionDeadLettered || o.Kind != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(o.Reason, "2 deliveries") {
		t.Fatalf("task = %+v, outcome %v; want dead-lettered and FAILED", task, o)
	}
	failed, err := f.Tracker.List(tasks.Filter{TenantID: "clio", State: tasks.StateFinal, SystemID: "poisoned"})
	if err != nil || len(failed) != 1 {
		t.Fatalf("operator listing = %v, %v", failed, err)
	}

	// Operators see the failure, by owner, and the lag of the tracker's
	// own consumers, under the names docs/operations.md alerts on.
	families, err := providers.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			switch mf.GetName() {
			case "lethe_tasks_closed_total":
				got[fmt.Sprintf("closed{%s,%s,%s}", labels["owner"], labels["resolution"], labels["outcome"])] = m.GetCounter().GetValue()
			case "lethe_consumer_pending":
				got[fmt.Sprintf("pending{%s,%s}", labels["stream"], labels["consumer"])] = m.GetGauge().GetValue()
			}
		}
	}
	for _, key := range []string{
		"closed{test,dead_lettered,OUTCOME_KIND_FAILED}",
		"pending{LETHE,lethe-test-outcomes}",
		"pending{LETHE_DEAD_LETTERS,lethe-test-dead-letters}",
	} {
		if _, ok := got[key]; !ok {
			t.Errorf("no %s among %v", key, got)
		}
	}
	if n := got["closed{test,dead_lettered,OUTCOME_KIND_FAILED}"]; n != 1 {
		t.Errorf("%v failed tasks counted, want 1", n)
	}
}

// TestStopDuringStartUpIsNotAFailure: a service told to stop while its
// tracker still creates its consumers stops cleanly.
func TestStopDuringStartUpIsNotAFailure(t *testing.T) {
	ns := brokertest.Start(t)
	_, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	db := storetest.Open(t, schema)
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/test"})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	tracker, err := tasks.New(db, tasks.Config{Owner: "test", Outbox: ob})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := tracker.Run(ctx, js); err != nil {
		t.Fatalf("Run with a stopped context = %v, want nil", err)
	}
}

// A system's outcomes stored together, as one OutcomeBatch, close each of
// their tasks.
func TestOutcomeBatchClosesEachTask(t *testing.T) {
	f := start(t)
	first, second := erasure("req-b1"), erasure("req-b2")
	f.Publish(t, first, sdk("crm"))
	f.Publish(t, second, sdk("crm"))
	var outcomes []*eventsv1.Outcome
	for _, ev := range []*eventsv1.Event{first, second} {
		outcomes = append(outcomes, &eventsv1.Outcome{EventId: ev.Id, TenantId: "clio", SystemId: "crm", SubjectId: ev.SubjectId,
			Cause: ev.Cause, Kind: eventsv1.OutcomeKind_OUTCOME_KIND_ERASED, ReportedAt: timestamppb.New(f.Clock.Now())})
	}
	payload, err := contract.Marshal(&eventsv1.OutcomeBatch{Outcomes: outcomes})
	if err != nil {
		t.Fatal(err)
	}
	natsSubject, err := contract.OutcomeSubject("clio", "crm")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.JS.PublishMsg(context.Background(), &nats.Msg{Subject: natsSubject, Header: contract.OutcomeBatchHeaders("crm", outcomes), Data: payload}); err != nil {
		t.Fatal(err)
	}
	f.waitTask(t, first.Id, "crm", tasks.StateFinal)
	f.waitTask(t, second.Id, "crm", tasks.StateFinal)
	if got := f.Completed(t, "req-b1") + " " + f.Completed(t, "req-b2"); got != "crm=ERASED crm=ERASED" {
		t.Fatalf("completions = %q", got)
	}
}
