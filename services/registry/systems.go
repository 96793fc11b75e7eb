package registry

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/services/registry/internal/storage"
	"github.com/lethe-privacy/lethe/services/registry/internal/transfer"
)

// checkSystemTx validates a system version against the tenant's state: the
// country exists, its categories are in the tenant's taxonomy, a
// sub-processor names the registered processor that engaged it, and the
// version does not take effect before the system's latest one (history is
// recorded in order; an earlier date would rewrite it).
func (s *Service) checkSystemTx(tx *bolt.Tx, tenant string, sys *registryv1.System, latest *registryv1.SystemVersion) error {
	var v []apierror.FieldViolation
	// An empty country is "not known"; ListTransferFindings reports it.
	if sys.Country != "" && !transfer.ValidCountry(sys.Country) {
		v = append(v, apierror.FieldViolation{Field: "system.country", Description: "not an ISO 3166-1 alpha-2 country code: " + sys.Country})
	}
	tax, err := taxonomyTx(tx, tenant)
	if err != nil {
		return err
	}
	v = append(v, unknownCategories(tax, sys.Categories, "system.categories")...)
	switch {
	case sys.Kind == commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR && sys.ParentSystemId == "":
		v = append(v, apierror.FieldViolation{Field: "system.parent_system_id", Description: "required for a sub-processor: the processor that engaged it"})
	case sys.Kind != commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR && sys.ParentSystemId != "":
		v = append(v, apierror.FieldViolation{Field: "system.parent_system_id", Description: "only a sub-processor has a parent system"})
	case sys.ParentSystemId == sys.SystemId:
		v = append(v, apierror.FieldViolation{Field: "system.parent_system_id", Description: "a system cannot be its own parent"})
	case sys.ParentSystemId != "":
		parent, err := storage.SystemHistoryTx(tx, tenant, sys.ParentSystemId)
		if err != nil {
			return err
		}
		if _, ok := storage.At(parent, sys.EffectiveAt.AsTime()); !ok {
			v = append(v, apierror.FieldViolation{Field: "system.parent_system_id", Description: fmt.Sprintf("no system %q is registered for the tenant at %s", sys.ParentSystemId, sys.EffectiveAt.AsTime().Format(time.RFC3339))})
		}
	}
	tenantSettings, err := tenantTx(tx, tenant)
	if err != nil {
		return err
	}
	v = append(v, s.checkAnswerer(sys, tenantSettings.GetSettings().GetWebhookPrivateNetworks())...)
	if latest != nil && sys.EffectiveAt.AsTime().Before(latest.System.EffectiveAt.AsTime()) {
		v = append(v, apierror.FieldViolation{Field: "system.effective_at", Description: "must not precede the system's latest version, effective " + latest.System.EffectiveAt.AsTime().Format(time.RFC3339)})
	}
	if len(v) > 0 {
		return apierror.InvalidArgument(v...)
	}
	return nil
}

// checkAnswerer checks what answers the system's events against its answer
// mode: a WEBHOOK system has a URL the runner may call, a CONNECTOR system
// names a connector, and no other system carries either (a stale webhook
// left on a MANUAL system would look like a live endpoint).
func (s *Service) checkAnswerer(sys *registryv1.System, allowPrivate bool) []apierror.FieldViolation {
	var v []apierror.FieldViolation
	switch {
	case sys.AnswerMode == commonv1.AnswerMode_ANSWER_MODE_WEBHOOK:
		if sys.GetWebhook().GetUrl() == "" {
			v = append(v, apierror.FieldViolation{Field: "system.webhook.url", Description: "required when answer_mode is WEBHOOK"})
		} else if err := webhook.CheckURL(sys.GetWebhook().GetUrl(), webhook.URLPolicy{AllowHTTP: s.allowHTTPWebhooks, AllowPrivate: allowPrivate}); err != nil {
			v = append(v, apierror.FieldViolation{Field: "system.webhook.url", Description: err.Error()})
		}
	case sys.Webhook != nil:
		v = append(v, apierror.FieldViolation{Field: "system.webhook", Description: "only a system whose answer_mode is WEBHOOK has a webhook"})
	}
	switch {
	case sys.AnswerMode == commonv1.AnswerMode_ANSWER_MODE_CONNECTOR:
		if sys.GetConnector().GetName() == "" {
			v = append(v, apierror.FieldViolation{Field: "system.connector.name", Description: "required when answer_mode is CONNECTOR"})
		}
	case sys.Connector != nil:
		v = append(v, apierror.FieldViolation{Field: "system.connector", Description: "only a system whose answer_mode is CONNECTOR has a connector"})
	}
	return v
}

