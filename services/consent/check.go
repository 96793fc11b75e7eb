package consent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

func attributes(a *consentv1.SubjectAttributes) decision.Attributes {
	return decision.Attributes{Role: a.GetRole(), Age: a.GetAge(), Country: a.GetCountry(), GPC: a.GetGpc()}
}

// decide answers one question from memory. Only when the purpose is
// unknown does it look at the store, to tell an unknown tenant (NotFound)
// from an unknown purpose of a known one (a denial that says so).
func (s *Service) decide(tenant, subject, purpose string, a *consentv1.SubjectAttributes) (*consentv1.Decision, error) {
	d := s.index.Check(tenant, subject, purpose, attributes(a), s.Clock.Now())
	if d.Reason == consentv1.Reason_REASON_UNKNOWN_PURPOSE {
		if err := s.tenants.Require(tenant); err != nil {
			return nil, err
		}
	}
	return decisionOf(subject, purpose, d), nil
}

// decisionOf is the engine's decision on the wire, for the writer and a
// replica alike.
func decisionOf(subject, purpose string, d decision.Decision) *consentv1.Decision {
	return &consentv1.Decision{PurposeId: purpose, SubjectId: subject, Allowed: d.Allowed, Reason: d.Reason, BasisId: d.BasisID.String()}
}

// Check implements ConsentService.
func (s *Service) Check(ctx context.Context, req *consentv1.CheckRequest) (*consentv1.CheckResponse, error) {
	if err := s.recoveryRefusal(); err != nil {
		return nil, err
	}
	rev, err := answerAt(ctx, s.applied.revisions, req.TenantId, req.MinRevision, req.At != nil, s.opts.RevisionWait)
	if err != nil {
		return nil, err
	}
	if req.At != nil {
		ds, err := s.decideAt(req.TenantId, req.At, []*consentv1.CheckBatchItem{{SubjectId: req.SubjectId, PurposeId: req.PurposeId, Attributes: req.Attributes}})
		if err != nil {
			return nil, err
		}
		return &consentv1.CheckResponse{Decision: ds[0]}, nil
	}
	d, err := s.decide(req.TenantId, req.SubjectId, req.PurposeId, req.Attributes)
	if err != nil {
		return nil, err
	}
	return &consentv1.CheckResponse{Decision: d, Revision: rev}, nil
}

// CheckBatch implements ConsentService.
func (s *Service) CheckBatch(ctx context.Context, req *consentv1.CheckBatchRequest) (*consentv1.CheckBatchResponse, error) {
	if err := s.recoveryRefusal(); err != nil {
		return nil, err
	}
	rev, err := answerAt(ctx, s.applied.revisions, req.TenantId, req.MinRevision, req.At != nil, s.opts.RevisionWait)
	if err != nil {
		return nil, err
	}
	if req.At != nil {
		ds, err := s.decideAt(req.TenantId, req.At, req.Items)
		if err != nil {
			return nil, err
		}
		return &consentv1.CheckBatchResponse{Decisions: ds}, nil
	}
	resp := &consentv1.CheckBatchResponse{Decisions: make([]*consentv1.Decision, 0, len(req.Items)), Revision: rev}
	for _, item := range req.Items {
		d, err := s.decide(req.TenantId, item.SubjectId, item.PurposeId, item.Attributes)
		if err != nil {
			return nil, err
		}
		resp.Decisions = append(resp.Decisions, d)
	}
	return resp, nil
}

// pastSubject is a subject's decision state as it stood at a past time,
// rebuilt from the history, with the records behind each purpose's latest.
type pastSubject struct {
	state decision.Subject
	// chains maps a purpose to the records its latest record rests on,
	// oldest first: a grant and the renewals that extended it.
	chains map[string][]*consentv1.ConsentRecord
}

