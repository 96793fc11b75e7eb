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
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/registry/internal/routing"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
	"github.com/lethe-privacy/lethe/services/registry/internal/taxonomy"
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
	New:  func(deps service.Deps) (service.Service, error) { return New(deps) },
}

// Service implements lethe.registry.v1.RegistryService.
type Service struct {
	registryv1.UnimplementedRegistryServiceServer
	*service.Base
	facts  *transfer.Facts
	routes routeCache
	js     jetstream.JetStream
	// allowHTTPWebhooks accepts http:// webhook URLs to loopback: the
	// development profile only.
	allowHTTPWebhooks bool
}

// New opens the registry's store.
func New(deps service.Deps) (*Service, error) {
	base, err := service.OpenBase(deps, storage.Schema)
	if err != nil {
		return nil, err
	}
	return &Service{Base: base, facts: transfer.DefaultFacts(), routes: routeCache{byTenant: map[string]cachedRoutes{}, generation: map[string]uint64{}},
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
	lag, err := broker.NewLagMonitor(broker.LagConfig{JetStream: s.js, Meter: s.Meter, Stream: contract.StreamName,
		Select: broker.SystemConsumers, Logger: s.Logger})
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

// taxonomyTx returns the taxonomy a tenant sees.
func taxonomyTx(tx *bolt.Tx, tenant string) (*taxonomy.Taxonomy, error) {
	own, err := storage.CategoriesTx(tx, tenant)
	if err != nil {
		return nil, err
	}
	ext := make([]taxonomy.Category, 0, len(own))
	for _, c := range own {
		ext = append(ext, taxonomy.Category{ID: c.Id, Name: c.Name, Description: c.Description, Sensitive: c.Sensitive, Provenance: c.Provenance})
	}
	return taxonomy.New(ext)
}

// unknownCategories names, as field violations under field, the
// categories the tenant's taxonomy does not know.
func unknownCategories(tax *taxonomy.Taxonomy, cats []*commonv1.DataCategory, field string) []apierror.FieldViolation {
	var v []apierror.FieldViolation
	for i, c := range cats {
		if !tax.Known(c.GetId()) {
			v = append(v, apierror.FieldViolation{
				Field:       fmt.Sprintf("%s[%d].id", field, i),
				Description: fmt.Sprintf("unknown data category %q: define it first (DefineCategory) or use a built-in one", c.GetId()),
			})
		}
	}
	return v
}

// publishTx stages a registry event about objectID (a tenant or system id)
// in the transaction of the change.
func (s *Service) publishTx(ctx context.Context, tx *bolt.Tx, tenant, objectID string, ev *eventsv1.Event) error {
	ev.TenantId = tenant
	ev.Cause = &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONFIGURATION, Id: objectID}
	return s.Outbox.AddTx(ctx, tx, ev)
}

// currentSystemsTx returns the tenant's systems as of t, by id.
func currentSystemsTx(tx *bolt.Tx, tenant string, t time.Time) ([]*registryv1.System, error) {
	histories, err := storage.HistoriesTx(tx, tenant)
	if err != nil {
		return nil, err
	}
	var out []*registryv1.System
	for _, h := range histories {
		if sys, ok := storage.At(h, t); ok {
			out = append(out, sys)
		}
	}
	sortSystems(out)
	return out, nil
}

// routeCache keeps each tenant's routing index between changes: routing is
// on the path of every event the other services publish, and the index is
// rebuilt only when a system changes or a future-dated version takes
// effect.
type routeCache struct {
	mu       sync.Mutex
	byTenant map[string]cachedRoutes
	// generation counts each tenant's invalidations. An index built from a
	// snapshot taken before a change must not be stored after the change
	// invalidated the cache, or it would be served until the next change.
	generation map[string]uint64
}

type cachedRoutes struct {
	index *routing.Index
	// validUntil is when a version recorded for the future takes effect;
	// zero when none is pending.
	validUntil time.Time
}

func (c *routeCache) invalidate(tenant string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.byTenant, tenant)
	c.generation[tenant]++
}

