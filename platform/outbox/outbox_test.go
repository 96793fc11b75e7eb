package outbox_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestMain(m *testing.M) {
	if os.Getenv(crashChildEnv) != "" {
		os.Exit(crashChild())
	}
	goleak.VerifyTestMain(m, brokertest.LeakOptions...)
}

// bucketState is the test service's own state, written with its events.
var bucketState = store.Bucket("state")

var schema = store.Schema{Service: "outboxtest", Version: 1, Buckets: []store.Bucket{bucketState}}

// fastRelay keeps retries in milliseconds so outage tests stay quick.
var fastRelay = outbox.RelayConfig{AckTimeout: 500 * time.Millisecond, RetryBackoff: 5 * time.Millisecond, MaxRetryBackoff: 50 * time.Millisecond, PollInterval: 50 * time.Millisecond}

// erasure is an event as a service would stage it.
func erasure(subject, causeID string) *eventsv1.Event {
	return &eventsv1.Event{
		TenantId:  "clio",
		SubjectId: subject,
		Cause:     &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: causeID},
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope:  &eventsv1.Scope{All: true},
			Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	}
}

// commit writes a state key and its event in one transaction.
func commit(ctx context.Context, db *store.DB, ob *outbox.Outbox, key string, ev *eventsv1.Event) error {
	return db.Batch(func(tx *bolt.Tx) error {
		if err := store.BucketTx(tx, bucketState).Put([]byte(key), []byte(ev.GetCause().GetId())); err != nil {
			return err
		}
		return ob.AddTx(ctx, tx, ev)
	})
}

// runRelay runs a relay until the test ends.
func runRelay(t *testing.T, ob *outbox.Outbox, nc *nats.Conn) {
	t.Helper()
	relay, err := outbox.NewRelay(ob, nc, fastRelay)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- relay.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("relay: %v", err)
		}
	})
}

// collect reads the stream's events into a map by event id until want
// distinct ids arrived.
func collect(t *testing.T, js jetstream.JetStream, want int) map[string][]jetstream.Msg {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"lethe.*.erasure.requested"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][]jetstream.Msg{}
	for len(got) < want {
		batch, err := cons.Fetch(want, jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for msg := range batch.Messages() {
			got[msg.Headers().Get(contract.HeaderID)] = append(got[msg.Headers().Get(contract.HeaderID)], msg)
		}
		if ctx.Err() != nil {
			t.Fatalf("received %d distinct events, want %d", len(got), want)
		}
	}
	return got
}

func TestCommittedEventsArePublished(t *testing.T) {
	ns := brokertest.Start(t)
	nc, js := brokertest.Connect(t, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	db := storetest.Open(t, schema)
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	runRelay(t, ob, nc)

	// The committing call's trace continues in the subscriber.
	traceID := trace.TraceID{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
	ctx := trace.ContextWithSpanContext(context.Background(), trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: traceID, SpanID: trace.SpanID{1, 2, 3, 4, 5, 6, 7, 8}, TraceFlags: trace.FlagsSampled,
	}))
	for i := range 3 {
		if err := commit(ctx, db, ob, fmt.Sprint("k", i), erasure("subject-1", fmt.Sprint("req-", i))); err != nil {
			t.Fatal(err)
		}
	}
	// A rolled-back transaction stages nothing.
	rollback := errors.New("roll back")
	if err := db.Update(func(tx *bolt.Tx) error {
		if err := ob.AddTx(ctx, tx, erasure("subject-1", "req-rolled-back")); err != nil {
			return err
		}
		return rollback
	}); !errors.Is(err, rollback) {
		t.Fatal(err)
	}

	got := collect(t, js, 3)
	var sequences []uint64
	for _, msgs := range got {
		msg := msgs[0]
		ev := &eventsv1.Event{}
		err := proto.Unmarshal(msg.Data(), ev)
		if err != nil {
			t.Fatal(err)
		}
		if ev.GetCause().GetId() == "req-rolled-back" {
			t.Fatal("an event of a rolled-back transaction was published")
		}
		h := msg.Headers()
		if h.Get(nats.MsgIdHdr) != ev.Id || h.Get(contract.HeaderSource) != "lethe/test" || h.Get(contract.HeaderCloudEventsSubject) != ev.Cause.Id {
			t.Errorf("headers %v do not match event %v", h, ev)
		}
		if tp := h.Get("traceparent"); tp == "" || tp[3:35] != traceID.String() {
			t.Errorf("traceparent = %q, want the committing call's trace %s", tp, traceID)
		}
		sequences = append(sequences, ev.Sequence)
	}
	seen := map[uint64]bool{}
	for _, s := range sequences {
		seen[s] = true
	}
	if !seen[1] || !seen[2] || !seen[3] {
		t.Errorf("per-subject sequences = %v, want 1, 2, 3", sequences)
	}
	eventually.True(t, "the backlog to drain", func() bool { return ob.Depth() == 0 })
}

