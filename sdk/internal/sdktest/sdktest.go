// Package sdktest is the sdk module's one test harness: an embedded
// nats-server with the LETHE stream as the platform creates it, a
// subscriber run until the test ends, events published as Lethe's outbox
// relay publishes them, and the outcomes read back from the stream.
// (The sdk may not import platform/..., so platform/broker/brokertest is
// out of reach; this is its counterpart for the sdk's tests.)
package sdktest

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// LeakOptions are the goroutines goleak may find after the tests: a
// sourced stream sets its source up in a nats-server goroutine that
// outlives Shutdown until its own timeout; it is the server's, not the
// SDK's (platform/broker/brokertest.LeakOptions says the same).
func LeakOptions(extra ...goleak.Option) []goleak.Option {
	return append([]goleak.Option{goleak.IgnoreTopFunction("github.com/nats-io/nats-server/v2/server.(*stream).trySetupSourceConsumer.func3")}, extra...)
}

// StartServer runs an embedded nats-server with JetStream for the test, as
// nats-server's own test.RunServer does, and shuts it down at cleanup.
func StartServer(t testing.TB) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
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

// Connect returns a JetStream context on s, closed at cleanup.
func Connect(t testing.TB, s *server.Server) (*nats.Conn, jetstream.JetStream) {
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

// StreamConfig is the LETHE stream as the platform creates it, with a
// shorter max age, on subjects (every Lethe subject when none).
func StreamConfig(subjects ...string) jetstream.StreamConfig {
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

// Stream starts a server with the LETHE stream and returns a connection
// to it.
func Stream(t testing.TB) (*server.Server, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	s := StartServer(t)
	nc, js := Connect(t, s)
	if _, err := js.CreateStream(context.Background(), StreamConfig()); err != nil {
		t.Fatal(err)
	}
	return s, nc, js
}

// OpenLedger opens a ledger in a fresh file named name, closed at cleanup.
func OpenLedger(t testing.TB, name string) *ledger.Ledger {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), name), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// Run runs a subscriber with cfg until the test ends, and fails the test
// if Run returns an error.
func Run(t testing.TB, cfg subscriber.Config) *subscriber.Subscriber {
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

// EventMsg is ev as Lethe's outbox relay publishes it: on its subject,
// with its headers.
func EventMsg(t testing.TB, ev *eventsv1.Event) *nats.Msg {
	t.Helper()
	subject, err := contract.EventSubject(ev)
	if err != nil {
		t.Fatal(err)
	}
	h, err := contract.EventHeaders(ev)
	if err != nil {
		t.Fatal(err)
	}
	data, err := contract.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	return &nats.Msg{Subject: subject, Header: h, Data: data}
}

// Publish publishes msg and fails the test unless the stream stored it.
func Publish(t testing.TB, js jetstream.JetStream, msg *nats.Msg) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
}

// StoredOutcome is an outcome as the stream stored it.
type StoredOutcome struct {
	Header  nats.Header
	Subject string
	Outcome *eventsv1.Outcome
}

// Outcomes returns the outcomes stored on subject so far, in stream order.
func Outcomes(t testing.TB, js jetstream.JetStream, subject string) []StoredOutcome {
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
	var out []StoredOutcome
	for msg := range batch.Messages() {
		outcomes, err := contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outcomes {
			out = append(out, StoredOutcome{Header: msg.Headers(), Subject: msg.Subject(), Outcome: o})
		}
	}
	if err := batch.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// OutcomesOf returns every outcome of event id that system of tenant
// published so far, in stream order.
func OutcomesOf(t testing.TB, js jetstream.JetStream, tenant, system, id string) []*eventsv1.Outcome {
	t.Helper()
	subject, err := contract.OutcomeSubject(tenant, system)
	if err != nil {
		t.Fatal(err)
	}
	var found []*eventsv1.Outcome
	for _, s := range Outcomes(t, js, subject) {
		if s.Outcome.GetEventId() == id {
			found = append(found, s.Outcome)
		}
	}
	return found
}

// WaitOutcome waits for system's outcome of event id and returns the last
// one published.
func WaitOutcome(t testing.TB, js jetstream.JetStream, tenant, system, id string) *eventsv1.Outcome {
	t.Helper()
	var found []*eventsv1.Outcome
	eventually.True(t, "the outcome of "+id, func() bool {
		found = OutcomesOf(t, js, tenant, system, id)
		return len(found) > 0
	})
	return found[len(found)-1]
}

// WaitOutcomes waits until n outcomes are stored on subject and returns
// them; more than n fails the test.
func WaitOutcomes(t testing.TB, js jetstream.JetStream, subject string, n int) []StoredOutcome {
	t.Helper()
	var got []StoredOutcome
	eventually.True(t, fmt.Sprintf("%d outcomes on %s", n, subject), func() bool {
		got = Outcomes(t, js, subject)
		return len(got) >= n
	})
	if len(got) != n {
		t.Fatalf("%d outcomes on %s, want %d", len(got), subject, n)
	}
	return got
}
