package decision

import (
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
)

const day = 24 * time.Hour

// t0 is when the fixtures' first consents are given.
var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

// at is a time days after t0.
func at(days int) time.Time { return t0.Add(time.Duration(days) * day) }

// Purposes shaped after the seed companies: Clio's cookie banner and
// Clevio's course platform.
var (
	necessary = Purpose{ID: "cookies.necessary", Basis: basisLegitimateInterest, Necessary: true}
	// Clio: cookies last up to 730 days; marketing never for students.
	functional = Purpose{ID: "cookies.functional", Basis: basisConsent, Lifetime: 730 * day}
	statistics = Purpose{ID: "cookies.statistics", Basis: basisConsent, Lifetime: 365 * day, GPCOptOut: true}
	marketing  = Purpose{ID: "cookies.marketing", Basis: basisConsent, Lifetime: 730 * day,
		DirectMarketing: true, GPCOptOut: true, ExcludedRoles: []string{"student"}}
	// Clevio: marketing by e-mail with consent, from the subject's own age
	// of digital consent and never under 13; transactional mail by contract.
	newsletter = Purpose{ID: "marketing.email", Basis: basisConsent, DirectMarketing: true,
		MinimumAge: 13, DigitalConsentAge: true}
	transactional = Purpose{ID: "course.messages", Basis: basisContract}
	analytics     = Purpose{ID: "product.analytics", Basis: basisLegitimateInterest}
	bookkeeping   = Purpose{ID: "bookkeeping", Basis: basisLegalObligation}
	emergency     = Purpose{ID: "emergency.contact", Basis: basisVitalInterests}
	statistics2   = Purpose{ID: "public.statistics", Basis: basisPublicTask}
	// Storage only: the nightly backup, which a restriction leaves.
	backup = Purpose{ID: "backup", Basis: basisLegitimateInterest, StorageOnly: true}
)

// copenhagen is Denmark's winter time, in which its acts take effect.
var copenhagen = time.FixedZone("CET", 3600)

// dk is midnight of a day in Copenhagen.
func dk(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, copenhagen) }

// Steps that build a subject's state, as the service applies them.
func grant(p Purpose, id string, when time.Time) func(*Subject) {
	return record1(p, id, actionGrant, when)
}

func renew(p Purpose, id string, when time.Time) func(*Subject) {
	return record1(p, id, actionRenew, when)
}

func withdraw(p Purpose, id string, when time.Time) func(*Subject) {
	return record1(p, id, actionWithdraw, when)
}

func refuse(p Purpose, id string, when time.Time) func(*Subject) {
	return record1(p, id, actionDeny, when)
}

// record1 records one action the way the service does: a grant or renewal
// expires after the purpose's lifetime.
func record1(p Purpose, id string, a consentv1.ConsentAction, when time.Time) func(*Subject) {
	c := Consent{Action: a, RecordID: id, RecordedAt: when}
	if (a == actionGrant || a == actionRenew) && p.Lifetime > 0 {
		c.ExpiresAt = when.Add(p.Lifetime)
	}
	return func(s *Subject) { s.SetConsent(p.ID, c) }
}

func object(o Objection) func(*Subject)           { return func(s *Subject) { s.AddObjection(o) } }
func restrict(r Restriction) func(*Subject)       { return func(s *Subject) { s.AddRestriction(r) } }
func lift(id string) func(*Subject)               { return func(s *Subject) { s.LiftRestriction(id) } }
func material(p Purpose, since time.Time) Purpose { p.MaterialSince = since; return p }

var (
	dmObjection = Objection{ID: "obj-dm", Scope: scopeDirectMarketing}
	liObjection = Objection{ID: "obj-li", Scope: scopeLegitimateInterests}
)

// decideCase is one decision and the state behind it.
type decideCase struct {
	name    string
	purpose Purpose
	steps   []func(*Subject)
	attrs   Attributes
	now     time.Time
	allowed bool
	reason  consentv1.Reason
	basis   string
}

