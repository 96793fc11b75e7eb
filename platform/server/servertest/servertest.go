// Package servertest runs a kit server in a test over an in-memory listener,
// through the same Complete → New → Run path a deployed process takes.
package servertest

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/lethe-privacy/lethe/platform/server"
)

// Build builds a server from cfg over an in-memory listener (Name is set
// when empty; the metrics endpoint is off), lets register add services, and
// returns a client connection to it and the server's Run. The connection is
// closed when the test ends.
func Build(t testing.TB, cfg server.Config, register func(*server.Server)) (*grpc.ClientConn, func(context.Context) error) {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := build(t, cfg, lis, register)
	conn, err := grpc.NewClient("passthrough:///bufconn",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		t.Fatalf("dial test server: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn, srv.Run
}

// build builds a server from cfg on lis (Name is set when empty; the
// metrics endpoint is off) and lets register add services.
func build(t testing.TB, cfg server.Config, lis net.Listener, register func(*server.Server)) *server.Server {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "servertest"
	}
	cfg.Listener = lis
	cfg.MetricsAddr = ""
	completed, err := cfg.Complete(context.Background())
	if err != nil {
		_ = lis.Close()
		t.Fatalf("complete server config: %v", err)
	}
	srv, err := completed.New()
	if err != nil {
		t.Fatalf("new server: %v", err)
	}
	if register != nil {
		register(srv)
	}
	return srv
}

// Start builds a server as Build does and runs it until the test ends.
func Start(t testing.TB, cfg server.Config, register func(*server.Server)) *grpc.ClientConn {
	t.Helper()
	conn, run := Build(t, cfg, register)
	runUntilCleanup(t, run)
	return conn
}

// runUntilCleanup runs a server until the test ends.
func runUntilCleanup(t testing.TB, run func(context.Context) error) {
	Run(t, run)
}

// Run runs a server's run (as Build returns it) until stop is called or
// the test ends. stop returns once run has: the server has stopped and
// every call's end has been handled, a sync point for a test that then
// asserts what did not happen.
func Run(t testing.TB, run func(context.Context) error) (stop func()) {
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
	return stop
}
