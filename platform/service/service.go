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

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/store"
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
// idempotency records kept in it, and the mutator over them.
type Base struct {
	Name        string
	DB          *store.DB
	Audit       *audit.Log
	Idempotency *idempotency.Store
	Mutator     *mutation.Mutator
	Clock       clock.Clock
	Logger      *slog.Logger
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
	return &Base{
		Name:        schema.Service,
		DB:          db,
		Audit:       audit.New(db, clk),
		Idempotency: idem,
		Mutator:     mutation.New(db, idem),
		Clock:       clk,
		Logger:      deps.Logger.With("service", schema.Service),
	}, nil
}

// Run does the background work every service shares until ctx ends.
func (b *Base) Run(ctx context.Context) error {
	b.Idempotency.Run(ctx, b.DB, idempotencySweepEvery)
	return nil
}

// Close closes the bbolt file.
func (b *Base) Close() error { return b.DB.Close() }

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
