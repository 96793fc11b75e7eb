package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

var epoch = time.Date(2026, 1, 31, 12, 0, 0, 0, time.UTC)

// fixture is the kit test service served through the production chain.
type fixture struct {
	conn   *grpc.ClientConn
	client kittestv1.KitTestServiceClient
	health healthpb.HealthClient
	db     *store.DB
	audit  *audit.Log
	clock  *clock.Fake
}

func start(t *testing.T, cfg server.Config) *fixture {
	t.Helper()
	f, run := build(t, cfg)
	servertest.Run(t, run)
	return f
}

// build is start without running the server: a test that runs it with
// servertest.Run knows, once it has stopped it, that every call's end has
// been handled.
func build(t *testing.T, cfg server.Config) (*fixture, func(context.Context) error) {
	t.Helper()
	f := &fixture{clock: clock.NewFake(epoch)}
	f.db = storetest.Open(t, kittest.Schema)
	f.audit = audit.New(f.db, f.clock)
	svc := kittest.New(f.db, mutation.New(f.db, idempotency.New(f.clock, idempotency.DefaultTTL)))
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	cfg.Clock = f.clock
	conn, run := servertest.Build(t, cfg, func(s *server.Server) {
		s.Register(&kittestv1.KitTestService_ServiceDesc, svc, server.WithAudit(f.audit))
	})
	f.conn = conn
	f.client = kittestv1.NewKitTestServiceClient(conn)
	f.health = healthpb.NewHealthClient(conn)
	return f, run
}

func put(requestID, key, value string) *kittestv1.PutRequest {
	return &kittestv1.PutRequest{RequestId: requestID, TenantId: "clio", Key: key, Value: value}
}

// recorder fills the authentication and authorization slots and records the
// order in which the chain calls them.
type recorder struct {
	mu       sync.Mutex
	calls    []string
	authnErr error
	authzErr error
	panicIn  string
}

func (r *recorder) record(s string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
}

func (r *recorder) Authenticate(context.Context) (auth.Identity, error) {
	r.record("authenticate")
	if r.panicIn == "authenticate" {
		panic("authenticator bug")
	}
	if r.authnErr != nil {
		return auth.Identity{}, r.authnErr
	}
	return auth.Identity{Name: "spiffe://test/newsletter"}, nil
}

func (r *recorder) Authorize(_ context.Context, req auth.Request) error {
	r.record("authorize " + req.Identity.Name + " " + req.TenantID)
	return r.authzErr
}

func code(err error) codes.Code { return status.Code(err) }

func TestChainOrder(t *testing.T) {
	ctx := context.Background()
	invalid := put("r1", "NOT A KEY", "v") // fails validation

	t.Run("authentication precedes validation", func(t *testing.T) {
		rec := &recorder{authnErr: apierror.Unauthenticated("no credentials")}
		f := start(t, server.Config{Authenticator: rec, Policy: rec})
		_, err := f.client.Put(ctx, invalid)
		if code(err) != codes.Unauthenticated {
			t.Fatalf("Put = %v, want Unauthenticated before any validation", err)
		}
		if got := strings.Join(rec.calls, ","); got != "authenticate" {
			t.Fatalf("slots called %q, want authentication only", got)
		}
	})

	t.Run("authorization precedes validation and denials are audited", func(t *testing.T) {
		rec := &recorder{authzErr: apierror.PermissionDenied("newsletter may not put")}
		f := start(t, server.Config{Authenticator: rec, Policy: rec})
		_, err := f.client.Put(ctx, invalid)
		if code(err) != codes.PermissionDenied {
			t.Fatalf("Put = %v, want PermissionDenied before any validation", err)
		}
		want := "authenticate,authorize spiffe://test/newsletter clio"
		if got := strings.Join(rec.calls, ","); got != want {
			t.Fatalf("slots called %q, want %q", got, want)
		}
		entries := auditEntries(t, f.audit)
		if len(entries) != 1 || entries[0].Code != codes.PermissionDenied.String() || entries[0].Actor != "spiffe://test/newsletter" {
			t.Fatalf("audit log = %+v, want one PermissionDenied entry for the caller", entries)
		}
	})

	t.Run("validation precedes the handler", func(t *testing.T) {
		rec := &recorder{}
		f := start(t, server.Config{Authenticator: rec, Policy: rec})
		if _, err := f.client.Put(ctx, invalid); code(err) != codes.InvalidArgument {
			t.Fatalf("Put = %v, want InvalidArgument", err)
		}
		if _, err := f.client.Get(ctx, &kittestv1.GetRequest{TenantId: "clio", Key: "not-a-key"}); code(err) != codes.NotFound {
			t.Fatalf("Get after a rejected Put = %v, want NotFound: the handler must not have run", err)
		}
		if n := len(auditEntries(t, f.audit)); n != 0 {
			t.Fatalf("audit log has %d entries after a rejected mutation, want 0", n)
		}
	})

	t.Run("recovery is outermost", func(t *testing.T) {
		rec := &recorder{panicIn: "authenticate"}
		f := start(t, server.Config{Authenticator: rec, Policy: rec})
		_, err := f.client.Noop(ctx, &kittestv1.NoopRequest{})
		if code(err) != codes.Internal || strings.Contains(err.Error(), "authenticator bug") {
			t.Fatalf("Noop with a panicking authenticator = %v, want a bare Internal", err)
		}
	})

	t.Run("health is public", func(t *testing.T) {
		rec := &recorder{authnErr: apierror.Unauthenticated("no credentials")}
		f := start(t, server.Config{Authenticator: rec, Policy: rec})
		resp, err := f.health.Check(ctx, &healthpb.HealthCheckRequest{Service: kittestv1.KitTestService_ServiceDesc.ServiceName})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health = %v, %v; want SERVING without credentials", resp, err)
		}
	})
}

