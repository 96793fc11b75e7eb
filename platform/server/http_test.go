package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// registerKittest registers the kit test service on a fresh store, as
// start does, and returns the registration.
func registerKittest(t *testing.T) func(*server.Server) {
	db := storetest.Open(t, kittest.Schema)
	clk := clock.NewFake(epoch)
	svc := kittest.New(db, mutation.New(db, idempotency.New(clk, idempotency.DefaultTTL)))
	log := audit.New(db, clk)
	return func(s *server.Server) { s.Register(&kittestv1.KitTestService_ServiceDesc, svc, server.WithAudit(log)) }
}

const kitPath = "/lethe.kittest.v1.KitTestService/"

// An HTTP/JSON call in the production profile runs the gRPC chain: the
// client certificate from the TLS connection and the bearer JWT from the
// Authorization header authenticate, the policy decides, validation names
// the field, the error comes back as the Connect protocol maps it (HTTP
// status from the gRPC code, the details as JSON), and a request id means
// the same mutation on both listeners.
func TestHTTPJSONRunsTheChain(t *testing.T) {
	pki := servertest.NewPKI(t)
	cfg := pki.Production(t, `{"rules": [
		{"identities": ["`+servertest.Identity("newsletter")+`", "`+servertest.JWTIdentity("ada")+`"],
		 "methods": ["`+kitPath+`*"], "tenants": ["clio"]},
		{"identities": ["`+servertest.Identity("newsletter")+`", "`+servertest.JWTIdentity("ada")+`"],
		 "methods": ["`+kitPath+`Whoami"], "tenants": ["*"]}]}`)
	cfg.Logger = quietLogger()
	jwt := pki.WithJWT(t, &cfg)
	grpcAddr, base := servertest.StartHTTP(t, cfg, registerKittest(t))
	newsletter := pki.HTTPClient(t, "newsletter")

	t.Run("identity from the client certificate and from the bearer JWT", func(t *testing.T) {
		for token, want := range map[string]string{"": servertest.Identity("newsletter"), jwt.Token("ada"): servertest.JWTIdentity("ada")} {
			code, body := servertest.PostJSON(t, newsletter, base, kitPath+"Whoami", token, `{}`)
			var resp struct{ Identity string }
			if code != http.StatusOK || json.Unmarshal(body, &resp) != nil || resp.Identity != want {
				t.Errorf("Whoami: %d %s, want 200 naming %s", code, body, want)
			}
		}
	})

	errorCases := []struct {
		name, method, token, body string
		status                    int
		code                      string
		fields                    []string
	}{
		{"invalid argument names the field", "Put", "", `{"requestId": "r0", "tenantId": "clio", "key": "Bad Key"}`,
			http.StatusBadRequest, "invalid_argument", []string{"key"}},
		{"not found", "Get", "", `{"tenantId": "clio", "key": "missing"}`, http.StatusNotFound, "not_found", nil},
		{"a token that is not a JWT is unauthenticated", "Get", "not-a-jwt", `{"tenantId": "clio", "key": "k"}`,
			http.StatusUnauthorized, "unauthenticated", nil},
		{"a JWT whose subject no rule names is unauthorized", "Get", jwt.Token("eve"), `{"tenantId": "clio", "key": "k"}`,
			http.StatusForbidden, "permission_denied", nil},
		{"another tenant is denied", "Get", "", `{"tenantId": "cleura", "key": "k"}`, http.StatusForbidden, "permission_denied", nil},
		{"a body that is not JSON of the request", "Get", "", `{"tenantId": 7}`, http.StatusBadRequest, "invalid_argument", nil},
	}
	for _, c := range errorCases {
		t.Run(c.name, func(t *testing.T) {
			status, body := servertest.PostJSON(t, newsletter, base, kitPath+c.method, c.token, c.body)
			e := servertest.DecodeHTTPError(t, body)
			if status != c.status || e.Code != c.code {
				t.Fatalf("%s: %d %s, want %d %s", c.method, status, body, c.status, c.code)
			}
			if got := strings.Join(e.Fields(), ","); got != strings.Join(c.fields, ",") {
				t.Fatalf("BadRequest names %q in %s, want %q", got, body, c.fields)
			}
		})
	}

	t.Run("a caller the CA did not sign fails the handshake", func(t *testing.T) {
		stranger := &http.Client{Transport: &http.Transport{}}
		if resp, err := stranger.Post(base+kitPath+"Whoami", "application/json", strings.NewReader(`{}`)); err == nil {
			_ = resp.Body.Close()
			t.Fatalf("a client without the CA's trust or a certificate got %s", resp.Status)
		}
	})

	t.Run("the same request id on both listeners is the same mutation", func(t *testing.T) {
		status, body := servertest.PostJSON(t, newsletter, base, kitPath+"Put", "", `{"requestId": "r1", "tenantId": "clio", "key": "greeting", "value": "hello"}`)
		var first struct{ Revision string }
		if status != http.StatusOK || json.Unmarshal(body, &first) != nil || first.Revision == "" {
			t.Fatalf("Put over HTTP: %d %s", status, body)
		}
		client := kittestv1.NewKitTestServiceClient(servertest.Dial(t, grpcAddr, pki.Client(t, "newsletter")))
		again, err := client.Put(context.Background(), put("r1", "greeting", "hello"))
		if err != nil || first.Revision != jsonUint(again.Revision) {
			t.Fatalf("the same Put over gRPC = %v, %v; want revision %s", again, err, first.Revision)
		}
		_, err = client.Put(context.Background(), put("r1", "greeting", "changed"))
		if code(err) != codes.InvalidArgument || strings.Join(violatedFields(t, err), ",") != "request_id" {
			t.Fatalf("r1 with another body over gRPC = %v, want InvalidArgument naming request_id", err)
		}
		status, body = servertest.PostJSON(t, newsletter, base, kitPath+"Put", "", `{"requestId": "r1", "tenantId": "clio", "key": "greeting", "value": "changed"}`)
		if e := servertest.DecodeHTTPError(t, body); status != http.StatusBadRequest || strings.Join(e.Fields(), ",") != "request_id" {
			t.Fatalf("r1 with another body over HTTP: %d %s, want 400 naming request_id", status, body)
		}
		got, err := client.Get(context.Background(), &kittestv1.GetRequest{TenantId: "clio", Key: "greeting"})
		if err != nil || got.Value != "hello" {
			t.Fatalf("Get = %v, %v; want the first Put's value", got, err)
		}
	})
}

