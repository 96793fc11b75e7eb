package registry

import (
	"context"
	"slices"
	"strings"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
	"github.com/lethe-privacy/lethe/services/registry/internal/transfer"
)

// checkTenant validates what the proto's rules cannot: country codes and
// time zones that exist.
func checkTenant(t *registryv1.Tenant) error {
	var v []apierror.FieldViolation
	if c := t.GetSettings().GetCountry(); c != "" && !transfer.ValidCountry(c) {
		v = append(v, apierror.FieldViolation{Field: "tenant.settings.country", Description: "not an ISO 3166-1 alpha-2 country code: " + c})
	}
	if c := t.GetSettings().GetSupervisoryAuthority().GetCountry(); c != "" && !transfer.ValidCountry(c) {
		v = append(v, apierror.FieldViolation{Field: "tenant.settings.supervisory_authority.country", Description: "not an ISO 3166-1 alpha-2 country code: " + c})
	}
	if z := t.GetSettings().GetTimeZone(); z != "" {
		if _, err := period.LoadZone(z); err != nil {
			v = append(v, apierror.FieldViolation{Field: "tenant.settings.time_zone", Description: err.Error()})
		}
	}
	if len(v) > 0 {
		return apierror.InvalidArgument(v...)
	}
	return nil
}

// CreateTenant implements RegistryService.
func (s *Service) CreateTenant(ctx context.Context, req *registryv1.CreateTenantRequest) (*registryv1.CreateTenantResponse, error) {
	if err := checkTenant(req.Tenant); err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.CreateTenantResponse, error) {
		if _, exists, err := storage.TenantTx(tx, req.Tenant.TenantId); err != nil || exists {
			return nil, firstErr(err, apierror.AlreadyExists("tenant", req.Tenant.TenantId))
		}
		t := proto.Clone(req.Tenant).(*registryv1.Tenant)
		t.CreatedAt = timestamppb.New(s.now())
		t.UpdatedAt = t.CreatedAt
		shard, err := s.assignShardTx(tx, t.ConsentShard)
		if err != nil {
			return nil, err
		}
		t.ConsentShard = shard
		if err := storage.PutTenantTx(tx, t); err != nil {
			return nil, err
		}
		err = s.publishTx(ctx, tx, t.TenantId, t.TenantId, &eventsv1.Event{
			Body: &eventsv1.Event_TenantRegistered{TenantRegistered: &eventsv1.TenantRegistered{DisplayName: t.DisplayName,
				FinancialYearEnd: t.GetSettings().GetFinancialYearEnd(), ConsentShard: t.ConsentShard}},
		})
		return &registryv1.CreateTenantResponse{Tenant: t}, err
	})
}

// firstErr returns err if set, else alt.
func firstErr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// UpdateTenant implements RegistryService.
func (s *Service) UpdateTenant(ctx context.Context, req *registryv1.UpdateTenantRequest) (*registryv1.UpdateTenantResponse, error) {
	if err := checkTenant(req.Tenant); err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.UpdateTenantResponse, error) {
		old, err := tenantTx(tx, req.Tenant.TenantId)
		if err != nil {
			return nil, err
		}
		t := proto.Clone(req.Tenant).(*registryv1.Tenant)
		t.CreatedAt = old.CreatedAt
		t.UpdatedAt = timestamppb.New(s.now())
		if t.ConsentShard, err = keepShard(old, t.ConsentShard); err != nil {
			return nil, err
		}
		if err := storage.PutTenantTx(tx, t); err != nil {
			return nil, err
		}
		err = s.publishTx(ctx, tx, t.TenantId, t.TenantId, &eventsv1.Event{
			Body: &eventsv1.Event_TenantChanged{TenantChanged: &eventsv1.TenantChanged{DisplayName: t.DisplayName,
				FinancialYearEnd: t.GetSettings().GetFinancialYearEnd(), ConsentShard: t.ConsentShard}},
		})
		return &registryv1.UpdateTenantResponse{Tenant: t}, err
	})
}

// GetTenant implements RegistryService.
func (s *Service) GetTenant(_ context.Context, req *registryv1.GetTenantRequest) (*registryv1.GetTenantResponse, error) {
	resp := &registryv1.GetTenantResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		t, err := tenantTx(tx, req.TenantId)
		resp.Tenant = withShard(t)
		return err
	})
	return resp, err
}

// ListTenants implements RegistryService.
func (s *Service) ListTenants(_ context.Context, req *registryv1.ListTenantsRequest) (*registryv1.ListTenantsResponse, error) {
	resp := &registryv1.ListTenantsResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		page, err := paging.Scan(store.BucketTx(tx, storage.BucketTenants), nil, req)
		if err != nil {
			return err
		}
		for _, v := range page.Values {
			t := &registryv1.Tenant{}
			if err := proto.Unmarshal(v, t); err != nil {
				return err
			}
			resp.Tenants = append(resp.Tenants, withShard(t))
		}
		resp.NextPageToken = page.NextToken
		return nil
	})
	return resp, err
}

// sortBy sorts items by the string key returns.
func sortBy[T any](items []T, key func(T) string) {
	slices.SortFunc(items, func(a, b T) int { return strings.Compare(key(a), key(b)) })
}

func sortSystems(systems []*registryv1.System) {
	sortBy(systems, func(s *registryv1.System) string { return s.SystemId })
}