// systemInfo is what the other services learn of a system from events.
func systemInfo(sys *registryv1.System) *eventsv1.SystemInfo {
	return &eventsv1.SystemInfo{
		SystemId: sys.SystemId, Name: sys.Name, Kind: sys.Kind, AnswerMode: sys.AnswerMode,
		Categories: sys.Categories, PurposeIds: sys.PurposeIds, EffectiveAt: sys.EffectiveAt,
	}
}

// recordTx validates and appends a version of a system, and publishes its
// event, all in the caller's transaction.
func (s *Service) recordTx(ctx context.Context, tx *bolt.Tx, tenant string, v *registryv1.SystemVersion, latest *registryv1.SystemVersion, ev *eventsv1.Event) error {
	if !v.Removed {
		if err := s.checkSystemTx(tx, tenant, v.System, latest); err != nil {
			return err
		}
	}
	if err := storage.AddSystemVersionTx(tx, tenant, v); err != nil {
		return err
	}
	tx.OnCommit(func() { s.routes.invalidate(tenant) })
	return s.publishTx(ctx, tx, tenant, v.System.SystemId, ev)
}

// RegisterSystem implements RegistryService.
func (s *Service) RegisterSystem(ctx context.Context, req *registryv1.RegisterSystemRequest) (*registryv1.RegisterSystemResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.RegisterSystemResponse, error) {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		sys := proto.Clone(req.System).(*registryv1.System)
		sys.EffectiveAt = timestamp(sys.EffectiveAt, s.now())
		history, err := storage.SystemHistoryTx(tx, req.TenantId, sys.SystemId)
		if err != nil {
			return nil, err
		}
		latest := storage.Latest(history)
		if latest != nil && !latest.Removed {
			return nil, apierror.AlreadyExists("system", sys.SystemId)
		}
		v := &registryv1.SystemVersion{System: sys, RecordedAt: timestamppb.New(s.now())}
		ev := &eventsv1.Event{Body: &eventsv1.Event_SystemRegistered{SystemRegistered: &eventsv1.SystemRegistered{System: systemInfo(sys)}}}
		if err := s.recordTx(ctx, tx, req.TenantId, v, latest, ev); err != nil {
			return nil, err
		}
		return &registryv1.RegisterSystemResponse{System: sys}, nil
	})
}

// currentTx returns a system's history and its latest version, or
// NotFound when it is not registered (never, or removed).
func currentTx(tx *bolt.Tx, tenant, systemID string) (*registryv1.SystemVersion, error) {
	if _, err := tenantTx(tx, tenant); err != nil {
		return nil, err
	}
	history, err := storage.SystemHistoryTx(tx, tenant, systemID)
	if err != nil {
		return nil, err
	}
	latest := storage.Latest(history)
	if latest == nil || latest.Removed {
		return nil, apierror.NotFound("system", systemID)
	}
	return latest, nil
}

// UpdateSystem implements RegistryService.
func (s *Service) UpdateSystem(ctx context.Context, req *registryv1.UpdateSystemRequest) (*registryv1.UpdateSystemResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.UpdateSystemResponse, error) {
		latest, err := currentTx(tx, req.TenantId, req.System.SystemId)
		if err != nil {
			return nil, err
		}
		sys := proto.Clone(req.System).(*registryv1.System)
		sys.EffectiveAt = timestamp(sys.EffectiveAt, s.now())
		v := &registryv1.SystemVersion{System: sys, RecordedAt: timestamppb.New(s.now())}
		ev := &eventsv1.Event{Body: &eventsv1.Event_SystemChanged{SystemChanged: &eventsv1.SystemChanged{System: systemInfo(sys)}}}
		if err := s.recordTx(ctx, tx, req.TenantId, v, latest, ev); err != nil {
			return nil, err
		}
		return &registryv1.UpdateSystemResponse{System: sys}, nil
	})
}

