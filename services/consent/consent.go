// Package consent is Lethe's consent service. It keeps each tenant's
// purposes, the append-only history of consent records (the proof of
// consent, Art. 7(1)), objections (Art. 21) and restrictions (Art. 18), and
// answers Check — may subject X's data be processed for purpose P, and why —
// from memory, without touching the disk. It is the single owner of the
// limit events (consent withdrawn, objection recorded, restriction applied
// and lifted), which it publishes through its outbox and follows to every
// system the registry routes them to.
//
// Beside its API it can serve a public endpoint for browsers on a listener
// of its own (Options.Public; docs/web-consent.md): a tenant's consent
// banner records decisions and reads a visitor's choices there, through
// the same methods.
//
// The service owns one bbolt file, consent.db, in the data folder.
package consent

import (
	"context"
	"errors"
	"flag"
	"net"
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
	// The deployable's own flags: the public consent endpoint's.
	Flags: func(fs *flag.FlagSet) func(service.Deps) (service.Service, error) {
		var o Options
		o.Public.RegisterFlags(fs)
		return func(deps service.Deps) (service.Service, error) { return New(deps, o) }
	},
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
	// Public configures the public consent endpoint for browsers
	// (public.go); off unless its Addr or Listener is set.
	Public PublicOptions
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
	o.Public.complete()
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
	notices     notices
	// web holds every tenant's compiled web settings (web.go).
	web webConfigs
	// public is the public endpoint; nil when it is off.
	public *public
	// gap is set while limits may be lost beyond the stream's reach
	// (recovery.go); Check refuses to answer then.
	gap             atomic.Pointer[storage.Gap]
	recoveredEvents metric.Int64Counter
	// publicRequests counts the public endpoint's requests by route and
	// status.
	publicRequests metric.Int64Counter
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
		err = s.loadWeb()
	}
	if err == nil {
		err = s.openPublic()
	}
	if err == nil {
		// Before the service serves or publishes: a restored store must
		// not answer Check from state older than the stream's.
		ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
		err = s.recoverLimits(ctx)
		cancel()
	}
	if err != nil {
		if s.public != nil {
			err = errors.Join(err, s.public.lis.Close())
		}
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
	var err error
	if s.public != nil {
		// Closed already when Run served it; not when Run never ran.
		if cerr := s.public.lis.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	}
	return errors.Join(err, s.metrics.Unregister(), s.Base.Close())
}

// Register serves the consent API on srv.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&consentv1.ConsentService_ServiceDesc, s, s.ServeOptions()...)
}

// Run does the service's background work until ctx ends: the outbox relay,
// following tenants and outcomes, and expiring consents.
func (s *Service) Run(ctx context.Context) error {
	bg := service.Background{Workers: []func(context.Context) error{s.Base.Run, s.followCountries, s.servePublic}, Every: s.opts.ExpirySweepEvery, Tick: s.tick}
	if js := s.deps.JetStream; js != nil {
		bg.Workers = append(bg.Workers,
			func(ctx context.Context) error { return s.tenants.Run(ctx, js) },
			func(ctx context.Context) error { return s.tracker.Run(ctx, js) })
	}
	err := bg.Run(ctx)
	s.watchers.closeAll()
	return err
}

// requireTenantTx refuses calls for tenants the registry never announced.
func (s *Service) requireTenantTx(tx *bolt.Tx, tenant string) error {
	return s.tenants.RequireTx(tx, tenant)
}
