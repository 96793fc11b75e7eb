package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/tools/wirefuzz"
)

// The bounded run is part of every `go test`; `make fuzz-wire` runs a long
// one with these flags.
var (
	wirefuzzInputs  = flag.Int("wirefuzz.inputs", 300, "inputs TestWireFuzz sends after the base requests")
	wirefuzzSeed    = flag.Uint64("wirefuzz.seed", 1, "seed of TestWireFuzz's inputs")
	wirefuzzHeavy   = flag.Int("wirefuzz.heavy", 4, "at most this many inputs of each heavy kind (0: no bound)")
	wirefuzzTimeout = flag.Duration("wirefuzz.timeout", 10*time.Second, "longest a call may take before it misbehaves")
	wirefuzzReport  = flag.String("wirefuzz.report", "", "file TestWireFuzz writes its counts and failures to (Markdown)")
)

// TestWireFuzz sends hostile bytes to every method of every service of a
// running `lethe dev` (see package wirefuzz for the inputs and the
// properties each is held to) and fails with each broken property, by
// property, kind of input and method.
func TestWireFuzz(t *testing.T) {
	bin := buildBinaries(t, ".")["."]
	data := t.TempDir()
	addr := freeAddr(t)
	p := startProcess(t, bin, "dev", "--data", data, "--addr", addr, "--nats-addr", freeAddr(t),
		"--metrics-addr", "", "--http-addr", "", "--public-addr", "", "--replica-addr", "off", "--log-level", "warn")
	conn := waitServing(t, addr, healthNames, p)
	defer p.stop(t)

	services := wirefuzz.Services()
	if !slices.Equal(services, slices.Sorted(slices.Values(healthNames))) {
		t.Fatalf("the protos declare services %v; lethe dev serves %v", services, healthNames)
	}
	methods, err := wirefuzz.Methods(services...)
	if err != nil {
		t.Fatal(err)
	}

	const tenant = "fuzz"
	servertest.CreateTenant(t, registryv1.NewRegistryServiceClient(conn),
		&registryv1.CreateTenantRequest{RequestId: "wirefuzz-tenant", Tenant: &registryv1.Tenant{TenantId: tenant, DisplayName: "Fuzz"}},
		func() error {
			ctx := context.Background()
			if _, err := consentv1.NewConsentServiceClient(conn).ListPurposes(ctx, &consentv1.ListPurposesRequest{TenantId: tenant}); err != nil {
				return err
			}
			if _, err := retentionv1.NewRetentionServiceClient(conn).ListRules(ctx, &retentionv1.ListRulesRequest{TenantId: tenant}); err != nil {
				return err
			}
			_, err := dsarv1.NewDsarServiceClient(conn).ListRequests(ctx, &dsarv1.ListRequestsRequest{TenantId: tenant})
			return err
		})

	health := healthpb.NewHealthClient(conn)
	var progress io.Writer
	if testing.Verbose() {
		progress = os.Stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Hour)
	defer cancel()
	report, runErr := wirefuzz.Run(ctx, wirefuzz.Config{
		Conn:     conn,
		Methods:  methods,
		Tenant:   tenant,
		Seed:     *wirefuzzSeed,
		Inputs:   *wirefuzzInputs,
		Heavy:    *wirefuzzHeavy,
		Timeout:  *wirefuzzTimeout,
		Snapshot: wirefuzz.Stores(data),
		Healthy: func(ctx context.Context, service string) error {
			select {
			case err := <-p.done:
				p.done <- err
				return fmt.Errorf("lethe dev exited: %v", err)
			default:
			}
			return serving(ctx, health, service)
		},
		ServerLog: func(from int) (string, int) {
			out := p.output.String()
			return out[min(from, len(out)):], len(out)
		},
		Progress: progress,
	})
	if report != nil {
		t.Logf("wire fuzzing, seed %d: %d inputs over %d methods in %s (%d refused inputs sent again after a background write)\n%s",
			report.Seed, report.Tried(), len(methods), report.Elapsed.Round(time.Millisecond), report.Rechecked, report.Table())
		if testing.Verbose() {
			for _, b := range report.Bases {
				t.Logf("base %s: %s %s", b.Method, b.Code, b.Message)
			}
		}
		if *wirefuzzReport != "" {
			writeWirefuzzReport(t, *wirefuzzReport, report, len(methods))
		}
		for _, g := range report.Groups() {
			t.Errorf("%s", g)
		}
	}
	if runErr != nil {
		t.Fatalf("%v\nlethe dev output (tail):\n%s", runErr, tail(p.output.String(), 4000))
	}
}

// serving checks that a service answers health SERVING. An input may have
// broken the connection (a response too large for the client's header
// limit ends the whole HTTP/2 connection): a call caught in that is tried
// again on a new connection, so that only a server that stays down counts.
func serving(ctx context.Context, health healthpb.HealthClient, name string) error {
	var err error
	for range 3 {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		var resp *healthpb.HealthCheckResponse
		resp, err = health.Check(ctx, &healthpb.HealthCheckRequest{Service: name}, grpc.WaitForReady(true))
		cancel()
		switch {
		case err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING:
			return nil
		case err == nil:
			return fmt.Errorf("health %s: %s", name, resp.Status)
		case status.Code(err) != codes.Unavailable:
			return fmt.Errorf("health %s: %w", name, err)
		}
	}
	return fmt.Errorf("health %s: %w", name, err)
}

func writeWirefuzzReport(t *testing.T, path string, r *wirefuzz.Report, methods int) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "# Wire fuzzing: the last long run\n\nWritten by `make fuzz-wire` on %s; what the kinds and properties are is in\n[security.md](security.md#wire-fuzzing).\n\n",
		time.Now().UTC().Format("2006-01-02"))
	fmt.Fprintf(&b, "Seed %d: %d inputs over %d methods in %s.\n\n%s\n", r.Seed, r.Tried(), methods, r.Elapsed.Round(time.Second), r.Table())
	groups := r.Groups()
	if len(groups) > 0 {
		fmt.Fprintf(&b, "\nMisbehaviour by property, kind and method (count, first example):\n\n")
		for _, g := range groups {
			fmt.Fprintf(&b, "- %s\n", strings.ReplaceAll(g.String(), "\n", " "))
		}
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}
