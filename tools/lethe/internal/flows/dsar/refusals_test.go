package dsar_test

import (
	"context"
	"strings"
	"testing"
	"unicode/utf8"

	"google.golang.org/grpc/codes"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
)

// count is how many requests a tenant has.
func (f *fixture) count(t testing.TB, tenant string) int {
	t.Helper()
	resp, err := f.dsar.ListRequests(f.ctx, &dsarv1.ListRequestsRequest{TenantId: tenant, PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return len(resp.Requests)
}

// TestRefusals: illegal transitions, unverified requests, unknown types
// and the wrong tenant get the right codes and write nothing.
func TestRefusals(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio", nil)
	f.tenant(t, "cleura", nil)
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Erasure: &dsarv1.ErasureDetails{}})
	before := f.get(t, "clio", r.DsarId)
	if _, err := f.consent.PutPurpose(f.ctx, &consentv1.PutPurposeRequest{RequestId: f.id(), TenantId: "clio", Purpose: &consentv1.Purpose{
		PurposeId: "newsletter", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT}}); err != nil {
		t.Fatal(err)
	}
	// A withdrawal, objection or restriction naming a purpose the tenant
	// does not have: the consent service would refuse its fan-out at
	// every attempt, so the intake refuses it, naming the purpose.
	namingPurposes := func(d *dsarv1.CreateRequestRequest) func() error {
		return func() error {
			d.RequestId, d.TenantId, d.SubjectId = f.id(), "clio", "s"
			d.Requester = &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}
			_, err := f.dsar.CreateRequest(f.ctx, d)
			return err
		}
	}

	for name, tc := range map[string]struct {
		call   func() error
		code   codes.Code
		detail string // a field for InvalidArgument, a reason otherwise
	}{
		"no type": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}})
			return err
		}, codes.InvalidArgument, ""},
		"two types": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
				Access:    &dsarv1.AccessDetails{}, Erasure: &dsarv1.ErasureDetails{}})
			return err
		}, codes.InvalidArgument, ""},
		"contact data as subject id": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada lovelace",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{}})
			return err
		}, codes.InvalidArgument, "subject_id"},
		"agent without authority": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_AGENT}, Access: &dsarv1.AccessDetails{}})
			return err
		}, codes.InvalidArgument, "requester.authority_reference"},
		"bad identifier": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{},
				Identifiers: []*commonv1.Identifier{{Value: "x"}}})
			return err
		}, codes.InvalidArgument, "identifiers[0].type"},
		"an EMAIL identifier that is not an e-mail address": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{},
				Identifiers: []*commonv1.Identifier{{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: "a\x00b"}}})
			return err
		}, codes.InvalidArgument, "identifiers[0],identifiers[0].value"},
		"no kind of request": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}})
			return err
		}, codes.InvalidArgument, "access,rectification,erasure,restriction,portability,objection,withdrawal,automated_decision"},
		"two kinds of request": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
				Access:    &dsarv1.AccessDetails{}, Erasure: &dsarv1.ErasureDetails{}})
			return err
		}, codes.InvalidArgument, "access,erasure"},
		"objection to purposes without purposes": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
				Objection: &dsarv1.ObjectionDetails{Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES}})
			return err
		}, codes.InvalidArgument, "objection.purpose_ids"},
		"withdrawal of a purpose the tenant does not have": {namingPurposes(&dsarv1.CreateRequestRequest{
			Withdrawal: &dsarv1.WithdrawalDetails{PurposeIds: []string{"newsletter", "no-such-purpose"}}}),
			codes.InvalidArgument, "withdrawal.purpose_ids[1]"},
		"objection to a purpose the tenant does not have": {namingPurposes(&dsarv1.CreateRequestRequest{
			Objection: &dsarv1.ObjectionDetails{Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES, PurposeIds: []string{"no-such-purpose"}}}),
			codes.InvalidArgument, "objection.purpose_ids[0]"},
		"restriction of a purpose the tenant does not have": {namingPurposes(&dsarv1.CreateRequestRequest{
			Restriction: &dsarv1.RestrictionDetails{Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED, PurposeIds: []string{"no-such-purpose"}}}),
			codes.InvalidArgument, "restriction.purpose_ids[0]"},
		"unknown tenant": {func() error {
			_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "nobody", SubjectId: "s",
				Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{}})
			return err
		}, codes.NotFound, "NOT_FOUND"},
		"another tenant's request": {func() error {
			_, err := f.dsar.GetRequest(f.ctx, &dsarv1.GetRequestRequest{TenantId: "cleura", DsarId: r.DsarId})
			return err
		}, codes.NotFound, "NOT_FOUND"},
		"cancelling another tenant's request": {func() error {
			_, err := f.dsar.CancelRequest(f.ctx, &dsarv1.CancelRequestRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId})
			return err
		}, codes.NotFound, "NOT_FOUND"},
		"a code for an unverified request without a channel setting": {func() error {
			_, err := f.dsar.VerifyIdentity(f.ctx, &dsarv1.VerifyIdentityRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId, Code: "1"})
			return err
		}, codes.FailedPrecondition, "ILLEGAL_TRANSITION"},
		"claim for an unverified request": {func() error {
			_, err := f.dsar.GetIdentifiers(asSystem("crm"), &dsarv1.GetIdentifiersRequest{TenantId: "clio", DsarId: r.DsarId, SystemId: "crm"})
			return err
		}, codes.FailedPrecondition, "TASK_NOT_OPEN"},
		"review of an erasure": {func() error {
			_, err := f.dsar.RecordReview(f.ctx, &dsarv1.RecordReviewRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId, Explanation: "x"})
			return err
		}, codes.FailedPrecondition, "WRONG_REQUEST_TYPE"},
		"package of an erasure": {func() error {
			stream, err := f.dsar.DownloadPackage(f.ctx, &dsarv1.DownloadPackageRequest{TenantId: "clio", DsarId: r.DsarId})
			if err == nil {
				_, err = stream.Recv()
			}
			return err
		}, codes.FailedPrecondition, "WRONG_REQUEST_TYPE"},
		"receipt of an open request": {func() error {
			_, err := f.dsar.GetReceipt(f.ctx, &dsarv1.GetReceiptRequest{TenantId: "clio", DsarId: r.DsarId})
			return err
		}, codes.FailedPrecondition, "ILLEGAL_TRANSITION"},
		"reject without a reason": {func() error {
			_, err := f.dsar.RejectRequest(f.ctx, &dsarv1.RejectRequestRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId, Detail: "x"})
			return err
		}, codes.InvalidArgument, "reason"},
		"attest by code": {func() error {
			_, err := f.dsar.AttestIdentity(f.ctx, &dsarv1.AttestIdentityRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId,
				Method: commonv1.VerificationMethod_VERIFICATION_METHOD_EMAIL_CODE, EvidenceReference: "x"})
			return err
		}, codes.InvalidArgument, "method"},
		"no request id": {func() error {
			_, err := f.dsar.CancelRequest(f.ctx, &dsarv1.CancelRequestRequest{TenantId: "clio", DsarId: r.DsarId})
			return err
		}, codes.InvalidArgument, "request_id"},
	} {
		t.Run(name, func(t *testing.T) {
			err := tc.call()
			if code(err) != tc.code {
				t.Fatalf("error = %v, want %s", err, tc.code)
			}
			if tc.code == codes.InvalidArgument && tc.detail != "" && fields(err) != tc.detail {
				t.Fatalf("violations name %q, want %q", fields(err), tc.detail)
			}
			if tc.code != codes.InvalidArgument && reasonOf(err) != tc.detail {
				t.Fatalf("reason = %q, want %q (%v)", reasonOf(err), tc.detail, err)
			}
		})
	}
	after := f.get(t, "clio", r.DsarId)
	if len(after.History) != len(before.History) || after.State != before.State || f.count(t, "clio") != 1 || f.count(t, "cleura") != 0 {
		t.Fatalf("refused calls changed something: %v", after.History)
	}

	// A validate-only create changes nothing either.
	if _, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "s", ValidateOnly: true,
		Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{}}); err != nil {
		t.Fatal(err)
	}
	if n := f.count(t, "clio"); n != 1 {
		t.Fatalf("a dry run filed a request: %d", n)
	}

	// Final states refuse every transition; a repeated call with the same
	// request id gets the first answer.
	cancel := &dsarv1.CancelRequestRequest{RequestId: "cancel-once", TenantId: "clio", DsarId: r.DsarId}
	first, err := f.dsar.CancelRequest(f.ctx, cancel)
	if err != nil || first.Request.State != dsarv1.RequestState_REQUEST_STATE_CANCELLED {
		t.Fatalf("cancel = %v, %v", first, err)
	}
	if again, err := f.dsar.CancelRequest(f.ctx, cancel); err != nil || again.Request.State != dsarv1.RequestState_REQUEST_STATE_CANCELLED {
		t.Fatalf("replayed cancel = %v, %v", again, err)
	}
	for name, call := range map[string]func() error{
		"cancel": func() error {
			_, err := f.dsar.CancelRequest(f.ctx, &dsarv1.CancelRequestRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId})
			return err
		},
		"reject": func() error {
			_, err := f.dsar.RejectRequest(f.ctx, &dsarv1.RejectRequestRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId,
				Reason: dsarv1.RejectionReason_REJECTION_REASON_EXCESSIVE, Detail: "x"})
			return err
		},
		"attest": func() error {
			_, err := f.dsar.AttestIdentity(f.ctx, &dsarv1.AttestIdentityRequest{RequestId: f.id(), TenantId: "clio", DsarId: r.DsarId,
				Method: commonv1.VerificationMethod_VERIFICATION_METHOD_MANUAL, EvidenceReference: "x"})
			return err
		},
	} {
		if err := call(); code(err) != codes.FailedPrecondition || reasonOf(err) != "ILLEGAL_TRANSITION" {
			t.Fatalf("%s a cancelled request = %v", name, err)
		}
	}
	if got := f.get(t, "clio", r.DsarId); len(got.History) != 2 {
		t.Fatalf("history after refusals = %v", got.History)
	}
}

