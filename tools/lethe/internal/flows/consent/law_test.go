package consent_test

import (
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

// tenantIn creates a tenant whose settings name its country, and waits
// until the consent service knows of it.
func (f *fixture) tenantIn(t testing.TB, id, country string) {
	t.Helper()
	servertest.CreateTenant(t, f.registry, &registryv1.CreateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: id, DisplayName: id, Settings: &registryv1.TenantSettings{Country: country}}}, func() error {
		_, err := f.consent.ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: id})
		return err
	})
}

// recordReq records one action, with the request the caller built.
func (f *fixture) recordReq(req *consentv1.RecordConsentRequest) (*consentv1.ConsentRecord, error) {
	req.RequestId = f.id()
	resp, err := f.consent.RecordConsent(f.ctx, req)
	return resp.GetRecord(), err
}

func (f *fixture) checkAt(t testing.TB, tenant, subject, purpose string, at time.Time, attrs *consentv1.SubjectAttributes) *consentv1.Decision {
	t.Helper()
	resp, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: tenant, SubjectId: subject, PurposeId: purpose,
		Attributes: attrs, At: timestamppb.New(at)})
	if err != nil {
		t.Fatalf("check %s for %s at %s: %v", purpose, subject, at, err)
	}
	return resp.Decision
}

func recordIDs(rs []*consentv1.ConsentRecord) string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.RecordId)
	}
	return strings.Join(ids, ",")
}

