package consent

import (
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/tasks"
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
		o, err := s.objectTx(ctx, tx, req.TenantId, req.SubjectId, req.Scope, req.PurposeIds, covered, req.Cause, expect)
		if err != nil {
			return nil, err
		}
		return &consentv1.RecordObjectionResponse{ObjectionId: o.ID, PurposeIds: covered, Revision: revisionTx(tx, req.TenantId)}, nil
	})
}

// objectTx records an objection of the given scope and purposes, which
// stops the covered purposes, and publishes objection.recorded to the
// expected systems, in the caller's transaction.
func (s *Service) objectTx(ctx context.Context, tx *bolt.Tx, tenant, subject string, scope eventsv1.ObjectionScope, purposes, covered []string,
	cause *commonv1.Cause, expect []tasks.Expect) (storage.Objection, error) {
	now := s.Clock.Now()
	o := storage.Objection{ID: outbox.NewEventID(), Subject: subject, Scope: scope, Purposes: purposes, RecordedAt: now}
	cause = causeOr(cause, commonv1.CauseKind_CAUSE_KIND_OBJECTION, o.ID)
	o.CauseKind, o.CauseID = cause.Kind, cause.Id
	if err := storage.PutObjectionTx(tx, tenant, o); err != nil {
		return o, err
	}
	if err := s.changeTx(tx, tenant, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_OBJECTION_RECORDED,
		SubjectId: subject, PurposeIds: covered, BasisId: o.ID, At: timestamppb.New(now)}, objectionEntry(o)); err != nil {
		return o, err
	}
	return o, s.publishLimitTx(ctx, tx, tenant, subject, cause, expect, &eventsv1.Event{
		Body: &eventsv1.Event_ObjectionRecorded{ObjectionRecorded: &eventsv1.ObjectionRecorded{ObjectionId: o.ID, Scope: scope, PurposeIds: covered}},
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
			SubjectId: req.SubjectId, PurposeIds: req.PurposeIds, BasisId: r.ID, At: timestamppb.New(now)}, restrictionEntry(r)); err != nil {
			return nil, err
		}
		if err := s.publishLimitTx(ctx, tx, req.TenantId, req.SubjectId, cause, expect, &eventsv1.Event{
			Body: &eventsv1.Event_RestrictionApplied{RestrictionApplied: &eventsv1.RestrictionApplied{RestrictionId: r.ID, Ground: r.Ground, PurposeIds: r.Purposes}},
		}); err != nil {
			return nil, err
		}
		return &consentv1.ApplyRestrictionResponse{RestrictionId: r.ID, Revision: revisionTx(tx, req.TenantId)}, nil
	})
}

// restrictionOf returns a stored restriction as the API shows it.
func restrictionOf(r storage.Restriction) *consentv1.Restriction {
	out := &consentv1.Restriction{RestrictionId: r.ID, SubjectId: r.Subject, Ground: r.Ground, PurposeIds: r.Purposes,
		AppliedAt: timestamppb.New(r.AppliedAt), GroundOutcome: r.GroundOutcome, ObjectionId: r.ObjectionID,
		RecoveredFrom: r.Recovered.Proto(), LiftRecoveredFrom: r.LiftRecovered.Proto()}
	if !r.LiftedAt.IsZero() {
		out.LiftedAt = timestamppb.New(r.LiftedAt)
	}
	if !r.SubjectInformedAt.IsZero() {
		out.SubjectInformedAt = timestamppb.New(r.SubjectInformedAt)
	}
	return out
}

