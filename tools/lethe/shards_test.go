package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc/resolver"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/registry"
	"github.com/lethe-privacy/lethe/services/retention"
)

// shardHosts is the name service of the shard test: a cluster's DNS
// gives each shard's writer a name (lethe-consent-s1); the test's
// writers are two listeners on loopback ports, so a gRPC resolver of the
// scheme shardScheme stands in for DNS and answers the host name with
// its writer's address. Everything after the name is the CLI's and
// gRPC's own.
var shardHosts = struct {
	mu    sync.Mutex
	addrs map[string]string
}{addrs: map[string]string{}}

// shardScheme is the resolver's scheme: shards:///lethe-consent-s1.
const shardScheme = "shards"

func init() { resolver.Register(shardResolver{}) }

// shardResolver resolves shardScheme targets from shardHosts.
type shardResolver struct{}

func (shardResolver) Scheme() string { return shardScheme }

func (shardResolver) Build(target resolver.Target, cc resolver.ClientConn, _ resolver.BuildOptions) (resolver.Resolver, error) {
	shardHosts.mu.Lock()
	addr, ok := shardHosts.addrs[target.Endpoint()]
	shardHosts.mu.Unlock()
	if !ok {
		return nil, fmt.Errorf("no host %q", target.Endpoint())
	}
	return shardResolver{}, cc.UpdateState(resolver.State{Addresses: []resolver.Address{{Addr: addr}}})
}

func (shardResolver) ResolveNow(resolver.ResolveNowOptions) {}
func (shardResolver) Close()                                {}

// TestCLIRoutesConsentByShard: two consent writers, s0 and s1, each on
// its own listener (the second joins the first's NATS server and
// registry). The lethe CLI given a consent address with {shard} in it
// applies a tenant file to each shard, records a grant and answers a
// check for each tenant, each on the writer of the tenant's shard:
// the other writer refuses that tenant with WRONG_SHARD, and a plain
// address of the wrong writer fails the same command.
func TestCLIRoutesConsentByShard(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	h0 := servicetest.Start(t, servicetest.Options{Clock: clock.Real{}, Logger: quiet}, registry.Factory, consent.Factory, retention.Factory)
	s1 := service.Factory{Name: consent.Factory.Name, New: func(d service.Deps) (service.Service, error) {
		return consent.New(d, consent.Options{Shard: "s1"})
	}}
	h1 := servicetest.Start(t, servicetest.Options{Clock: clock.Real{}, Logger: quiet, Join: h0}, s1)
	writers := map[string]consentv1.ConsentServiceClient{
		"s0": consentv1.NewConsentServiceClient(h0.Conn), "s1": consentv1.NewConsentServiceClient(h1.Conn)}
	shardHosts.mu.Lock()
	shardHosts.addrs["lethe-consent-s0"], shardHosts.addrs["lethe-consent-s1"] = h0.Addr, h1.Addr
	shardHosts.mu.Unlock()

	// The operator's context: the registry and retention on the first
	// host, consent by shard.
	dir := t.TempDir()
	config := filepath.Join(dir, "config")
	if err := os.WriteFile(config, fmt.Appendf(nil, "currentContext: shards\ncontexts:\n  - name: shards\n    address: %s\n    consent: %s:///lethe-consent-%s\n",
		h0.Addr, shardScheme, shardrouter.ShardPlaceholder), 0o600); err != nil {
		t.Fatal(err)
	}
	lethe := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := run(append(args, "--config", config), &out, &out)
		return code, out.String()
	}
	tenantShard := map[string]string{"clio": "s0", "clevio": "s1"}
	for tenant, shard := range tenantShard {
		file := filepath.Join(dir, tenant+".yaml")
		if err := os.WriteFile(file, fmt.Appendf(nil, `apiVersion: lethe.dev/v1
kind: Tenant
tenant: {tenantId: %s, displayName: %s, consentShard: %s}
purposes:
  - {purposeId: newsletter, name: Newsletter, legalBasis: consent, directMarketing: true}
`, tenant, tenant, shard), 0o600); err != nil {
			t.Fatal(err)
		}
		if code, out := lethe("apply", "-f", file); code != exitOK {
			t.Fatalf("apply %s: exit %d\n%s", tenant, code, out)
		}
		if code, out := lethe("consent", "grant", "--tenant", tenant, "--subject", "s-1", "--purpose", "newsletter"); code != exitOK {
			t.Fatalf("consent grant for %s: exit %d\n%s", tenant, code, out)
		}
		if code, out := lethe("consent", "check", "--tenant", tenant, "--subject", "s-1", "--purpose", "newsletter"); code != exitOK || !strings.Contains(out, "allowed") {
			t.Fatalf("consent check for %s: exit %d, want 0 allowed\n%s", tenant, code, out)
		}
	}

	// Each tenant's purpose and grant are on its shard's writer, and the
	// other writer refuses the tenant, naming its shard.
	ctx := context.Background()
	for tenant, shard := range tenantShard {
		for name, w := range writers {
			resp, err := w.Check(ctx, &consentv1.CheckRequest{TenantId: tenant, SubjectId: "s-1", PurposeId: "newsletter"})
			if name == shard {
				if err != nil || !resp.Decision.Allowed {
					t.Errorf("%s on its writer %s: %v, %v; want allowed", tenant, shard, resp, err)
				}
				continue
			}
			if got, ok := shardrouter.WrongShard(err); !ok || got != shard {
				t.Errorf("%s on writer %s: %v, want WRONG_SHARD naming %s", tenant, name, err, shard)
			}
		}
	}

	// A plain address still reaches one writer, as before: the right one
	// answers, the wrong one refuses the command.
	if code, out := lethe("consent", "check", "--tenant", "clevio", "--subject", "s-1", "--purpose", "newsletter", "--consent-addr", h1.Addr); code != exitOK {
		t.Errorf("check on s1's writer by its plain address: exit %d\n%s", code, out)
	}
	if code, out := lethe("consent", "check", "--tenant", "clevio", "--subject", "s-1", "--purpose", "newsletter", "--consent-addr", h0.Addr); code == exitOK ||
		!strings.Contains(out, "served by consent shard s1") {
		t.Errorf("check of s1's tenant on s0's writer by its plain address: exit %d, want the refusal naming shard s1\n%s", code, out)
	}

	// accept-recovery-gap names no tenant: --shard picks the writer from
	// the template. Neither writer has a gap to accept, and each says so;
	// a shard no writer serves is not reached, and a name that is no
	// shard's is refused before any call.
	for shard := range writers {
		if code, out := lethe("consent", "accept-recovery-gap", "--shard", shard, "--reason", "drill"); code != exitRefused || !strings.Contains(out, "no recovery gap stands") {
			t.Errorf("accept-recovery-gap on %s: exit %d, want %d and NO_RECOVERY_GAP\n%s", shard, code, exitRefused, out)
		}
	}
	if code, out := lethe("consent", "accept-recovery-gap", "--shard", "s7", "--reason", "drill", "--timeout", "2s"); code != exitPlatform {
		t.Errorf("accept-recovery-gap on a shard without a writer: exit %d, want %d\n%s", code, exitPlatform, out)
	}
	for _, args := range [][]string{{"--shard", "shard-1", "--reason", "drill"}, {"--shard", "s1"}} {
		if code, out := lethe(append([]string{"consent", "accept-recovery-gap"}, args...)...); code != exitUsage {
			t.Errorf("accept-recovery-gap %v: exit %d, want %d\n%s", args, code, exitUsage, out)
		}
	}
}