// TestImportedConsentCountsFromWhenItWasGiven: Art. 7(1) GDPR (the
// controller demonstrates consent, so the evidence says when it was given)
// and Art. 7(3): a consent imported or entered from a paper form carries
// when the subject gave it; its lifetime counts from then; the record keeps
// both that time and when it was recorded.
func TestImportedConsentCountsFromWhenItWasGiven(t *testing.T) {
	f := start(t)
	clio(t, f) // cookies.statistics lasts 365 days
	now := f.clock.Now()
	given := now.Add(-300 * 24 * time.Hour)
	imp := &consentv1.RecordConsentRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "cookies.statistics",
		Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT}

	for name, tc := range map[string]struct {
		method consentv1.CollectionMethod
		given  *timestamppb.Timestamp
	}{
		"an import without given_at":       {consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT, nil},
		"given_at in the future":           {consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT, timestamppb.New(now.Add(time.Second))},
		"given_at before 1970":             {consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT, timestamppb.New(time.Date(1969, 12, 31, 0, 0, 0, 0, time.UTC))},
		"given_at on a banner's consent":   {consentv1.CollectionMethod_COLLECTION_METHOD_BANNER, timestamppb.New(given)},
		"given_at on an e-mail link's one": {consentv1.CollectionMethod_COLLECTION_METHOD_EMAIL_LINK, timestamppb.New(given)},
	} {
		t.Run(name, func(t *testing.T) {
			req := &consentv1.RecordConsentRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "cookies.statistics",
				Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: tc.method, GivenAt: tc.given}
			_, err := f.recordReq(req)
			if fields := violations(t, err); strings.Join(fields, ",") != "given_at" {
				t.Fatalf("violations name %v, want given_at", fields)
			}
		})
	}

	imp.GivenAt = timestamppb.New(given)
	r, err := f.recordReq(imp)
	if err != nil {
		t.Fatal(err)
	}
	if !r.GivenAt.AsTime().Equal(given) || !r.RecordedAt.AsTime().Equal(now) {
		t.Fatalf("record given %v, recorded %v; want both kept: %v and %v", r.GivenAt.AsTime(), r.RecordedAt.AsTime(), given, now)
	}
	if want := given.Add(365 * 24 * time.Hour); !r.ExpiresAt.AsTime().Equal(want) {
		t.Fatalf("expires %v, want 365 days after it was given, %v", r.ExpiresAt.AsTime(), want)
	}
	// An earlier consent after a later one would overtake it.
	earlier := proto.Clone(imp).(*consentv1.RecordConsentRequest)
	earlier.GivenAt = timestamppb.New(given.Add(-time.Hour))
	if _, err := f.recordReq(earlier); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("importing a consent given before the latest record: %v, want FailedPrecondition", err)
	}
	// The same import again is the same record, even once a later one
	// exists.
	eve := proto.Clone(imp).(*consentv1.RecordConsentRequest)
	eve.RequestId, eve.SubjectId = "import-eve", "eve"
	first, err := f.consent.RecordConsent(f.ctx, eve)
	if err != nil {
		t.Fatal(err)
	}
	later := proto.Clone(eve).(*consentv1.RecordConsentRequest)
	later.Action, later.GivenAt = consentv1.ConsentAction_CONSENT_ACTION_DENY, timestamppb.New(given.Add(time.Hour))
	if _, err := f.recordReq(later); err != nil {
		t.Fatal(err)
	}
	if again, err := f.consent.RecordConsent(f.ctx, eve); err != nil || again.Record.RecordId != first.Record.RecordId {
		t.Fatalf("the import again = %v, %v; want record %s", again, err, first.Record.RecordId)
	}
	// A paper form may say when it was signed, or not.
	form := &consentv1.RecordConsentRequest{TenantId: "clio", SubjectId: "bob", PurposeId: "cookies.statistics",
		Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM,
		GivenAt: timestamppb.New(now.Add(-10 * 24 * time.Hour))}
	if r, err := f.recordReq(form); err != nil || !r.GivenAt.AsTime().Equal(now.Add(-10*24*time.Hour)) {
		t.Fatalf("paper form with given_at = %v, %v", r, err)
	}
	form.SubjectId, form.GivenAt = "cy", nil
	if r, err := f.recordReq(form); err != nil || !r.GivenAt.AsTime().Equal(now) {
		t.Fatalf("form without given_at = %v, %v; want given when recorded", r, err)
	}

	// 64 days on, the imported consent is live; a day later its 365 days
	// from when it was given are over, and the sweep ends it.
	f.clock.Advance(64 * 24 * time.Hour)
	expect(t, f.check(t, "clio", "ada", "cookies.statistics", nil), true, consentv1.Reason_REASON_GRANTED)
	if n, err := f.svc.ExpireDue(f.ctx); err != nil || n != 0 {
		t.Fatalf("ExpireDue before the lifetime ran out = %d, %v", n, err)
	}
	f.clock.Advance(24 * time.Hour)
	expect(t, f.check(t, "clio", "ada", "cookies.statistics", nil), false, consentv1.Reason_REASON_EXPIRED)
	if n, err := f.svc.ExpireDue(f.ctx); err != nil || n != 1 {
		t.Fatalf("ExpireDue after the lifetime = %d, %v; want the imported grant", n, err)
	}

	// A consent imported after its lifetime ran out is history only.
	old := &consentv1.RecordConsentRequest{TenantId: "clio", SubjectId: "dan", PurposeId: "cookies.statistics",
		Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT,
		GivenAt: timestamppb.New(f.clock.Now().Add(-400 * 24 * time.Hour))}
	if _, err := f.recordReq(old); err != nil {
		t.Fatal(err)
	}
	expect(t, f.check(t, "clio", "dan", "cookies.statistics", nil), false, consentv1.Reason_REASON_EXPIRED)
	if n, err := f.svc.ExpireDue(f.ctx); err != nil || n != 0 {
		t.Fatalf("ExpireDue of a consent imported expired = %d, %v; want nothing to withdraw", n, err)
	}
}

