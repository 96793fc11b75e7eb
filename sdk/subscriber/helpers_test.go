package subscriber_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestMain checks for leaked goroutines (sdktest.LeakOptions says which
// are the server's).
func TestMain(m *testing.M) { goleak.VerifyTestMain(m, sdktest.LeakOptions()...) }

const (
	tenant = "clio"
	system = "newsletter"
	// traceparent is the W3C trace context the tests' events carry.
	traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
)

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
	msg := sdktest.EventMsg(t, ev)
	if msgID != "" {
		msg.Header.Set(nats.MsgIdHdr, msgID)
	}
	msg.Header.Set("traceparent", traceparent)
	sdktest.Publish(t, js, msg)
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
