// Package service is how a Lethe service is hosted. A service is a value
// that registers its gRPC API on a kit server and runs its background work;
// a Factory builds it from the dependencies a host provides. The same
// factories serve a single-service deployable (Main) and the all-in-one
// `lethe dev`, which hosts all four in one process.
package service

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/broker"
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
	// Neighbours reach the other services the factory declared it calls,
	// by name, dialled as Registry is.
	Neighbours map[string]grpc.ClientConnInterface
	// Backup, when its Dir is set, copies the service's bbolt files there
	// periodically while it runs.
	Backup BackupConfig
	// Profile is the server's profile (server.ProfileDev or
	// ProfileProduction). A service that judges what the outside world
	// gives it by the profile (the registry refuses plain-http webhook
	// URLs unless it is ProfileDev) treats anything else as production.
	Profile string
	// Stream is the platform stream's configuration as the host
	// provisioned it (its replicas, its ages); a service that provisions
	// streams of its own (the consent writer's replication stream) sizes
	// them alike. The zero value stands for broker.DefaultStreamConfig.
	Stream broker.StreamConfig
	// AnchorEvery is how often the service reads the head of each of its
	// files' audit chains and, when it moved, publishes it on the
	// platform stream and logs it (audit.Anchor); one minute when zero.
	AnchorEvery time.Duration
}

// BackupConfig schedules hot backups of a service's bbolt files.
type BackupConfig struct {
	// Dir receives "<service>.db" (and any other file the service opened
	// with OpenFile, under its name), replaced atomically by each backup.
	// Empty turns backups off.
	Dir string
	// Every is the period; one hour when zero.
	Every time.Duration
}

// Factory builds a service.
type Factory struct {
	// Name is the service's short name: "consent", "dsar", "retention",
	// "registry". It names the bbolt file and the logger.
	Name string
	// Neighbours are the services beside the registry that this one
	// calls. A deployable takes each one's address from its flags and
	// refuses to start in production without it; every host dials them
	// as it dials the registry and passes them in Deps.Neighbours.
	Neighbours []Neighbour
	// New builds the service.
	New func(Deps) (Service, error)
	// Flags, when set, binds the deployable's own flags (beside the
	// host's: the consent service's --role, --shard and public endpoint)
	// to fs and returns the constructor that builds the service as the
	// parsed flags say, in New's place. Hosts without flags (lethe dev)
	// use New.
	Flags func(fs *flag.FlagSet) func(Deps) (Service, error)
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

	nats        *nats.Conn
	dataDir     string
	backup      BackupConfig
	anchorEvery time.Duration
	// files are the service's bbolt files, DB first, then those OpenFile
	// opened; mu guards the slice against the metrics callback.
	mu         sync.Mutex
	files      []*store.DB
	lastBackup atomic.Int64 // unix seconds of the last successful backup
	registered metric.Registration
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
	if err := audit.PrepareFile(db); err != nil {
		return nil, errors.Join(err, db.Close())
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
	b := &Base{
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
		dataDir:     deps.DataDir,
		backup:      deps.Backup,
		anchorEvery: cmp.Or(deps.AnchorEvery, defaultAnchorEvery),
		files:       []*store.DB{db},
	}
	if b.backup.Every <= 0 {
		b.backup.Every = time.Hour
	}
	if err := b.registerMetrics(); err != nil {
		return nil, errors.Join(err, ob.Close(), db.Close())
	}
	return b, nil
}

// OpenFile opens another bbolt file of the service,
// "<DataDir>/<schema.Service>.db", for state whose writes must not wait
// behind the main file's single writer. It is the service's file as much as
// the main one: backed up with it, its size reported, its expired
// idempotency records swept, and closed by Close. Call it before Run.
func (b *Base) OpenFile(schema store.Schema) (*store.DB, error) {
	db, err := store.Open(store.Options{Path: filepath.Join(b.dataDir, schema.Service+".db"), Schema: schema})
	if err != nil {
		return nil, fmt.Errorf("open %s store: %w", schema.Service, err)
	}
	if err := audit.PrepareFile(db); err != nil {
		return nil, errors.Join(err, db.Close())
	}
	b.mu.Lock()
	b.files = append(b.files, db)
	b.mu.Unlock()
	return db, nil
}

// storeFiles returns the service's bbolt files, DB first.
func (b *Base) storeFiles() []*store.DB {
	b.mu.Lock()
	defer b.mu.Unlock()
	return slices.Clone(b.files)
}

// registerMetrics reports the bbolt files' sizes, which only grows (bbolt
// reuses freed pages but never shrinks the file), what their group
// commits did (store.CommitStats), and when backups are on, the time of
// the last one that succeeded.
func (b *Base) registerMetrics() error {
	size, err := b.Meter.Int64ObservableGauge("lethe.store.file_size", metric.WithUnit("By"),
		metric.WithDescription("Size of each of the service's bbolt files."))
	if err != nil {
		return err
	}
	commits, err := b.Meter.Int64ObservableCounter("lethe.store.commits",
		metric.WithDescription("Transactions the group committer of each bbolt file committed (store.DB.Batch)."))
	if err != nil {
		return err
	}
	calls, err := b.Meter.Int64ObservableCounter("lethe.store.commit_calls",
		metric.WithDescription("Batch calls those transactions answered; divided by the transactions, the mean group size."))
	if err != nil {
		return err
	}
	pages, err := b.Meter.Int64ObservableCounter("lethe.store.commit_pages",
		metric.WithDescription("Pages those transactions wrote."))
	if err != nil {
		return err
	}
	busy, err := b.Meter.Float64ObservableCounter("lethe.store.committer_busy", metric.WithUnit("s"),
		metric.WithDescription("Time each file's committer held its writer: running calls, gathering them, committing. Its rate near 1 means the file's writes are the bound."))
	if err != nil {
		return err
	}
	committing, err := b.Meter.Float64ObservableCounter("lethe.store.commit_time", metric.WithUnit("s"),
		metric.WithDescription("Of that time, the part spent in bbolt's Commit: writing pages and two fsyncs."))
	if err != nil {
		return err
	}
	instruments := []metric.Observable{size, commits, calls, pages, busy, committing}
	var last metric.Float64ObservableGauge
	if b.backup.Dir != "" {
		if last, err = b.Meter.Float64ObservableGauge("lethe.store.backup.last_success", metric.WithUnit("s"),
			metric.WithDescription("Unix time of the last successful backup of the service's bbolt files; 0 before the first.")); err != nil {
			return err
		}
		instruments = append(instruments, last)
	}
	attrs := metric.WithAttributes(attribute.String("service", b.Name))
	b.registered, err = b.Meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		for _, db := range b.storeFiles() {
			file := metric.WithAttributes(attribute.String("service", b.Name), attribute.String("file", filepath.Base(db.Path())))
			if fi, err := os.Stat(db.Path()); err == nil {
				obs.ObserveInt64(size, fi.Size(), file)
			}
			st := db.CommitStats()
			obs.ObserveInt64(commits, int64(st.Commits), file)
			obs.ObserveInt64(calls, int64(st.Calls), file)
			obs.ObserveInt64(pages, int64(st.Pages), file)
			obs.ObserveFloat64(busy, st.Busy.Seconds(), file)
			obs.ObserveFloat64(committing, st.Commit.Seconds(), file)
		}
		if last != nil {
			obs.ObserveFloat64(last, float64(b.lastBackup.Load()), attrs)
		}
		return nil
	}, instruments...)
	return err
}