// TestCheckAtAPastTime: "did we have consent to e-mail subject X on
// 3 March?" (Art. 5(2) and 7(1) GDPR: the controller demonstrates it). The
// answer comes from the history as it stood then, with the records it
// rests on; what was recorded later does not count; expiry, objections and
// restrictions are judged at that time.
func TestCheckAtAPastTime(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", DirectMarketing: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DefaultLifetime: durationpb.New(100 * 24 * time.Hour)})
	day := 24 * time.Hour
	t0 := f.clock.Now()

	grant := f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_GRANT) // t0, until t0+100d
	f.clock.Advance(50 * day)
	renewal := f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_RENEW) // t0+50d, until t0+150d
	f.clock.Advance(50 * day)
	withdrawal := f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW) // t0+100d
	f.clock.Advance(10 * day)
	restr, err := f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "bob",
		Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED})
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(10 * day)
	if _, err := f.consent.LiftRestriction(f.ctx, &consentv1.LiftRestrictionRequest{RequestId: f.id(), TenantId: "clio",
		RestrictionId: restr.RestrictionId, SubjectInformedAt: timestamppb.New(f.clock.Now().Add(-day))}); err != nil {
		t.Fatal(err)
	}
	// Imported at t0+120d, given at t0+1d: not known at t0+2d.
	if _, err := f.recordReq(&consentv1.RecordConsentRequest{TenantId: "clio", SubjectId: "cy", PurposeId: "newsletter",
		Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT,
		GivenAt: timestamppb.New(t0.Add(day))}); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(day)

	for _, tc := range []struct {
		name, subject string
		at            time.Time
		allowed       bool
		reason        consentv1.Reason
		records       string
	}{
		{"before any record", "ada", t0.Add(-time.Second), false, consentv1.Reason_REASON_NOT_GRANTED, ""},
		{"the day after the grant", "ada", t0.Add(day), true, consentv1.Reason_REASON_GRANTED, grant.RecordId},
		{"after the renewal: the grant and its renewal", "ada", t0.Add(60 * day), true, consentv1.Reason_REASON_GRANTED,
			grant.RecordId + "," + renewal.RecordId},
		{"after the withdrawal", "ada", t0.Add(101 * day), false, consentv1.Reason_REASON_WITHDRAWN, withdrawal.RecordId},
		{"under the restriction", "bob", t0.Add(115 * day), false, consentv1.Reason_REASON_RESTRICTED, ""},
		{"after the lift", "bob", t0.Add(121 * day), false, consentv1.Reason_REASON_NOT_GRANTED, ""},
		{"before a later import was recorded", "cy", t0.Add(2 * day), false, consentv1.Reason_REASON_NOT_GRANTED, ""},
		{"after it was recorded: expired, counted from when given", "cy", t0.Add(120 * day), false, consentv1.Reason_REASON_EXPIRED, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := f.checkAt(t, "clio", tc.subject, "newsletter", tc.at, nil)
			expect(t, d, tc.allowed, tc.reason)
			if tc.records != "" && recordIDs(d.Records) != tc.records {
				t.Fatalf("records %s, want %s", recordIDs(d.Records), tc.records)
			}
		})
	}
	// The restriction is the basis of the refusal at that time.
	if d := f.checkAt(t, "clio", "bob", "newsletter", t0.Add(115*day), nil); d.BasisId != restr.RestrictionId || len(d.Records) != 0 {
		t.Fatalf("restricted decision = %v, want the restriction as basis", d)
	}
	// Expiry is judged at the time asked: at t0+99d the grant alone would
	// have expired at t0+100d, but the renewal extended it.
	expect(t, f.checkAt(t, "clio", "ada", "newsletter", t0.Add(99*day), nil), true, consentv1.Reason_REASON_GRANTED)

	batch, err := f.consent.CheckBatch(f.ctx, &consentv1.CheckBatchRequest{TenantId: "clio", At: timestamppb.New(t0.Add(day)),
		Items: []*consentv1.CheckBatchItem{{SubjectId: "ada", PurposeId: "newsletter"}, {SubjectId: "ada", PurposeId: "no.such"}, {SubjectId: "cy", PurposeId: "newsletter"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := []consentv1.Reason{batch.Decisions[0].Reason, batch.Decisions[1].Reason, batch.Decisions[2].Reason}; got[0] != consentv1.Reason_REASON_GRANTED ||
		got[1] != consentv1.Reason_REASON_UNKNOWN_PURPOSE || got[2] != consentv1.Reason_REASON_NOT_GRANTED {
		t.Fatalf("batch at t0+1d = %v", got)
	}
	// Now, from memory, nothing changed: the withdrawal stands.
	expect(t, f.check(t, "clio", "ada", "newsletter", nil), false, consentv1.Reason_REASON_WITHDRAWN)

	future := timestamppb.New(f.clock.Now().Add(time.Minute))
	_, err = f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "newsletter", At: future})
	if fields := violations(t, err); strings.Join(fields, ",") != "at" {
		t.Fatalf("a check in the future names %v, want at", fields)
	}
	_, err = f.consent.CheckBatch(f.ctx, &consentv1.CheckBatchRequest{TenantId: "clio", At: future, Items: []*consentv1.CheckBatchItem{{SubjectId: "ada", PurposeId: "newsletter"}}})
	if fields := violations(t, err); strings.Join(fields, ",") != "at" {
		t.Fatalf("a batch in the future names %v, want at", fields)
	}
	if _, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "nobody", SubjectId: "ada", PurposeId: "newsletter",
		At: timestamppb.New(t0)}); status.Code(err) != codes.NotFound {
		t.Fatalf("a past check for an unknown tenant = %v, want NotFound", err)
	}
}

