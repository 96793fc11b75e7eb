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
	// StorageOnly marks a purpose that only stores the data, which a
	// restriction leaves (Art. 18(2): "with the exception of storage").
	StorageOnly bool
}

// Consent is the latest consent record of a subject for one purpose.
type Consent struct {
	// Action is what the record records.
	Action consentv1.ConsentAction
	// RecordID is the record's id, the basis of a decision resting on it.
	RecordID string
	// RecordedAt is when the record was made.
	RecordedAt time.Time
	// GivenAt is when the subject gave it, for a consent collected before
	// it was recorded (an import, a paper form); zero when given as
	// recorded. The engine keeps only this time: when consent was given
	// decides which notice and which age of digital consent it was given
	// under, so Subject.Consent returns RecordedAt as zero.
	GivenAt time.Time
	// ExpiresAt is when a grant or renewal expires; zero for no expiry.
	ExpiresAt time.Time
}

// given returns when the subject gave c.
func (c Consent) given() time.Time {
	if c.GivenAt.IsZero() {
		return c.RecordedAt
	}
	return c.GivenAt
}

// Objection is a subject's objection (Art. 21).
type Objection struct {
	// ID is the objection's id, the basis of decisions it causes.
	ID string
	// Scope is what it covers.
	Scope eventsv1.ObjectionScope
	// Purposes are the purposes objected to, for OBJECTION_SCOPE_PURPOSES.
	Purposes []string
	// id is ID parsed, as decisions name it.
	id ID
}

// Restriction is an active restriction of processing (Art. 18).
type Restriction struct {
	// ID is the restriction's id, the basis of decisions it causes.
	ID string
	// Purposes are the purposes restricted; empty for all processing.
	Purposes []string
	// id is ID parsed, as decisions name it.
	id ID
}