// TestHumanReviewOfAnAutomatedDecision: Art. 22(3) is a person's review,
// recorded with its reviewer, after which the request completes.
func TestHumanReviewOfAnAutomatedDecision(t *testing.T) {
	f := start(t)
	f.tenant(t, "clicklearn", &registryv1.TenantSettings{VerificationMethod: commonv1.VerificationMethod_VERIFICATION_METHOD_LOGIN_ATTESTATION})
	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clicklearn",
		AutomatedDecision: &dsarv1.AutomatedDecisionDetails{DecisionReference: "licence-application-77", Statement: "I was refused a licence"}})
	review := &dsarv1.RecordReviewRequest{TenantId: "clicklearn", DsarId: r.DsarId, Explanation: "A person re-assessed the application and granted it."}
	review.RequestId = f.id()
	if _, err := f.dsar.RecordReview(f.ctx, review); code(err) != codes.FailedPrecondition || reasonOf(err) != "IDENTITY_NOT_VERIFIED" {
		t.Fatalf("review before verification = %v", err)
	}
	f.attest(t, "clicklearn", r.DsarId)
	review.RequestId = f.id()
	resp, err := f.dsar.RecordReview(f.ctx, review)
	if err != nil || resp.Request.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || resp.Request.Review.Reviewer != "dev:local" {
		t.Fatalf("review = %v, %v", resp, err)
	}
}

