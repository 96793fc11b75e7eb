package registryclient_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// routes stands in for the registry's Route, served by a kit server (the
// chain the registry runs: validation, error boundary) over a gRPC
// connection. The registry service itself lives in a module the kit must
// not import (services/registry holds the tests against it, such as
// TestRoutingFeedsTaskTracking); here what is proven is the client's side:
// what it asks and how it reads the answer.
type routes struct {
	registryv1.UnimplementedRegistryServiceServer
	systems map[string][]*registryv1.RoutedSystem // by tenant

	mu    sync.Mutex
	asked []*registryv1.RouteRequest
}

func (r *routes) Route(_ context.Context, req *registryv1.RouteRequest) (*registryv1.RouteResponse, error) {
	r.mu.Lock()
	r.asked = append(r.asked, req)
	r.mu.Unlock()
	systems, ok := r.systems[req.TenantId]
	if !ok {
		return nil, apierror.NotFound("tenant", req.TenantId)
	}
	return &registryv1.RouteResponse{Systems: systems}, nil
}

// last returns the last request the registry received.
func (r *routes) last(t *testing.T) *registryv1.RouteRequest {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.asked) == 0 {
		t.Fatal("the registry was not asked")
	}
	return r.asked[len(r.asked)-1]
}

// serve runs a kit server with r as the registry until the test ends, or
// until stop is called.
func serve(t *testing.T, r *routes) (conn *grpc.ClientConn, stop func()) {
	t.Helper()
	conn, run := servertest.Build(t, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(s *server.Server) {
		s.Register(&registryv1.RegistryService_ServiceDesc, r)
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
				t.Errorf("server run: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return conn, stop
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func categories(ids ...string) []*commonv1.DataCategory {
	out := make([]*commonv1.DataCategory, len(ids))
	for i, id := range ids {
		out[i] = &commonv1.DataCategory{Id: id}
	}
	return out
}

// TestExpect: each kind of scope is asked as the registry's RouteRequest
// says it, and each system the registry routes to becomes one expected
// task, in the registry's order, with its answer mode.
func TestExpect(t *testing.T) {
	r := &routes{systems: map[string][]*registryv1.RoutedSystem{
		"clio": {
			{SystemId: "newsletter", AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK},
			{SystemId: "paper-archive", AnswerMode: commonv1.AnswerMode_ANSWER_MODE_MANUAL},
			{SystemId: "crm", AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK},
		},
		"cleura": {},
	}}
	conn, _ := serve(t, r)
	client := registryclient.New(conn)
	ctx := testContext(t)

	want := []tasks.Expect{
		{SystemID: "newsletter", Mode: commonv1.AnswerMode_ANSWER_MODE_SDK},
		{SystemID: "paper-archive", Mode: commonv1.AnswerMode_ANSWER_MODE_MANUAL},
		{SystemID: "crm", Mode: commonv1.AnswerMode_ANSWER_MODE_SDK},
	}
	for _, tc := range []struct {
		name  string
		scope registryclient.Scope
		asked *registryv1.RouteRequest
	}{
		{"categories", registryclient.Scope{Categories: []string{"user.contact.email", "user.behavior"}},
			&registryv1.RouteRequest{TenantId: "clio", Categories: categories("user.contact.email", "user.behavior")}},
		{"all of the subject's data", registryclient.Scope{All: true},
			&registryv1.RouteRequest{TenantId: "clio", AllCategories: true}},
		{"a purpose", registryclient.Scope{Purpose: "newsletter"},
			&registryv1.RouteRequest{TenantId: "clio", PurposeId: "newsletter"}},
		{"categories and a purpose", registryclient.Scope{Categories: []string{"user.contact"}, Purpose: "newsletter"},
			&registryv1.RouteRequest{TenantId: "clio", Categories: categories("user.contact"), PurposeId: "newsletter"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := client.Expect(ctx, "clio", tc.scope)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(r.last(t), tc.asked) {
				t.Fatalf("the registry was asked %v, want %v", r.last(t), tc.asked)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("Expect = %+v, want %+v", got, want)
			}
		})
	}

	// A tenant none of whose systems the event concerns: nothing to expect.
	got, err := client.Expect(ctx, "cleura", registryclient.Scope{All: true})
	if err != nil || len(got) != 0 {
		t.Fatalf("Expect with no system routed = %+v, %v; want none", got, err)
	}
}

// TestExpectErrors: the registry's refusals reach the caller with their
// code and details, so that it can tell a tenant the registry does not
// know, or a scope it does not accept, from a registry that is away (which
// the services retry).
func TestExpectErrors(t *testing.T) {
	r := &routes{systems: map[string][]*registryv1.RoutedSystem{"clio": {}}}
	conn, stop := serve(t, r)
	client := registryclient.New(conn)

	_, err := client.Expect(testContext(t), "clevio", registryclient.Scope{All: true})
	if status.Code(err) != codes.NotFound {
		t.Fatalf("unknown tenant: %v, want NotFound", err)
	}
	if d := status.Convert(err).Details(); len(d) != 1 || d[0].(*errdetails.ErrorInfo).GetReason() != apierror.ReasonNotFound {
		t.Fatalf("unknown tenant: details %v, want ErrorInfo %s", d, apierror.ReasonNotFound)
	}

	// The registry's rules on its request, applied by its server's
	// validation: an id that is no tenant id, more categories than one
	// question may hold.
	tooMany := make([]string, 201)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("custom.c%d", i)
	}
	for _, tc := range []struct {
		name, tenant string
		scope        registryclient.Scope
		field        string
	}{
		{"bad tenant id", "Clio ApS", registryclient.Scope{All: true}, "tenant_id"},
		{"too many categories", "clio", registryclient.Scope{Categories: tooMany}, "categories"},
	} {
		_, err := client.Expect(testContext(t), tc.tenant, tc.scope)
		v := apierror.Violations(err)
		if status.Code(err) != codes.InvalidArgument || len(v) == 0 || v[0].Field != tc.field {
			t.Fatalf("%s: %v (violations %+v), want InvalidArgument naming %s", tc.name, err, v, tc.field)
		}
	}

	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := client.Expect(canceled, "clio", registryclient.Scope{All: true}); status.Code(err) != codes.Canceled {
		t.Fatalf("canceled call: %v, want Canceled", err)
	}

	stop()
	if _, err := client.Expect(testContext(t), "clio", registryclient.Scope{All: true}); status.Code(err) != codes.Unavailable {
		t.Fatalf("registry stopped: %v, want Unavailable", err)
	}
}
