package registry

import (
	"context"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/services/registry/internal/routing"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
)

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
