package dsar_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// inProgress files a request and verifies it; the fan-out follows.
func (f *fixture) inProgress(t *testing.T, req *dsarv1.CreateRequestRequest) *dsarv1.Request {
	t.Helper()
	r := f.file(t, req)
	f.attest(t, req.TenantId, r.DsarId)
	return r
}

// waitTask waits until system has a task for the request and returns it.
func (f *fixture) waitTask(t *testing.T, tenant, id, system string) *dsarv1.Task {
	t.Helper()
	var sr *dsarv1.Task
	eventually.True(t, "system "+system+" has a task", func() bool {
		r := f.get(t, tenant, id)
		for _, s := range r.GetResult().GetTasks() {
			if s.SystemId == system && s.EventId != "" {
				sr = s
				return true
			}
		}
		return false
	})
	return sr
}

func kept(basis commonv1.LegalBasis, ground eventsv1.ExemptionGround, law string) *eventsv1.Retention {
	return &eventsv1.Retention{Categories: []*commonv1.DataCategory{{Id: "user.financial.invoice"}}, LegalBasis: basis,
		BasisDetail: "invoices", Until: timestamppb.New(time.Date(2033, 12, 31, 0, 0, 0, 0, time.UTC)), Exemption: ground, Law: law}
}

// TestRetainedNeedsAnArt17_3Ground: GDPR Art. 17(3) lists the only grounds
// on which data may be kept after an erasure request, (a) to (e); a basis
// of Art. 6(1) alone (consent, contract, legitimate interests) is none, and
// ground (b) needs the law that requires keeping. An operator's RETAINED
// answer without one is refused, naming the field; one arriving on the
// stream from a system that does not use the SDK closes its task FAILED,
// naming the field, and the request cannot complete as if the data were
// lawfully kept.
func TestRetainedNeedsAnArt17_3Ground(t *testing.T) {
	f := start(t)
	f.tenant(t, "cleura", &registryv1.TenantSettings{Country: "SE"})
	f.system(t, "cleura", "billing", manual, nil, "user.financial")
	f.system(t, "cleura", "ledger", sdk, nil, "user.financial")
	r := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Erasure: &dsarv1.ErasureDetails{}})
	f.waitTask(t, "cleura", r.DsarId, "billing")

	complete := func(k *eventsv1.Retention) error {
		_, err := f.dsar.CompleteTask(f.ctx, &dsarv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId,
			SystemId: "billing", Outcome: eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, Retained: []*eventsv1.Retention{k}})
		return err
	}
	for _, tc := range []struct {
		name  string
		kept  *eventsv1.Retention
		field string
	}{
		{"consent alone is no Art. 17(3) ground", kept(commonv1.LegalBasis_LEGAL_BASIS_CONSENT, 0, ""), "retained[0].exemption"},
		{"legitimate interests alone is no Art. 17(3) ground", kept(commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS, 0, ""), "retained[0].exemption"},
		{"Art. 17(3)(b) without the law", kept(commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION, eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION, ""), "retained[0].law"},
		{"Art. 17(3)(b) on a contract", kept(commonv1.LegalBasis_LEGAL_BASIS_CONTRACT, eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION, "Bokföringslagen (1999:1078) 7 kap. 2 §"), "retained[0].legal_basis"},
	} {
		if err := complete(tc.kept); code(err) != codes.InvalidArgument || fields(err) != tc.field {
			t.Errorf("%s: CompleteTask = %v (fields %q), want InvalidArgument on %s", tc.name, err, fields(err), tc.field)
		}
	}
	if s := taskOf(f.get(t, "cleura", r.DsarId), "billing"); s.State != commonv1.TaskState_TASK_STATE_OPEN {
		t.Fatalf("a refused answer changed the task: %v", s)
	}
	law := "Bokföringslagen (1999:1078) 7 kap. 2 §"
	if err := complete(kept(commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION, eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION, law)); err != nil {
		t.Fatalf("Art. 17(3)(b) with the accounting act: %v", err)
	}

	// The stream: a system publishing its own outcome, without the SDK,
	// keeps data on consent only.
	task := f.waitTask(t, "cleura", r.DsarId, "ledger")
	natsSubject, err := contract.OutcomeSubject("cleura", "ledger")
	if err != nil {
		t.Fatal(err)
	}
	o := &eventsv1.Outcome{EventId: task.EventId, TenantId: "cleura", SystemId: "ledger", SubjectId: r.SubjectId,
		Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: r.DsarId},
		Kind:  eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, ReportedAt: timestamppb.New(f.clock.Now()),
		Retained: []*eventsv1.Retention{kept(commonv1.LegalBasis_LEGAL_BASIS_CONSENT, 0, "")}}
	data, err := contract.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.deps.JetStream.PublishMsg(context.Background(), natsMsg(natsSubject, contract.OutcomeHeaders(o), data)); err != nil {
		t.Fatal(err)
	}
	done := f.waitState(t, "cleura", r.DsarId, dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED)
	ledger := taskOf(done, "ledger")
	if ledger.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(ledger.Reason, "retained[0].exemption") ||
		!strings.Contains(ledger.Reason, "Art. 17(3)") || len(ledger.Retained) != 0 {
		t.Fatalf("a RETAINED answer without a ground = %v, want FAILED naming retained[0].exemption", ledger)
	}
	// Only the lawful retention reaches the subject's result.
	if len(done.Result.Retained) != 1 || done.Result.Retained[0].Law != law ||
		done.Result.Retained[0].Exemption != eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION {
		t.Fatalf("retained = %v, want billing's under the accounting act only", done.Result.Retained)
	}
}

