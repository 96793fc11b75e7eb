// Package servicetest hosts a set of Lethe services in a test as `lethe dev`
// hosts all four: one gRPC server on a loopback TCP listener, an embedded
// NATS server with the platform stream, and one data folder holding every
// service's bbolt file and the NATS store (service.NewLocal, the same
// composition). The test names the services by their factories, so a test
// of the DSAR service hosts the registry, consent, retention and DSAR
// factories without its package importing any other service: the test
// lives where the services may be imported together (tools/lethe).
//
// A factory value the test builds itself varies a service's Options or
// Deps, and captures the service it built:
//
//	var svc *consent.Service
//	f := service.Factory{Name: consent.Factory.Name, Neighbours: consent.Factory.Neighbours,
//		New: func(d service.Deps) (service.Service, error) {
//			s, err := consent.New(d, consent.Options{ExpirySweepEvery: time.Hour})
//			svc = s
//			return s, err
//		}}
package servicetest

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
)

// Epoch is the time a Host's fake clock starts at when the test gives no
// clock.
var Epoch = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

// Options vary a Host.
type Options struct {
	// Server is the server's configuration (its Authenticator, Policy,
	// Profile, ...). Name, Listener, Clock and Logger are the Host's; the
	// metrics endpoint is off.
	Server server.Config
	// Clock is the clock of the server and of every service; a clock.Fake
	// at Epoch when nil.
	Clock clock.Clock
	// Logger receives the server's and the services' logs; none when nil.
	Logger *slog.Logger
	// DataDir holds the services' bbolt files and, under "nats", the NATS
	// store; a fresh temporary folder when empty.
	DataDir string
	// SyncAlways makes NATS fsync every write before acknowledging it, as
	// lethe dev does by default; off, publishing is much faster.
	SyncAlways bool
	// NATSOf, when set, makes the Host reach the NATS server of that other
	// Host instead of starting its own: a consent read replica beside its
	// writer's Host follows the writer's stream.
	NATSOf *Host
	// Roots, when set, makes the services and Conn reach the listener over
	// mutual TLS, presenting Server's key pair and trusting Roots
	// (service.DialRoots): required when Server is a production
	// configuration, which refuses plaintext.
	Roots *tlsconfig.Pool
}

// Host is services served together in a test. Everything it started stops
// when the test ends.
type Host struct {
	// Conn reaches every hosted service, as a client of lethe dev does
	// (over mutual TLS as the server itself when Options.Roots is set).
	Conn *grpc.ClientConn
	// NATS and JetStream reach the platform stream.
	NATS      *nats.Conn
	JetStream jetstream.JetStream
	// Clock is Options.Clock, or the fake clock the Host made.
	Clock clock.Clock
	// DataDir is the services' data folder.
	DataDir string
	// Addr is the gRPC listener's address, kept across Restart.
	Addr string

	t         testing.TB
	opts      Options
	factories []service.Factory
	dialer    service.Dialer // Conn's: the services' own credentials

	mu   sync.Mutex
	stop func() error // stops the running services; nil when stopped
}

// Start hosts the factories' services, in order (the registry first: the
// others learn of tenants from it), and returns once they are built and
// their server is listening.
func Start(t testing.TB, opts Options, factories ...service.Factory) *Host {
	t.Helper()
	if opts.Clock == nil {
		opts.Clock = clock.NewFake(Epoch)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if opts.DataDir == "" {
		opts.DataDir = t.TempDir()
	}
	var nc *nats.Conn
	var js jetstream.JetStream
	if opts.NATSOf != nil {
		nc, js = opts.NATSOf.NATS, opts.NATSOf.JetStream
	} else {
		ns := brokertest.StartAt(t, filepath.Join(opts.DataDir, "nats"), opts.SyncAlways)
		nc, js = brokertest.Connect(t, ns)
		if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
			t.Fatalf("platform stream: %v", err)
		}
	}
	h := &Host{NATS: nc, JetStream: js, Clock: opts.Clock, DataDir: opts.DataDir, Addr: "127.0.0.1:0",
		t: t, opts: opts, factories: factories}
	h.start(t)
	conn, err := h.dialer.Dial("servicetest", h.Addr)
	if err != nil {
		t.Fatalf("dial %s: %v", h.Addr, err)
	}
	h.Conn = conn
	// Cleanups run last-in first-out: the services stop before the
	// connection closes, and both before NATS shuts down.
	t.Cleanup(func() { _ = conn.Close() })
	t.Cleanup(h.Stop)
	return h
}

// start builds the services on a listener at h.Addr and runs them.
func (h *Host) start(t testing.TB) {
	t.Helper()
	lis, err := net.Listen("tcp", h.Addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", h.Addr, err)
	}
	h.Addr = lis.Addr().String()
	cfg := h.opts.Server
	cfg.Name, cfg.Listener, cfg.MetricsAddr = "lethe-servicetest", lis, ""
	cfg.Clock, cfg.Logger = h.opts.Clock, h.opts.Logger
	completed, err := cfg.Complete(context.Background())
	if err != nil {
		_ = lis.Close()
		t.Fatalf("complete the server configuration: %v", err)
	}
	var dial []service.LocalOption
	if h.opts.Roots != nil {
		dial = append(dial, service.DialRoots(h.opts.Roots))
	}
	h.dialer = service.NewDialer(completed, h.opts.Roots)
	local, err := service.NewLocal(completed, service.Deps{DataDir: h.DataDir, NATS: h.NATS, JetStream: h.JetStream},
		h.factories, dial...)
	if err != nil {
		t.Fatalf("build the services: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- local.Run(ctx) }()
	var once sync.Once
	var runErr error
	h.mu.Lock()
	h.stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
		})
		return runErr
	}
	h.mu.Unlock()
}

// Stop stops the server and the services and closes their files, as a
// process's shutdown does; a failure fails the test. Stopping twice is a
// no-op.
func (h *Host) Stop() {
	h.mu.Lock()
	stop := h.stop
	h.stop = nil
	h.mu.Unlock()
	if stop == nil {
		return
	}
	if err := stop(); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		h.t.Errorf("services stopped with: %v", err)
	}
}

// Restart stops the services (when running) and starts them again on the
// same files, NATS server and address, as a restarted lethe dev does. Conn
// reconnects by itself. Between Stop and Restart a test may change the
// files, as an operator restoring a backup does.
func (h *Host) Restart(t testing.TB) {
	t.Helper()
	h.Stop()
	h.start(t)
}
