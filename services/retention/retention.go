// Package retention is Lethe's retention service: it makes "we delete your
// data after N years" happen by itself, on time.
//
// A tenant declares rules per data category (purge rules with triggers and
// ISO 8601 periods, minimum-retention rules for legal obligations) and legal
// holds. Systems report lifecycle signals about subjects, journaled and
// applied in bulk (journal.go); consent withdrawals arrive from the consent
// service's events. Each subject is one
// tracked item of the durable scheduler (internal/schedule), carrying the
// facts its signals established; the rules engine (internal/rules) turns the
// facts into a purge date per category, with an explanation. When a
// subject's date comes, the sweep issues one erasure.requested directive per
// purge rule and action (cause: the rule), tracked with the kit's task
// tracking to every system the registry routes for the categories. A
// system's "retained until D" answer, to any service's erasure, schedules
// that data again for D.
//
// The service owns two bbolt files in the data folder: retention.db, and
// retention-journal.db for the signals not yet applied (see journal.go).
package retention

import (
	"context"
	"errors"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tenants"
	"github.com/lethe-privacy/lethe/services/retention/internal/schedule"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.retention.v1.RetentionService"

// DefaultAddr is the gRPC address the retention deployable listens on by
// default.
const DefaultAddr = "127.0.0.1:7403"

// Factory builds the retention service for a host.
var Factory = service.Factory{
	Name: "retention",
	New:  func(deps service.Deps) (service.Service, error) { return New(deps, Options{}) },
}

// Options tune the service; zero values are production defaults.
type Options struct {
	// SweepEvery is how often due items are looked for (and sooner, when a
	// signal makes something due at once). Default one minute.
	SweepEvery time.Duration
	// ManualSweep leaves sweeping to explicit Sweep calls: benchmarks time
	// a sweep they start themselves.
	ManualSweep bool
	// ResendAfter is how long a system may leave a directive unanswered
	// before it is re-sent. Default one hour.
	ResendAfter time.Duration
}

// complete fills in the defaults of the options left zero.
func (o *Options) complete() {
	if o.SweepEvery <= 0 {
		o.SweepEvery = time.Minute
	}
}

// Service implements lethe.retention.v1.RetentionService.
type Service struct {
	retentionv1.UnimplementedRetentionServiceServer
	*service.Base
	opts      Options
	deps      service.Deps
	scheduler *schedule.Scheduler
	tracker   *tasks.Tracker
	tenants   *tenants.Directory
	registry  *registryclient.Client
	taxonomy  registryv1.RegistryServiceClient
	policies  policyCache
	metrics   metrics
	// wake asks the sweeper to sweep now rather than at its next tick.
	wake chan struct{}
	// journal is the signal journal's file, which RecordSignal and
	// RecordSignals write with journalMutator.
	journal        *store.DB
	journalMutator *mutation.Mutator
	// journaled tells the applier that signals were journaled; applyMu
	// makes one caller at a time apply them.
	journaled chan struct{}
	applyMu   sync.Mutex
	// sweepMu makes sweeps and rescans one at a time: a sweep routes its
	// items before it fires them, and must not race another sweep.
	sweepMu sync.Mutex
	// afterSweepTx, set by tests, runs after each committed sweep
	// transaction.
	afterSweepTx func()
}

// New opens the retention service's store.
func New(deps service.Deps, opts Options) (*Service, error) {
	opts.complete()
	base, err := service.OpenBase(deps, schema)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Base: base, opts: opts, deps: deps,
		scheduler: schedule.New(base.DB),
		tenants:   tenants.New(base.DB, "retention", "", base.Logger),
		wake:      make(chan struct{}, 1),
		journaled: make(chan struct{}, 1),
	}
	// A tenant's financial year end moves every anchored date: its
	// subjects are rescheduled as after a rule change.
	s.tenants.OnSettingsChangedTx(func(tx *bolt.Tx, tenant string) error {
		tx.OnCommit(s.wakeSweeper)
		return s.policyChangedTx(tx, tenant)
	})
	if err := s.openJournal(); err != nil {
		return nil, errors.Join(err, base.Close())
	}
	if deps.Registry != nil {
		s.registry = registryclient.New(deps.Registry)
		s.taxonomy = registryv1.NewRegistryServiceClient(deps.Registry)
	}
	s.tracker, err = tasks.New(base.DB, tasks.Config{
		Owner: "retention", Outbox: base.Outbox, Clock: base.Clock, ResendAfter: opts.ResendAfter,
		Meter: base.Meter, Logger: base.Logger, OnTaskFinal: s.onTaskFinal,
	})
	if err == nil {
		err = s.registerMetrics()
	}
	if err != nil {
		return nil, errors.Join(err, base.Close())
	}
	return s, nil
}

// Register serves the retention API on srv.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&retentionv1.RetentionService_ServiceDesc, s, s.ServeOptions()...)
}

// Run does the service's background work until ctx ends: the outbox relay,
// applying journaled signals, following tenants, outcomes, consent
// withdrawals and restrictions, and sweeping.
func (s *Service) Run(ctx context.Context) error {
	bg := service.Background{
		Workers: []func(context.Context) error{s.Base.Run, s.runApplier},
		Every:   s.opts.SweepEvery,
		Wake:    s.wake,
	}
	if js := s.deps.JetStream; js != nil {
		bg.Workers = append(bg.Workers,
			func(ctx context.Context) error { return s.tenants.Run(ctx, js) },
			func(ctx context.Context) error { return s.tracker.Run(ctx, js) },
			func(ctx context.Context) error { return s.followWithdrawals(ctx, js) },
			func(ctx context.Context) error { return s.followRetained(ctx, js) },
			func(ctx context.Context) error { return s.followRestrictions(ctx, js) })
	}
	if !s.opts.ManualSweep {
		bg.Tick = s.sweepLogged
	}
	return service.StoppedCleanly(ctx, bg.Run(ctx))
}

// Close stops reporting metrics and closes the store.
func (s *Service) Close() error {
	var err error
	if s.metrics.registered != nil {
		err = s.metrics.registered.Unregister()
	}
	return errors.Join(err, s.Base.Close())
}