// FuzzCreateRequest files arbitrary requests through the whole chain: the
// answer is a request or a refusal naming what is wrong, never a crash or
// an internal error.
func FuzzCreateRequest(f *testing.F) {
	fx := start(f)
	fx.tenant(f, "clio", nil)
	f.Add("clio", "subject-1", int32(1), int32(1), "ada@example.com", "user.contact", int32(3), "")
	f.Add("", "", int32(0), int32(0), "", "", int32(0), "")
	f.Add("clio", "a b", int32(2), int32(9), "x", "User..Contact", int32(99), "p")
	f.Add("CLIO", "s\x00", int32(-1), int32(-5), strings.Repeat("x", 600), "user", int32(6), strings.Repeat("p", 200))
	f.Fuzz(func(t *testing.T, tenant, subject string, requester, idType int32, idValue, category string, kind int32, purpose string) {
		for _, s := range []string{tenant, subject, idValue, category, purpose} {
			if !utf8.ValidString(s) {
				t.Skip("a gRPC client cannot send invalid UTF-8 in a string field")
			}
		}
		req := &dsarv1.CreateRequestRequest{RequestId: fx.id(), TenantId: tenant, SubjectId: subject,
			Requester:   &dsarv1.Requester{Kind: dsarv1.RequesterKind(requester), AuthorityReference: purpose},
			Identifiers: []*commonv1.Identifier{{Type: commonv1.IdentifierType(idType), Value: idValue}}}
		cats := []*commonv1.DataCategory{{Id: category}}
		switch kind % 9 {
		case 1:
			req.Access = &dsarv1.AccessDetails{Categories: cats}
		case 2:
			req.Rectification = &dsarv1.RectificationDetails{Corrections: []*dsarv1.Correction{{Category: cats[0], Value: idValue}}}
		case 3:
			req.Erasure = &dsarv1.ErasureDetails{Categories: cats, Action: eventsv1.ErasureAction(kind / 9)}
		case 4:
			req.Restriction = &dsarv1.RestrictionDetails{Ground: eventsv1.RestrictionGround(kind / 9), PurposeIds: []string{purpose}}
		case 5:
			req.Portability = &dsarv1.PortabilityDetails{Categories: cats}
		case 6:
			req.Objection = &dsarv1.ObjectionDetails{Scope: eventsv1.ObjectionScope(kind / 9), PurposeIds: []string{purpose}}
		case 7:
			req.Withdrawal = &dsarv1.WithdrawalDetails{PurposeIds: []string{purpose}}
		case 8:
			req.AutomatedDecision = &dsarv1.AutomatedDecisionDetails{DecisionReference: purpose, Statement: idValue}
		}
		_, err := fx.dsar.CreateRequest(context.Background(), req)
		switch code(err) {
		case codes.OK, codes.NotFound:
		case codes.InvalidArgument:
			if fields(err) == "" && !strings.Contains(err.Error(), "must be set") {
				t.Fatalf("InvalidArgument names no field: %v", err)
			}
		default:
			t.Fatalf("CreateRequest = %v", err)
		}
	})
}
