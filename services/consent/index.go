package consent

import (
	"encoding/json"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// compile turns a stored purpose into the decision engine's form, as of
// now: notice versions that take effect later are brought in by
// ApplyDueNotices when they do.
func compile(p *consentv1.Purpose, now time.Time) decision.Purpose {
	d := decision.Purpose{
		ID: p.PurposeId, Basis: p.LegalBasis, Necessary: p.Necessary, DirectMarketing: p.DirectMarketing,
		GPCOptOut: p.GpcOptOut, Lifetime: p.DefaultLifetime.AsDuration(),
		ExcludedRoles: p.GetEligibility().GetExcludedRoles(), MinimumAge: p.GetEligibility().GetMinimumAge(),
		DigitalConsentAge: p.GetEligibility().GetDigitalConsentAge(), StorageOnly: p.StorageOnly,
	}
	for _, v := range p.NoticeVersions {
		at := v.EffectiveAt.AsTime()
		if at.After(now) {
			continue
		}
		d.CurrentNotice = v.Version
		if v.Material {
			d.MaterialSince = at
		}
	}
	return d
}

func consentOf(r *consentv1.ConsentRecord) decision.Consent {
	c := decision.Consent{Action: r.Action, RecordID: r.RecordId, RecordedAt: r.RecordedAt.AsTime()}
	if r.GivenAt != nil {
		c.GivenAt = r.GivenAt.AsTime()
	}
	if r.ExpiresAt != nil {
		c.ExpiresAt = r.ExpiresAt.AsTime()
	}
	return c
}

// load rebuilds the in-memory state from the store.
func (s *Service) load() error {
	now := s.Clock.Now()
	return s.DB.View(func(tx *bolt.Tx) error {
		err := storage.Each(tx, storage.BucketPurposes, nil, func(k, v []byte) error {
			p := &consentv1.Purpose{}
			if err := proto.Unmarshal(v, p); err != nil {
				return err
			}
			s.index.PutPurpose(tenantOfKey(k), compile(p, now))
			s.notices.schedule(tenantOfKey(k), p, now)
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketRecords, nil, func(_, v []byte) error {
			r := &consentv1.ConsentRecord{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			s.index.Update(r.TenantId, r.SubjectId, func(sub *decision.Subject) { sub.SetConsent(r.PurposeId, consentOf(r)) })
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketObjections, nil, func(k, v []byte) error {
			var o storage.Objection
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			s.index.Update(tenantOfKey(k), o.Subject, func(sub *decision.Subject) {
				sub.AddObjection(decision.Objection{ID: o.ID, Scope: o.Scope, Purposes: o.Purposes})
			})
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketTenantCountries, nil, func(k, v []byte) error {
			s.index.SetCountry(string(k), string(v))
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketRevisions, nil, func(k, v []byte) error {
			s.applied.start(string(k), store.KeyUint64(v))
			return nil
		})
		if err != nil {
			return err
		}
		return storage.Each(tx, storage.BucketRestrictions, nil, func(k, v []byte) error {
			var r storage.Restriction
			if err := json.Unmarshal(v, &r); err != nil {
				return err
			}
			if r.LiftedAt.IsZero() {
				s.index.Update(tenantOfKey(k), r.Subject, func(sub *decision.Subject) {
					sub.AddRestriction(decision.Restriction{ID: r.ID, Purposes: r.Purposes})
				})
			}
			return nil
		})
	})
}

// tenantOfKey returns the tenant id a storage key starts with.
func tenantOfKey(k []byte) string {
	for i, b := range k {
		if b == 0 {
			return string(k[:i])
		}
	}
	return string(k)
}
