package registry_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/tenants"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/services/registry"
)

// startShards starts the registry assigning new tenants to n consent
// shards.
func startShards(t testing.TB, n int) *fixture {
	t.Helper()
	clk := clock.NewFake(today)
	reg := service.Factory{Name: registry.Factory.Name, New: func(d service.Deps) (service.Service, error) {
		return registry.New(d, registry.Options{ConsentShards: n})
	}}
	h := servicetest.Start(t, servicetest.Options{Clock: clk}, reg)
	return &fixture{conn: h.Conn, client: registryv1.NewRegistryServiceClient(h.Conn), js: h.JetStream, clock: clk, ctx: context.Background()}
}

func (f *fixture) createOn(t testing.TB, id, shard string) *registryv1.Tenant {
	t.Helper()
	resp, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: id, DisplayName: id, ConsentShard: shard}})
	if err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
	return resp.Tenant
}

// TestTenantsGoToTheLeastLoadedShard: a tenant that names no shard is
// put on the shard with the fewest tenants, the lowest on a tie; one that
// names a shard keeps it, beyond the registry's range too (a large tenant
// on a writer of its own).
func TestTenantsGoToTheLeastLoadedShard(t *testing.T) {
	f := startShards(t, 3)
	want := map[string]string{}
	want["big"] = f.createOn(t, "big", "s7").ConsentShard
	if want["big"] != "s7" {
		t.Fatalf("an explicit shard became %s", want["big"])
	}
	want["a"] = f.createOn(t, "a", "s1").ConsentShard
	for i, wantShard := range []string{"s0", "s2", "s0", "s1", "s2"} {
		id := string(rune('m' + i))
		got := f.createOn(t, id, "").ConsentShard
		if got != wantShard {
			t.Fatalf("tenant %d went to %s, want %s (the least-loaded, lowest on a tie)", i, got, wantShard)
		}
		want[id] = got
	}
	list, err := f.client.ListTenants(f.ctx, &registryv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tn := range list.Tenants {
		if tn.ConsentShard != want[tn.TenantId] {
			t.Errorf("ListTenants: %s on %q, want %q", tn.TenantId, tn.ConsentShard, want[tn.TenantId])
		}
	}
}

// TestMovingATenantsShardIsRefused: an update that names another shard is
// refused, FailedPrecondition CONSENT_SHARD_MOVE naming the shard the
// tenant stays on, and changes nothing; one that names none or the same
// keeps it.
func TestMovingATenantsShardIsRefused(t *testing.T) {
	f := startShards(t, 2)
	f.createOn(t, "clio", "s1")
	_, err := f.client.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "Clio ApS", ConsentShard: "s0"}})
	if apierror.ReasonOf(err) != apierror.ReasonConsentShardMove || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("moving clio to s0 = %v, want FailedPrecondition %s", err, apierror.ReasonConsentShardMove)
	}
	for _, shard := range []string{"", "s1"} {
		resp, err := f.client.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(),
			Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "Clio ApS " + shard, ConsentShard: shard}})
		if err != nil || resp.Tenant.ConsentShard != "s1" {
			t.Fatalf("update naming shard %q = %v, %v; want kept on s1", shard, resp.GetTenant(), err)
		}
	}
	got, err := f.client.GetTenant(f.ctx, &registryv1.GetTenantRequest{TenantId: "clio"})
	if err != nil || got.Tenant.ConsentShard != "s1" || got.Tenant.DisplayName != "Clio ApS s1" {
		t.Fatalf("clio after the updates = %v, %v", got.GetTenant(), err)
	}
}

// TestShardNamesAreValidated: a shard that is not "s<n>" is refused with
// the field named.
func TestShardNamesAreValidated(t *testing.T) {
	f := startShards(t, 1)
	for _, bad := range []string{"shard1", "s01", "S1", "s1000", "s-1"} {
		_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(),
			Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "Clio", ConsentShard: bad}})
		if status.Code(err) != codes.InvalidArgument || len(apierror.Violations(err)) == 0 ||
			apierror.Violations(err)[0].Field != "tenant.consent_shard" {
			t.Errorf("shard %q = %v, want InvalidArgument on tenant.consent_shard", bad, err)
		}
		if shardrouter.Valid(bad) {
			t.Errorf("shardrouter.Valid(%q) = true", bad)
		}
	}
}

// TestConsentWritersLearnTheirShard: a directory serving one shard admits
// that shard's tenants and refuses the others with WRONG_SHARD naming
// theirs, from the registry's events alone.
func TestConsentWritersLearnTheirShard(t *testing.T) {
	f := startShards(t, 2)
	db := storetest.Open(t, store.Schema{Service: "consent", Version: 1})
	dir := tenants.New(db, "consent-s1", "", brokertest.Logger(t))
	dir.ServeShard("s1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dir.Run(ctx, f.js) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	f.createOn(t, "clio", "s0")
	f.createOn(t, "clevio", "s1")
	eventually.Succeeds(t, "the s1 writer learns of clevio", func() error { return dir.Require("clevio") })
	err := dir.Require("clio")
	if shard, ok := shardrouter.WrongShard(err); !ok || shard != "s0" {
		t.Fatalf("clio on the s1 writer = %v, want WRONG_SHARD naming s0", err)
	}
	if err := dir.Require("nobody"); status.Code(err) != codes.NotFound {
		t.Fatalf("an unknown tenant = %v, want NotFound", err)
	}
}
