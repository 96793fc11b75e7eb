package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
	"github.com/lethe-privacy/lethe/sdk/connect"
	"github.com/lethe-privacy/lethe/sdk/connect/connector"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/dsar"
	"github.com/lethe-privacy/lethe/services/registry"
	"github.com/lethe-privacy/lethe/services/retention"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

// TestExampleTenantConnectorsBuild keeps every connector system of the
// five example tenants one the runner can start: the builtin connector
// exists, the parameters are those it takes and match its patterns (the
// placeholders included), given the secret files it names. The systems
// are those the policies name with a builtin connector: Campaign Monitor
// and Google Analytics (ClickLearn §3.2, §3.3), Facebook Ads and HotJar
// (Clevio, "How and when do we share information").
func TestExampleTenantConnectorsBuild(t *testing.T) {
	paths, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(paths) != 5 {
		t.Fatalf("example tenants: %v %v", paths, err)
	}
	var got []string
	for _, path := range paths {
		f, err := tenantfile.Read(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, sys := range f.Systems {
			if sys.AnswerMode != commonv1.AnswerMode_ANSWER_MODE_CONNECTOR {
				continue
			}
			name := f.Tenant.TenantId + "/" + sys.SystemId + ":" + sys.GetConnector().GetName()
			got = append(got, name)
			def, err := connector.Builtin(sys.GetConnector().GetName())
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			dir := t.TempDir()
			for _, s := range def.Secrets() {
				if err := os.WriteFile(filepath.Join(dir, s), []byte("placeholder\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := connect.BuiltinConnectors(f.Tenant.TenantId, sys, dir); err != nil {
				t.Errorf("%s does not build: %v", name, err)
			}
		}
	}
	slices.Sort(got)
	want := []string{"clevio/facebook-ads:meta-custom-audiences", "clevio/hotjar:hotjar",
		"clicklearn/campaign-monitor:campaign-monitor", "clicklearn/google-analytics:google-analytics"}
	if !slices.Equal(got, want) {
		t.Errorf("connector systems %v, want %v", got, want)
	}
}

// metaVendor is a local HTTPS server implementing the Marketing API's
// Custom Audience users removal (DELETE /{version}/{audience_id}/users,
// schema EMAIL_SHA256; the shape sdk/connect/connector/vendors_test.go
// documents), reached through a client that sends graph.facebook.com to
// it. Each removal is held until the test releases it.
type metaVendor struct {
	client  *http.Client
	arrived chan []byte   // each removal's body, as it arrives
	release chan struct{} // closed: the vendor answers
	once    sync.Once
}

func newMetaVendor(t *testing.T, audience, token string) *metaVendor {
	t.Helper()
	v := &metaVendor{arrived: make(chan []byte, 8), release: make(chan struct{})}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if r.Method != http.MethodDelete || r.Host != "graph.facebook.com" || r.URL.Path != "/v25.0/"+audience+"/users" {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error": {"message": "Unknown path components", "type": "OAuthException", "code": 2500}}`)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+token {
			w.WriteHeader(http.StatusBadRequest)
			_, _ = io.WriteString(w, `{"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}`)
			return
		}
		body, _ := io.ReadAll(r.Body)
		v.arrived <- body
		<-v.release
		_, _ = io.WriteString(w, `{"audience_id": "`+audience+`", "session_id": "9778993", "num_received": 1, "num_invalid_entries": 0, "invalid_entry_samples": {}}`)
	}))
	// Cleanups run last-in first-out: the held answer is released before
	// the server waits for its connections to close.
	t.Cleanup(srv.Close)
	t.Cleanup(v.answer)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	addr := srv.Listener.Addr().String()
	v.client = &http.Client{Transport: &http.Transport{
		// httptest's certificate names example.com.
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}}
	t.Cleanup(v.client.CloseIdleConnections)
	return v
}

// answer lets the vendor answer the removals it holds, and every later one.
func (v *metaVendor) answer() { v.once.Do(func() { close(v.release) }) }