// TestOutageBackpressureAndRecovery shuts NATS down while writes continue:
// writes succeed until the backlog bound, then fail fast with Unavailable
// and a retry hint; after NATS returns on the same store every accepted
// event is delivered.
func TestOutageBackpressureAndRecovery(t *testing.T) {
	storeDir := t.TempDir()
	cfg := broker.DefaultEmbeddedConfig(storeDir)
	cfg.Port = brokertest.FreePort(t)
	cfg.StoreDir = storeDir
	cfg.SyncAlways = false
	ns, err := broker.StartEmbedded(cfg, brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := broker.Connect(ns.ClientURL(), "outage-test", brokertest.Logger(t), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}

	const bound = 50
	db := storetest.Open(t, schema)
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/test", MaxBacklog: bound, RetryAfter: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	runRelay(t, ob, nc)

	ctx := context.Background()
	accepted := 0
	write := func() error {
		err := commit(ctx, db, ob, fmt.Sprint("k", accepted), erasure("subject-"+strconv.Itoa(accepted), fmt.Sprint("req-", accepted)))
		if err == nil {
			accepted++
		}
		return err
	}
	for range 20 {
		if err := write(); err != nil {
			t.Fatal(err)
		}
	}
	eventually.True(t, "the first events to publish", func() bool { return ob.Depth() == 0 })

	ns.Shutdown()
	var refusal error
	for i := 0; i < 10*bound && refusal == nil; i++ {
		refusal = write()
	}
	if status.Code(refusal) != codes.Unavailable {
		t.Fatalf("writes during the outage ended with %v, want Unavailable at the backlog bound", refusal)
	}
	if ob.Depth() != bound || accepted != 20+bound {
		t.Fatalf("backlog %d after %d accepted writes; want the bound %d after %d", ob.Depth(), accepted, bound, 20+bound)
	}
	var retry *errdetails.RetryInfo
	for _, d := range status.Convert(refusal).Details() {
		if r, ok := d.(*errdetails.RetryInfo); ok {
			retry = r
		}
	}
	if retry == nil || retry.RetryDelay.AsDuration() != 3*time.Second {
		t.Fatalf("refusal details %v, want a RetryInfo of 3s", status.Convert(refusal).Details())
	}

	ns, err = broker.StartEmbedded(cfg, brokertest.Logger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Shutdown()
	eventually.True(t, "the backlog to drain after recovery", func() bool { return ob.Depth() == 0 })
	if err := write(); err != nil {
		t.Fatalf("write after recovery: %v", err)
	}
	got := collect(t, js, accepted)
	if len(got) != accepted {
		t.Fatalf("stream holds %d distinct events, want all %d accepted", len(got), accepted)
	}
}

// concurrentWriters commits from n goroutines until ctx ends, calling
// acked after each commit returned.
func concurrentWriters(ctx context.Context, n int, db *store.DB, ob *outbox.Outbox, prefix string, acked func(id string)) error {
	var wg sync.WaitGroup
	var next atomic.Int64
	errs := make(chan error, n)
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				id := fmt.Sprintf("%s-%d", prefix, next.Add(1))
				err := commit(context.Background(), db, ob, id, erasure("subject-"+id, id))
				if status.Code(err) == codes.Unavailable {
					time.Sleep(time.Millisecond)
					continue
				}
				if err != nil {
					errs <- err
					return
				}
				acked(id)
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestStateMessagesArePublishedInBatches stages state messages
// (AddMessageTx) on two NATS subjects with an event between them: the
// relay publishes the messages that follow one another on one subject as
// one batch message, in commit order, and the event alone.
func TestStateMessagesArePublishedInBatches(t *testing.T) {
	ns := brokertest.Start(t)
	nc, js := brokertest.Connect(t, ns)
	ctx := context.Background()
	if _, err := broker.EnsureStream(ctx, js, broker.DefaultStreamConfig()); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "STATE", Subjects: []string{"state.>"}}); err != nil {
		t.Fatal(err)
	}
	db := storetest.Open(t, schema)
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ob.Close() })
	stage := func(subject string, n int) {
		for i := range n {
			if err := db.Update(func(tx *bolt.Tx) error {
				return ob.AddMessageTx(tx, subject, fmt.Sprint(subject, "-", i), []byte(fmt.Sprint(subject, "#", i)))
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	stage("state.a", 3)
	stage("state.b", 1)
	if err := commit(ctx, db, ob, "k", erasure("subject-1", "req-1")); err != nil {
		t.Fatal(err)
	}
	stage("state.a", 2)
	runRelay(t, ob, nc)

	cons, err := js.OrderedConsumer(ctx, "STATE", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		parts, err := outbox.SplitBatch(msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		var payloads []string
		for _, p := range parts {
			payloads = append(payloads, string(p))
		}
		if n := msg.Headers().Get(outbox.HeaderBatch); n != fmt.Sprint(len(parts)) {
			t.Errorf("%s says %s entries, carries %d", outbox.HeaderBatch, n, len(parts))
		}
		got = append(got, msg.Subject()+"="+strings.Join(payloads, ","))
	}
	want := []string{"state.a=state.a#0,state.a#1,state.a#2", "state.b=state.b#0", "state.a=state.a#0,state.a#1"}
	if !slices.Equal(got, want) {
		t.Fatalf("published %v, want %v", got, want)
	}
	if events := collect(t, js, 1); len(events) != 1 {
		t.Fatalf("events %v", events)
	}
}
