package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/registry"
)

// builtinLeaves returns the built-in taxonomy's categories that have no
// children.
func builtinLeaves(b *testing.B) []string {
	data, err := os.ReadFile("internal/taxonomy/builtin.json")
	if err != nil {
		b.Fatal(err)
	}
	var cats []struct{ ID string }
	if err := json.Unmarshal(data, &cats); err != nil {
		b.Fatal(err)
	}
	var leaves []string
	for _, c := range cats {
		if !slices.ContainsFunc(cats, func(o struct{ ID string }) bool { return strings.HasPrefix(o.ID, c.ID+".") }) {
			leaves = append(leaves, c.ID)
		}
	}
	return leaves
}

// BenchmarkRouteByChain measures Route for a tenant of 1,000 systems (3–8
// leaf categories each, from the built-in taxonomy) over three paths to
// the same service, in one run: the development profile over an
// in-memory connection, the development profile over loopback TCP, and
// the production chain — mutual TLS over loopback TCP, the caller's
// SPIFFE identity from its certificate, authorization by a policy file,
// audit of mutations and denials. 50 concurrent callers on one
// connection. Run with -benchtime=20000x.
func BenchmarkRouteByChain(b *testing.B) {
	ns := brokertest.Start(b)
	nc, js := brokertest.Connect(b, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		b.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := registry.New(service.Deps{DataDir: b.TempDir(), Logger: quiet, NATS: nc, JetStream: js}, registry.Options{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		<-done
		_ = svc.Close()
	})
	dev := servertest.Start(b, server.Config{Logger: quiet}, svc.Register)
	devTCP := servertest.Dial(b, servertest.StartTCP(b, server.Config{Logger: quiet}, svc.Register), nil)
	pki := servertest.NewPKI(b)
	// The consent service may ask for routes for clio, behind fifty rules
	// for other callers.
	var rules []string
	for i := range 50 {
		rules = append(rules, fmt.Sprintf(`{"identities": [%q], "methods": ["/lethe.registry.v1.RegistryService/Route"], "tenants": ["tenant-%d"]}`,
			servertest.Identity(fmt.Sprint("system-", i)), i))
	}
	rules = append(rules, fmt.Sprintf(`{"identities": [%q], "methods": ["/lethe.registry.v1.RegistryService/Route"], "tenants": ["clio"]}`,
		servertest.Identity("consent")))
	prodCfg := pki.Production(b, `{"rules": [`+strings.Join(rules, ",\n")+`]}`)
	prodCfg.Logger = quiet
	prod := servertest.Dial(b, servertest.StartTCP(b, prodCfg, svc.Register), pki.Client(b, "consent"))

	admin := registryv1.NewRegistryServiceClient(dev)
	if _, err := admin.CreateTenant(ctx, &registryv1.CreateTenantRequest{RequestId: "t", Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "Clio"}}); err != nil {
		b.Fatal(err)
	}
	leaves := builtinLeaves(b)
	rng := rand.New(rand.NewPCG(7, 7))
	systems := make([]*registryv1.System, 1000)
	for i := range systems {
		var cats []*commonv1.DataCategory
		for _, j := range rng.Perm(len(leaves))[:3+rng.IntN(6)] {
			cats = append(cats, &commonv1.DataCategory{Id: leaves[j]})
		}
		systems[i] = &registryv1.System{SystemId: fmt.Sprint("system-", i), Name: fmt.Sprint("System ", i),
			Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "DK", Categories: cats,
			TenantRole: registryv1.TenantRole_TENANT_ROLE_CONTROLLER, AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK}
	}
	servertest.Load(b, len(systems), func(i int) error {
		_, err := admin.RegisterSystem(ctx, &registryv1.RegisterSystemRequest{RequestId: fmt.Sprint("s", i), TenantId: "clio", System: systems[i]})
		return err
	})

	queries := []struct {
		name string
		req  *registryv1.RouteRequest
	}{
		{"leaf", &registryv1.RouteRequest{TenantId: "clio", Categories: []*commonv1.DataCategory{{Id: "user.contact.email"}}}},
		{"mixed", &registryv1.RouteRequest{TenantId: "clio", Categories: []*commonv1.DataCategory{
			{Id: "user.contact"}, {Id: "user.behavior"}, {Id: "user.account.credentials"}}}},
	}
	paths := []struct {
		name string
		conn grpc.ClientConnInterface
	}{{"dev-inmem", dev}, {"dev-tcp", devTCP}, {"prod-mtls", prod}}
	routed := map[string]int{}
	for _, p := range paths {
		for _, q := range queries {
			resp, err := registryv1.NewRegistryServiceClient(p.conn).Route(ctx, q.req)
			if err != nil {
				b.Fatalf("%s: %v", p.name, err)
			}
			routed[q.name] = len(resp.Systems)
		}
	}
	// The production chain refuses a tenant the caller is not allowed.
	if _, err := registryv1.NewRegistryServiceClient(prod).Route(ctx, &registryv1.RouteRequest{TenantId: "tenant-3", AllCategories: true}); status.Code(err) != codes.PermissionDenied {
		b.Fatalf("Route for another tenant over the production chain: %v, want PermissionDenied", err)
	}
	b.ResetTimer()
	for _, q := range queries {
		for _, p := range paths {
			client := registryv1.NewRegistryServiceClient(p.conn)
			rate, p99 := servertest.Load(b, b.N, func(int) error {
				_, err := client.Route(ctx, q.req)
				return err
			})
			b.ReportMetric(rate, q.name+"-"+p.name+"-routes/s")
			b.ReportMetric(float64(p99.Microseconds()), q.name+"-"+p.name+"-p99-us")
		}
		b.ReportMetric(float64(routed[q.name]), q.name+"-systems")
	}
}