// routeIndex returns the tenant's routing index as of now.
func (s *Service) routeIndex(tenant string) (*routing.Index, error) {
	now := s.now()
	s.routes.mu.Lock()
	cached, ok := s.routes.byTenant[tenant]
	generation := s.routes.generation[tenant]
	s.routes.mu.Unlock()
	if ok && (cached.validUntil.IsZero() || now.Before(cached.validUntil)) {
		return cached.index, nil
	}
	var built cachedRoutes
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, tenant); err != nil {
			return err
		}
		histories, err := storage.HistoriesTx(tx, tenant)
		if err != nil {
			return err
		}
		var systems []routing.System
		for _, h := range histories {
			for _, v := range h {
				if at := v.System.EffectiveAt.AsTime(); at.After(now) && (built.validUntil.IsZero() || at.Before(built.validUntil)) {
					built.validUntil = at
				}
			}
			sys, ok := storage.At(h, now)
			if !ok {
				continue
			}
			cats := make([]string, 0, len(sys.Categories))
			for _, c := range sys.Categories {
				cats = append(cats, c.Id)
			}
			systems = append(systems, routing.System{ID: sys.SystemId, Mode: sys.AnswerMode, Categories: cats, Purposes: sys.PurposeIds})
		}
		built.index = routing.Build(systems)
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.routes.mu.Lock()
	if s.routes.generation[tenant] == generation {
		s.routes.byTenant[tenant] = built
	}
	s.routes.mu.Unlock()
	return built.index, nil
}

// Route implements RegistryService.
func (s *Service) Route(_ context.Context, req *registryv1.RouteRequest) (*registryv1.RouteResponse, error) {
	if !req.AllCategories && len(req.Categories) == 0 && req.PurposeId == "" {
		return nil, apierror.Invalid("categories", "name the categories, all_categories or a purpose_id the event concerns")
	}
	ix, err := s.routeIndex(req.TenantId)
	if err != nil {
		return nil, err
	}
	cats := make([]string, 0, len(req.Categories))
	for _, c := range req.Categories {
		cats = append(cats, c.Id)
	}
	routed := ix.Route(cats, req.AllCategories, req.PurposeId)
	resp := &registryv1.RouteResponse{Systems: make([]*registryv1.RoutedSystem, 0, len(routed))}
	for _, r := range routed {
		resp.Systems = append(resp.Systems, &registryv1.RoutedSystem{SystemId: r.ID, AnswerMode: r.Mode})
	}
	return resp, nil
}

// ListDisclosures implements RegistryService: every recipient whose
// registration overlapped the period, with every category it held during
// the overlap.
func (s *Service) ListDisclosures(_ context.Context, req *registryv1.ListDisclosuresRequest) (*registryv1.ListDisclosuresResponse, error) {
	from, until := req.From.AsTime(), s.now()
	if req.Until != nil {
		until = req.Until.AsTime()
	}
	if until.Before(from) {
		return nil, apierror.Invalid("until", "must not precede from")
	}
	resp := &registryv1.ListDisclosuresResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		histories, err := storage.HistoriesTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		for _, h := range histories {
			if d := disclosure(h, from, until); d != nil {
				resp.Disclosures = append(resp.Disclosures, d)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortBy(resp.Disclosures, func(d *registryv1.Disclosure) string { return d.SystemId })
	return resp, nil
}

// disclosure returns what a recipient held during [from, until], or nil
// when it was not registered then or is one of the tenant's own systems.
func disclosure(history []*registryv1.SystemVersion, from, until time.Time) *registryv1.Disclosure {
	var d *registryv1.Disclosure
	seen := map[string]bool{}
	for i, v := range history {
		start := v.System.EffectiveAt.AsTime()
		overlaps := !start.After(until) && (i+1 == len(history) || history[i+1].System.EffectiveAt.AsTime().After(from))
		if v.Removed || !overlaps || v.System.Kind == commonv1.SystemKind_SYSTEM_KIND_INTERNAL {
			continue
		}
		if d == nil {
			d = &registryv1.Disclosure{}
		}
		d.SystemId, d.Name, d.Kind, d.Country = v.System.SystemId, v.System.Name, v.System.Kind, v.System.Country
		for _, c := range v.System.Categories {
			if !seen[c.Id] {
				seen[c.Id] = true
				d.Categories = append(d.Categories, c)
			}
		}
	}
	if d != nil {
		sortBy(d.Categories, func(c *commonv1.DataCategory) string { return c.Id })
	}
	return d
}

// ListTransferFindings implements RegistryService.
func (s *Service) ListTransferFindings(_ context.Context, req *registryv1.ListTransferFindingsRequest) (*registryv1.ListTransferFindingsResponse, error) {
	now := s.now()
	resp := &registryv1.ListTransferFindingsResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		systems, err := currentSystemsTx(tx, req.TenantId, now)
		if err != nil {
			return err
		}
		for _, sys := range systems {
			resp.Findings = append(resp.Findings, s.facts.Check(sys, now)...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	transfer.SortFindings(resp.Findings)
	return resp, nil
}

// timestamp returns ts, or now when ts is unset.
func timestamp(ts *timestamppb.Timestamp, now time.Time) *timestamppb.Timestamp {
	if ts == nil {
		return timestamppb.New(now)
	}
	return ts
}