// BackupNow copies the service's bbolt files into the backup folder, each
// under its own name. Each copy is consistent in itself; across files, a
// service that keeps more than one says in its own documentation what a
// restore of copies taken moments apart means.
func (b *Base) BackupNow() error {
	for _, db := range b.storeFiles() {
		path := filepath.Join(b.backup.Dir, filepath.Base(db.Path()))
		n, err := db.Backup(path)
		if err != nil {
			return err
		}
		b.Logger.Info("backed up the store", "path", path, "bytes", n)
	}
	b.lastBackup.Store(b.Clock.Now().Unix())
	return nil
}

// runBackups backs the store up every period until ctx ends.
func (b *Base) runBackups(ctx context.Context) {
	t := time.NewTicker(b.backup.Every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := b.BackupNow(); err != nil {
				b.Logger.Error("backup failed", "error", err)
			}
		}
	}
}

// Run does the background work every service shares until ctx ends: the
// outbox relay (when the host connected NATS), the idempotency sweep, the
// audit anchors and, when configured, periodic backups.
func (b *Base) Run(ctx context.Context) error {
	if b.backup.Dir != "" {
		if err := os.MkdirAll(b.backup.Dir, 0o700); err != nil {
			return fmt.Errorf("backup folder: %w", err)
		}
		backupCtx, stop := context.WithCancel(ctx)
		var wg sync.WaitGroup
		wg.Go(func() { b.runBackups(backupCtx) })
		defer func() {
			stop()
			wg.Wait()
		}()
	}
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
	var sweeps sync.WaitGroup
	for _, db := range b.storeFiles() {
		sweeps.Go(func() { b.Idempotency.Run(ctx, db, idempotencySweepEvery) })
	}
	sweeps.Go(func() { b.runAnchors(ctx) })
	sweeps.Wait()
	return <-done
}

// Close closes the outbox and the bbolt files.
func (b *Base) Close() error {
	errs := []error{b.registered.Unregister(), b.Outbox.Close()}
	for _, db := range b.storeFiles() {
		errs = append(errs, db.Close())
	}
	return errors.Join(errs...)
}

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