func TestDevIdentityReachesHandlers(t *testing.T) {
	f := start(t, server.Config{})
	resp, err := f.client.Whoami(context.Background(), &kittestv1.WhoamiRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Identity != auth.DevIdentityName {
		t.Fatalf("identity = %q, want %q", resp.Identity, auth.DevIdentityName)
	}
}

func TestErrorMapping(t *testing.T) {
	f := start(t, server.Config{})
	ctx := context.Background()

	_, err := f.client.Put(ctx, &kittestv1.PutRequest{RequestId: "r1", TenantId: "Not A Tenant", Key: "Bad Key"})
	if code(err) != codes.InvalidArgument {
		t.Fatalf("Put = %v, want InvalidArgument", err)
	}
	fields := violatedFields(t, err)
	if strings.Join(fields, ",") != "tenant_id,key" {
		t.Fatalf("violations name %q, want tenant_id and key", fields)
	}

	_, err = f.client.Get(ctx, &kittestv1.GetRequest{TenantId: "clio", Key: "missing"})
	if code(err) != codes.NotFound {
		t.Fatalf("Get = %v, want NotFound", err)
	}
	var info *errdetails.ErrorInfo
	for _, d := range status.Convert(err).Details() {
		if i, ok := d.(*errdetails.ErrorInfo); ok {
			info = i
		}
	}
	if info == nil || info.Reason != apierror.ReasonNotFound || info.Metadata["id"] != "missing" {
		t.Fatalf("NotFound details = %v, want ErrorInfo naming the key", info)
	}

	_, err = f.client.Fail(ctx, &kittestv1.FailRequest{SecretDetail: "hunter2"})
	if code(err) != codes.Internal || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("Fail = %v, want Internal without the error's text", err)
	}

	_, err = f.client.Panic(ctx, &kittestv1.PanicRequest{})
	if code(err) != codes.Internal {
		t.Fatalf("Panic = %v, want Internal", err)
	}

	stream, err := f.client.List(ctx, &kittestv1.ListRequest{TenantId: "NOT VALID"})
	if err == nil {
		_, err = stream.Recv()
	}
	if code(err) != codes.InvalidArgument {
		t.Fatalf("List with an invalid tenant = %v, want InvalidArgument from the stream chain", err)
	}
}

func violatedFields(t *testing.T, err error) []string {
	t.Helper()
	var fields []string
	for _, v := range apierror.Violations(err) {
		fields = append(fields, v.Field)
	}
	return fields
}

