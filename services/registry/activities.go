package registry

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/registry/internal/ropa"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
)

// PutActivity implements RegistryService. The activity's categories must be
// in the tenant's taxonomy and its recipients registered systems, so that
// the records of processing never name what the register does not know.
func (s *Service) PutActivity(ctx context.Context, req *registryv1.PutActivityRequest) (*registryv1.PutActivityResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.PutActivityResponse, error) {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		tax, err := taxonomyTx(tx, req.TenantId)
		if err != nil {
			return nil, err
		}
		v := unknownCategories(tax, req.Activity.Categories, "activity.categories")
		histories, err := storage.HistoriesTx(tx, req.TenantId)
		if err != nil {
			return nil, err
		}
		for i, id := range req.Activity.RecipientSystemIds {
			if _, ok := storage.At(histories[id], s.now()); !ok {
				v = append(v, apierror.FieldViolation{
					Field:       fmt.Sprintf("activity.recipient_system_ids[%d]", i),
					Description: fmt.Sprintf("no system %q is registered for the tenant", id),
				})
			}
		}
		v = append(v, checkAutomated(req.Activity.AutomatedDecisionMaking)...)
		if len(v) > 0 {
			return nil, apierror.InvalidArgument(v...)
		}
		if err := storage.PutActivityTx(tx, req.TenantId, req.Activity); err != nil {
			return nil, err
		}
		return &registryv1.PutActivityResponse{Activity: req.Activity}, nil
	})
}

// DeleteActivity implements RegistryService.
func (s *Service) DeleteActivity(ctx context.Context, req *registryv1.DeleteActivityRequest) (*registryv1.DeleteActivityResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.DeleteActivityResponse, error) {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		_, ok, err := storage.ActivityTx(tx, req.TenantId, req.ActivityId)
		if err != nil {
			return nil, err
		}
		if !ok {
			return nil, apierror.NotFound("activity", req.ActivityId)
		}
		return &registryv1.DeleteActivityResponse{}, storage.DeleteActivityTx(tx, req.TenantId, req.ActivityId)
	})
}

// ListActivities implements RegistryService.
func (s *Service) ListActivities(_ context.Context, req *registryv1.ListActivitiesRequest) (*registryv1.ListActivitiesResponse, error) {
	resp := &registryv1.ListActivitiesResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		page, err := paging.Scan(store.BucketTx(tx, storage.BucketActivities), store.Key(req.TenantId), req, req.TenantId)
		if err != nil {
			return err
		}
		for _, v := range page.Values {
			a := &registryv1.ProcessingActivity{}
			if err := proto.Unmarshal(v, a); err != nil {
				return err
			}
			resp.Activities = append(resp.Activities, a)
		}
		resp.NextPageToken = page.NextToken
		return nil
	})
	return resp, err
}

// ExportRecordsOfProcessing implements RegistryService.
func (s *Service) ExportRecordsOfProcessing(_ context.Context, req *registryv1.ExportRecordsOfProcessingRequest) (*registryv1.ExportRecordsOfProcessingResponse, error) {
	now := s.now()
	rec := ropa.Record{GeneratedAt: now, Systems: map[string]*registryv1.System{}, InEEA: s.facts.InEEA}
	err := s.view(func(tx *bolt.Tx) error {
		var err error
		if rec.Tenant, err = tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		if rec.Activities, err = storage.ActivitiesTx(tx, req.TenantId); err != nil {
			return err
		}
		// Category names, and which are special categories (Art. 9), make
		// the record readable to a regulator.
		tax, err := taxonomyTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		rec.Categories = map[string]*registryv1.Category{}
		for _, c := range tax.All() {
			rec.Categories[c.ID] = &registryv1.Category{Id: c.ID, Name: c.Name, Description: c.Description, Sensitive: c.Sensitive, BuiltIn: c.BuiltIn}
		}
		systems, err := currentSystemsTx(tx, req.TenantId, now)
		for _, sys := range systems {
			rec.Systems[sys.SystemId] = sys
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	contentType, content, err := ropa.Render(rec, req.Format)
	if err != nil {
		return nil, err
	}
	return &registryv1.ExportRecordsOfProcessingResponse{ContentType: contentType, Content: content}, nil
}

// ListSubProcessors implements RegistryService.
func (s *Service) ListSubProcessors(_ context.Context, req *registryv1.ListSubProcessorsRequest) (*registryv1.ListSubProcessorsResponse, error) {
	var systems []*registryv1.System
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		var err error
		systems, err = currentSystemsTx(tx, req.TenantId, s.now())
		return err
	})
	if err != nil {
		return nil, err
	}
	return &registryv1.ListSubProcessorsResponse{Systems: ropa.SubProcessors(systems)}, nil
}

// checkAutomated checks an activity's automated decision-making: a
// decision based solely on automated processing with legal or similarly
// significant effects is allowed only under an Art. 22(2) exception, and
// on special categories of data (Art. 22(4)) only on explicit consent
// (Art. 9(2)(a)) or a substantial public interest under law (Art. 9(2)(g)).
func checkAutomated(adm *registryv1.AutomatedDecisionMaking) []apierror.FieldViolation {
	if adm == nil {
		return nil
	}
	const field = "activity.automated_decision_making.exception"
	switch {
	case adm.SolelyAutomated && adm.Exception == registryv1.Art22Exception_ART22_EXCEPTION_UNSPECIFIED:
		return []apierror.FieldViolation{{Field: field, Description: "a decision based solely on automated processing needs an Art. 22(2) exception: a contract (a), authorisation by law (b) or explicit consent (c)"}}
	case !adm.SolelyAutomated && adm.Exception != registryv1.Art22Exception_ART22_EXCEPTION_UNSPECIFIED:
		return []apierror.FieldViolation{{Field: field, Description: "only a decision based solely on automated processing (Art. 22(1)) relies on an Art. 22(2) exception"}}
	case adm.SolelyAutomated && adm.SpecialCategories && adm.Exception == registryv1.Art22Exception_ART22_EXCEPTION_CONTRACT:
		return []apierror.FieldViolation{{Field: field, Description: "Art. 22(4): a decision on special categories of data needs explicit consent or authorisation by law for a substantial public interest (Art. 9(2)(a) or (g)), not a contract"}}
	}
	return nil
}