// waitCountry waits until the consent service judges a subject without a
// country by the tenant's: a Danish 14-year-old's consent given now is
// under age there, not of unknown age.
func (f *fixture) waitCountry(t *testing.T, tenant, subject, purpose string) {
	t.Helper()
	eventually.Succeeds(t, "the consent service learns tenant "+tenant+"'s country", func() error {
		if d := f.check(t, tenant, subject, purpose, &consentv1.SubjectAttributes{Age: 14}); d.Reason == consentv1.Reason_REASON_AGE_UNKNOWN {
			return fmt.Errorf("decision %v", d)
		}
		return nil
	})
}

// TestAgeOfDigitalConsentInDenmark: Art. 8(1) GDPR; Databeskyttelsesloven
// § 6, stk. 2, LBK nr 289 af 08/03/2024, raised from 13 to 15 by LOV nr
// 1783 af 28/12/2023 from 1 January 2024, whose transitional rule keeps
// consent given before then under 13. An age gate fails closed: an unknown
// age, or no country but the tenant's, where the tenant has none.
func TestAgeOfDigitalConsentInDenmark(t *testing.T) {
	f := start(t)
	f.tenantIn(t, "klub", "DK")
	f.tenant(t, "nowhere") // no country in its settings
	signup := &consentv1.Purpose{PurposeId: "signup", Name: "Sign-up", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT,
		Eligibility: &consentv1.Eligibility{MinimumAge: 13, DigitalConsentAge: true}}
	f.purpose(t, "klub", signup)
	f.purpose(t, "nowhere", signup)
	now := f.clock.Now()

	cph := time.FixedZone("CET", 3600)
	f.clock.Set(time.Date(2023, 12, 15, 12, 0, 0, 0, cph))
	f.record(t, "klub", "kid-2023", "signup", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.clock.Set(time.Date(2024, 1, 2, 12, 0, 0, 0, cph))
	f.record(t, "klub", "kid-2024", "signup", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.clock.Set(now)
	// A paper form signed in 2023 and entered now keeps 13 as well.
	if _, err := f.recordReq(&consentv1.RecordConsentRequest{TenantId: "klub", SubjectId: "kid-form", PurposeId: "signup",
		Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM,
		GivenAt: timestamppb.New(time.Date(2023, 12, 20, 0, 0, 0, 0, cph))}); err != nil {
		t.Fatal(err)
	}
	f.record(t, "nowhere", "kid", "signup", consentv1.ConsentAction_CONSENT_ACTION_GRANT)

	dk14 := &consentv1.SubjectAttributes{Age: 14, Country: "DK"}
	expect(t, f.check(t, "klub", "kid-2023", "signup", dk14), true, consentv1.Reason_REASON_GRANTED)
	expect(t, f.check(t, "klub", "kid-2024", "signup", dk14), false, consentv1.Reason_REASON_UNDER_AGE)
	expect(t, f.check(t, "klub", "kid-form", "signup", dk14), true, consentv1.Reason_REASON_GRANTED)
	expect(t, f.check(t, "klub", "kid-2024", "signup", &consentv1.SubjectAttributes{Age: 15, Country: "DK"}), true, consentv1.Reason_REASON_GRANTED)

	// Fail closed: no age is not a pass.
	expect(t, f.check(t, "klub", "kid-2023", "signup", &consentv1.SubjectAttributes{Country: "DK"}), false, consentv1.Reason_REASON_AGE_UNKNOWN)
	expect(t, f.check(t, "klub", "kid-2023", "signup", nil), false, consentv1.Reason_REASON_AGE_UNKNOWN)

	// No country: the tenant's, Denmark, is the only fallback.
	f.waitCountry(t, "klub", "kid-2024", "signup")
	expect(t, f.check(t, "klub", "kid-2024", "signup", &consentv1.SubjectAttributes{Age: 14}), false, consentv1.Reason_REASON_UNDER_AGE)
	expect(t, f.check(t, "klub", "kid-2023", "signup", &consentv1.SubjectAttributes{Age: 14}), true, consentv1.Reason_REASON_GRANTED)
	// A tenant without a country: 15 is below some state's age (16).
	expect(t, f.check(t, "nowhere", "kid", "signup", &consentv1.SubjectAttributes{Age: 15}), false, consentv1.Reason_REASON_AGE_UNKNOWN)
	expect(t, f.check(t, "nowhere", "kid", "signup", &consentv1.SubjectAttributes{Age: 16}), true, consentv1.Reason_REASON_GRANTED)
	// A country the caller names wins over the tenant's.
	expect(t, f.check(t, "klub", "kid-2024", "signup", &consentv1.SubjectAttributes{Age: 14, Country: "SE"}), true, consentv1.Reason_REASON_GRANTED)

	// The tenant moves to Germany (16): the registry's change reaches Check.
	if _, err := f.registry.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: "klub", DisplayName: "klub", Settings: &registryv1.TenantSettings{Country: "DE"}}}); err != nil {
		t.Fatal(err)
	}
	eventually.True(t, "the tenant's new country reaches Check", func() bool {
		return f.check(t, "klub", "kid-2023", "signup", &consentv1.SubjectAttributes{Age: 15}).Reason == consentv1.Reason_REASON_UNDER_AGE
	})
}