// liftable reads a restriction before a lift and checks that the subject
// was informed at informed (Art. 18(3): "before the restriction of
// processing is lifted") and, for an outcome, that the outcome ends the
// restriction's own ground. Whether it was lifted already is checked by
// liftedAlready inside the mutation, so that a repeated request gets the
// first answer.
func (s *Service) liftable(tx *bolt.Tx, tenant, id string, informed *timestamppb.Timestamp, outcome consentv1.RestrictionGroundOutcome) (storage.Restriction, error) {
	r, ok, err := storage.RestrictionTx(tx, tenant, id)
	switch {
	case err != nil:
		return r, err
	case !ok:
		return r, apierror.NotFound("restriction", id)
	}
	at, now := informed.AsTime(), s.Clock.Now()
	switch {
	case at.After(now):
		return r, apierror.Invalid("subject_informed_at", fmt.Sprintf("%s is in the future (now %s): the subject is informed before the lift (Art. 18(3))",
			at.Format(time.RFC3339), now.Format(time.RFC3339)))
	case at.Before(r.AppliedAt):
		return r, apierror.Invalid("subject_informed_at", fmt.Sprintf("%s precedes the restriction, applied %s: inform the subject of this lift",
			at.Format(time.RFC3339), r.AppliedAt.Format(time.RFC3339)))
	}
	if outcome == consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_UNSPECIFIED {
		return r, nil
	}
	ends, ok := groundOutcomes[r.Ground]
	if !ok {
		return r, apierror.FailedPrecondition(apierror.ReasonGroundHasNoOutcome, fmt.Sprintf(
			"a restriction on ground %s lasts until the subject asks otherwise (Art. 18(1)(b)): lift it by hand", r.Ground))
	}
	if !slices.Contains(ends, outcome) {
		return r, apierror.Invalid("outcome", fmt.Sprintf("%s does not end ground %s; it ends with one of %v", outcome, r.Ground, ends))
	}
	return r, nil
}

// liftedAlready refuses to lift a restriction twice.
func liftedAlready(r storage.Restriction) error {
	if !r.LiftedAt.IsZero() {
		return apierror.FailedPrecondition(apierror.ReasonRestrictionLifted, "the restriction was lifted already")
	}
	return nil
}

// groundOutcomes lists, per Art. 18(1) ground, the outcomes that end it:
// (a) lasts "for a period enabling the controller to verify the accuracy",
// (c) while the subject needs the data for legal claims, (d) "pending the
// verification whether the legitimate grounds of the controller override".
// (b), unlawful processing kept instead of erased, ends only when the
// subject asks.
var groundOutcomes = map[eventsv1.RestrictionGround][]consentv1.RestrictionGroundOutcome{
	eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED: {
		consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_ACCURACY_VERIFIED,
		consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_DATA_RECTIFIED},
	eventsv1.RestrictionGround_RESTRICTION_GROUND_OBJECTION_PENDING: {
		consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_GROUNDS_OVERRIDE,
		consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_OBJECTION_UPHELD},
	eventsv1.RestrictionGround_RESTRICTION_GROUND_LEGAL_CLAIMS: {
		consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_LEGAL_CLAIMS_ENDED},
}

// liftTx lifts a restriction checked by liftable, keeping when the subject
// was informed and how its ground ended, and publishes restriction.lifted
// to the expected systems, in the caller's transaction.
func (s *Service) liftTx(ctx context.Context, tx *bolt.Tx, tenant string, r storage.Restriction, informed time.Time,
	outcome consentv1.RestrictionGroundOutcome, cause *commonv1.Cause, expect []tasks.Expect) (storage.Restriction, error) {
	now := s.Clock.Now()
	cause = causeOr(cause, commonv1.CauseKind_CAUSE_KIND_RESTRICTION, r.ID)
	r.LiftedAt, r.SubjectInformedAt, r.GroundOutcome = now, informed, outcome
	r.LiftCauseKind, r.LiftCauseID = cause.Kind, cause.Id
	if err := storage.PutRestrictionTx(tx, tenant, r); err != nil {
		return r, err
	}
	if err := s.changeTx(tx, tenant, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_LIFTED,
		SubjectId: r.Subject, PurposeIds: r.Purposes, BasisId: r.ID, At: timestamppb.New(now)}, restrictionEntry(r)); err != nil {
		return r, err
	}
	return r, s.publishLimitTx(ctx, tx, tenant, r.Subject, cause, expect, &eventsv1.Event{
		Body: &eventsv1.Event_RestrictionLifted{RestrictionLifted: &eventsv1.RestrictionLifted{RestrictionId: r.ID}},
	})
}

