package servicetest_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/store"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

// healthOnly is a factory of a service that only reports name in health,
// and hands the Deps it was built with to got.
func healthOnly(name string, neighbours []service.Neighbour, got chan<- service.Deps) service.Factory {
	return service.Factory{Name: name, Neighbours: neighbours, New: func(d service.Deps) (service.Service, error) {
		got <- d
		return service.NewHealthOnly(d, store.Schema{Service: name, Version: 1}, "test."+name)
	}}
}

func serving(t *testing.T, conn grpc.ClientConnInterface, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: name}, grpc.WaitForReady(true))
	if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health of %s = %v, %v; want SERVING", name, resp.GetStatus(), err)
	}
}

// TestHostsServicesAsLetheDevDoes: every service is served on the one
// listener, reaches the registry and its neighbours through it, runs on the
// host's clock and data folder, and comes back on the same files and address
// after a restart.
func TestHostsServicesAsLetheDevDoes(t *testing.T) {
	clk := clock.NewFake(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC))
	alphaDeps, betaDeps := make(chan service.Deps, 2), make(chan service.Deps, 2)
	h := servicetest.Start(t, servicetest.Options{Clock: clk},
		healthOnly("beta", nil, betaDeps),
		healthOnly("alpha", []service.Neighbour{{Name: "beta"}}, alphaDeps))
	if h.Clock != clk {
		t.Fatalf("host clock = %v, want the test's", h.Clock)
	}
	alpha, beta := <-alphaDeps, <-betaDeps
	for _, name := range []string{"test.alpha", "test.beta"} {
		serving(t, h.Conn, name)
	}
	// alpha reaches the registry and its neighbour beta on the listener.
	serving(t, alpha.Registry, "test.beta")
	serving(t, alpha.Neighbours["beta"], "test.beta")
	if len(beta.Neighbours) != 0 {
		t.Errorf("beta declared no neighbours but got %v", beta.Neighbours)
	}
	if alpha.Clock != clk || alpha.DataDir != h.DataDir || alpha.JetStream == nil || alpha.NATS == nil {
		t.Errorf("alpha's deps = %+v; want the host's clock, data folder and NATS", alpha)
	}
	for _, name := range []string{"alpha.db", "beta.db"} {
		if _, err := os.Stat(filepath.Join(h.DataDir, name)); err != nil {
			t.Errorf("bbolt file: %v", err)
		}
	}

	addr := h.Addr
	h.Restart(t)
	if h.Addr != addr {
		t.Errorf("address after restart = %s, want %s", h.Addr, addr)
	}
	serving(t, h.Conn, "test.alpha")
	if (<-alphaDeps).DataDir != h.DataDir {
		t.Error("alpha restarted on another data folder")
	}
	h.Stop()
	h.Stop() // a second Stop is a no-op, and so is the test's cleanup
}
