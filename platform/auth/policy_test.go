package auth_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/lethe-privacy/lethe/platform/auth"
)

const policy = `{"rules": [
  {"identities": ["spiffe://lethe.example/newsletter"],
   "methods": ["/lethe.consent.v1.ConsentService/Check"],
   "tenants": ["clio"]},
  {"identities": ["spiffe://lethe.example/dsar-operator"],
   "methods": ["/lethe.dsar.v1.DsarService/*"],
   "tenants": ["*"]},
  {"identities": ["spiffe://lethe.example/platform-admin"],
   "methods": ["/lethe.registry.v1.RegistryService/CreateTenant"],
   "tenants": ["*"]},
  {"identities": ["*"],
   "methods": ["/grpc.reflection.v1.ServerReflection/*"],
   "tenants": ["*"]}
]}`

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestPolicyMatrix holds the file to the expected decision for every
// identity, method and tenant that matters: the newsletter system may
// check consent for Clio only; the DSAR operator may do anything in the
// DSAR service for any tenant; only the platform admin creates tenants;
// everything else is denied.
func TestPolicyMatrix(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	write(t, path, policy)
	p, err := auth.LoadPolicy(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	const (
		newsletter = "spiffe://lethe.example/newsletter"
		operator   = "spiffe://lethe.example/dsar-operator"
		admin      = "spiffe://lethe.example/platform-admin"
		stranger   = "spiffe://lethe.example/stranger"
		check      = "/lethe.consent.v1.ConsentService/Check"
		record     = "/lethe.consent.v1.ConsentService/RecordConsent"
		complete   = "/lethe.dsar.v1.DsarService/CompleteManualTask"
		create     = "/lethe.registry.v1.RegistryService/CreateTenant"
		reflection = "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
	)
	for _, tc := range []struct {
		identity, method, tenant string
		allowed                  bool
	}{
		{newsletter, check, "clio", true},
		{newsletter, check, "cleura", false},
		{newsletter, record, "clio", false},
		{newsletter, complete, "clio", false},
		{newsletter, create, "", false},
		{operator, complete, "clio", true},
		{operator, complete, "cleura", true},
		{operator, check, "clio", false},
		{operator, create, "", false},
		{admin, create, "", true},
		{admin, check, "clio", false},
		{stranger, check, "clio", false},
		{stranger, reflection, "", true},
		{"", reflection, "", false}, // unauthenticated: no identity, nothing allowed
		{newsletter, "/lethe.consent.v1.ConsentService/CheckBatch", "clio", false},
		{operator, "/lethe.dsar.v1.DsarServiceX/Anything", "clio", false},
	} {
		err := p.Authorize(context.Background(), auth.Request{Identity: auth.Identity{Name: tc.identity}, FullMethod: tc.method, TenantID: tc.tenant})
		if allowed := err == nil; allowed != tc.allowed {
			t.Errorf("%s → %s for %q: allowed %v, want %v (%v)", tc.identity, tc.method, tc.tenant, allowed, tc.allowed, err)
		}
		if err != nil && status.Code(err) != codes.PermissionDenied {
			t.Errorf("denial = %v, want PermissionDenied", err)
		}
	}
}

func TestPolicyReloadKeepsTheLastGoodPolicy(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.json")
	write(t, path, policy)
	p, err := auth.LoadPolicy(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req := auth.Request{Identity: auth.Identity{Name: "spiffe://lethe.example/newsletter"}, FullMethod: "/lethe.consent.v1.ConsentService/Check", TenantID: "cleura"}
	if p.Authorize(context.Background(), req) == nil {
		t.Fatal("allowed before the policy allows it")
	}

	// Cleura is added: allowed after a reload, without a restart.
	write(t, path, `{"rules": [{"identities": ["spiffe://lethe.example/newsletter"],
	  "methods": ["/lethe.consent.v1.ConsentService/Check"], "tenants": ["clio", "cleura"]}]}`)
	if err := p.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := p.Authorize(context.Background(), req); err != nil {
		t.Fatalf("after the reload: %v", err)
	}

	// A broken edit is refused and the policy in force stays.
	for _, broken := range []string{`{"rules": [`, `{"rulez": []}`, `{"rules": [{"identities": ["x"], "methods": ["Check"], "tenants": ["clio"]}]}`,
		`{"rules": [{"identities": ["x"], "methods": ["*"], "tenants": ["Not A Tenant"]}]}`, `{"rules": [{"identities": ["x"]}]}`} {
		write(t, path, broken)
		if err := p.Reload(); err == nil {
			t.Errorf("Reload accepted %s", broken)
		}
		if err := p.Authorize(context.Background(), req); err != nil {
			t.Fatalf("after a refused reload of %s the last good policy must stay: %v", broken, err)
		}
	}
	if _, err := auth.LoadPolicy(filepath.Join(t.TempDir(), "missing.json"), nil); err == nil {
		t.Fatal("LoadPolicy accepted a missing file")
	}
}
