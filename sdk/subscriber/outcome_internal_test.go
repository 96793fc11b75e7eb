package subscriber

import (
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

func TestValidateOutcome(t *testing.T) {
	valid := &eventsv1.Outcome{
		EventId:    "ev-1",
		TenantId:   "clio",
		SystemId:   "newsletter",
		SubjectId:  "subject-42",
		Cause:      &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "req-7"},
		Kind:       eventsv1.OutcomeKind_OUTCOME_KIND_ERASED,
		ReportedAt: timestamppb.Now(),
	}
	retention := func() *eventsv1.Retention {
		return &eventsv1.Retention{
			LegalBasis:  commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
			BasisDetail: "Swedish Accounting Act (1999:1078), ch. 7 § 2",
			Until:       timestamppb.New(time.Now().AddDate(7, 0, 0)),
			Exemption:   eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION,
			Law:         "Bokföringslagen (1999:1078) 7 kap. 2 §",
		}
	}
	for _, tc := range []struct {
		name   string
		kind   contract.Kind
		mutate func(*eventsv1.Outcome)
		want   string // empty for valid
	}{
		{"erased", contract.KindErasureRequested, func(*eventsv1.Outcome) {}, ""},
		{"no event id", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.EventId = "" }, "event_id"},
		{"bad tenant", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.TenantId = "Clio" }, "tenant_id"},
		{"bad system", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.SystemId = "" }, "system_id"},
		{"long subject", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.SubjectId = strings.Repeat("s", 257) }, "subject_id"},
		{"no cause", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.Cause = nil }, "cause"},
		{"no time", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.ReportedAt = nil }, "reported_at"},
		{"no kind", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.Kind = 0 }, "kind is not set"},
		{"undefined kind", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.Kind = 42 }, "does not answer"},
		{"applied to a directive", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.Kind = eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED }, "does not answer"},
		{"erased for a limit", contract.KindRestrictionApplied, func(*eventsv1.Outcome) {}, "does not answer"},
		{"not found for access", contract.KindAccessRequested, func(o *eventsv1.Outcome) { o.Kind = eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND }, ""},
		{"failed with reason", contract.KindConsentWithdrawn, func(o *eventsv1.Outcome) {
			o.Kind, o.Reason = eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, "no such list"
		}, ""},
		{"failed without reason", contract.KindConsentWithdrawn, func(o *eventsv1.Outcome) { o.Kind = eventsv1.OutcomeKind_OUTCOME_KIND_FAILED }, "reason"},
		{"long reason", contract.KindConsentWithdrawn, func(o *eventsv1.Outcome) {
			o.Kind, o.Reason = eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, strings.Repeat("é", 2001)
		}, "reason"},
		{"retained", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{retention()}
		}, ""},
		{"retained nothing", contract.KindErasureRequested, func(o *eventsv1.Outcome) { o.Kind = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED }, "lists what is retained"},
		{"retained without basis", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			r := retention()
			r.LegalBasis = 0
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{r}
		}, "legal_basis"},
		{"retained without detail", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			r := retention()
			r.BasisDetail = ""
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{r}
		}, "basis_detail"},
		{"retained without date", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			r := retention()
			r.Until = nil
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{r}
		}, "until"},
		// GDPR Art. 17(3): an Art. 6(1) basis alone does not allow keeping
		// data after an erasure; one of the grounds (a) to (e) does.
		{"retained on consent alone (Art. 17(3))", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			r := retention()
			r.LegalBasis, r.Exemption, r.Law = commonv1.LegalBasis_LEGAL_BASIS_CONSENT, 0, ""
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{r}
		}, "retained[0].exemption"},
		{"retained for a legal obligation without the law (Art. 17(3)(b))", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			r := retention()
			r.Law = " "
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{r}
		}, "retained[0].law"},
		{"retained for legal claims (Art. 17(3)(e))", contract.KindErasureRequested, func(o *eventsv1.Outcome) {
			r := retention()
			r.LegalBasis, r.Exemption, r.Law = commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS, eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_CLAIMS, ""
			o.Kind, o.Retained = eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, []*eventsv1.Retention{r}
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := proto.Clone(valid).(*eventsv1.Outcome)
			tc.mutate(o)
			err := validateOutcome(o, tc.kind)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("validateOutcome = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("validateOutcome = %v, want an error about %q", err, tc.want)
			}
		})
	}
}

func TestReasonIsTruncatedAndCarried(t *testing.T) {
	s := &Subscriber{}
	ev := &Event{pb: &eventsv1.Event{Id: "e1"}}
	got := s.outcomeOf(ev, Failed(strings.Repeat("ö", 3000))).GetReason()
	if n := utf8.RuneCountInString(got); n != maxReasonRunes || !utf8.ValidString(got) {
		t.Errorf("reason has %d characters (valid UTF-8: %v), want %d", n, utf8.ValidString(got), maxReasonRunes)
	}
	if got := s.outcomeOf(ev, NotApplicable("no newsletter")).GetReason(); got != "no newsletter" {
		t.Errorf("a NOT_APPLICABLE outcome carries reason %q, want its reason", got)
	}
}