// LiftRestriction implements ConsentService.
func (s *Service) LiftRestriction(ctx context.Context, req *consentv1.LiftRestrictionRequest) (*consentv1.LiftRestrictionResponse, error) {
	var r storage.Restriction
	err := s.DB.View(func(tx *bolt.Tx) (err error) {
		r, err = s.liftable(tx, req.TenantId, req.RestrictionId, req.SubjectInformedAt, 0)
		return err
	})
	if err != nil {
		return nil, err
	}
	expect, err := s.expect(ctx, req.TenantId, r.Purposes)
	if err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.LiftRestrictionResponse, error) {
		r, err := s.liftable(tx, req.TenantId, req.RestrictionId, req.SubjectInformedAt, 0)
		if err == nil {
			err = liftedAlready(r)
		}
		if err != nil {
			return nil, err
		}
		r, err = s.liftTx(ctx, tx, req.TenantId, r, req.SubjectInformedAt.AsTime(), 0, req.Cause, expect)
		if err != nil {
			return nil, err
		}
		return &consentv1.LiftRestrictionResponse{Restriction: restrictionOf(r), Revision: revisionTx(tx, req.TenantId)}, nil
	})
}

// ResolveRestrictionGround implements ConsentService: the end of a
// restriction's ground lifts it. An upheld objection (Art. 18(1)(d), the
// controller's grounds do not override) becomes an objection first, in the
// same transaction and before the lift on the event stream, so that no
// system resumes what the subject objected to: to the restricted purposes,
// or to processing on legitimate interests or a public task (Art. 21(1))
// when the restriction covered everything.
func (s *Service) ResolveRestrictionGround(ctx context.Context, req *consentv1.ResolveRestrictionGroundRequest) (*consentv1.ResolveRestrictionGroundResponse, error) {
	var r storage.Restriction
	err := s.DB.View(func(tx *bolt.Tx) (err error) {
		r, err = s.liftable(tx, req.TenantId, req.RestrictionId, req.SubjectInformedAt, req.Outcome)
		return err
	})
	if err != nil {
		return nil, err
	}
	upheld := req.Outcome == consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_OBJECTION_UPHELD
	scope, covered := eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES, r.Purposes
	var objectionExpect []tasks.Expect
	if upheld {
		if len(r.Purposes) == 0 {
			scope = eventsv1.ObjectionScope_OBJECTION_SCOPE_LEGITIMATE_INTERESTS
			covered = s.index.Covered(req.TenantId, scope)
		}
		if objectionExpect, err = s.expect(ctx, req.TenantId, covered); err != nil {
			return nil, err
		}
	}
	expect, err := s.expect(ctx, req.TenantId, r.Purposes)
	if err != nil {
		return nil, err
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.ResolveRestrictionGroundResponse, error) {
		r, err := s.liftable(tx, req.TenantId, req.RestrictionId, req.SubjectInformedAt, req.Outcome)
		if err == nil {
			err = liftedAlready(r)
		}
		if err != nil {
			return nil, err
		}
		if upheld {
			var purposes []string
			if scope == eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES {
				purposes = r.Purposes
			}
			o, err := s.objectTx(ctx, tx, req.TenantId, r.Subject, scope, purposes, covered, req.Cause, objectionExpect)
			if err != nil {
				return nil, err
			}
			r.ObjectionID = o.ID
		}
		r, err = s.liftTx(ctx, tx, req.TenantId, r, req.SubjectInformedAt.AsTime(), req.Outcome, req.Cause, expect)
		if err != nil {
			return nil, err
		}
		return &consentv1.ResolveRestrictionGroundResponse{Restriction: restrictionOf(r), Revision: revisionTx(tx, req.TenantId)}, nil
	})
}
