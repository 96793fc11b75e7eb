package retention

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
)

// --- rules ---

// PutRule creates or replaces a rule; the tenant's subjects are
// re-evaluated under it in the background.
func (s *Service) PutRule(ctx context.Context, req *retentionv1.PutRuleRequest) (*retentionv1.PutRuleResponse, error) {
	if _, err := validateRule(req.Rule); err != nil {
		return nil, err
	}
	if err := s.requireCategory(ctx, req.TenantId, "rule.category.id", req.Rule.Category.Id); err != nil {
		return nil, err
	}
	resp, err := mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*retentionv1.PutRuleResponse, error) {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		if err := putProtoTx(tx, bucketRules, store.Key(req.TenantId, req.Rule.RuleId), req.Rule); err != nil {
			return nil, err
		}
		return &retentionv1.PutRuleResponse{Rule: req.Rule}, s.policyChangedTx(tx, req.TenantId)
	})
	if err == nil && !req.ValidateOnly {
		s.wakeSweeper()
	}
	return resp, err
}

// DeleteRule deletes a rule.
func (s *Service) DeleteRule(ctx context.Context, req *retentionv1.DeleteRuleRequest) (*retentionv1.DeleteRuleResponse, error) {
	resp, err := mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*retentionv1.DeleteRuleResponse, error) {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		b, k := store.BucketTx(tx, bucketRules), store.Key(req.TenantId, req.RuleId)
		if b.Get(k) == nil {
			return nil, apierror.NotFound("rule", req.RuleId)
		}
		if err := b.Delete(k); err != nil {
			return nil, err
		}
		return &retentionv1.DeleteRuleResponse{}, s.policyChangedTx(tx, req.TenantId)
	})
	if err == nil && !req.ValidateOnly {
		s.wakeSweeper()
	}
	return resp, err
}

// ListRules lists a tenant's rules by id.
func (s *Service) ListRules(ctx context.Context, req *retentionv1.ListRulesRequest) (*retentionv1.ListRulesResponse, error) {
	resp := &retentionv1.ListRulesResponse{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		page, err := paging.Scan(store.BucketTx(tx, bucketRules), store.Key(req.TenantId), req, req.TenantId)
		if err != nil {
			return err
		}
		for _, v := range page.Values {
			r := &retentionv1.Rule{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			resp.Rules = append(resp.Rules, r)
		}
		resp.NextPageToken = page.NextToken
		return nil
	})
	return resp, err
}

// requireCategory asks the registry whether the tenant's taxonomy has the
// category, before any transaction: a network call must not hold the
// store's single writer.
func (s *Service) requireCategory(ctx context.Context, tenant, field, id string) error {
	if s.taxonomy == nil {
		return apierror.Unavailable(apierror.ReasonRegistryUnreachable, "the retention service has no registry connection to check categories", time.Second)
	}
	req := &registryv1.ListCategoriesRequest{TenantId: tenant, PageSize: 1000}
	for {
		resp, err := s.taxonomy.ListCategories(ctx, req)
		if status.Code(err) == codes.NotFound {
			return apierror.NotFound("tenant", tenant)
		}
		if err != nil {
			return fmt.Errorf("retention: list the registry's categories: %w", err)
		}
		for _, c := range resp.Categories {
			if c.GetId() == id {
				return nil
			}
		}
		if resp.NextPageToken == "" {
			return apierror.Invalid(field, fmt.Sprintf("the tenant's taxonomy has no category %q; define it in the registry first", id))
		}
		req.PageToken = resp.NextPageToken
	}
}

// policyChangedTx bumps the tenant's policy generation and asks for its
// subjects to be re-evaluated from the first.
func (s *Service) policyChangedTx(tx *bolt.Tx, tenant string) error {
	if err := bumpPolicyTx(tx, tenant); err != nil {
		return err
	}
	return store.BucketTx(tx, bucketRescan).Put(store.Key(tenant), nil)
}

// --- holds ---

