package consent

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// causeOr returns the caller's cause (a data-subject request, for one), or
// the limit itself when the subject asked directly.
func causeOr(c *commonv1.Cause, kind commonv1.CauseKind, id string) *commonv1.Cause {
	if c.GetKind() != commonv1.CauseKind_CAUSE_KIND_UNSPECIFIED && c.GetId() != "" {
		return c
	}
	return &commonv1.Cause{Kind: kind, Id: id}
}

// knownPurposes checks that every named purpose exists for the tenant.
func (s *Service) knownPurposes(tenant, field string, ids []string) error {
	for i, id := range ids {
		if _, ok := s.index.Purpose(tenant, id); !ok {
			if err := s.tenants.Require(tenant); err != nil {
				return err
			}
			return unknownPurpose(fmt.Sprintf("%s[%d]", field, i), id)
		}
	}
	return nil
}

// RecordObjection implements ConsentService. The purposes an objection
// stops are resolved now and carried on its event, so that systems know
// exactly what to stop.
func (s *Service) RecordObjection(ctx context.Context, req *consentv1.RecordObjectionRequest) (*consentv1.RecordObjectionResponse, error) {
	switch {
	case req.Scope == eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES && len(req.PurposeIds) == 0:
		return nil, apierror.Invalid("purpose_ids", "name the purposes objected to")
	case req.Scope != eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES && len(req.PurposeIds) > 0:
		return nil, apierror.Invalid("purpose_ids", "only an objection to named purposes lists purposes")
	}
	if err := s.knownPurposes(req.TenantId, "purpose_ids", req.PurposeIds); err != nil {
		return nil, err
	}
	covered := req.PurposeIds
	if req.Scope != eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES {
		covered = s.index.Covered(req.TenantId, req.Scope)
	}
	expect, err := s.expect(ctx, req.TenantId, covered)
	if err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.RecordObjectionResponse, error) {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		now := s.Clock.Now()
		o := storage.Objection{ID: outbox.NewEventID(), Subject: req.SubjectId, Scope: req.Scope, Purposes: req.PurposeIds, RecordedAt: now}
		cause := causeOr(req.Cause, commonv1.CauseKind_CAUSE_KIND_OBJECTION, o.ID)
		o.CauseKind, o.CauseID = cause.Kind, cause.Id
		if err := storage.PutObjectionTx(tx, req.TenantId, o); err != nil {
			return nil, err
		}
		if err := s.changeTx(tx, req.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_OBJECTION_RECORDED,
			SubjectId: req.SubjectId, PurposeIds: covered, BasisId: o.ID, At: timestamppb.New(now)}, func() {
			s.index.Update(req.TenantId, req.SubjectId, func(sub *decision.Subject) {
				sub.AddObjection(decision.Objection{ID: o.ID, Scope: o.Scope, Purposes: o.Purposes})
			})
		}); err != nil {
			return nil, err
		}
		if err := s.publishLimitTx(ctx, tx, req.TenantId, req.SubjectId, cause, expect, &eventsv1.Event{
			Body: &eventsv1.Event_ObjectionRecorded{ObjectionRecorded: &eventsv1.ObjectionRecorded{ObjectionId: o.ID, Scope: req.Scope, PurposeIds: covered}},
		}); err != nil {
			return nil, err
		}
		return &consentv1.RecordObjectionResponse{ObjectionId: o.ID, PurposeIds: covered}, nil
	})
}

// ApplyRestriction implements ConsentService.
func (s *Service) ApplyRestriction(ctx context.Context, req *consentv1.ApplyRestrictionRequest) (*consentv1.ApplyRestrictionResponse, error) {
	if err := s.knownPurposes(req.TenantId, "purpose_ids", req.PurposeIds); err != nil {
		return nil, err
	}
	expect, err := s.expect(ctx, req.TenantId, req.PurposeIds)
	if err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.ApplyRestrictionResponse, error) {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		now := s.Clock.Now()
		r := storage.Restriction{ID: outbox.NewEventID(), Subject: req.SubjectId, Ground: req.Ground, Purposes: req.PurposeIds, AppliedAt: now}
		cause := causeOr(req.Cause, commonv1.CauseKind_CAUSE_KIND_RESTRICTION, r.ID)
		r.CauseKind, r.CauseID = cause.Kind, cause.Id
		if err := storage.PutRestrictionTx(tx, req.TenantId, r); err != nil {
			return nil, err
		}
		if err := s.changeTx(tx, req.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_APPLIED,
			SubjectId: req.SubjectId, PurposeIds: req.PurposeIds, BasisId: r.ID, At: timestamppb.New(now)}, func() {
			s.index.Update(req.TenantId, req.SubjectId, func(sub *decision.Subject) {
				sub.AddRestriction(decision.Restriction{ID: r.ID, Purposes: r.Purposes})
			})
		}); err != nil {
			return nil, err
		}
		if err := s.publishLimitTx(ctx, tx, req.TenantId, req.SubjectId, cause, expect, &eventsv1.Event{
			Body: &eventsv1.Event_RestrictionApplied{RestrictionApplied: &eventsv1.RestrictionApplied{RestrictionId: r.ID, Ground: r.Ground, PurposeIds: r.Purposes}},
		}); err != nil {
			return nil, err
		}
		return &consentv1.ApplyRestrictionResponse{RestrictionId: r.ID}, nil
	})
}

// LiftRestriction implements ConsentService.
func (s *Service) LiftRestriction(ctx context.Context, req *consentv1.LiftRestrictionRequest) (*consentv1.LiftRestrictionResponse, error) {
	var purposes []string
	err := s.DB.View(func(tx *bolt.Tx) error {
		r, ok, err := storage.RestrictionTx(tx, req.TenantId, req.RestrictionId)
		purposes = r.Purposes
		if err == nil && !ok {
			err = apierror.NotFound("restriction", req.RestrictionId)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	expect, err := s.expect(ctx, req.TenantId, purposes)
	if err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.LiftRestrictionResponse, error) {
		r, ok, err := storage.RestrictionTx(tx, req.TenantId, req.RestrictionId)
		switch {
		case err != nil:
			return nil, err
		case !ok:
			return nil, apierror.NotFound("restriction", req.RestrictionId)
		case !r.LiftedAt.IsZero():
			return nil, apierror.FailedPrecondition("RESTRICTION_LIFTED", "the restriction was lifted already")
		}
		now := s.Clock.Now()
		r.LiftedAt = now
		if err := storage.PutRestrictionTx(tx, req.TenantId, r); err != nil {
			return nil, err
		}
		if err := s.changeTx(tx, req.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_LIFTED,
			SubjectId: r.Subject, PurposeIds: r.Purposes, BasisId: r.ID, At: timestamppb.New(now)}, func() {
			s.index.Update(req.TenantId, r.Subject, func(sub *decision.Subject) { sub.LiftRestriction(r.ID) })
		}); err != nil {
			return nil, err
		}
		cause := causeOr(req.Cause, commonv1.CauseKind_CAUSE_KIND_RESTRICTION, r.ID)
		if err := s.publishLimitTx(ctx, tx, req.TenantId, r.Subject, cause, expect, &eventsv1.Event{
			Body: &eventsv1.Event_RestrictionLifted{RestrictionLifted: &eventsv1.RestrictionLifted{RestrictionId: r.ID}},
		}); err != nil {
			return nil, err
		}
		return &consentv1.LiftRestrictionResponse{}, nil
	})
}
