// Package taskstest runs a task tracker in a test as an owning service
// runs one: a real bbolt store, the outbox and its relay, and an embedded
// NATS with the platform stream. The tracker's own tests use it, and so do
// the pipeline tests under tools/lethe/internal/flows/tasks, which answer
// its events with the SDK's subscribers: the kit may not import the SDK's
// client side, in tests either (docs/design.md § Boundaries).
package taskstest

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// Tenant is the tenant of every event the fixture builds.
const Tenant = "clio"

// BucketCompleted records each completed cause ("tenant/cause" → the
// outcomes, "system=KIND" joined by commas), written by OnCauseComplete in
// the transaction that completed it, as an owner's state would be.
var BucketCompleted = store.Bucket("completed")

// BucketFinal records each task made final ("event/system" → the outcome's
// kind), written by OnTaskFinal.
var BucketFinal = store.Bucket("final")

// Schema is the owner's: version 2 moved its tasks to the kit's keys and
// version 3 to binary records, as consent's, dsar's and retention's did.
var Schema = store.Schema{Service: "taskstest", Version: 3, Buckets: []store.Bucket{BucketCompleted, BucketFinal},
	Migrations: []store.Migration{{To: 2, Up: tasks.MigrateKeysTx}, {To: 3, Up: tasks.BinaryTasksTx}}}

// Fixture is a running tracker, its store and the NATS it publishes on.
type Fixture struct {
	// DB is the owner's store.
	DB *store.DB
	// Tracker publishes and follows the tasks.
	Tracker *tasks.Tracker
	// Clock is the tracker's and the outbox's, at 2026-11-23 09:00 UTC.
	Clock *clock.Fake
	// JS and NC reach the embedded NATS.
	JS jetstream.JetStream
	NC *nats.Conn
}

// Options vary the fixture.
type Options struct {
	// SyncAlways runs NATS as shipped (an fsync per message); tests run
	// without it for speed.
	SyncAlways bool
	// OnComplete is told of each completed cause after its commit.
	OnComplete func(causeID string)
	// Meter receives the tracker's metrics.
	Meter metric.Meter
	// Path, when set, is the store's file, opened as it is.
	Path string
}

// Start runs a tracker, its outbox relay and an embedded NATS until the
// test ends.
func Start(t testing.TB, opts Options) *Fixture {
	t.Helper()
	ns := brokertest.StartAt(t, t.TempDir(), opts.SyncAlways)
	nc, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	path := opts.Path
	if path == "" {
		path = filepath.Join(t.TempDir(), "store.db")
	}
	f := &Fixture{DB: storetest.OpenAt(t, path, Schema), Clock: clock.NewFake(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)), JS: js, NC: nc}
	ob, err := outbox.New(f.DB, outbox.Config{Source: "lethe/test", Clock: f.Clock, Logger: brokertest.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	relay, err := outbox.NewRelay(ob, nc, outbox.RelayConfig{PollInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	f.Tracker, err = tasks.New(f.DB, tasks.Config{
		Owner: "test", Outbox: ob, Clock: f.Clock, ResendAfter: time.Hour, SweepEvery: time.Hour, Logger: brokertest.Logger(t), Meter: opts.Meter,
		OnCauseComplete: onCauseComplete(opts.OnComplete),
		OnTaskFinal:     onTaskFinal,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 2)
	go func() { done <- relay.Run(ctx) }()
	go func() { done <- f.Tracker.Run(ctx, js) }()
	t.Cleanup(func() {
		cancel()
		for range 2 {
			if err := <-done; err != nil {
				t.Errorf("run: %v", err)
			}
		}
	})
	return f
}

// onCauseComplete records a completed cause in BucketCompleted, failing
// on a second completion, and tells notify after the commit.
func onCauseComplete(notify func(causeID string)) func(*bolt.Tx, string, *commonv1.Cause, []tasks.Task) error {
	return func(tx *bolt.Tx, tenant string, cause *commonv1.Cause, all []tasks.Task) error {
		var summary []string
		for _, task := range all {
			o, err := task.OutcomeProto()
			if err != nil {
				return err
			}
			summary = append(summary, task.SystemID+"="+strings.TrimPrefix(o.GetKind().String(), "OUTCOME_KIND_"))
		}
		b := store.BucketTx(tx, BucketCompleted)
		k := []byte(tenant + "/" + cause.Id)
		if b.Get(k) != nil {
			return fmt.Errorf("cause %s completed twice", cause.Id)
		}
		if notify != nil {
			tx.OnCommit(func() { notify(cause.Id) })
		}
		return b.Put(k, []byte(strings.Join(summary, ",")))
	}
}

// onTaskFinal records a final task in BucketFinal, failing on a second.
func onTaskFinal(tx *bolt.Tx, task tasks.Task, o *eventsv1.Outcome) error {
	b := store.BucketTx(tx, BucketFinal)
	k := []byte(task.EventID + "/" + task.SystemID)
	if b.Get(k) != nil {
		return fmt.Errorf("task %s made final twice", k)
	}
	return b.Put(k, []byte(strings.TrimPrefix(o.GetKind().String(), "OUTCOME_KIND_")))
}

// Erasure is an erasure of everything of subject-1 of Tenant, caused by
// the data subject request causeID.
func Erasure(causeID string) *eventsv1.Event {
	return &eventsv1.Event{
		TenantId:  Tenant,
		SubjectId: "subject-1",
		Cause:     &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: causeID},
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{All: true}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	}
}

// SDK expects an answer from each of the systems, as SDK subscribers.
func SDK(ids ...string) []tasks.Expect {
	var out []tasks.Expect
	for _, id := range ids {
		out = append(out, tasks.Expect{SystemID: id, Mode: commonv1.AnswerMode_ANSWER_MODE_SDK})
	}
	return out
}

// Publish commits ev with its tasks for expect, as an owner's change does.
func (f *Fixture) Publish(t testing.TB, ev *eventsv1.Event, expect []tasks.Expect) {
	t.Helper()
	if err := f.DB.Update(func(tx *bolt.Tx) error { return f.Tracker.PublishTx(context.Background(), tx, ev, expect) }); err != nil {
		t.Fatal(err)
	}
}

// Completed returns the outcomes recorded for Tenant's cause causeID on
// its completion, empty while it is not complete.
func (f *Fixture) Completed(t testing.TB, causeID string) string {
	t.Helper()
	var v string
	if err := f.DB.View(func(tx *bolt.Tx) error {
		v = string(store.BucketTx(tx, BucketCompleted).Get([]byte(Tenant + "/" + causeID)))
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return v
}

// WaitCompleted waits for causeID to complete and returns its outcomes.
func (f *Fixture) WaitCompleted(t testing.TB, causeID string) string {
	t.Helper()
	var got string
	eventually.Succeeds(t, "cause "+causeID+" completes", func() error {
		if got = f.Completed(t, causeID); got == "" {
			all, _ := f.Tracker.List(tasks.Filter{CauseID: causeID})
			return fmt.Errorf("tasks: %+v", all)
		}
		return nil
	})
	return got
}
