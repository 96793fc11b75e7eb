package registry

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
)

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