const (
	reasonGranted      = consentv1.Reason_REASON_GRANTED
	reasonNotGranted   = consentv1.Reason_REASON_NOT_GRANTED
	reasonDenied       = consentv1.Reason_REASON_DENIED
	reasonExpired      = consentv1.Reason_REASON_EXPIRED
	reasonWithdrawn    = consentv1.Reason_REASON_WITHDRAWN
	reasonObjected     = consentv1.Reason_REASON_OBJECTED
	reasonRestricted   = consentv1.Reason_REASON_RESTRICTED
	reasonIneligible   = consentv1.Reason_REASON_INELIGIBLE_ROLE
	reasonUnderAge     = consentv1.Reason_REASON_UNDER_AGE
	reasonAgeUnknown   = consentv1.Reason_REASON_AGE_UNKNOWN
	reasonReconsent    = consentv1.Reason_REASON_RECONSENT_REQUIRED
	reasonGPC          = consentv1.Reason_REASON_GPC_OPT_OUT
	reasonNecessary    = consentv1.Reason_REASON_NECESSARY
	reasonLegitimate   = consentv1.Reason_REASON_LEGITIMATE_INTEREST
	reasonContract     = consentv1.Reason_REASON_CONTRACT
	reasonOtherBasis   = consentv1.Reason_REASON_OTHER_LEGAL_BASIS
	reasonUnknown      = consentv1.Reason_REASON_UNKNOWN_PURPOSE
	reasonUnspecified  = consentv1.Reason_REASON_UNSPECIFIED
	basisUnspecifiedLB = commonv1.LegalBasis_LEGAL_BASIS_UNSPECIFIED
)