// jsonUint is n as protojson writes a uint64: a decimal string.
func jsonUint(n uint64) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// In the development profile the HTTP listener is plaintext on loopback,
// a local caller is the development identity as over gRPC, a method free
// of side effects answers GET as the Connect protocol allows, and a body
// over the gRPC message limit is refused before it is read whole.
func TestHTTPJSONDevelopmentProfile(t *testing.T) {
	// The refused body's connection lingers half a second after its
	// answer (net/http's closeWriteAndWait); a shutdown timeout lets the
	// server's Shutdown wait for it, so that no goroutine outlives the test.
	_, base := servertest.StartHTTP(t, server.Config{Logger: quietLogger(), ShutdownTimeout: 5 * time.Second}, registerKittest(t))
	client := &http.Client{}

	status, body := servertest.PostJSON(t, client, base, kitPath+"Whoami", "", `{}`)
	if status != http.StatusOK || !strings.Contains(string(body), auth.DevIdentityName) {
		t.Fatalf("Whoami: %d %s, want the development identity", status, body)
	}

	q := url.Values{"connect": {"v1"}, "encoding": {"json"}, "message": {`{"tenantId": "clio", "key": "missing"}`}}
	resp, err := client.Get(base + kitPath + "Get?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET of Get: %s, want 404 from the handler", resp.Status)
	}
	resp, err = client.Get(base + kitPath + "Put?" + url.Values{"connect": {"v1"}, "encoding": {"json"}, "message": {`{}`}}.Encode())
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusOK || resp.StatusCode >= 500 {
		t.Fatalf("GET of Put, a mutation: %s, want a refusal", resp.Status)
	}

	huge := `{"tenantId": "clio", "key": "k", "value": "` + strings.Repeat("a", 5<<20) + `"}`
	status, body = servertest.PostJSON(t, client, base, kitPath+"Put", "", huge)
	// gRPC refuses a message over its limit with ResourceExhausted; the
	// Connect protocol maps that to 429.
	if e := servertest.DecodeHTTPError(t, body); status != http.StatusTooManyRequests || e.Code != "resource_exhausted" {
		t.Fatalf("a 5 MiB body: %d %.200s, want 429 resource_exhausted", status, body)
	}
}