// TestClaimCheckGivesEachSystemOnlyTheFormsItHolds: data minimisation
// (GDPR Art. 5(1)(c)). An advertising platform that holds e-mail
// addresses only as SHA-256 hashes is given the hash of the subject's
// address by the claim check — never the address, the phone number or the
// name, which would be a new disclosure — while the CRM, which declares
// nothing, gets every identifier as given.
func TestClaimCheckGivesEachSystemOnlyTheFormsItHolds(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", &registryv1.TenantSettings{Country: "FI"})
	f.system(t, "clevenio", "crm", manual, nil, "user.contact", "user.name")
	ad := &registryv1.System{SystemId: "ad-platform-us", Name: "Advertising platform", Kind: commonv1.SystemKind_SYSTEM_KIND_RECIPIENT,
		Country: "US", AnswerMode: manual, Categories: []*commonv1.DataCategory{{Id: "user.contact.email.hashed"}},
		Identifiers: []*registryv1.HeldIdentifier{{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL,
			Forms: []commonv1.IdentifierForm{commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED}}}}
	if _, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clevenio", System: ad}); err != nil {
		t.Fatal(err)
	}
	// A declaration of a form that is not one is refused at the edge.
	bad := &registryv1.System{SystemId: "bad", Name: "bad", Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "FI", AnswerMode: manual,
		Identifiers: []*registryv1.HeldIdentifier{{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL}}}
	if _, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clevenio", System: bad}); code(err) != codes.InvalidArgument || !strings.Contains(fields(err), "identifiers[0].forms") {
		t.Fatalf("identifiers without forms = %v (%s)", err, fields(err))
	}

	// The subject writes her address with capitals; the hash is of the
	// normalised address, as audience matching computes it.
	ids := []*commonv1.Identifier{
		{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: "Ada.Lovelace@Example.com"},
		{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE, Value: adaPhone},
		{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_NAME, Value: adaName},
	}
	r := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Identifiers: ids, Erasure: &dsarv1.ErasureDetails{}})
	f.waitTask(t, "clevenio", r.DsarId, "ad-platform-us")

	got, err := f.dsar.GetIdentifiers(asSystem("ad-platform-us"), &dsarv1.GetIdentifiersRequest{TenantId: "clevenio", DsarId: r.DsarId, SystemId: "ad-platform-us"})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(adaEmail))
	if len(got.Identifiers) != 1 || got.Identifiers[0].Type != commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL ||
		got.Identifiers[0].Form != commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED || got.Identifiers[0].Value != hex.EncodeToString(sum[:]) {
		t.Fatalf("the hashed-only platform got %v, want only sha256(%q)", got.Identifiers, adaEmail)
	}
	for _, id := range got.Identifiers {
		for _, plain := range []string{adaEmail, "Ada.Lovelace@Example.com", adaPhone, adaName} {
			if strings.Contains(strings.ToLower(id.Value), strings.ToLower(plain)) {
				t.Fatalf("the hashed-only platform received a plain identifier: %v", id)
			}
		}
	}
	crm, err := f.dsar.GetIdentifiers(asSystem("crm"), &dsarv1.GetIdentifiersRequest{TenantId: "clevenio", DsarId: r.DsarId, SystemId: "crm"})
	if err != nil || len(crm.Identifiers) != 3 || crm.Identifiers[1].Value != adaPhone || crm.Identifiers[0].Form != commonv1.IdentifierForm_IDENTIFIER_FORM_UNSPECIFIED {
		t.Fatalf("a system without a declaration gets every identifier as given: %v, %v", crm.GetIdentifiers(), err)
	}

	// A corrected address is plain too: the hashed-only platform is told
	// of the rectification (Art. 19) but given no corrected value.
	const corrected = "ada@analytical-engine.example"
	rect := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Identifiers: ids, Rectification: &dsarv1.RectificationDetails{
		Corrections: []*dsarv1.Correction{{Category: &commonv1.DataCategory{Id: "user.contact.email"}, Value: corrected}}}})
	f.waitTask(t, "clevenio", rect.DsarId, "ad-platform-us")
	got, err = f.dsar.GetIdentifiers(asSystem("ad-platform-us"), &dsarv1.GetIdentifiersRequest{TenantId: "clevenio", DsarId: rect.DsarId, SystemId: "ad-platform-us"})
	if err != nil || len(got.Corrections) != 0 || len(got.Identifiers) != 1 || got.Identifiers[0].Form != commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED {
		t.Fatalf("rectification claim of the hashed-only platform = %v, %v", got, err)
	}
	crm, err = f.dsar.GetIdentifiers(asSystem("crm"), &dsarv1.GetIdentifiersRequest{TenantId: "clevenio", DsarId: rect.DsarId, SystemId: "crm"})
	if err != nil || len(crm.Corrections) != 1 || crm.Corrections[0].Value != corrected {
		t.Fatalf("rectification claim of the crm = %v, %v", crm, err)
	}
}