func TestIdempotency(t *testing.T) {
	f := start(t, server.Config{})
	ctx := context.Background()

	first, err := f.client.Put(ctx, put("r1", "greeting", "hello"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.client.Put(ctx, put("r1", "greeting", "hello"))
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if again.Revision != first.Revision {
		t.Fatalf("replay returned revision %d, want the first result %d", again.Revision, first.Revision)
	}

	_, err = f.client.Put(ctx, put("r1", "greeting", "changed"))
	if code(err) != codes.InvalidArgument || strings.Join(violatedFields(t, err), ",") != "request_id" {
		t.Fatalf("reuse with another body = %v, want InvalidArgument naming request_id", err)
	}
	got, err := f.client.Get(ctx, &kittestv1.GetRequest{TenantId: "clio", Key: "greeting"})
	if err != nil || got.Value != "hello" || got.Revision != first.Revision {
		t.Fatalf("Get = %v, %v; want the first put's value and revision only", got, err)
	}

	_, err = f.client.Put(ctx, put("", "greeting", "x"))
	if code(err) != codes.InvalidArgument || strings.Join(violatedFields(t, err), ",") != "request_id" {
		t.Fatalf("Put without a request id = %v, want InvalidArgument naming request_id", err)
	}

	// Another tenant may use the same request id.
	other := put("r1", "greeting", "hej")
	other.TenantId = "cleura"
	if _, err := f.client.Put(ctx, other); err != nil {
		t.Fatalf("same request id for another tenant: %v", err)
	}

	// Past the retention of idempotency records the id is free again.
	f.clock.Advance(idempotency.DefaultTTL + time.Minute)
	later, err := f.client.Put(ctx, put("r1", "greeting", "changed"))
	if err != nil {
		t.Fatalf("reuse after expiry: %v", err)
	}
	if later.Revision == first.Revision {
		t.Fatalf("reuse after expiry returned the old revision %d", later.Revision)
	}
}

func TestValidateOnly(t *testing.T) {
	f := start(t, server.Config{})
	ctx := context.Background()
	req := put("dry-1", "greeting", "hello")
	req.ValidateOnly = true
	if _, err := f.client.Put(ctx, req); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if _, err := f.client.Get(ctx, &kittestv1.GetRequest{TenantId: "clio", Key: "greeting"}); code(err) != codes.NotFound {
		t.Fatalf("Get after a dry run = %v, want NotFound", err)
	}
	if n := len(auditEntries(t, f.audit)); n != 0 {
		t.Fatalf("a dry run wrote %d audit entries", n)
	}
	// The dry run did not consume the request id.
	req.ValidateOnly = false
	if _, err := f.client.Put(ctx, req); err != nil {
		t.Fatalf("real run after a dry run with the same id: %v", err)
	}
}

func TestAuditRecordsEveryMutation(t *testing.T) {
	f := start(t, server.Config{})
	ctx := context.Background()
	for _, id := range []string{"r1", "r2", "r1"} { // the second r1 is a replay
		if _, err := f.client.Put(ctx, put(id, "k-"+id, "v")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := f.client.Touch(ctx, &kittestv1.TouchRequest{RequestId: "t1", TenantId: "clio"}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.Noop(ctx, &kittestv1.NoopRequest{}); err != nil {
		t.Fatal(err)
	}
	entries := auditEntries(t, f.audit)
	var got []string
	for _, e := range entries {
		got = append(got, e.Method[strings.LastIndex(e.Method, "/")+1:]+" "+e.RequestID+" "+e.Actor+" "+e.Code)
	}
	want := []string{"Put r1 dev:local OK", "Put r2 dev:local OK", "Touch t1 dev:local OK"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("audit entries = %q, want %q (replays and reads are not mutations)", got, want)
	}
	if n, err := f.audit.Verify(); err != nil || n != 3 {
		t.Fatalf("Verify = %d, %v; want 3 entries, intact", n, err)
	}
}

// TestAuditFollowsTheMutation records a mutation of a second file in that
// file's audit chain, with the change, and the service's other mutations in
// the service's log.
func TestAuditFollowsTheMutation(t *testing.T) {
	clk := clock.NewFake(epoch)
	db, second := storetest.Open(t, kittest.Schema), storetest.Open(t, kittest.Schema)
	idem := idempotency.New(clk, idempotency.DefaultTTL)
	main := audit.New(db, clk)
	conn := servertest.Start(t, server.Config{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(s *server.Server) {
		s.Register(&kittestv1.KitTestService_ServiceDesc, kittest.New(db, mutation.New(db, idem)), server.WithAudit(main))
	})
	conn2 := servertest.Start(t, server.Config{Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(s *server.Server) {
		s.Register(&kittestv1.KitTestService_ServiceDesc, kittest.New(second, mutation.New(second, idem)), server.WithAudit(main))
	})
	ctx := context.Background()
	if _, err := kittestv1.NewKitTestServiceClient(conn).Put(ctx, put("r1", "k", "v")); err != nil {
		t.Fatal(err)
	}
	if _, err := kittestv1.NewKitTestServiceClient(conn2).Put(ctx, put("r2", "k", "v")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file string
		log  *audit.Log
		want string
	}{{"the service's file", main, "Put r1"}, {"the second file", audit.New(second, clk), "Put r2"}} {
		var got []string
		for _, e := range auditEntries(t, tc.log) {
			got = append(got, e.Method[strings.LastIndex(e.Method, "/")+1:]+" "+e.RequestID)
		}
		if strings.Join(got, "|") != tc.want {
			t.Errorf("%s: entries = %q, want %q", tc.file, got, tc.want)
		}
	}
}

// TestAuditDetectsTampering alters the audit bucket behind the log's back,
// as someone with access to the file could, and expects Verify to notice.
func TestAuditDetectsTampering(t *testing.T) {
	tamper := map[string]func(t *testing.T, b *bolt.Bucket){
		"flipped byte": func(t *testing.T, b *bolt.Bucket) {
			k, v := entryAt(b, 2)
			v = append([]byte(nil), v...)
			v[len(v)-2] ^= 0x01
			mustPut(t, b, k, v)
		},
		"removed entry": func(t *testing.T, b *bolt.Bucket) {
			k, _ := entryAt(b, 2)
			if err := b.Delete(k); err != nil {
				t.Fatal(err)
			}
		},
		"reordered entries": func(t *testing.T, b *bolt.Bucket) {
			k2, v2 := entryAt(b, 2)
			k3, v3 := entryAt(b, 3)
			v2, v3 = append([]byte(nil), v2...), append([]byte(nil), v3...)
			mustPut(t, b, k2, v3)
			mustPut(t, b, k3, v2)
		},
	}
	for name, alter := range tamper {
		t.Run(name, func(t *testing.T) {
			f := start(t, server.Config{})
			for _, id := range []string{"r1", "r2", "r3", "r4"} {
				if _, err := f.client.Put(context.Background(), put(id, "k", id)); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := f.audit.Verify(); err != nil {
				t.Fatalf("intact log: %v", err)
			}
			if err := f.db.Update(func(tx *bolt.Tx) error {
				alter(t, store.BucketTx(tx, store.BucketAudit))
				return nil
			}); err != nil {
				t.Fatal(err)
			}
			_, err := f.audit.Verify()
			var verr *hashchain.VerifyError
			if !errors.As(err, &verr) {
				t.Fatalf("Verify after %s = %v, want a VerifyError", name, err)
			}
		})
	}
}

// entryAt returns the stored key and value of the chain entry with seq n.
func entryAt(b *bolt.Bucket, n uint64) ([]byte, []byte) {
	k := store.Uint64Key(n)
	return k, b.Get(k)
}

func mustPut(t *testing.T, b *bolt.Bucket, k, v []byte) {
	t.Helper()
	if err := b.Put(k, v); err != nil {
		t.Fatal(err)
	}
}

func auditEntries(t *testing.T, log *audit.Log) []audit.Entry {
	t.Helper()
	var entries []audit.Entry
	if err := log.Range(1, func(_ uint64, e audit.Entry) error {
		entries = append(entries, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return entries
}

func TestShutdownDrainsInKubernetesOrder(t *testing.T) {
	db := storetest.Open(t, kittest.Schema)
	clk := clock.NewFake(epoch)
	svc := kittest.New(db, mutation.New(db, idempotency.New(clk, idempotency.DefaultTTL)))

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stopped := make(chan struct{})
	// Run the server by hand to observe its shutdown.
	conn, run := servertest.Build(t, server.Config{
		Name:            "drain",
		DrainDelay:      200 * time.Millisecond,
		ShutdownTimeout: time.Second,
		Logger:          slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, func(s *server.Server) { s.Register(&kittestv1.KitTestService_ServiceDesc, svc) })
	go func() {
		if err := run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
		close(stopped)
	}()

	health := healthpb.NewHealthClient(conn)
	client := kittestv1.NewKitTestServiceClient(conn)
	name := kittestv1.KitTestService_ServiceDesc.ServiceName
	waitHealth(t, health, name, healthpb.HealthCheckResponse_SERVING)
	if _, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: "lethe.unknown.v1.Nothing"}); code(err) != codes.NotFound {
		t.Fatalf("health of an unregistered service = %v, want NotFound", err)
	}

	cancel()
	// During the drain the server says NOT_SERVING but still serves calls,
	// so that requests routed before the load balancer noticed succeed.
	waitHealth(t, health, name, healthpb.HealthCheckResponse_NOT_SERVING)
	if _, err := client.Noop(context.Background(), &kittestv1.NoopRequest{}); err != nil {
		t.Fatalf("call during the drain: %v", err)
	}
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("server did not stop after the drain")
	}
}

// TestHealthDetail: a detail a service sets on its own is reported under
// its name once the server serves, as last set (also before Run), while
// the server's and the service's readiness stay SERVING; the drain turns
// it NOT_SERVING with everything else.
func TestHealthDetail(t *testing.T) {
	db := storetest.Open(t, kittest.Schema)
	clk := clock.NewFake(epoch)
	svc := kittest.New(db, mutation.New(db, idempotency.New(clk, idempotency.DefaultTTL)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var detail *server.HealthDetail
	conn, run := servertest.Build(t, server.Config{Name: "detail", DrainDelay: time.Second, ShutdownTimeout: time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))},
		func(s *server.Server) {
			s.Register(&kittestv1.KitTestService_ServiceDesc, svc)
			detail = s.RegisterHealthDetail("lethe.kittest.v1.KitTestService/part")
		})
	health := healthpb.NewHealthClient(conn)
	name := kittestv1.KitTestService_ServiceDesc.ServiceName
	// Set before the server runs: reported once it does.
	detail.Set(false)
	stopped := make(chan struct{})
	go func() {
		if err := run(ctx); err != nil {
			t.Errorf("run: %v", err)
		}
		close(stopped)
	}()
	waitHealth(t, health, name, healthpb.HealthCheckResponse_SERVING)
	waitHealth(t, health, detail.Name(), healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(t, health, "", healthpb.HealthCheckResponse_SERVING)
	detail.Set(true)
	waitHealth(t, health, detail.Name(), healthpb.HealthCheckResponse_SERVING)
	detail.Set(false)
	waitHealth(t, health, detail.Name(), healthpb.HealthCheckResponse_NOT_SERVING)
	waitHealth(t, health, name, healthpb.HealthCheckResponse_SERVING)
	detail.Set(true)
	waitHealth(t, health, detail.Name(), healthpb.HealthCheckResponse_SERVING)
	cancel()
	waitHealth(t, health, detail.Name(), healthpb.HealthCheckResponse_NOT_SERVING)
	// Once the drain began a detail stays NOT_SERVING: Set reports at
	// once, so the check right after it sees what it did.
	detail.Set(true)
	if resp, err := health.Check(context.Background(), &healthpb.HealthCheckRequest{Service: detail.Name()}); err != nil ||
		resp.Status != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("a detail set during the drain = %v, %v; want NOT_SERVING", resp, err)
	}
	<-stopped
}

func waitHealth(t *testing.T, h healthpb.HealthClient, name string, want healthpb.HealthCheckResponse_ServingStatus) {
	t.Helper()
	eventually.Succeeds(t, fmt.Sprintf("health of %s is %v", name, want), func() error {
		resp, err := h.Check(context.Background(), &healthpb.HealthCheckRequest{Service: name})
		if err != nil {
			return err
		}
		if resp.Status != want {
			return fmt.Errorf("health %v", resp.Status)
		}
		return nil
	})
}

// TestPolicyFileInTheChain: the authorization slot takes a policy file; a
// call it does not allow is PermissionDenied and audited, one it allows
// goes through.
func TestPolicyFileInTheChain(t *testing.T) {
	path := t.TempDir() + "/policy.json"
	if err := os.WriteFile(path, []byte(`{"rules": [{"identities": ["dev:local"],
	  "methods": ["/lethe.kittest.v1.KitTestService/Noop"], "tenants": ["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	f := start(t, server.Config{PolicyFile: path})
	if _, err := f.client.Noop(context.Background(), &kittestv1.NoopRequest{}); err != nil {
		t.Fatalf("an allowed call: %v", err)
	}
	if _, err := f.client.Put(context.Background(), put("r1", "k", "v")); code(err) != codes.PermissionDenied {
		t.Fatalf("a call the policy does not allow = %v, want PermissionDenied", err)
	}
	entries := auditEntries(t, f.audit)
	if len(entries) != 1 || entries[0].Code != codes.PermissionDenied.String() || entries[0].TenantID != "clio" {
		t.Fatalf("audit = %+v, want the denial", entries)
	}
}