// TestRestrictionLeavesStorageAndEndsWithItsGround: Art. 18(2) GDPR
// (restricted data is, "with the exception of storage", processed only
// with consent or for its listed grounds), Art. 18(3) (the subject is
// informed before the restriction is lifted) and Art. 18(1)(a)-(d) (the
// restriction lasts while its ground does).
func TestRestrictionLeavesStorageAndEndsWithItsGround(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "backup", Name: "Backups", StorageOnly: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS})
	_, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: &registryv1.System{
		SystemId: "lms", Name: "LMS", Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "DK",
		Categories: []*commonv1.DataCategory{{Id: "user.behavior"}}, PurposeIds: []string{"profiling", "backup"},
		AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK}})
	if err != nil {
		t.Fatal(err)
	}
	var applied atomic.Int64
	f.subscribe(t, "lms", &applied)
	apply := func(subject string, ground eventsv1.RestrictionGround, purposes ...string) string {
		t.Helper()
		r, err := f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: subject,
			Ground: ground, PurposeIds: purposes})
		if err != nil {
			t.Fatal(err)
		}
		return r.RestrictionId
	}
	informed := func(ago time.Duration) *timestamppb.Timestamp { return timestamppb.New(f.clock.Now().Add(-ago)) }

	contested := apply("ada", eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED)
	expect(t, f.check(t, "clio", "ada", "profiling", nil), false, consentv1.Reason_REASON_RESTRICTED)
	expect(t, f.check(t, "clio", "ada", "cookies.necessary", nil), false, consentv1.Reason_REASON_RESTRICTED)
	expect(t, f.check(t, "clio", "ada", "backup", nil), true, consentv1.Reason_REASON_LEGITIMATE_INTEREST)
	f.clock.Advance(48 * time.Hour)

	// Art. 18(3): no lift without the subject informed, before the lift and
	// after the restriction.
	lift := func(id string, at *timestamppb.Timestamp) error {
		_, err := f.consent.LiftRestriction(f.ctx, &consentv1.LiftRestrictionRequest{RequestId: f.id(), TenantId: "clio", RestrictionId: id, SubjectInformedAt: at})
		return err
	}
	for name, at := range map[string]*timestamppb.Timestamp{
		"not informed":                 nil,
		"informed in the future":       informed(-time.Minute),
		"informed before the restrict": informed(72 * time.Hour),
	} {
		if fields := violations(t, lift(contested, at)); strings.Join(fields, ",") != "subject_informed_at" {
			t.Fatalf("%s: violations name %v, want subject_informed_at", name, fields)
		}
	}
	expect(t, f.check(t, "clio", "ada", "profiling", nil), false, consentv1.Reason_REASON_RESTRICTED)

	// Art. 18(1)(a): verifying the accuracy ends the ground and lifts the
	// restriction; an outcome of another ground does not.
	resolve := func(id string, outcome consentv1.RestrictionGroundOutcome, at *timestamppb.Timestamp) (*consentv1.Restriction, error) {
		resp, err := f.consent.ResolveRestrictionGround(f.ctx, &consentv1.ResolveRestrictionGroundRequest{RequestId: f.id(), TenantId: "clio",
			RestrictionId: id, Outcome: outcome, SubjectInformedAt: at})
		return resp.GetRestriction(), err
	}
	if _, err := resolve(contested, consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_GROUNDS_OVERRIDE, informed(time.Hour)); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an outcome of another ground: %v, want InvalidArgument", err)
	}
	if _, err := resolve(contested, consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_ACCURACY_VERIFIED, nil); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("resolving without the subject informed: %v, want InvalidArgument", err)
	}
	r, err := resolve(contested, consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_ACCURACY_VERIFIED, informed(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if r.LiftedAt == nil || !r.SubjectInformedAt.AsTime().Equal(f.clock.Now().Add(-time.Hour)) ||
		r.GroundOutcome != consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_ACCURACY_VERIFIED || r.Ground != eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED {
		t.Fatalf("resolved restriction = %v; want it lifted with the informed time and outcome kept", r)
	}
	expect(t, f.check(t, "clio", "ada", "profiling", nil), true, consentv1.Reason_REASON_LEGITIMATE_INTEREST)
	f.waitFanout(t, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_RESTRICTION, Id: contested}, "lms=APPLIED,lms=APPLIED")
	if err := lift(contested, informed(time.Hour)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("lifting a lifted restriction: %v, want FailedPrecondition", err)
	}

	// Art. 18(1)(b) has no ground that ends by itself: lifted by hand, with
	// the subject informed.
	unlawful := apply("bob", eventsv1.RestrictionGround_RESTRICTION_GROUND_UNLAWFUL_PROCESSING, "profiling")
	if _, err := resolve(unlawful, consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_ACCURACY_VERIFIED, informed(0)); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("resolving an unlawful-processing restriction: %v, want FailedPrecondition", err)
	}
	req := &consentv1.LiftRestrictionRequest{RequestId: "lift-bob", TenantId: "clio", RestrictionId: unlawful, SubjectInformedAt: informed(0)}
	first, err := f.consent.LiftRestriction(f.ctx, req)
	if err != nil || first.Restriction.LiftedAt == nil || first.Restriction.GroundOutcome != 0 {
		t.Fatalf("lift by hand = %v, %v", first, err)
	}
	again, err := f.consent.LiftRestriction(f.ctx, req)
	if err != nil || !again.Restriction.LiftedAt.AsTime().Equal(first.Restriction.LiftedAt.AsTime()) {
		t.Fatalf("the same lift again = %v, %v; want the first answer", again, err)
	}

	// Art. 18(1)(d) and 21(1): an upheld objection becomes an objection as
	// the restriction lifts, so profiling stays stopped.
	pending := apply("cy", eventsv1.RestrictionGround_RESTRICTION_GROUND_OBJECTION_PENDING, "profiling")
	r, err = resolve(pending, consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_OBJECTION_UPHELD, informed(0))
	if err != nil {
		t.Fatal(err)
	}
	if r.ObjectionId == "" || r.LiftedAt == nil {
		t.Fatalf("upheld objection = %v; want an objection recorded and the restriction lifted", r)
	}
	d := f.check(t, "clio", "cy", "profiling", nil)
	expect(t, d, false, consentv1.Reason_REASON_OBJECTED)
	if d.BasisId != r.ObjectionId {
		t.Fatalf("basis %s, want the recorded objection %s", d.BasisId, r.ObjectionId)
	}
	f.waitFanout(t, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_OBJECTION, Id: r.ObjectionId}, "lms=APPLIED")
	// The controller's grounds overriding ends it the other way.
	other := apply("dan", eventsv1.RestrictionGround_RESTRICTION_GROUND_OBJECTION_PENDING, "profiling")
	if _, err := resolve(other, consentv1.RestrictionGroundOutcome_RESTRICTION_GROUND_OUTCOME_GROUNDS_OVERRIDE, informed(0)); err != nil {
		t.Fatal(err)
	}
	expect(t, f.check(t, "clio", "dan", "profiling", nil), true, consentv1.Reason_REASON_LEGITIMATE_INTEREST)
}