// The development profile refuses a plaintext HTTP listener that other
// machines reach, as it refuses one for gRPC; production refuses
// plaintext on both.
func TestHTTPAddrMustBeLoopbackInPlaintext(t *testing.T) {
	cfg := server.Config{Name: "t", Addr: "127.0.0.1:0", HTTPAddr: "0.0.0.0:8080"}
	errs := cfg.Refusals()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "--http-addr") {
		t.Fatalf("refusals = %v, want one naming --http-addr", errs)
	}
	cfg.HTTPAddr = "127.0.0.1:8080"
	if errs := cfg.Refusals(); len(errs) != 0 {
		t.Fatalf("loopback: refusals = %v", errs)
	}
	// Production has no plaintext listener at all: the HTTP listener has
	// the gRPC listener's TLS configuration, which production requires.
	prod := servertest.NewPKI(t).Production(t, `{"rules": []}`)
	prod.HTTPAddr = ":8080"
	if errs := prod.Refusals(); len(errs) != 0 {
		t.Fatalf("production with TLS and an HTTP address: refusals = %v", errs)
	}
	prod.TLSCertFile, prod.TLSKeyFile, prod.TLSClientCAFile, prod.TrustDomain = "", "", "", ""
	prod.JWTKeysFile, prod.JWTIssuer, prod.JWTAudience = "k", "i", "a"
	errs = prod.Refusals()
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "plaintext") {
		t.Fatalf("production without TLS, with an HTTP address: refusals = %v, want the plaintext refusal alone", errs)
	}
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// The HTTP listener stops with the server: once Run returns, nothing
// answers on it.
func TestHTTPListenerStopsWithTheServer(t *testing.T) {
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hlis.Addr().String()
	_, run := servertest.Build(t, server.Config{Logger: quietLogger(), HTTPListener: hlis}, registerKittest(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	eventually.Succeeds(t, "the HTTP listener answers", func() error {
		if status, body := servertest.PostJSON(t, client, "http://"+addr, kitPath+"Noop", "", `{}`); status != http.StatusOK {
			return fmt.Errorf("%d %s", status, body)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	client.CloseIdleConnections()
	if conn, err := net.Dial("tcp", addr); err == nil {
		_ = conn.Close()
		t.Fatalf("%s still accepts connections after Run returned", addr)
	}
}

// blockingNoop is the kit test service with a Noop that waits for release,
// so that a test holds a call in flight.
type blockingNoop struct {
	kittestv1.UnimplementedKitTestServiceServer
	entered chan struct{}
	release chan struct{}
}

func (b *blockingNoop) Noop(context.Context, *kittestv1.NoopRequest) (*kittestv1.NoopResponse, error) {
	close(b.entered)
	<-b.release
	return &kittestv1.NoopResponse{}, nil
}

// A call in flight on the HTTP listener when the server stops is answered:
// the listener stops taking calls, waits for those it has, and only then
// does the gRPC server stop (whose GracefulStop would cancel them).
func TestHTTPCallInFlightFinishesAtShutdown(t *testing.T) {
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := hlis.Addr().String()
	svc := &blockingNoop{entered: make(chan struct{}), release: make(chan struct{})}
	_, run := servertest.Build(t, server.Config{Logger: quietLogger(), HTTPListener: hlis, ShutdownTimeout: 10 * time.Second},
		func(s *server.Server) { s.Register(&kittestv1.KitTestService_ServiceDesc, svc) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	type answer struct {
		status int
		body   []byte
		err    error
	}
	answered := make(chan answer, 1)
	go func() {
		resp, err := client.Post("http://"+addr+kitPath+"Noop", "application/json", strings.NewReader(`{}`))
		if err != nil {
			answered <- answer{err: err}
			return
		}
		defer func() { _ = resp.Body.Close() }()
		body, err := io.ReadAll(resp.Body)
		answered <- answer{resp.StatusCode, body, err}
	}()
	<-svc.entered
	cancel()
	// The shutdown has begun once the listener refuses connections.
	eventually.True(t, "the HTTP listener closes", func() bool {
		conn, err := net.Dial("tcp", addr)
		if err == nil {
			_ = conn.Close()
		}
		return err != nil
	})
	close(svc.release)
	if a := <-answered; a.err != nil || a.status != http.StatusOK {
		t.Fatalf("the call in flight at shutdown: %d %s %v, want 200", a.status, a.body, a.err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