// RemoveSystem implements RegistryService.
func (s *Service) RemoveSystem(ctx context.Context, req *registryv1.RemoveSystemRequest) (*registryv1.RemoveSystemResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*registryv1.RemoveSystemResponse, error) {
		latest, err := currentTx(tx, req.TenantId, req.SystemId)
		if err != nil {
			return nil, err
		}
		at := timestamp(req.EffectiveAt, s.now())
		if at.AsTime().Before(latest.System.EffectiveAt.AsTime()) {
			return nil, apierror.Invalid("effective_at", "must not precede the system's latest version, effective "+latest.System.EffectiveAt.AsTime().Format(time.RFC3339))
		}
		last := proto.Clone(latest.System).(*registryv1.System)
		last.EffectiveAt = at
		v := &registryv1.SystemVersion{System: last, Removed: true, RecordedAt: timestamppb.New(s.now())}
		ev := &eventsv1.Event{Body: &eventsv1.Event_SystemRemoved{SystemRemoved: &eventsv1.SystemRemoved{SystemId: req.SystemId, EffectiveAt: at}}}
		if err := s.recordTx(ctx, tx, req.TenantId, v, latest, ev); err != nil {
			return nil, err
		}
		return &registryv1.RemoveSystemResponse{System: latest.System}, nil
	})
}

// GetSystem implements RegistryService.
func (s *Service) GetSystem(_ context.Context, req *registryv1.GetSystemRequest) (*registryv1.GetSystemResponse, error) {
	at := timestamp(req.AsOf, s.now()).AsTime()
	resp := &registryv1.GetSystemResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		history, err := storage.SystemHistoryTx(tx, req.TenantId, req.SystemId)
		if err != nil {
			return err
		}
		sys, ok := storage.At(history, at)
		if !ok {
			return apierror.NotFound("system", req.SystemId)
		}
		resp.System = sys
		return nil
	})
	return resp, err
}

// ListSystems implements RegistryService.
func (s *Service) ListSystems(_ context.Context, req *registryv1.ListSystemsRequest) (*registryv1.ListSystemsResponse, error) {
	at := timestamp(req.AsOf, s.now()).AsTime()
	var systems []*registryv1.System
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		var err error
		systems, err = currentSystemsTx(tx, req.TenantId, at)
		return err
	})
	if err != nil {
		return nil, err
	}
	ids := make([]string, len(systems))
	for i, sys := range systems {
		ids[i] = sys.SystemId
	}
	// A token is bound to the moment asked only when one was given; "now"
	// moves between pages and should not invalidate them.
	asOf := ""
	if req.AsOf != nil {
		asOf = at.Format(time.RFC3339Nano)
	}
	start, end, next, err := paging.Slice(ids, req, req.TenantId, asOf)
	if err != nil {
		return nil, err
	}
	return &registryv1.ListSystemsResponse{Systems: systems[start:end], NextPageToken: next}, nil
}

// GetSystemHistory implements RegistryService.
func (s *Service) GetSystemHistory(_ context.Context, req *registryv1.GetSystemHistoryRequest) (*registryv1.GetSystemHistoryResponse, error) {
	resp := &registryv1.GetSystemHistoryResponse{}
	err := s.view(func(tx *bolt.Tx) error {
		if _, err := tenantTx(tx, req.TenantId); err != nil {
			return err
		}
		var err error
		resp.Versions, err = storage.SystemHistoryTx(tx, req.TenantId, req.SystemId)
		if err == nil && len(resp.Versions) == 0 {
			return apierror.NotFound("system", req.SystemId)
		}
		return err
	})
	return resp, err
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
