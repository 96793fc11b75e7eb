package consent

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// checkPurpose validates what the proto's rules cannot express.
func checkPurpose(p *consentv1.Purpose) error {
	var v []apierror.FieldViolation
	if p.Necessary && p.LegalBasis == commonv1.LegalBasis_LEGAL_BASIS_CONSENT {
		v = append(v, apierror.FieldViolation{Field: "purpose.necessary", Description: "a strictly necessary purpose does not rest on consent: it cannot be refused"})
	}
	if p.DefaultLifetime != nil && p.DefaultLifetime.AsDuration() <= 0 {
		v = append(v, apierror.FieldViolation{Field: "purpose.default_lifetime", Description: "must be positive"})
	}
	seen := map[string]bool{}
	for i, nv := range p.NoticeVersions {
		if seen[nv.Version] {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("purpose.notice_versions[%d].version", i), Description: "listed twice"})
		}
		seen[nv.Version] = true
		if i > 0 && nv.EffectiveAt.AsTime().Before(p.NoticeVersions[i-1].EffectiveAt.AsTime()) {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("purpose.notice_versions[%d].effective_at", i), Description: "must not precede the previous version's"})
		}
	}
	if len(v) > 0 {
		return apierror.InvalidArgument(v...)
	}
	return nil
}

// PutPurpose implements ConsentService.
func (s *Service) PutPurpose(ctx context.Context, req *consentv1.PutPurposeRequest) (*consentv1.PutPurposeResponse, error) {
	if err := checkPurpose(req.Purpose); err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.PutPurposeResponse, error) {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		p := proto.Clone(req.Purpose).(*consentv1.Purpose)
		if err := storage.PutPurposeTx(tx, req.TenantId, p); err != nil {
			return nil, err
		}
		now := s.Clock.Now()
		err := s.changeTx(tx, req.TenantId, &consentv1.Change{
			Kind: consentv1.ChangeKind_CHANGE_KIND_PURPOSE_CHANGED, PurposeIds: []string{p.PurposeId}, At: timestamppb.New(now),
		}, purposeEntry(p))
		return &consentv1.PutPurposeResponse{Purpose: p, Revision: revisionTx(tx, req.TenantId)}, err
	})
}

// ListPurposes implements ConsentService.
func (s *Service) ListPurposes(_ context.Context, req *consentv1.ListPurposesRequest) (*consentv1.ListPurposesResponse, error) {
	resp := &consentv1.ListPurposesResponse{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return err
		}
		page, err := paging.Scan(store.BucketTx(tx, storage.BucketPurposes), store.Key(req.TenantId), req, req.TenantId)
		if err != nil {
			return err
		}
		for _, v := range page.Values {
			p := &consentv1.Purpose{}
			if err := proto.Unmarshal(v, p); err != nil {
				return err
			}
			resp.Purposes = append(resp.Purposes, p)
		}
		resp.NextPageToken = page.NextToken
		return nil
	})
	return resp, err
}

// unknownPurpose is the error of a request naming a purpose the tenant
// does not have.
func unknownPurpose(field, id string) error {
	return apierror.Invalid(field, fmt.Sprintf("the tenant has no purpose %q", id))
}