// decideAt answers questions as of a past time from the store, not from
// memory: the consent records recorded by then (in the order committed, as
// the engine folds them), the objections recorded by then and the
// restrictions in force then. Each subject is rebuilt once per call. The
// purposes are judged as declared now, their notice versions as in effect
// then: purposes keep no history of their own.
func (s *Service) decideAt(tenant string, at *timestamppb.Timestamp, items []*consentv1.CheckBatchItem) ([]*consentv1.Decision, error) {
	when := at.AsTime()
	if now := s.Clock.Now(); when.After(now) {
		return nil, apierror.Invalid("at", fmt.Sprintf("%s is in the future (now %s): a decision is made now or at a past time",
			when.Format(time.RFC3339), now.Format(time.RFC3339)))
	}
	out := make([]*consentv1.Decision, 0, len(items))
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.requireTenantTx(tx, tenant); err != nil {
			return err
		}
		var restrictions []storage.Restriction
		if err := storage.Each(tx, storage.BucketRestrictions, store.Key(tenant), func(_, v []byte) error {
			var r storage.Restriction
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if r.Active(when) {
				restrictions = append(restrictions, r)
			}
			return nil
		}); err != nil {
			return err
		}
		subjects := map[string]*pastSubject{}
		purposes := map[string]*decision.Purpose{}
		for _, item := range items {
			p, ok := purposes[item.PurposeId]
			if !ok {
				stored, found, err := storage.PurposeTx(tx, tenant, item.PurposeId)
				if err != nil {
					return err
				}
				if found {
					c := compile(stored, when)
					p = &c
				}
				purposes[item.PurposeId] = p
			}
			sub, ok := subjects[item.SubjectId]
			if !ok {
				var err error
				if sub, err = pastSubjectTx(tx, tenant, item.SubjectId, when, restrictions); err != nil {
					return err
				}
				subjects[item.SubjectId] = sub
			}
			d := s.index.Decide(tenant, p, &sub.state, attributes(item.Attributes), when)
			dec := decisionOf(item.SubjectId, item.PurposeId, d)
			if chain := sub.chains[item.PurposeId]; len(chain) > 0 && chain[len(chain)-1].RecordId == d.BasisID.String() {
				dec.Records = chain
			}
			out = append(out, dec)
		}
		return nil
	})
	return out, err
}

// pastSubjectTx rebuilds a subject as it stood at when.
func pastSubjectTx(tx *bolt.Tx, tenant, subject string, when time.Time, restrictions []storage.Restriction) (*pastSubject, error) {
	sub := &pastSubject{chains: map[string][]*consentv1.ConsentRecord{}}
	err := storage.Each(tx, storage.BucketRecords, store.Key(tenant, subject), func(_, v []byte) error {
		r := &consentv1.ConsentRecord{}
		if err := proto.Unmarshal(v, r); err != nil {
			return err
		}
		// Records are appended in commit order, each recorded at the
		// clock's time then; what was recorded after when was not known
		// at when, even if it says it was given before.
		if r.RecordedAt.AsTime().After(when) {
			return nil
		}
		sub.state.SetConsent(r.PurposeId, consentOf(r))
		if sub.state.Continues(r.PurposeId) {
			sub.chains[r.PurposeId] = append(sub.chains[r.PurposeId], r)
		} else {
			sub.chains[r.PurposeId] = []*consentv1.ConsentRecord{r}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = storage.Each(tx, storage.BucketObjections, store.Key(tenant, subject), func(_, v []byte) error {
		var o storage.Objection
		if err := json.Unmarshal(v, &o); err != nil {
			return err
		}
		if !o.RecordedAt.After(when) {
			sub.state.AddObjection(decision.Objection{ID: o.ID, Scope: o.Scope, Purposes: o.Purposes})
		}
		return nil
	})
	for _, r := range restrictions {
		if r.Subject == subject {
			sub.state.AddRestriction(decision.Restriction{ID: r.ID, Purposes: r.Purposes})
		}
	}
	return sub, err
}

// expiryBatch bounds the expiries one transaction handles.
const expiryBatch = 256
