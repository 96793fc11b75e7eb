package decision

import (
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// Purpose is what the engine needs to know of a tenant's declared purpose.
type Purpose struct {
	// ID is the purpose's id within its tenant ("marketing.email").
	ID string
	// Basis is the purpose's legal basis (Art. 6(1)).
	Basis commonv1.LegalBasis
	// Necessary marks a strictly necessary purpose: allowed without consent,
	// stopped only by a restriction or by eligibility.
	Necessary bool
	// DirectMarketing marks direct marketing, to which an objection is
	// absolute (Art. 21(3)).
	DirectMarketing bool
	// GPCOptOut makes a Global Privacy Control signal opt the subject out.
	GPCOptOut bool
	// Lifetime is how long a consent lasts before it must be renewed; zero
	// for no expiry. The service uses it to set a record's ExpiresAt; the
	// engine reads only ExpiresAt, so a changed lifetime does not rewrite
	// consents already given.
	Lifetime time.Duration
	// ExcludedRoles are roles that may never be asked ("student").
	ExcludedRoles []string
	// MinimumAge is the minimum age in years; 0 for none.
	MinimumAge int32
	// DigitalConsentAge requires the subject to have reached the Art. 8 age
	// of digital consent of their own country.
	DigitalConsentAge bool
	// MaterialSince is when the latest material notice version took effect;
	// a consent granted before it needs consent again. Zero if none.
	MaterialSince time.Time
	// CurrentNotice is the current notice version, which the service
	// records on consents given without one.
	CurrentNotice string
}

// Consent is the latest consent record of a subject for one purpose.
type Consent struct {
	// Action is what the record records.
	Action consentv1.ConsentAction
	// RecordID is the record's id, the basis of a decision resting on it.
	RecordID string
	// RecordedAt is when the record was made.
	RecordedAt time.Time
	// ExpiresAt is when a grant or renewal expires; zero for no expiry.
	ExpiresAt time.Time
}

// Objection is a subject's objection (Art. 21).
type Objection struct {
	// ID is the objection's id, the basis of decisions it causes.
	ID string
	// Scope is what it covers.
	Scope eventsv1.ObjectionScope
	// Purposes are the purposes objected to, for OBJECTION_SCOPE_PURPOSES.
	Purposes []string
}

// Restriction is an active restriction of processing (Art. 18).
type Restriction struct {
	// ID is the restriction's id, the basis of decisions it causes.
	ID string
	// Purposes are the purposes restricted; empty for all processing.
	Purposes []string
}

// Attributes are what the caller knows of the subject. Lethe does not
// store them; a rule that needs one the caller did not pass does not deny.
type Attributes struct {
	// Role is the subject's role ("student", "teacher"), compared exactly.
	Role string
	// Age is the subject's age in years; 0 when unknown.
	Age int32
	// Country is the subject's country, ISO 3166-1 alpha-2.
	Country string
	// GPC says a Global Privacy Control signal accompanies the request.
	GPC bool
}

// Decision is the engine's answer.
type Decision struct {
	// Allowed says whether the processing may go ahead.
	Allowed bool
	// Reason says why.
	Reason consentv1.Reason
	// BasisID is the consent record, objection or restriction the decision
	// rests on, when there is one.
	BasisID string
}

// Shorter names for the values the rules read; the generated names repeat
// their enum's name.
const (
	basisConsent            = commonv1.LegalBasis_LEGAL_BASIS_CONSENT
	basisContract           = commonv1.LegalBasis_LEGAL_BASIS_CONTRACT
	basisLegalObligation    = commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION
	basisVitalInterests     = commonv1.LegalBasis_LEGAL_BASIS_VITAL_INTERESTS
	basisPublicTask         = commonv1.LegalBasis_LEGAL_BASIS_PUBLIC_TASK
	basisLegitimateInterest = commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS

	actionGrant    = consentv1.ConsentAction_CONSENT_ACTION_GRANT
	actionDeny     = consentv1.ConsentAction_CONSENT_ACTION_DENY
	actionWithdraw = consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW
	actionRenew    = consentv1.ConsentAction_CONSENT_ACTION_RENEW

	scopePurposes            = eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES
	scopeLegitimateInterests = eventsv1.ObjectionScope_OBJECTION_SCOPE_LEGITIMATE_INTERESTS
	scopeDirectMarketing     = eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING
)

// allows reports whether a reason is one under which processing may go
// ahead; every other reason denies.
func allows(r consentv1.Reason) bool {
	switch r {
	case consentv1.Reason_REASON_GRANTED,
		consentv1.Reason_REASON_NECESSARY,
		consentv1.Reason_REASON_LEGITIMATE_INTEREST,
		consentv1.Reason_REASON_CONTRACT,
		consentv1.Reason_REASON_OTHER_LEGAL_BASIS:
		return true
	}
	return false
}

func allow(r consentv1.Reason, basis string) Decision {
	return Decision{Allowed: true, Reason: r, BasisID: basis}
}

func deny(r consentv1.Reason, basis string) Decision {
	return Decision{Reason: r, BasisID: basis}
}

// Decide decides whether subject s's data may be processed for purpose p at
// now, given what the caller knows of the subject. s may be nil: a subject
// with no state. A nil p is an unknown purpose. The package documentation
// gives the rules and their order; Decide neither allocates nor blocks.
func Decide(p *Purpose, s *Subject, a Attributes, now time.Time) Decision {
	if p == nil {
		return deny(consentv1.Reason_REASON_UNKNOWN_PURPOSE, "")
	}

	// 1. Art. 18(1): once restricted, data may only be stored. The Art. 18(2)
	// exceptions (the subject's consent, legal claims) are decided by people
	// and recorded by narrowing or lifting the restriction, so even a
	// necessary purpose stops here.
	if s != nil {
		if id, ok := s.restriction(p.ID); ok {
			return deny(consentv1.Reason_REASON_RESTRICTED, id)
		}
	}

	// 2. Eligibility comes before any answer the subject gave: an excluded
	// role may never be asked, so even "accept all" does not reach the
	// purpose (Clio: no marketing to students).
	if a.Role != "" {
		for _, r := range p.ExcludedRoles {
			if r == a.Role {
				return deny(consentv1.Reason_REASON_INELIGIBLE_ROLE, "")
			}
		}
	}
	// Age rules need the age; Lethe never guesses it, so an unknown age does
	// not deny. Below the Art. 8(1) age of digital consent of the subject's
	// own country, consent is valid only if given or authorised by a holder
	// of parental responsibility, which the engine does not model: the
	// subject is ineligible.
	if a.Age > 0 {
		if a.Age < p.MinimumAge {
			return deny(consentv1.Reason_REASON_UNDER_AGE, "")
		}
		if p.DigitalConsentAge {
			if limit, ok := DigitalConsentAge(a.Country); ok && a.Age < limit {
				return deny(consentv1.Reason_REASON_UNDER_AGE, "")
			}
		}
	}

	// 3. A strictly necessary purpose needs no consent and cannot be
	// refused or withdrawn: storage strictly necessary for the service the
	// subject asked for is exempt from consent (ePrivacy Directive
	// Art. 5(3)), and the purpose's own basis covers the processing.
	if p.Necessary {
		return allow(consentv1.Reason_REASON_NECESSARY, "")
	}

	// 4. Art. 21: objections.
	if s != nil {
		if id, ok := s.objection(p); ok {
			return deny(consentv1.Reason_REASON_OBJECTED, id)
		}
	}

	// 5. A GPC signal is an objection by automated means (Art. 21(5)) for
	// the purposes the tenant declared it opts out of.
	if a.GPC && p.GPCOptOut {
		return deny(consentv1.Reason_REASON_GPC_OPT_OUT, "")
	}

	// 6. Art. 6(1): the purpose's legal basis.
	switch p.Basis {
	case basisConsent:
		return decideConsent(p, s, now)
	case basisLegitimateInterest:
		return allow(consentv1.Reason_REASON_LEGITIMATE_INTEREST, "")
	case basisContract:
		return allow(consentv1.Reason_REASON_CONTRACT, "")
	case basisLegalObligation, basisVitalInterests, basisPublicTask:
		return allow(consentv1.Reason_REASON_OTHER_LEGAL_BASIS, "")
	}
	// A purpose without a valid basis is never lawful (Art. 6(1)); the
	// service's validation keeps such purposes out.
	return deny(consentv1.Reason_REASON_UNSPECIFIED, "")
}

// decideConsent decides a purpose based on consent (Art. 6(1)(a)) from the
// subject's latest record for it.
func decideConsent(p *Purpose, s *Subject, now time.Time) Decision {
	var r *record
	if s != nil {
		r = s.record(p.ID)
	}
	if r == nil {
		// Consent is never presumed (Art. 4(11), Art. 7(1)).
		return deny(consentv1.Reason_REASON_NOT_GRANTED, "")
	}
	switch r.action {
	case actionDeny:
		return deny(consentv1.Reason_REASON_DENIED, r.id)
	case actionWithdraw:
		// Art. 7(3): withdrawal stops processing from then on.
		return deny(consentv1.Reason_REASON_WITHDRAWN, r.id)
	case actionGrant, actionRenew:
		if unixNano(now, beforeAll) >= r.expiresAt {
			return deny(consentv1.Reason_REASON_EXPIRED, r.id)
		}
		// Consent must be informed (Art. 4(11)): a grant given under a
		// notice a material change has superseded no longer covers the
		// processing as now described.
		if !p.MaterialSince.IsZero() && r.grantedAt < unixNano(p.MaterialSince, beforeAll) {
			return deny(consentv1.Reason_REASON_RECONSENT_REQUIRED, r.id)
		}
		return allow(consentv1.Reason_REASON_GRANTED, r.id)
	}
	// An action the engine does not know is not consent.
	return deny(consentv1.Reason_REASON_NOT_GRANTED, "")
}
