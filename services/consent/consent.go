// Package consent is Lethe's consent service. It keeps each tenant's
// purposes, the append-only history of consent records (the proof of
// consent, Art. 7(1)), objections (Art. 21) and restrictions (Art. 18), and
// answers Check — may subject X's data be processed for purpose P, and why —
// from memory, without touching the disk. It is the single owner of the
// limit events (consent withdrawn, objection recorded, restriction applied
// and lifted), which it publishes through its outbox and follows to every
// system the registry routes them to.
//
// The service owns one bbolt file, consent.db, in the data folder.
package consent

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tenants"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.consent.v1.ConsentService"

// DefaultAddr is the gRPC address the consent deployable listens on by
// default.
const DefaultAddr = "127.0.0.1:7401"

// Factory builds the consent service for a host.
var Factory = service.Factory{
	Name: "consent",
	New:  func(deps service.Deps) (service.Service, error) { return New(deps, Options{}) },
}

// Options tune the service; zero values are production defaults.
type Options struct {
	// ExpirySweepEvery is how often expired consents are looked for.
	// Default one minute.
	ExpirySweepEvery time.Duration
	// ResendAfter is how long a system may leave a limit unanswered before
	// it is re-sent. Default one hour.
	ResendAfter time.Duration
	// RecoveryMargin is how far before the file's last alive_at the
	// catch-up after a restore starts reading the stream (recovery.go).
	// Default DefaultRecoveryMargin.
	RecoveryMargin time.Duration
	// Stream is the platform stream the service's limit events are on.
	// Default the platform's, "LETHE".
	Stream string
	// SnapshotEvery is how often the decision index is written to the
	// data folder (index.go), besides at a clean stop and soon after a
	// start that had to read every record: a start replays the changes
	// committed since, so this bounds that work. Default five minutes;
	// negative writes none, and every start reads every record.
	SnapshotEvery time.Duration
}

// complete fills in the defaults of the options left zero.
func (o *Options) complete() {
	if o.ExpirySweepEvery <= 0 {
		o.ExpirySweepEvery = time.Minute
	}
	if o.RecoveryMargin <= 0 {
		o.RecoveryMargin = DefaultRecoveryMargin
	}
	if o.Stream == "" {
		o.Stream = broker.DefaultStreamConfig().Name
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = 5 * time.Minute
	}
}

// Service implements lethe.consent.v1.ConsentService.
type Service struct {
	consentv1.UnimplementedConsentServiceServer
	*service.Base
	opts     Options
	deps     service.Deps
	index    *decision.Index
	tracker  *tasks.Tracker
	tenants  *tenants.Directory
	registry *registryclient.Client
	// registryRPC reads tenants' settings (their country) from the
	// registry; nil without a registry connection.
	registryRPC registryv1.RegistryServiceClient
	countries   *countryQueue
	watchers    *hub
	applied     *sequencer
	// fullLoad is set when the start read every record, having no usable
	// index snapshot: a new one is then written soon.
	fullLoad bool
	notices  notices
	// gap is set while limits may be lost beyond the stream's reach
	// (recovery.go); Check refuses to answer then.
	gap             atomic.Pointer[storage.Gap]
	recoveredEvents metric.Int64Counter
	// metrics is the registration of the service's observable gauges
	// (metrics.go).
	metrics metric.Registration
}

// New opens the consent service's store and loads its state into memory.
func New(deps service.Deps, opts Options) (*Service, error) {
	opts.complete()
	base, err := service.OpenBase(deps, storage.Schema)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Base: base, opts: opts, deps: deps,
		index:     decision.NewIndex(),
		tenants:   tenants.New(base.DB, "consent", "", base.Logger),
		watchers:  newHub(),
		applied:   newSequencer(),
		countries: newCountryQueue(),
	}
	if deps.Registry != nil {
		s.registry = registryclient.New(deps.Registry)
		s.registryRPC = registryv1.NewRegistryServiceClient(deps.Registry)
	}
	s.tracker, err = tasks.New(base.DB, tasks.Config{
		Owner: "consent", Outbox: base.Outbox, Clock: base.Clock, ResendAfter: opts.ResendAfter,
		Meter: base.Meter, Logger: base.Logger,
	})
	if err == nil {
		err = s.registerMetrics()
	}
	if err == nil {
		err = s.load()
	}
	if err == nil {
		// Before the service serves or publishes: a restored store must
		// not answer Check from state older than the stream's.
		ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
		err = s.recoverLimits(ctx)
		cancel()
	}
	if err != nil {
		if s.metrics != nil {
			err = errors.Join(err, s.metrics.Unregister())
		}
		return nil, errors.Join(err, base.Close())
	}
	return s, nil
}

// recoveryTimeout bounds the catch-up at start. Thirty days of limit
// events are read in well under a minute; a stream that does not answer
// in this time fails the start, which the supervisor retries.
const recoveryTimeout = 5 * time.Minute

// Close releases the service's resources after Run returned.
func (s *Service) Close() error {
	return errors.Join(s.metrics.Unregister(), s.Base.Close())
}

// Register serves the consent API on srv.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&consentv1.ConsentService_ServiceDesc, s, s.ServeOptions()...)
}

// Run does the service's background work until ctx ends: the outbox relay,
// following tenants and outcomes, and expiring consents.
func (s *Service) Run(ctx context.Context) error {
	bg := service.Background{Workers: []func(context.Context) error{s.Base.Run, s.followCountries, s.snapshots}, Every: s.opts.ExpirySweepEvery, Tick: s.tick}
	if js := s.deps.JetStream; js != nil {
		bg.Workers = append(bg.Workers,
			func(ctx context.Context) error { return s.tenants.Run(ctx, js) },
			func(ctx context.Context) error { return s.tracker.Run(ctx, js) })
	}
	err := bg.Run(ctx)
	s.watchers.closeAll()
	if s.opts.SnapshotEvery > 0 {
		// A clean stop leaves a snapshot as fresh as it can be, so the
		// next start replays next to nothing.
		err = errors.Join(err, s.saveSnapshot())
	}
	return err
}

// requireTenantTx refuses calls for tenants the registry never announced.
func (s *Service) requireTenantTx(tx *bolt.Tx, tenant string) error {
	return s.tenants.RequireTx(tx, tenant)
}