// PlaceHold places a legal hold.
func (s *Service) PlaceHold(ctx context.Context, req *retentionv1.PlaceHoldRequest) (*retentionv1.PlaceHoldResponse, error) {
	h := proto.Clone(req.Hold).(*retentionv1.Hold)
	h.ReleasedAt = nil
	if errs := rules.ValidateHold(holdFromProto(h)); len(errs) > 0 {
		return nil, fieldErrors(errs)
	}
	if h.Category != nil {
		if err := s.requireCategory(ctx, req.TenantId, "hold.category.id", h.Category.Id); err != nil {
			return nil, err
		}
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*retentionv1.PlaceHoldResponse, error) {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		k := store.Key(req.TenantId, h.HoldId)
		if store.BucketTx(tx, bucketHolds).Get(k) != nil {
			return nil, apierror.AlreadyExists("hold", h.HoldId)
		}
		if err := putProtoTx(tx, bucketHolds, k, h); err != nil {
			return nil, err
		}
		return &retentionv1.PlaceHoldResponse{Hold: h}, s.holdChangedTx(tx, req.TenantId, h)
	})
}

// ReleaseHold ends a hold now.
func (s *Service) ReleaseHold(ctx context.Context, req *retentionv1.ReleaseHoldRequest) (*retentionv1.ReleaseHoldResponse, error) {
	resp, err := mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*retentionv1.ReleaseHoldResponse, error) {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		k := store.Key(req.TenantId, req.HoldId)
		v := store.BucketTx(tx, bucketHolds).Get(k)
		if v == nil {
			return nil, apierror.NotFound("hold", req.HoldId)
		}
		h := &retentionv1.Hold{}
		if err := proto.Unmarshal(v, h); err != nil {
			return nil, err
		}
		if h.ReleasedAt != nil {
			return nil, apierror.FailedPrecondition(apierror.ReasonHoldReleased, fmt.Sprintf("hold %s was released at %s", h.HoldId, h.ReleasedAt.AsTime().Format(time.RFC3339)))
		}
		h.ReleasedAt = ts(s.Clock.Now())
		if err := putProtoTx(tx, bucketHolds, k, h); err != nil {
			return nil, err
		}
		return &retentionv1.ReleaseHoldResponse{Hold: h}, s.holdChangedTx(tx, req.TenantId, h)
	})
	if err == nil && !req.ValidateOnly {
		s.wakeSweeper()
	}
	return resp, err
}

// holdChangedTx re-evaluates what a placed or released hold covers: its
// subject at once, or the whole tenant in the background.
func (s *Service) holdChangedTx(tx *bolt.Tx, tenant string, h *retentionv1.Hold) error {
	if err := bumpPolicyTx(tx, tenant); err != nil {
		return err
	}
	if h.SubjectId == "" {
		return store.BucketTx(tx, bucketRescan).Put(store.Key(tenant), nil)
	}
	if _, tracked, err := s.loadTx(tx, tenant, h.SubjectId); err != nil || !tracked {
		return err
	}
	p, err := s.policyTx(tx, tenant)
	if err != nil {
		return err
	}
	_, err = s.updateSubjectTx(tx, tenant, h.SubjectId, p, func(*subjectState) {})
	return err
}

// ListHolds lists holds in force, or those that apply to a subject.
func (s *Service) ListHolds(ctx context.Context, req *retentionv1.ListHoldsRequest) (*retentionv1.ListHoldsResponse, error) {
	resp := &retentionv1.ListHoldsResponse{}
	now := s.Clock.Now()
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		var matching []*retentionv1.Hold
		var ids []string
		err := eachTx(tx, bucketHolds, req.TenantId, func(v []byte) error {
			h := &retentionv1.Hold{}
			if err := proto.Unmarshal(v, h); err != nil {
				return err
			}
			if (req.IncludeEnded || inForce(h, now)) && (req.SubjectId == "" || appliesTo(h, req.SubjectId)) {
				matching = append(matching, h)
				ids = append(ids, h.HoldId)
			}
			return nil
		})
		if err != nil {
			return err
		}
		start, end, next, err := paging.Slice(ids, req, req.TenantId, req.SubjectId, fmt.Sprint(req.IncludeEnded))
		if err != nil {
			return err
		}
		resp.Holds, resp.NextPageToken = matching[start:end], next
		return nil
	})
	return resp, err
}