// TestAccessTellsOfAutomatedDecisionsAndConfirmsNoData: the access
// package carries Art. 15(1)(h) — the existence of automated
// decision-making, including profiling, the logic involved and its
// significance and envisaged consequences — from the records of
// processing, and says "none" as an empty list. A request whose every
// system holds nothing of the subject completes with the confirmation of
// Art. 15(1), first part, not a refusal.
func TestAccessTellsOfAutomatedDecisionsAndConfirmsNoData(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevio", &registryv1.TenantSettings{Country: "SE"})
	f.system(t, "clevio", "platform", manual, nil, "user.inference.interests", "user.contact")
	activity := &registryv1.ProcessingActivity{ActivityId: "advertising", Name: "Advertising", Purpose: "Offer Clevio on other sites",
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DataSubjectCategories: []string{"users"},
		Categories: []*commonv1.DataCategory{{Id: "user.inference.interests"}}, Retention: "until consent is withdrawn",
		AutomatedDecisionMaking: &registryv1.AutomatedDecisionMaking{SolelyAutomated: true, Profiling: true,
			Logic: "Interests inferred from pages visited", Significance: "Which courses you are offered"}}
	// Art. 22(2): a solely automated decision needs an exception.
	_, err := f.registry.PutActivity(f.ctx, &registryv1.PutActivityRequest{RequestId: f.id(), TenantId: "clevio", Activity: activity})
	if code(err) != codes.InvalidArgument || fields(err) != "activity.automated_decision_making.exception" {
		t.Fatalf("a solely automated decision without an Art. 22(2) exception = %v (%s)", err, fields(err))
	}
	activity.AutomatedDecisionMaking.Exception = registryv1.Art22Exception_ART22_EXCEPTION_EXPLICIT_CONSENT
	if _, err := f.registry.PutActivity(f.ctx, &registryv1.PutActivityRequest{RequestId: f.id(), TenantId: "clevio", Activity: activity}); err != nil {
		t.Fatal(err)
	}

	r := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", Access: &dsarv1.AccessDetails{}})
	f.waitTask(t, "clevio", r.DsarId, "platform")
	if _, err := f.dsar.CompleteTask(f.ctx, &dsarv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "clevio", DsarId: r.DsarId,
		SystemId: "platform", Outcome: eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND}); err != nil {
		t.Fatal(err)
	}
	done := f.waitState(t, "clevio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	if !done.Result.NoDataHeld || done.Rejection != nil {
		t.Fatalf("every system answered NOT_FOUND: no_data_held %v, rejection %v", done.Result.NoDataHeld, done.Rejection)
	}
	body, _ := f.download(t, "clevio", r.DsarId)
	var p struct {
		Manifest struct {
			NoDataHeld bool `json:"no_data_held"`
		} `json:"manifest"`
		Information struct {
			Automated []struct {
				Activity        string `json:"activity"`
				SolelyAutomated bool   `json:"solely_automated"`
				Profiling       bool   `json:"profiling"`
				Exception       string `json:"art22_exception"`
				Logic           string `json:"logic"`
				Significance    string `json:"significance_and_consequences"`
			} `json:"automated_decision_making"`
			Rights []string `json:"rights"`
		} `json:"information"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	a := p.Information.Automated
	if !p.Manifest.NoDataHeld || len(a) != 1 || a[0].Activity != "Advertising" || !a[0].SolelyAutomated || !a[0].Profiling ||
		a[0].Exception != "ART22_EXCEPTION_EXPLICIT_CONSENT" || a[0].Logic != activity.AutomatedDecisionMaking.Logic ||
		a[0].Significance != activity.AutomatedDecisionMaking.Significance || !strings.Contains(strings.Join(p.Information.Rights, ";"), "Art. 22(3)") {
		t.Fatalf("Art. 15(1)(h) in the package = %+v", p)
	}

	// A tenant with no automated decision-making says so: an empty list.
	f.tenant(t, "cleura", nil)
	r = f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Access: &dsarv1.AccessDetails{}})
	f.waitState(t, "cleura", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	body, _ = f.download(t, "cleura", r.DsarId)
	if !strings.Contains(string(body), `"automated_decision_making": []`) {
		t.Fatalf("a tenant without automated decisions does not say so:\n%s", body)
	}
}

// TestRefusalNamesTheRemedies: Art. 12(4) — a refusal tells the subject of
// the possibility of lodging a complaint with a supervisory authority
// (Art. 77) and of seeking a judicial remedy (Art. 79), naming the
// tenant's authority from its settings, on an operator's refusal and on
// the service's own when identity could not be verified. "We hold no data
// about you" is no reason to refuse: InvalidArgument on reason.
func TestRefusalNamesTheRemedies(t *testing.T) {
	f := start(t)
	imy := &registryv1.SupervisoryAuthority{Name: "Integritetsskyddsmyndigheten (IMY)", Country: "SE", Url: "https://www.imy.se"}
	f.tenant(t, "cleura", &registryv1.TenantSettings{Country: "SE", SupervisoryAuthority: imy})
	f.tenant(t, "clevio", nil)

	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Access: &dsarv1.AccessDetails{}})
	//lint:ignore SA1019 the deprecated value is what is refused
	noData := dsarv1.RejectionReason_REJECTION_REASON_NO_DATA
	if _, err := f.dsar.RejectRequest(f.ctx, &dsarv1.RejectRequestRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId,
		Reason: noData, Detail: "we hold nothing"}); code(err) != codes.InvalidArgument || fields(err) != "reason" {
		t.Fatalf("refusing for holding no data = %v (%s), want InvalidArgument on reason", err, fields(err))
	}
	resp, err := f.dsar.RejectRequest(f.ctx, &dsarv1.RejectRequestRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId,
		Reason: dsarv1.RejectionReason_REJECTION_REASON_EXCESSIVE, Detail: "third identical request this month (Art. 12(5))"})
	if err != nil {
		t.Fatal(err)
	}
	rem := resp.Request.GetRejection().GetRemedies()
	if rem.GetSupervisoryAuthority().GetName() != imy.Name || !strings.Contains(rem.Complaint, imy.Name) || !strings.Contains(rem.Complaint, "Art. 77") ||
		!strings.Contains(rem.JudicialRemedy, "Art. 79") {
		t.Fatalf("remedies of a refusal = %v", rem)
	}
	if got := f.get(t, "cleura", r.DsarId).GetRejection().GetRemedies(); got.GetSupervisoryAuthority().GetUrl() != imy.Url {
		t.Fatalf("stored remedies = %v", got)
	}

	// The service's own refusal, after every code was entered wrongly, for
	// a tenant that names no authority: where to complain in general.
	x := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", Access: &dsarv1.AccessDetails{}})
	var last *dsarv1.Request
	for range 3 {
		if _, err := f.dsar.StartVerification(f.ctx, &dsarv1.StartVerificationRequest{RequestId: f.id(), TenantId: "clevio", DsarId: x.DsarId}); err != nil {
			t.Fatal(err)
		}
		for range 5 {
			v, err := f.dsar.VerifyIdentity(f.ctx, &dsarv1.VerifyIdentityRequest{RequestId: f.id(), TenantId: "clevio", DsarId: x.DsarId, Code: "000000x"})
			if err != nil {
				t.Fatal(err)
			}
			last = v.Request
		}
	}
	if last.State != dsarv1.RequestState_REQUEST_STATE_REJECTED {
		t.Fatalf("after every code failed: %s", last.State)
	}
	rem = last.GetRejection().GetRemedies()
	if rem.GetSupervisoryAuthority() != nil || !strings.Contains(rem.Complaint, "habitual residence") || !strings.Contains(rem.JudicialRemedy, "Art. 79") {
		t.Fatalf("remedies of the service's refusal = %v", rem)
	}
}

// TestPortabilityCoversOnlyProvidedData: Art. 20(1) gives the subject the
// data "which he or she has provided", which includes data observed from
// their use of the service (WP29 Guidelines on the right to data
// portability, WP242 rev.01, section III), but not data the controller
// inferred or derived (an interest profile) nor data from third parties (a
// credit bureau's rating). A category whose provenance the registry does
// not state is left out (fail closed), and the manifest counts each reason.
func TestPortabilityCoversOnlyProvidedData(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", nil)
	// A tenant category inherits its parent's provenance unless it states
	// its own.
	for _, c := range []*registryv1.Category{
		{Id: "user.contact.email.work", Name: "Work e-mail"},
		{Id: "user.professional.public_role", Name: "Public business role", Provenance: registryv1.DataProvenance_DATA_PROVENANCE_THIRD_PARTY},
	} {
		if _, err := f.registry.DefineCategory(f.ctx, &registryv1.DefineCategoryRequest{RequestId: f.id(), TenantId: "clevenio", Category: c}); err != nil {
			t.Fatal(err)
		}
	}
	f.system(t, "clevenio", "crm", manual, nil, "user")
	r := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Portability: &dsarv1.PortabilityDetails{}})
	f.waitTask(t, "clevenio", r.DsarId, "crm")
	contractBasis := commonv1.LegalBasis_LEGAL_BASIS_CONTRACT
	f.submit(t, "clevenio", r.DsarId, "crm",
		record("user.contact.email.work", contractBasis, "the subject", `"ada@company.example"`),     // provided (inherited)
		record("user.behavior.usage", contractBasis, "the service", `{"logins":12}`),                 // observed
		record("user.inference.interests", commonv1.LegalBasis_LEGAL_BASIS_CONSENT, "", `["cloud"]`), // inferred
		record("user.financial.credit", contractBasis, "a credit bureau", `"AA"`),                    // third party
		record("user.professional.public_role", contractBasis, "prh.fi", `"CTO"`),                    // third party (tenant's)
		record("user.genetic", commonv1.LegalBasis_LEGAL_BASIS_CONSENT, "the subject", `"x"`),        // no provenance stated
	)
	f.waitState(t, "clevenio", r.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	body, _ := f.download(t, "clevenio", r.DsarId)
	var p struct {
		Manifest struct {
			LeftOut   int `json:"left_out"`
			LeftOutBy struct {
				NotProvided int `json:"not_provided"`
				Unknown     int `json:"provenance_unknown"`
			} `json:"left_out_by"`
		} `json:"manifest"`
		Data map[string][]struct {
			Category string `json:"category"`
		} `json:"Data"`
	}
	if err := json.Unmarshal(body, &p); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range p.Data["crm"] {
		got = append(got, it.Category)
	}
	if strings.Join(got, ",") != "user.contact.email.work,user.behavior.usage" || p.Manifest.LeftOut != 4 ||
		p.Manifest.LeftOutBy.NotProvided != 3 || p.Manifest.LeftOutBy.Unknown != 1 {
		t.Fatalf("portable copy holds %v, left out %+v", got, p.Manifest)
	}
}