var decideCases = []decideCase{
	// Necessary purposes.
	{name: "necessary needs no consent", purpose: necessary, now: at(1),
		allowed: true, reason: reasonNecessary},
	{name: "necessary survives a refusal of everything else", purpose: necessary, now: at(1),
		steps:   []func(*Subject){refuse(marketing, "r1", at(0)), object(dmObjection), object(liObjection)},
		allowed: true, reason: reasonNecessary},
	{name: "necessary stops under a restriction of all processing", purpose: necessary, now: at(1),
		steps:  []func(*Subject){restrict(Restriction{ID: "res-all"})},
		reason: reasonRestricted, basis: "res-all"},
	{name: "a restriction of other purposes leaves this one", purpose: necessary, now: at(1),
		steps:   []func(*Subject){restrict(Restriction{ID: "res-mkt", Purposes: []string{marketing.ID}})},
		allowed: true, reason: reasonNecessary},
	{name: "a restriction of this purpose stops a live grant", purpose: functional, now: at(1),
		steps:  []func(*Subject){grant(functional, "g1", at(0)), restrict(Restriction{ID: "res-fn", Purposes: []string{"x", functional.ID}})},
		reason: reasonRestricted, basis: "res-fn"},
	{name: "lifting the restriction restores the grant", purpose: functional, now: at(1),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), restrict(Restriction{ID: "res-all"}), lift("res-all")},
		allowed: true, reason: reasonGranted, basis: "g1"},
	// Art. 18(2): "with the exception of storage".
	{name: "a storage-only purpose goes on under a restriction of all processing", purpose: backup, now: at(1),
		steps:   []func(*Subject){restrict(Restriction{ID: "res-all"})},
		allowed: true, reason: reasonLegitimate},
	{name: "a storage-only purpose goes on under a restriction naming it", purpose: backup, now: at(1),
		steps:   []func(*Subject){restrict(Restriction{ID: "res-b", Purposes: []string{backup.ID}})},
		allowed: true, reason: reasonLegitimate},
	{name: "a storage-only purpose still needs its basis", now: at(1),
		purpose: Purpose{ID: "archive", Basis: basisConsent, StorageOnly: true},
		steps:   []func(*Subject){restrict(Restriction{ID: "res-all"})},
		reason:  reasonNotGranted},
	{name: "lifting one of two restrictions keeps the other", purpose: functional, now: at(1),
		steps: []func(*Subject){grant(functional, "g1", at(0)), restrict(Restriction{ID: "res-1"}),
			restrict(Restriction{ID: "res-2", Purposes: []string{functional.ID}}), lift("res-1")},
		reason: reasonRestricted, basis: "res-2"},

	// Consent and its records.
	{name: "no record is not granted", purpose: functional, now: at(1),
		reason: reasonNotGranted},
	{name: "a record for another purpose is not granted", purpose: functional, now: at(1),
		steps:  []func(*Subject){grant(statistics, "g1", at(0))},
		reason: reasonNotGranted},
	{name: "live grant", purpose: functional, now: at(1),
		steps:   []func(*Subject){grant(functional, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "refused", purpose: functional, now: at(1),
		steps:  []func(*Subject){refuse(functional, "d1", at(0))},
		reason: reasonDenied, basis: "d1"},
	{name: "withdrawn after a grant", purpose: functional, now: at(2),
		steps:  []func(*Subject){grant(functional, "g1", at(0)), withdraw(functional, "w1", at(1))},
		reason: reasonWithdrawn, basis: "w1"},
	{name: "granted again after a withdrawal", purpose: functional, now: at(3),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), withdraw(functional, "w1", at(1)), grant(functional, "g2", at(2))},
		allowed: true, reason: reasonGranted, basis: "g2"},
	{name: "live on the last day of its lifetime", purpose: functional, now: at(730).Add(-time.Nanosecond),
		steps:   []func(*Subject){grant(functional, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "expired after its 730-day lifetime", purpose: functional, now: at(730),
		steps:  []func(*Subject){grant(functional, "g1", at(0))},
		reason: reasonExpired, basis: "g1"},
	{name: "a renewal extends a live grant", purpose: functional, now: at(1000),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), renew(functional, "n1", at(700))},
		allowed: true, reason: reasonGranted, basis: "n1"},
	{name: "an extended grant expires at the renewal's expiry", purpose: functional, now: at(1430),
		steps:  []func(*Subject){grant(functional, "g1", at(0)), renew(functional, "n1", at(700))},
		reason: reasonExpired, basis: "n1"},
	{name: "a renewal of an expired consent is a new grant", purpose: functional, now: at(900),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), renew(functional, "n1", at(800))},
		allowed: true, reason: reasonGranted, basis: "n1"},
	{name: "a renewal of a withdrawn consent is a new grant", purpose: functional, now: at(20),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), withdraw(functional, "w1", at(5)), renew(functional, "n1", at(10))},
		allowed: true, reason: reasonGranted, basis: "n1"},
	{name: "a grant without expiry does not expire", purpose: newsletter, now: at(100000),
		attrs:   Attributes{Age: 30},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},

	// Notice versions.
	{name: "a grant before a material notice change needs consent again", purpose: material(functional, at(100)), now: at(200),
		steps:  []func(*Subject){grant(functional, "g1", at(0))},
		reason: reasonReconsent, basis: "g1"},
	{name: "a new grant after the material change is allowed", purpose: material(functional, at(100)), now: at(200),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), grant(functional, "g2", at(150))},
		allowed: true, reason: reasonGranted, basis: "g2"},
	{name: "a grant at the instant the change takes effect is under it", purpose: material(functional, at(100)), now: at(200),
		steps:   []func(*Subject){grant(functional, "g1", at(100))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "renewing a live grant does not cure a material change", purpose: material(functional, at(100)), now: at(200),
		steps:  []func(*Subject){grant(functional, "g1", at(0)), renew(functional, "n1", at(150))},
		reason: reasonReconsent, basis: "n1"},
	{name: "a renewal of an expired grant after the change is a new grant", purpose: material(functional, at(100)), now: at(800),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), renew(functional, "n1", at(750))},
		allowed: true, reason: reasonGranted, basis: "n1"},
	{name: "expiry is reported before a material change", purpose: material(functional, at(100)), now: at(800),
		steps:  []func(*Subject){grant(functional, "g1", at(0))},
		reason: reasonExpired, basis: "g1"},

	// Eligibility (Clio and Clevio).
	{name: "Clio: a student's accept-all does not allow marketing", purpose: marketing, now: at(1),
		attrs:  Attributes{Role: "student"},
		steps:  []func(*Subject){grant(marketing, "g1", at(0)), grant(functional, "g2", at(0)), grant(statistics, "g3", at(0))},
		reason: reasonIneligible},
	{name: "Clio: a teacher's accept-all allows marketing", purpose: marketing, now: at(1),
		attrs:   Attributes{Role: "teacher"},
		steps:   []func(*Subject){grant(marketing, "g1", at(0)), grant(functional, "g2", at(0)), grant(statistics, "g3", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "Clio: a student's accept-all allows functional cookies", purpose: functional, now: at(1),
		attrs:   Attributes{Role: "student"},
		steps:   []func(*Subject){grant(marketing, "g1", at(0)), grant(functional, "g2", at(0))},
		allowed: true, reason: reasonGranted, basis: "g2"},
	{name: "an unknown role is not denied on role", purpose: marketing, now: at(1),
		steps:   []func(*Subject){grant(marketing, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "eligibility applies to necessary purposes too", now: at(1),
		purpose: Purpose{ID: "necessary.adult", Basis: basisContract, Necessary: true, MinimumAge: 18},
		attrs:   Attributes{Age: 17}, reason: reasonUnderAge},
	{name: "a restriction comes before eligibility", purpose: marketing, now: at(1),
		attrs:  Attributes{Role: "student"},
		steps:  []func(*Subject){restrict(Restriction{ID: "res-all"})},
		reason: reasonRestricted, basis: "res-all"},
	{name: "Clevio: 14 in Germany (16) is under age", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 14, Country: "DE"},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0))},
		reason: reasonUnderAge},
	{name: "Clevio: 14 in Sweden (13) may consent", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 14, Country: "SE"},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "Clevio: 14 in Denmark (15 since 2024) is under age", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 14, Country: "DK"},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0))},
		reason: reasonUnderAge},
	{name: "Clevio: 15 in Denmark may consent", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 15, Country: "DK"},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "Clevio: 16 in Germany may consent", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 16, Country: "DE"},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "Clevio: under 13 is under age outside the EEA too", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 12, Country: "US"},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0))},
		reason: reasonUnderAge},
	{name: "no Art. 8 age outside the EEA", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 14, Country: "US"},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	// Fail closed (Art. 8(1)): an age gate that cannot be checked refuses.
	{name: "an unknown age does not pass an age gate", purpose: newsletter, now: at(1),
		attrs:  Attributes{Country: "DE"},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0))},
		reason: reasonAgeUnknown},
	{name: "an unknown age does not pass a minimum age alone", now: at(1),
		purpose: Purpose{ID: "adults", Basis: basisContract, MinimumAge: 18},
		reason:  reasonAgeUnknown},
	{name: "an unknown country with an age some state refuses does not pass", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 15},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0))},
		reason: reasonAgeUnknown},
	{name: "an unknown country with an age every state accepts passes", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 16},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "an age below the minimum is under age whatever the country", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 12},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0))},
		reason: reasonUnderAge},
	{name: "a purpose without an age rule needs no age", purpose: functional, now: at(1),
		steps:   []func(*Subject){grant(functional, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},

	// Art. 8(1) GDPR; Databeskyttelsesloven § 6, stk. 2 (LOV nr 1783 af
	// 28/12/2023, LBK nr 289 af 08/03/2024): 13 until 31 December 2023,
	// 15 from 1 January 2024, and a consent given before keeps 13.
	{name: "DK: a 14-year-old's consent given 2023-12-15 keeps the age of 13", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 14, Country: "DK"},
		steps:   []func(*Subject){grant(newsletter, "g1", dk(2023, 12, 15))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "DK: a 14-year-old's consent given 2024-01-02 is under 15", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 14, Country: "DK"},
		steps:  []func(*Subject){grant(newsletter, "g1", dk(2024, 1, 2))},
		reason: reasonUnderAge},
	{name: "DK: the change takes effect at midnight in Copenhagen", purpose: newsletter, now: at(1),
		attrs:  Attributes{Age: 14, Country: "DK"},
		steps:  []func(*Subject){grant(newsletter, "g1", dk(2024, 1, 1))},
		reason: reasonUnderAge},
	{name: "DK: a renewal of a live 2023 consent keeps its age", purpose: newsletter, now: at(1),
		attrs:   Attributes{Age: 14, Country: "DK"},
		steps:   []func(*Subject){grant(newsletter, "g1", dk(2023, 12, 15)), renew(newsletter, "n1", at(0))},
		allowed: true, reason: reasonGranted, basis: "n1"},
	{name: "DK: consent given again after a withdrawal is judged by 15", purpose: newsletter, now: at(1),
		attrs: Attributes{Age: 14, Country: "DK"},
		steps: []func(*Subject){grant(newsletter, "g1", dk(2023, 12, 15)), withdraw(newsletter, "w1", dk(2024, 2, 1)),
			grant(newsletter, "g2", at(0))},
		reason: reasonUnderAge},
	{name: "DK: a purpose not based on consent is judged by the age in force now", now: at(1),
		purpose: Purpose{ID: "service", Basis: basisContract, MinimumAge: 13, DigitalConsentAge: true},
		attrs:   Attributes{Age: 14, Country: "DK"}, reason: reasonUnderAge},
	{name: "DK: before 2024 a 14-year-old met the age", now: dk(2023, 12, 31),
		purpose: Purpose{ID: "service", Basis: basisContract, MinimumAge: 13, DigitalConsentAge: true},
		attrs:   Attributes{Age: 14, Country: "DK"}, allowed: true, reason: reasonContract},
	{name: "eligibility comes before the consent record", purpose: newsletter, now: at(1),
		attrs: Attributes{Age: 14, Country: "DE"}, reason: reasonUnderAge},

	// Objections (Art. 21).
	{name: "Clevio: an objection to direct marketing stops the newsletter", purpose: newsletter, now: at(2),
		attrs:  Attributes{Age: 30},
		steps:  []func(*Subject){grant(newsletter, "g1", at(0)), object(dmObjection)},
		reason: reasonObjected, basis: "obj-dm"},
	{name: "Clevio: an objection to direct marketing leaves transactional messages", purpose: transactional, now: at(2),
		steps:   []func(*Subject){grant(newsletter, "g1", at(0)), object(dmObjection)},
		allowed: true, reason: reasonContract},
	{name: "an objection to legitimate interests stops them", purpose: analytics, now: at(2),
		steps:  []func(*Subject){object(liObjection)},
		reason: reasonObjected, basis: "obj-li"},
	{name: "an objection to legitimate interests stops a public task", purpose: statistics2, now: at(2),
		steps:  []func(*Subject){object(liObjection)},
		reason: reasonObjected, basis: "obj-li"},
	{name: "an objection to legitimate interests leaves consent", purpose: newsletter, now: at(2),
		attrs:   Attributes{Age: 30},
		steps:   []func(*Subject){grant(newsletter, "g1", at(0)), object(liObjection)},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "an objection to listed purposes stops them", purpose: statistics, now: at(2),
		steps:  []func(*Subject){grant(statistics, "g1", at(0)), object(Objection{ID: "obj-p", Scope: scopePurposes, Purposes: []string{statistics.ID}})},
		reason: reasonObjected, basis: "obj-p"},
	{name: "an objection to listed purposes leaves the others", purpose: functional, now: at(2),
		steps:   []func(*Subject){grant(functional, "g1", at(0)), object(Objection{ID: "obj-p", Scope: scopePurposes, Purposes: []string{statistics.ID}})},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "a later grant does not undo an objection", purpose: marketing, now: at(3),
		steps:  []func(*Subject){object(dmObjection), grant(marketing, "g1", at(2))},
		reason: reasonObjected, basis: "obj-dm"},

	// Global Privacy Control.
	{name: "GPC opts out of a purpose that honours it", purpose: statistics, now: at(1),
		attrs:  Attributes{GPC: true},
		steps:  []func(*Subject){grant(statistics, "g1", at(0))},
		reason: reasonGPC},
	{name: "GPC leaves a purpose that does not honour it", purpose: functional, now: at(1),
		attrs:   Attributes{GPC: true},
		steps:   []func(*Subject){grant(functional, "g1", at(0))},
		allowed: true, reason: reasonGranted, basis: "g1"},
	{name: "GPC does not stop a necessary purpose", now: at(1),
		purpose: Purpose{ID: "n", Basis: basisContract, Necessary: true, GPCOptOut: true},
		attrs:   Attributes{GPC: true}, allowed: true, reason: reasonNecessary},

	// Other legal bases.
	{name: "legitimate interests", purpose: analytics, now: at(1), allowed: true, reason: reasonLegitimate},
	{name: "contract", purpose: transactional, now: at(1), allowed: true, reason: reasonContract},
	{name: "legal obligation", purpose: bookkeeping, now: at(1), allowed: true, reason: reasonOtherBasis},
	{name: "vital interests", purpose: emergency, now: at(1), allowed: true, reason: reasonOtherBasis},
	{name: "public task", purpose: statistics2, now: at(1), allowed: true, reason: reasonOtherBasis},
	{name: "no legal basis is never allowed", purpose: Purpose{ID: "none", Basis: basisUnspecifiedLB}, now: at(1),
		reason: reasonUnspecified},
}

