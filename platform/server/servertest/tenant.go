package servertest

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
)

// CreateTenant creates a tenant in the registry and waits, at most ten
// seconds, until the services under test have learned of it from the
// registry's event: until known, a call to them for the tenant, stops
// failing with NotFound. Any other error fails the test at once.
func CreateTenant(t testing.TB, registry registryv1.RegistryServiceClient, req *registryv1.CreateTenantRequest, known func() error) {
	t.Helper()
	if _, err := registry.CreateTenant(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := known()
		if err == nil {
			return
		}
		if status.Code(err) != codes.NotFound || time.Now().After(deadline) {
			t.Fatalf("the services never learned of tenant %s: %v", req.Tenant.GetTenantId(), err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