// TestConnectorErasureThroughDSAR files a real erasure for a subject known
// by an e-mail address and follows it to a CONNECTOR system: the services
// as lethe dev composes them, lethe-connect's runner answering the system
// through the builtin meta-custom-audiences connector, and a local server
// in Meta's request and answer shapes. The vendor receives exactly the
// SHA-256 of the normalised address (Meta's "Hashing and Normalizing
// Data": trimmed, lower-cased), never the address, and the request
// completes only once the system has answered ERASED.
func TestConnectorErasureThroughDSAR(t *testing.T) {
	const audience, token = "6123456789012", "meta-token"
	logs := &logbuf.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	h := servicetest.Start(t, servicetest.Options{Clock: clock.Real{}, Logger: logger},
		registry.Factory, consent.Factory, retention.Factory, dsar.Factory)
	vendor := newMetaVendor(t, audience, token)

	secrets := t.TempDir()
	if err := os.MkdirAll(filepath.Join(secrets, "acme", "audience"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(secrets, "acme", "audience", "access-token"), []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	runner, err := connect.New(connect.Config{JetStream: h.JetStream, Registry: h.Conn, DSAR: h.Conn, SecretsDir: secrets,
		DataDir: t.TempDir(), Resync: 100 * time.Millisecond, Connectors: connect.BuiltinConnectorsWith(vendor.client), Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	// The health endpoint lethe-connect serves for its probes: alive at
	// once, ready only once the runner has listed its systems.
	health := httptest.NewServer(runner.HealthHandler())
	defer health.Close()
	probe := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(health.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := probe("/readyz"); code != http.StatusServiceUnavailable || !strings.Contains(body, "not been listed") {
		t.Fatalf("/readyz before the runner ran: %d %q, want 503 saying why", code, body)
	}
	if code, _ := probe("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz: %d, want 200", code)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runner.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil && ctx.Err() == nil {
			t.Errorf("runner: %v", err)
		}
	})

	d := &devWebhooks{registry: registryv1.NewRegistryServiceClient(h.Conn), dsar: dsarv1.NewDsarServiceClient(h.Conn)}
	d.tenant(t, "acme", false)
	if _, err := d.registry.RegisterSystem(context.Background(), &registryv1.RegisterSystemRequest{RequestId: d.id("system"), TenantId: "acme",
		System: &registryv1.System{SystemId: "audience", Name: "Meta Custom Audience", Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR,
			Country: "IE", TenantRole: registryv1.TenantRole_TENANT_ROLE_CONTROLLER,
			Categories: []*commonv1.DataCategory{{Id: "user.contact.email.hashed"}},
			AnswerMode: commonv1.AnswerMode_ANSWER_MODE_CONNECTOR,
			Connector:  &registryv1.ConnectorRef{Name: "meta-custom-audiences", Params: map[string]string{"audience_id": audience, "api_version": "v25.0"}}}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the runner to answer acme/audience", func() bool { return slices.Contains(runner.Systems(), "acme/audience") })
	if code, body := probe("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz once the runner answers its systems: %d %q, want 200", code, body)
	}

	// d.erase files the address "Ada@example.org", as the person typed it.
	id := d.erase(t, "acme", "Ada")
	var body []byte
	select {
	case body = <-vendor.arrived:
	case <-time.After(90 * time.Second):
		t.Fatalf("the vendor received no removal\n%s", logs)
	}
	var removal struct {
		Payload struct {
			Schema string   `json:"schema"`
			Data   []string `json:"data"`
		} `json:"payload"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	sum := sha256.Sum256([]byte("ada@example.org"))
	want := hex.EncodeToString(sum[:])
	if err := dec.Decode(&removal); err != nil || removal.Payload.Schema != "EMAIL_SHA256" || !slices.Equal(removal.Payload.Data, []string{want}) {
		t.Fatalf("removal %s (%v), want schema EMAIL_SHA256 with exactly the hash %s", body, err, want)
	}
	if bytes.Contains(bytes.ToLower(body), []byte("example.org")) {
		t.Fatalf("the plain address reached the vendor: %s", body)
	}

	// The vendor has not answered: the request waits for the system.
	got, err := d.dsar.GetRequest(context.Background(), &dsarv1.GetRequestRequest{TenantId: "acme", DsarId: id})
	if err != nil {
		t.Fatal(err)
	}
	switch got.Request.State {
	case dsarv1.RequestState_REQUEST_STATE_COMPLETED, dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED:
		t.Fatalf("request %s before the vendor answered, want it waiting for the system", got.Request.State)
	}
	vendor.answer()
	req := d.result(t, "acme", id)
	task := taskOf(t, req, "audience")
	if req.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || task.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Fatalf("request %s, audience %s %s %q; want COMPLETED with audience ERASED", req.State, task.State, task.Outcome, task.Reason)
	}
	if task.AnswerMode != commonv1.AnswerMode_ANSWER_MODE_CONNECTOR {
		t.Errorf("task answer mode %s, want CONNECTOR", task.AnswerMode)
	}
	select {
	case extra := <-vendor.arrived:
		t.Errorf("the vendor received a second removal: %s", extra)
	default:
	}
	if strings.Contains(logs.String(), "ada@example.org") || strings.Contains(logs.String(), want) {
		t.Error("the address or its hash was logged")
	}
}
