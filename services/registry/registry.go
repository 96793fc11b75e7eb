// Package registry is Lethe's registry service. It keeps the register of
// tenants (data controllers) and their settings, the data-category
// taxonomy, the systems, processors, sub-processors and recipients that
// hold each tenant's data — every change kept with its effective date, so
// that "who held what on date D" has an answer — the lawfulness of every
// transfer outside the EU/EEA, the records of processing activities
// (Art. 30), and the routing that tells the consent, retention and DSAR
// services which systems must answer an event.
//
// Its changes are published as tenant.* and system.* events through the
// service's outbox, in the transaction of the change. The service owns one
// bbolt file, registry.db, in the data folder.
package registry

import (
	"context"
	"flag"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
	"github.com/lethe-privacy/lethe/services/registry/internal/transfer"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.registry.v1.RegistryService"

// DefaultAddr is the gRPC address the registry deployable listens on by
// default.
const DefaultAddr = "127.0.0.1:7404"

// Factory builds the registry service for a host.
var Factory = service.Factory{
	Name: "registry",
	New:  func(deps service.Deps) (service.Service, error) { return New(deps, Options{}) },
	Flags: func(fs *flag.FlagSet) func(service.Deps) (service.Service, error) {
		var o Options
		fs.IntVar(&o.ConsentShards, "consent-shards", 1,
			"how many consent shards (s0, s1, ...) the registry assigns new tenants to; docs/scale.md")
		return func(deps service.Deps) (service.Service, error) { return New(deps, o) }
	},
}

// Options tune the service.
type Options struct {
	// ConsentShards is how many consent shards, "s0" to
	// "s<ConsentShards-1>", a new tenant that names none may be assigned
	// to (tenantshard.go). Default 1: every such tenant is on "s0".
	ConsentShards int
}

// complete fills in the defaults of the options left zero.
func (o *Options) complete() {
	if o.ConsentShards <= 0 {
		o.ConsentShards = 1
	}
}

// Service implements lethe.registry.v1.RegistryService.
type Service struct {
	registryv1.UnimplementedRegistryServiceServer
	*service.Base
	opts   Options
	facts  *transfer.Facts
	routes routeCache
	js     jetstream.JetStream
	// allowHTTPWebhooks accepts http:// webhook URLs to loopback: the
	// development profile only.
	allowHTTPWebhooks bool
}

// New opens the registry's store.
func New(deps service.Deps, opts Options) (*Service, error) {
	opts.complete()
	if opts.ConsentShards > maxConsentShards {
		return nil, fmt.Errorf("registry: at most %d consent shards, not %d", maxConsentShards, opts.ConsentShards)
	}
	base, err := service.OpenBase(deps, storage.Schema)
	if err != nil {
		return nil, err
	}
	return &Service{Base: base, opts: opts, facts: transfer.DefaultFacts(), routes: routeCache{byTenant: map[string]cachedRoutes{}, generation: map[string]uint64{}},
		js: deps.JetStream, allowHTTPWebhooks: deps.Profile == server.ProfileDev}, nil
}

// Run does the registry's background work until ctx ends: the service's
// own (see service.Base.Run), and reporting how far behind every
// registered system's consumers are. The registry reports them because it
// is the service that knows the systems; in lethe dev one process hosts
// every service, and one reporter keeps each consumer's series single.
func (s *Service) Run(ctx context.Context) error {
	if s.js == nil {
		return s.Base.Run(ctx)
	}
	lag, err := s.systemsLag()
	if err != nil {
		return err
	}
	defer func() { _ = lag.Close() }()
	lagCtx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() { lag.Run(lagCtx) })
	err = s.Base.Run(ctx)
	stop()
	wg.Wait()
	return err
}

// Register serves the registry's API on srv.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&registryv1.RegistryService_ServiceDesc, s, s.ServeOptions()...)
}

// now is the service's clock, in UTC.
func (s *Service) now() time.Time { return s.Clock.Now() }

// tenantTx returns a tenant or NotFound: every tenant-scoped call starts
// here, so that no call sees or creates data of an unknown tenant.
func tenantTx(tx *bolt.Tx, id string) (*registryv1.Tenant, error) {
	t, ok, err := storage.TenantTx(tx, id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierror.NotFound("tenant", id)
	}
	return t, nil
}

// view runs fn in a read transaction of the service's store.
func (s *Service) view(fn func(tx *bolt.Tx) error) error { return s.DB.View(fn) }

// publishTx stages a registry event about objectID (a tenant or system id)
// in the transaction of the change.
func (s *Service) publishTx(ctx context.Context, tx *bolt.Tx, tenant, objectID string, ev *eventsv1.Event) error {
	ev.TenantId = tenant
	ev.Cause = &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONFIGURATION, Id: objectID}
	return s.Outbox.AddTx(ctx, tx, ev)
}

// timestamp returns ts, or now when ts is unset.
func timestamp(ts *timestamppb.Timestamp, now time.Time) *timestamppb.Timestamp {
	if ts == nil {
		return timestamppb.New(now)
	}
	return ts
}
