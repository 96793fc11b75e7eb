package deploy_test

import (
	"context"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/auth"
)

// TestPolicyAllowsEveryCallTheServicesMake: the production policy gives
// each service exactly the methods it calls on the others, and no more
// (a compromised DSAR must not destroy consent evidence or accept a
// consent recovery gap). This test keeps the first half true as code
// changes: every RPC of another service that a service's code (or the
// kit's, which every service runs) calls must be allowed for its
// identity. A call is found in the source by the request it builds
// (&consentv1.RecordObjectionRequest{...}: the caller has no other use
// for another service's request message), so a new call fails here
// before it fails in production with PermissionDenied.
func TestPolicyAllowsEveryCallTheServicesMake(t *testing.T) {
	r := render(t, "overlays/production")
	file := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(file, []byte(r.configMap(t, "lethe-authz-policy").Data["policy.json"]), 0o600); err != nil {
		t.Fatal(err)
	}
	policy, err := auth.LoadPolicy(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	td := containerEnv(&r.statefulSet(t, "lethe-dsar").Spec.Template.Spec.Containers[0])["LETHE_TRUST_DOMAIN"]

	descs := map[string]grpc.ServiceDesc{
		"consent":   consentv1.ConsentService_ServiceDesc,
		"dsar":      dsarv1.DsarService_ServiceDesc,
		"registry":  registryv1.RegistryService_ServiceDesc,
		"retention": retentionv1.RetentionService_ServiceDesc,
	}
	kit := sourceOf(t, filepath.Join("..", "platform"))
	for caller := range services {
		code := kit + sourceOf(t, filepath.Join("..", "services", caller))
		identity := auth.Identity{Name: "spiffe://" + td + "/ns/lethe/sa/lethe-" + caller}
		var calls []string
		for callee, desc := range descs {
			if callee == caller {
				continue
			}
			for _, m := range methodNames(desc) {
				if !regexp.MustCompile(`\b` + callee + `v1\.` + m + `Request\{`).MatchString(code) {
					continue
				}
				full := "/" + desc.ServiceName + "/" + m
				calls = append(calls, full)
				if err := policy.Authorize(context.Background(), auth.Request{Identity: identity, FullMethod: full, TenantID: "clio"}); err != nil {
					t.Errorf("%s calls %s, which the production policy refuses it: %v", caller, full, err)
				}
			}
		}
		t.Logf("%s calls %v", caller, calls)
	}
}

// TestPolicyGivesLetheConnectExactlyTheCallsItMakes: the runner's
// identity, spiffe://<trust domain>/ns/lethe/sa/lethe-connect, is allowed
// every RPC that lethe-connect's code (sdk/connect, and the SDK subscriber
// it runs each system on) calls, found as TestPolicyAllowsEveryCallTheServicesMake
// finds them, and refused every other method of the four services: it
// lists tenants and systems and fetches identifiers by claim check, and
// may change nothing. Which systems' identifiers it gets the DSAR service
// decides (services/dsar, mayActFor).
func TestPolicyGivesLetheConnectExactlyTheCallsItMakes(t *testing.T) {
	r := render(t, "overlays/production")
	file := filepath.Join(t.TempDir(), "policy.json")
	if err := os.WriteFile(file, []byte(r.configMap(t, "lethe-authz-policy").Data["policy.json"]), 0o600); err != nil {
		t.Fatal(err)
	}
	policy, err := auth.LoadPolicy(file, nil)
	if err != nil {
		t.Fatal(err)
	}
	td := containerEnv(&r.statefulSet(t, "lethe-dsar").Spec.Template.Spec.Containers[0])["LETHE_TRUST_DOMAIN"]
	identity := auth.Identity{Name: "spiffe://" + td + "/ns/lethe/sa/lethe-connect"}
	code := sourceOf(t, filepath.Join("..", "sdk", "connect")) + sourceOf(t, filepath.Join("..", "sdk", "subscriber"))
	var calls []string
	for callee, desc := range map[string]grpc.ServiceDesc{"consent": consentv1.ConsentService_ServiceDesc, "dsar": dsarv1.DsarService_ServiceDesc,
		"registry": registryv1.RegistryService_ServiceDesc, "retention": retentionv1.RetentionService_ServiceDesc} {
		for _, m := range methodNames(desc) {
			full := "/" + desc.ServiceName + "/" + m
			called := regexp.MustCompile(`\b` + callee + `v1\.` + m + `Request\{`).MatchString(code)
			if called {
				calls = append(calls, full)
			}
			err := policy.Authorize(context.Background(), auth.Request{Identity: identity, FullMethod: full, TenantID: "clio"})
			switch {
			case called && err != nil:
				t.Errorf("lethe-connect calls %s, which the production policy refuses it: %v", full, err)
			case !called && err == nil:
				t.Errorf("the production policy allows lethe-connect %s, which it never calls", full)
			}
		}
	}
	for _, want := range []string{"ListTenants", "ListSystems", "GetIdentifiers"} {
		if !regexp.MustCompile(`\b(registry|dsar)v1\.` + want + `Request\{`).MatchString(code) {
			t.Errorf("lethe-connect's code no longer calls %s: is the source found?", want)
		}
	}
	t.Logf("lethe-connect calls %v", calls)
}

// methodNames are a service's unary and streaming method names.
func methodNames(desc grpc.ServiceDesc) []string {
	var names []string
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, s := range desc.Streams {
		names = append(names, s.StreamName)
	}
	return names
}

// sourceOf concatenates the non-test Go files under dir, leaving out test
// helper packages (folders ending in "test") and generated code.
func sourceOf(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (strings.HasSuffix(d.Name(), "test") || d.Name() == "gen" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		data, err := os.ReadFile(path)
		b.Write(data)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
