package subscriber_test

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestMain checks for leaked goroutines. A sourced stream (the erasure
// ledger of the replay tests) sets its source up in a nats-server
// goroutine that outlives Shutdown until its own timeout; it is the
// server's, not the SDK's (platform/broker/brokertest.LeakOptions, which
// the SDK may not import, says the same).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3"))
}

const (
	tenant = "clio"
	system = "newsletter"
	// traceparent is the W3C trace context the tests' events carry.
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
)

// startServer runs an embedded nats-server with JetStream for the test, as
// nats-server's own test.RunServer does, and shuts it down at cleanup.
func startServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host:      "127.0.0.1",
		Port:      -1,
		JetStream: true,
		StoreDir:  t.TempDir(),
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	return s
}

// connect returns a JetStream context on s, closed at cleanup.
func connect(t *testing.T, s *server.Server) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// streamConfig is the LETHE stream as the platform creates it, with a
// shorter max age.
func streamConfig(subjects ...string) jetstream.StreamConfig {
	if len(subjects) == 0 {
		subjects = []string{contract.AllSubjects}
	}
	return jetstream.StreamConfig{
		Name:       contract.StreamName,
		Subjects:   subjects,
		Storage:    jetstream.FileStorage,
		MaxAge:     time.Hour,
		Duplicates: time.Minute,
	}
}

// setup starts a server with the LETHE stream and returns a connection to
// it.
func setup(t *testing.T) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := startServer(t)
	nc, js := connect(t, s)
	if _, err := js.CreateStream(context.Background(), streamConfig()); err != nil {
		t.Fatal(err)
	}
	return s, nc, js
}

// openLedger opens a ledger in a fresh file, closed at cleanup.
func openLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "newsletter.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// config returns a subscriber configuration with test timings.
func config(t *testing.T, js jetstream.JetStream, l *ledger.Ledger, handlers map[contract.Kind]subscriber.Handler) subscriber.Config {
	return subscriber.Config{
		SystemID:  system,
		Tenant:    tenant,
		JetStream: js,
		Ledger:    l,
		Handlers:  handlers,
		BackOff:   []time.Duration{5 * time.Millisecond},
		AckWait:   5 * time.Second,
		Logger:    testLogger(t),
	}
}

// run runs a subscriber until the test ends, and fails the test if Run
// returns an error.
func run(t *testing.T, cfg subscriber.Config) *subscriber.Subscriber {
	t.Helper()
	sub, err := subscriber.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sub.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return sub
}

// newEvent returns a valid event of kind about subject-42.
func newEvent(id string, kind contract.Kind, seq uint64) *eventsv1.Event {
	ev := &eventsv1.Event{
		Id:         id,
		TenantId:   tenant,
		SubjectId:  "subject-42",
		Sequence:   seq,
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-" + id},
		OccurredAt: timestamppb.Now(),
		Source:     "lethe/dsar",
	}
	switch kind {
	case contract.KindErasureRequested:
		ev.Body = &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{All: true}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}}
	case contract.KindConsentWithdrawn:
		ev.Source = "lethe/consent"
		ev.Body = &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: []string{"newsletter"}}}
	case contract.KindRestrictionApplied:
		ev.Source = "lethe/consent"
		ev.Body = &eventsv1.Event_RestrictionApplied{RestrictionApplied: &eventsv1.RestrictionApplied{
			RestrictionId: "r-1", Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED,
		}}
	case contract.KindRestrictionLifted:
		ev.Source = "lethe/consent"
		ev.Body = &eventsv1.Event_RestrictionLifted{RestrictionLifted: &eventsv1.RestrictionLifted{RestrictionId: "r-1"}}
	default:
		panic("newEvent: unsupported kind " + kind)
	}
	return ev
}

// publish publishes ev as Lethe's outbox relay does, under msgID (the event
// id when empty).
func publish(t *testing.T, js jetstream.JetStream, ev *eventsv1.Event, msgID string) {
	t.Helper()
	natsSubject, err := contract.EventSubject(ev)
	if err != nil {
		t.Fatal(err)
	}
	h, err := contract.EventHeaders(ev)
	if err != nil {
		t.Fatal(err)
	}
	if msgID != "" {
		h.Set(nats.MsgIdHdr, msgID)
	}
	h.Set("traceparent", traceparent)
	data, err := contract.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	publishRaw(t, js, &nats.Msg{Subject: natsSubject, Header: h, Data: data})
}

func publishRaw(t *testing.T, js jetstream.JetStream, msg *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
}

// storedOutcome is an outcome as the stream stored it.
type storedOutcome struct {
	header  nats.Header
	subject string
	outcome *eventsv1.Outcome
}

// storedOutcomes returns the outcomes stored on subject.
func storedOutcomes(t *testing.T, js jetstream.JetStream, subject string) []storedOutcome {
	t.Helper()
	ctx := context.Background()
	cons, err := js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.FetchNoWait(100)
	if err != nil {
		t.Fatal(err)
	}
	var out []storedOutcome
	for msg := range batch.Messages() {
		outcomes, err := contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outcomes {
			out = append(out, storedOutcome{header: msg.Headers(), subject: msg.Subject(), outcome: o})
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitOutcomes waits until n outcomes are stored on subject and returns
// them.
func waitOutcomes(t *testing.T, js jetstream.JetStream, subject string, n int) []storedOutcome {
	t.Helper()
	var got []storedOutcome
	eventually.True(t, fmt.Sprintf("%d outcomes on %s", n, subject), func() bool {
		got = storedOutcomes(t, js, subject)
		return len(got) >= n
	})
	if len(got) != n {
		t.Fatalf("%d outcomes on %s, want %d", len(got), subject, n)
	}
	return got
}

// waitSettled waits until the system's consumer has nothing pending or
// unacknowledged: every event delivered was acknowledged or terminated.
func waitSettled(t *testing.T, js jetstream.JetStream, consumer string) *jetstream.ConsumerInfo {
	t.Helper()
	var info *jetstream.ConsumerInfo
	eventually.True(t, fmt.Sprintf("consumer %s to settle", consumer), func() bool {
		info = consumerInfo(js, consumer)
		return info != nil && info.NumPending == 0 && info.NumAckPending == 0
	})
	return info
}

// waitAllSettled waits until every consumer of sub has settled.
func waitAllSettled(t *testing.T, js jetstream.JetStream, sub *subscriber.Subscriber) []*jetstream.ConsumerInfo {
	t.Helper()
	var infos []*jetstream.ConsumerInfo
	for _, name := range sub.ConsumerNames() {
		infos = append(infos, waitSettled(t, js, name))
	}
	return infos
}

// consumerInfo returns the consumer's state, or nil if Run has not created
// it yet.
func consumerInfo(js jetstream.JetStream, consumer string) *jetstream.ConsumerInfo {
	ctx := context.Background()
	cons, err := js.Consumer(ctx, contract.StreamName, consumer)
	if err != nil {
		return nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil
	}
	return info
}

// counter counts handler calls.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) add(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[key]++
	return c.n[key]
}

func (c *counter) get(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[key]
}

// testLogger writes the subscriber's logs to the test's log, dropping any
// logged after the test ended (testing panics on a late t.Log).
func testLogger(t *testing.T) *slog.Logger {
	w := &testWriter{t: t}
	t.Cleanup(w.stop)
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Log(strings.TrimSuffix(string(p), "\n"))
	}
	return len(p), nil
}

func (w *testWriter) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
}
