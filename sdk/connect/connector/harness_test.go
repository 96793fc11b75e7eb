package connector_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
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

// The handlers are driven through the SDK's real path: an embedded NATS
// server with the LETHE stream, a subscriber with its ledger, events
// published as the outbox relay publishes them and outcomes read back
// from the stream. (sdk/subscriber's own test helpers live in its _test
// package and cannot be imported; this is the smallest version of them.)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	tenant = "clio"
	system = "ads"
)

// vendor is a local HTTPS server that stands for a vendor's API at its
// real host names: the client dials it whatever the host, and trusts its
// certificate (issued to example.com) for every name.
type vendor struct {
	srv    *httptest.Server
	client *http.Client
	mu     sync.Mutex
	calls  []string
}

func newVendor(t *testing.T, h http.HandlerFunc) *vendor {
	t.Helper()
	v := &vendor{}
	v.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v.mu.Lock()
		v.calls = append(v.calls, r.Method+" "+r.Host+r.URL.Path)
		v.mu.Unlock()
		h(w, r)
	}))
	t.Cleanup(v.srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(v.srv.Certificate())
	addr := v.srv.Listener.Addr().String()
	v.client = &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			},
		},
	}
	t.Cleanup(v.client.CloseIdleConnections)
	return v
}

// calls returns the requests the vendor received, as "METHOD host/path".
func (v *vendor) received() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]string(nil), v.calls...)
}

// secrets writes the files to a fresh secrets directory.
func secrets(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// fixedIdentifiers stands for the DSAR claim check (tested in
// services/dsar): it answers the identifiers it was given.
type fixedIdentifiers []*commonv1.Identifier

func (f fixedIdentifiers) FetchIdentifiers(context.Context, *subscriber.Event) ([]*commonv1.Identifier, error) {
	return f, nil
}

func email(v string) *commonv1.Identifier {
	return &commonv1.Identifier{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: v}
}

func account(v string) *commonv1.Identifier {
	return &commonv1.Identifier{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_ACCOUNT_ID, Value: v}
}

// rig runs a subscriber whose handlers are one connector's.
type rig struct {
	js      jetstream.JetStream
	mu      sync.Mutex
	handled map[string]int
}

func newRig(t *testing.T, h subscriber.Handler, ids fixedIdentifiers, kinds ...contract.Kind) *rig {
	t.Helper()
	s, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start")
	}
	nc, err := nats.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{
		Name: contract.StreamName, Subjects: []string{contract.AllSubjects}, Storage: jetstream.FileStorage,
		MaxAge: time.Hour, Duplicates: time.Minute,
	}); err != nil {
		t.Fatal(err)
	}
	l, err := ledger.Open(filepath.Join(t.TempDir(), "connect.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	r := &rig{js: js, handled: map[string]int{}}
	if len(kinds) == 0 {
		kinds = []contract.Kind{contract.KindErasureRequested}
	}
	handlers := map[contract.Kind]subscriber.Handler{}
	for _, k := range kinds {
		handlers[k] = func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			r.mu.Lock()
			r.handled[ev.ID()]++
			r.mu.Unlock()
			return h(ctx, ev)
		}
	}
	sub, err := subscriber.New(subscriber.Config{
		SystemID: system, Tenant: tenant, JetStream: js, Ledger: l, Handlers: handlers, Identifiers: ids,
		MaxDeliver: 3, BackOff: []time.Duration{10 * time.Millisecond}, AckWait: 10 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
	})
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
	return r
}

// deliveries returns how often the handler was called for an event.
func (r *rig) deliveries(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.handled[id]
}

// erase publishes an erasure and returns the outcome the subscriber
// stored for it.
func (r *rig) erase(t *testing.T, id string) *eventsv1.Outcome {
	t.Helper()
	return r.send(t, &eventsv1.Event{
		Id: id, TenantId: tenant, SubjectId: "subject-42", Sequence: 1, Source: "lethe/dsar",
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-" + id},
		OccurredAt: timestamppb.Now(),
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{All: true}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	})
}

// withdraw publishes a consent withdrawal of purposes.
func (r *rig) withdraw(t *testing.T, id string, purposes ...string) *eventsv1.Outcome {
	t.Helper()
	return r.send(t, &eventsv1.Event{
		Id: id, TenantId: tenant, SubjectId: "subject-42", Sequence: 1, Source: "lethe/consent",
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-" + id},
		OccurredAt: timestamppb.Now(),
		Body:       &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: purposes}},
	})
}

func (r *rig) send(t *testing.T, ev *eventsv1.Event) *eventsv1.Outcome {
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
	ctx := context.Background()
	if _, err := r.js.PublishMsg(ctx, &nats.Msg{Subject: subject, Header: h, Data: data}); err != nil {
		t.Fatal(err)
	}
	outSubject, err := contract.OutcomeSubject(tenant, system)
	if err != nil {
		t.Fatal(err)
	}
	var got *eventsv1.Outcome
	eventually.Succeeds(t, "the outcome of "+ev.Id, func() error {
		cons, err := r.js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{outSubject}})
		if err != nil {
			return err
		}
		batch, err := cons.FetchNoWait(100)
		if err != nil {
			return err
		}
		for msg := range batch.Messages() {
			outs, err := contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
			if err != nil {
				return err
			}
			for _, o := range outs {
				if o.GetEventId() == ev.Id {
					got = o
				}
			}
		}
		if got == nil {
			return fmt.Errorf("no outcome yet")
		}
		return nil
	})
	return got
}

// wantOutcome fails the test unless o is of kind want.
func wantOutcome(t *testing.T, o *eventsv1.Outcome, want eventsv1.OutcomeKind) {
	t.Helper()
	if o.GetKind() != want {
		t.Fatalf("outcome %v (%q), want %v", o.GetKind(), o.GetReason(), want)
	}
}

// bearer returns the bearer token of r, or "".
func bearer(r *http.Request) string {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return tok
}
