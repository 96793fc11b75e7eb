package webhook_test

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

func TestMain(m *testing.M) {
	// The HTTP client's idle keep-alive connections close on their own
	// timer.
	goleak.VerifyTestMain(m, sdktest.LeakOptions(
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"), goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"))...)
}

const (
	tenant = "clio"
	system = "crm"
)

// stream starts an embedded nats-server with the LETHE stream and returns
// a JetStream context on it.
func stream(t testing.TB) jetstream.JetStream {
	t.Helper()
	_, _, js := sdktest.Stream(t)
	return js
}

// runSubscriber answers erasures with h until the test ends.
func runSubscriber(t testing.TB, js jetstream.JetStream, h subscriber.Handler, maxDeliver int, backOff ...time.Duration) {
	runSubscriberWorkers(t, js, h, maxDeliver, 0, backOff...)
}

// runSubscriberWorkers is runSubscriber with workers handling events at once.
func runSubscriberWorkers(t testing.TB, js jetstream.JetStream, h subscriber.Handler, maxDeliver, workers int, backOff ...time.Duration) {
	t.Helper()
	if len(backOff) == 0 {
		backOff = []time.Duration{5 * time.Millisecond}
	}
	runSubscriberConfig(t, js, h, func(c *subscriber.Config) { c.MaxDeliver, c.BackOff, c.Workers = maxDeliver, backOff, workers })
}

// runSubscriberConfig answers erasures with h, with the configuration
// adjusted by adjust, until the test ends, and returns the subscriber and
// its ledger.
func runSubscriberConfig(t testing.TB, js jetstream.JetStream, h subscriber.Handler, adjust func(*subscriber.Config)) (*subscriber.Subscriber, *ledger.Ledger) {
	t.Helper()
	l := sdktest.OpenLedger(t, "ledger.db")
	cfg := subscriber.Config{SystemID: system, Tenant: tenant, JetStream: js, Ledger: l,
		Handlers: map[contract.Kind]subscriber.Handler{contract.KindErasureRequested: h},
		BackOff:  []time.Duration{5 * time.Millisecond}, AckWait: 5 * time.Second, Logger: quiet()}
	adjust(&cfg)
	sub := sdktest.Run(t, cfg)
	return sub, l
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// erasure publishes an erasure of subject-42 as Lethe's outbox does.
func erasure(t testing.TB, js jetstream.JetStream, id string) *eventsv1.Event {
	t.Helper()
	ev, msg := erasureMsg(t, id, "subject-42")
	sdktest.Publish(t, js, msg)
	return ev
}

// erasureMsg is an erasure of subject as the outbox publishes it.
func erasureMsg(t testing.TB, id, subjectID string) (*eventsv1.Event, *nats.Msg) {
	t.Helper()
	ev := &eventsv1.Event{
		Id: id, TenantId: tenant, SubjectId: subjectID, Sequence: 1, Source: "lethe/dsar", OccurredAt: timestamppb.Now(),
		Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-" + id},
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{All: true}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE}},
	}
	return ev, sdktest.EventMsg(t, ev)
}

// outcome waits for the system's outcome of event id.
func outcome(t *testing.T, js jetstream.JetStream, id string) *eventsv1.Outcome {
	t.Helper()
	return sdktest.WaitOutcome(t, js, tenant, system, id)
}

// outcomesOf returns every outcome of event id published so far, in
// stream order.
func outcomesOf(t testing.TB, js jetstream.JetStream, id string) []*eventsv1.Outcome {
	t.Helper()
	return sdktest.OutcomesOf(t, js, tenant, system, id)
}

// newSecret writes a fresh whsec_ secret as the system's file name in dir
// and returns its key.
func newSecret(t testing.TB, dir, name string) []byte {
	t.Helper()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	path := filepath.Join(dir, tenant, system, name)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("whsec_"+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return key
}
