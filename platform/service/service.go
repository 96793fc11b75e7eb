// Package service is how a Lethe service is hosted. A service is a value
// that registers its gRPC API on a kit server and runs its background work;
// a Factory builds it from the dependencies a host provides. The same
// factories serve a single-service deployable (Main) and the all-in-one
// `lethe dev`, which hosts all four in one process.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/telemetry"
)

// Service is one Lethe service as a host runs it.
type Service interface {
	// Register adds the service's API (or, until it has one, its health
	// entry) to srv.
	Register(srv *server.Server)
	// Run does the service's background work until ctx ends.
	Run(ctx context.Context) error
	// Close releases the service's resources after Run returned.
	Close() error
}

// Deps is what a host gives a service.
type Deps struct {
	// DataDir is the folder of the service's bbolt file.
	DataDir string
	Clock   clock.Clock
	Logger  *slog.Logger
	// NATS and JetStream reach the platform stream.
	NATS      *nats.Conn
	JetStream jetstream.JetStream
	// Telemetry gives the service its meter; none when nil.
	Telemetry *telemetry.Providers
	// Registry reaches the registry service, which tells the others which
	// systems must answer their events (see package registryclient).
	Registry grpc.ClientConnInterface
}

// Factory builds a service.
type Factory struct {
	// Name is the service's short name: "consent", "dsar", "retention",
	// "registry". It names the bbolt file and the logger.
	Name string
	// New builds the service.
	New func(Deps) (Service, error)
}

// Base is what every service holds: its own bbolt file, the audit log and
// idempotency records kept in it, the mutator over them, and the outbox
// whose relay publishes the service's events.
type Base struct {
	Name        string
	DB          *store.DB
	Audit       *audit.Log
	Idempotency *idempotency.Store
	Mutator     *mutation.Mutator
	Outbox      *outbox.Outbox
	Clock       clock.Clock
	Logger      *slog.Logger
	Meter       metric.Meter

	nats *nats.Conn
}

// idempotencySweepEvery is how often expired idempotency records are
// removed. Lookups ignore expired records, so the sweep only reclaims space.
const idempotencySweepEvery = 10 * time.Minute

// OpenBase opens the service's bbolt file "<DataDir>/<schema.Service>.db".
func OpenBase(deps Deps, schema store.Schema) (*Base, error) {
	if deps.DataDir == "" {
		return nil, errors.New("data folder is required")
	}
	clk := deps.Clock
	if clk == nil {
		clk = clock.Real{}
	}
	db, err := store.Open(store.Options{
		Path:   filepath.Join(deps.DataDir, schema.Service+".db"),
		Schema: schema,
	})
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", schema.Service, err)
	}
	idem := idempotency.New(clk, idempotency.DefaultTTL)
	logger := deps.Logger.With("service", schema.Service)
	var meter metric.Meter = noop.NewMeterProvider().Meter("")
	// The outbox captures the trace context with the propagator the
	// server extracts it with, so what arrived with the call (baggage
	// too) travels on with the event.
	var propagator propagation.TextMapPropagator
	if deps.Telemetry != nil {
		meter = deps.Telemetry.Meter.Meter("github.com/lethe-privacy/lethe/services/" + schema.Service)
		propagator = deps.Telemetry.Propagator
	}
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/" + schema.Service, Clock: clk, Meter: meter, Logger: logger,
		Propagator: propagator})
	if err != nil {
		return nil, errors.Join(err, db.Close())
	}
	return &Base{
		Name:        schema.Service,
		DB:          db,
		Audit:       audit.New(db, clk),
		Idempotency: idem,
		Mutator:     mutation.New(db, idem),
		Outbox:      ob,
		Clock:       clk,
		Logger:      logger,
		Meter:       meter,
		nats:        deps.NATS,
	}, nil
}

// Run does the background work every service shares until ctx ends: the
// outbox relay (when the host connected NATS) and the idempotency sweep.
func (b *Base) Run(ctx context.Context) error {
	done := make(chan error, 1)
	if b.nats != nil {
		relay, err := outbox.NewRelay(b.Outbox, b.nats, outbox.RelayConfig{})
		if err != nil {
			return err
		}
		go func() { done <- relay.Run(ctx) }()
	} else {
		done <- nil
	}
	b.Idempotency.Run(ctx, b.DB, idempotencySweepEvery)
	return <-done
}

// Close closes the outbox and the bbolt file.
func (b *Base) Close() error { return errors.Join(b.Outbox.Close(), b.DB.Close()) }

// ServeOptions returns the server options every service registers with:
// its mutations and denials are audited in its own log.
func (b *Base) ServeOptions() []server.ServiceOption {
	return []server.ServiceOption{server.WithAudit(b.Audit)}
}

// HealthOnly is a service whose API is not built yet: it owns its bbolt
// file and reports its gRPC service name in health, and serves no method,
// so nothing can mistake it for a working API.
type HealthOnly struct {
	*Base
	healthName string
}

// NewHealthOnly opens the service's store and returns it as HealthOnly.
func NewHealthOnly(deps Deps, schema store.Schema, healthName string) (*HealthOnly, error) {
	base, err := OpenBase(deps, schema)
	if err != nil {
		return nil, err
	}
	return &HealthOnly{Base: base, healthName: healthName}, nil
}

// Register reports the service in health.
func (h *HealthOnly) Register(srv *server.Server) { srv.RegisterHealth(h.healthName) }