// Attributes are what the caller knows of the subject. Lethe does not
// store them. A role rule the caller gave no role for does not deny; an age
// rule the caller gave no age (or country) for does, with AGE_UNKNOWN.
type Attributes struct {
	// Role is the subject's role ("student", "teacher"), compared exactly.
	Role string
	// Age is the subject's age in years; 0 when unknown.
	Age int32
	// Country is the subject's country, ISO 3166-1 alpha-2; Index.Check
	// puts the tenant's country in when it is empty.
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
	// rests on, when there is one. It is an ID rather than text so that
	// Check need not format a UUID; BasisID.String() gives the text.
	BasisID ID
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

func allow(r consentv1.Reason, basis ID) Decision {
	return Decision{Allowed: true, Reason: r, BasisID: basis}
}

func deny(r consentv1.Reason, basis ID) Decision {
	return Decision{Reason: r, BasisID: basis}
}

// Decide decides whether subject s's data may be processed for purpose p at
// now, given what the caller knows of the subject. s may be nil: a subject
// with no state. A nil p is an unknown purpose. The package documentation
// gives the rules and their order; Decide neither allocates nor blocks.
func Decide(p *Purpose, s *Subject, a Attributes, now time.Time) Decision {
	if p == nil {
		return deny(consentv1.Reason_REASON_UNKNOWN_PURPOSE, ID{})
	}
	var f facts
	s.factsFor(p, &f)
	return decide(p, &f, a, now)
}

// decide is Decide on the facts of a subject for p, however they were
// read: from a Subject, or from the Index's encoded state.
func decide(p *Purpose, f *facts, a Attributes, now time.Time) Decision {

	// 1. Art. 18(2): once restricted, data may, "with the exception of
	// storage", only be processed with the subject's consent or for the
	// grounds listed there. Those exceptions are decided by people and
	// recorded by narrowing or lifting the restriction, so even a necessary
	// purpose stops here; a purpose that is storage only goes on to the
	// rules below.
	if f.restricted && !p.StorageOnly {
		return deny(consentv1.Reason_REASON_RESTRICTED, f.restrictedBy)
	}

	// 2. Eligibility comes before any answer the subject gave: an excluded
	// role may never be asked, so even "accept all" does not reach the
	// purpose (Clio: no marketing to students).
	if a.Role != "" {
		for _, r := range p.ExcludedRoles {
			if r == a.Role {
				return deny(consentv1.Reason_REASON_INELIGIBLE_ROLE, ID{})
			}
		}
	}
	if d, ok := decideAge(p, f, a, now); !ok {
		return d
	}

	// 3. A strictly necessary purpose needs no consent and cannot be
	// refused or withdrawn: storage strictly necessary for the service the
	// subject asked for is exempt from consent (ePrivacy Directive
	// Art. 5(3)), and the purpose's own basis covers the processing.
	if p.Necessary {
		return allow(consentv1.Reason_REASON_NECESSARY, ID{})
	}

	// 4. Art. 21: objections.
	if f.objected {
		return deny(consentv1.Reason_REASON_OBJECTED, f.objectedBy)
	}

	// 5. A GPC signal is an objection by automated means (Art. 21(5)) for
	// the purposes the tenant declared it opts out of.
	if a.GPC && p.GPCOptOut {
		return deny(consentv1.Reason_REASON_GPC_OPT_OUT, ID{})
	}

	// 6. Art. 6(1): the purpose's legal basis.
	switch p.Basis {
	case basisConsent:
		return decideConsent(p, f, now)
	case basisLegitimateInterest:
		return allow(consentv1.Reason_REASON_LEGITIMATE_INTEREST, ID{})
	case basisContract:
		return allow(consentv1.Reason_REASON_CONTRACT, ID{})
	case basisLegalObligation, basisVitalInterests, basisPublicTask:
		return allow(consentv1.Reason_REASON_OTHER_LEGAL_BASIS, ID{})
	}
	// A purpose without a valid basis is never lawful (Art. 6(1)); the
	// service's validation keeps such purposes out.
	return deny(consentv1.Reason_REASON_UNSPECIFIED, ID{})
}

// decideAge applies a purpose's age rules and reports false with the
// denial when they refuse. Lethe never guesses an age: a purpose with an
// age rule refuses an unknown one (AGE_UNKNOWN), since letting it pass
// would let every caller that omits the age past the gate. Below the
// Art. 8(1) age of digital consent of the subject's country, consent is
// valid only if given or authorised by a holder of parental
// responsibility, which the engine does not model: the subject is
// ineligible. Without a country (the caller's, or the tenant's put in by
// Index.Check) only an age that meets every state's age passes. Which age
// a state sets depends on when: a consent is judged by the age in force
// when it was given where the change says so (Denmark, 2024); anything
// else by the age in force at now.
func decideAge(p *Purpose, f *facts, a Attributes, now time.Time) (Decision, bool) {
	if p.MinimumAge <= 0 && !p.DigitalConsentAge {
		return Decision{}, true
	}
	if a.Age <= 0 {
		return deny(consentv1.Reason_REASON_AGE_UNKNOWN, ID{}), false
	}
	if a.Age < p.MinimumAge {
		return deny(consentv1.Reason_REASON_UNDER_AGE, ID{}), false
	}
	if !p.DigitalConsentAge {
		return Decision{}, true
	}
	i, ok := countryIndex(a.Country)
	if !ok {
		// No country, or not a code: it may be any state's.
		if a.Age < defaultConsentAge {
			return deny(consentv1.Reason_REASON_AGE_UNKNOWN, ID{}), false
		}
		return Decision{}, true
	}
	if a.Age >= consentAgeMax[i] {
		// Meets the state's age whenever consent was given; a state
		// outside the EU/EEA has none (0).
		return Decision{}, true
	}
	n := unixNano(now, beforeAll)
	given := n
	if r := &f.rec; p.Basis == basisConsent && f.hasRecord && (r.action == actionGrant || r.action == actionRenew) {
		given = r.grantedAt
	}
	if limit, ok := consentAgeAt(consentAges[i], given, n); ok && a.Age < limit {
		return deny(consentv1.Reason_REASON_UNDER_AGE, ID{}), false
	}
	return Decision{}, true
}

// decideConsent decides a purpose based on consent (Art. 6(1)(a)) from the
// subject's latest record for it.
func decideConsent(p *Purpose, f *facts, now time.Time) Decision {
	r := &f.rec
	if !f.hasRecord {
		// Consent is never presumed (Art. 4(11), Art. 7(1)).
		return deny(consentv1.Reason_REASON_NOT_GRANTED, ID{})
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
	return deny(consentv1.Reason_REASON_NOT_GRANTED, ID{})
}