func TestDecide(t *testing.T) {
	for _, tc := range decideCases {
		t.Run(tc.name, func(t *testing.T) {
			want := Decision{Allowed: tc.allowed, Reason: tc.reason, BasisID: ParseID(tc.basis)}

			// Decide on a Subject of its own.
			var s *Subject
			if len(tc.steps) > 0 {
				s = &Subject{}
				for _, step := range tc.steps {
					step(s)
				}
			}
			p := tc.purpose
			if got := Decide(&p, s, tc.attrs, tc.now); got != want {
				t.Errorf("Decide = %+v, want %+v", got, want)
			}

			// The same through an Index, as the service asks.
			ix := NewIndex()
			ix.PutPurpose("t", tc.purpose)
			for _, step := range tc.steps {
				ix.Update("t", "subject", step)
			}
			if got := ix.Check("t", "subject", tc.purpose.ID, tc.attrs, tc.now); got != want {
				t.Errorf("Check = %+v, want %+v", got, want)
			}
			if got := ix.Check("t", "someone-else", tc.purpose.ID, tc.attrs, tc.now); got.Reason == reasonRestricted || got.Reason == reasonObjected {
				t.Errorf("another subject's Check = %+v: state leaked between subjects", got)
			}
		})
	}
}

func TestDecideUnknownPurpose(t *testing.T) {
	want := Decision{Reason: reasonUnknown}
	if got := Decide(nil, &Subject{}, Attributes{}, t0); got != want {
		t.Errorf("Decide(nil) = %+v, want %+v", got, want)
	}
	ix := NewIndex()
	ix.PutPurpose("clio", functional)
	ix.Update("clio", "s1", grant(functional, "g1", at(0)))
	for _, q := range []struct{ tenant, purpose string }{
		{"clio", "cookies.unknown"},
		{"clevio", functional.ID}, // another tenant's purpose
		{"", ""},
	} {
		if got := ix.Check(q.tenant, "s1", q.purpose, Attributes{}, at(1)); got != want {
			t.Errorf("Check(%q, %q) = %+v, want %+v", q.tenant, q.purpose, got, want)
		}
	}
}

// TestEveryReasonIsReached keeps the table honest: every Reason the API
// defines is the expected answer of at least one case.
func TestEveryReasonIsReached(t *testing.T) {
	reached := map[consentv1.Reason]bool{reasonUnknown: true} // TestDecideUnknownPurpose
	for _, tc := range decideCases {
		reached[tc.reason] = true
		if tc.allowed != allows(tc.reason) {
			t.Errorf("case %q: allowed %v with reason %v", tc.name, tc.allowed, tc.reason)
		}
	}
	for v, name := range consentv1.Reason_name {
		if !reached[consentv1.Reason(v)] {
			t.Errorf("no case reaches %s", name)
		}
	}
}
