package connector_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// The handlers are driven through the SDK's real path (sdk/internal/sdktest):
// an embedded NATS server with the LETHE stream, a subscriber with its
// ledger, events published as the outbox relay publishes them and outcomes
// read back from the stream.

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, sdktest.LeakOptions()...) }

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
	_, _, js := sdktest.Stream(t)
	l := sdktest.OpenLedger(t, "connect.db")
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
	sdktest.Run(t, subscriber.Config{
		SystemID: system, Tenant: tenant, JetStream: js, Ledger: l, Handlers: handlers, Identifiers: ids,
		MaxDeliver: 3, BackOff: []time.Duration{10 * time.Millisecond}, AckWait: 10 * time.Second,
		Logger: slog.New(slog.DiscardHandler),
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

// send publishes ev and returns the outcome the subscriber stored for it.
func (r *rig) send(t *testing.T, ev *eventsv1.Event) *eventsv1.Outcome {
	t.Helper()
	sdktest.Publish(t, r.js, sdktest.EventMsg(t, ev))
	return sdktest.WaitOutcome(t, r.js, tenant, system, ev.Id)
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
