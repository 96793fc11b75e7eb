package dsar_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

func utcDay(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// An erasure (GDPR Art. 17) does not reach what a legal obligation keeps
// (Art. 17(3)(b)): every system is told up front, in the directive, which
// categories are kept, on which ground and until when — here the Swedish
// Bokföringslag (1999:1078) 7 kap. 2 §, through the seventh year after the
// calendar year of the invoice's financial year. What a system then keeps
// is erased at its until-date, whether the system answered RETAINED
// through the SDK or an operator answered for it (DsarService/CompleteTask):
// both reach the retention service, show in ExplainSubject and are erased
// on their date, not before.
func TestWhatIsKeptIsToldUpFrontAndErasedOnItsDate(t *testing.T) {
	f := start(t)
	f.tenant(t, "cleura", nil)
	f.system(t, "cleura", "billing", manual, nil, "user.financial.invoice")
	f.system(t, "cleura", "ledger", sdk, nil, "user.financial.invoice")
	if _, err := f.retention.PutRule(f.ctx, &retentionv1.PutRuleRequest{RequestId: f.id(), TenantId: "cleura", Rule: &retentionv1.Rule{
		RuleId: "bfl-7-2", Category: &commonv1.DataCategory{Id: "user.financial"}, Minimum: true,
		Triggers: []*retentionv1.Trigger{{Kind: retentionv1.TriggerKind_TRIGGER_KIND_SINCE_COLLECTION, Period: "P7Y",
			Anchor: retentionv1.PeriodAnchor_PERIOD_ANCHOR_END_OF_CALENDAR_YEAR_OF_FINANCIAL_YEAR_END}},
		Basis: "Bokföringslag (1999:1078) 7 kap. 2 §"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.retention.RecordSignal(f.ctx, &retentionv1.RecordSignalRequest{RequestId: f.id(), TenantId: "cleura",
		Signal: &retentionv1.Signal{SubjectId: "subject-ada", Kind: retentionv1.SignalKind_SIGNAL_KIND_COLLECTED,
			Categories: []*commonv1.DataCategory{{Id: "user.financial.invoice"}}, OccurredAt: timestamppb.New(utcDay(2024, 3, 15))}}); err != nil {
		t.Fatal(err)
	}

	// The SDK system keeps what the directive says is kept, until the date
	// it says; it erases what the retention service later asks it to.
	ledger := f.subscribe(t, "cleura", "ledger", "", func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		if ev.Proto().Source == "lethe/retention" {
			return subscriber.Erased(), nil
		}
		var kept []*eventsv1.Retention
		for _, o := range ev.Proto().GetErasureRequested().GetKeep() {
			// A minimum rule is a legal obligation: Art. 17(3)(b), with its law.
			kept = append(kept, &eventsv1.Retention{Categories: o.Categories, LegalBasis: o.LegalBasis, BasisDetail: o.BasisDetail, Until: o.Until,
				Exemption: eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION, Law: o.BasisDetail})
		}
		if len(kept) == 0 {
			return subscriber.Erased(), nil
		}
		return subscriber.Retained(kept...), nil
	})

	r := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "cleura", Erasure: &dsarv1.ErasureDetails{}})
	f.attest(t, "cleura", r.DsarId)
	eventually.True(t, "the ledger answered", func() bool {
		return taskOf(f.get(t, "cleura", r.DsarId), "ledger").GetState() == commonv1.TaskState_TASK_STATE_FINAL
	})
	keep := ledger.seen()[0].GetErasureRequested().GetKeep()
	if len(keep) != 1 || keep[0].RuleId != "bfl-7-2" || keep[0].LegalBasis != commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION ||
		!keep[0].Until.AsTime().Equal(utcDay(2032, 1, 1)) || keep[0].Categories[0].Id != "user.financial.invoice" {
		t.Fatalf("the directive's keep = %v; want the invoice kept under bfl-7-2 until 2032-01-01", keep)
	}

	// The operator answers for billing: kept until 31 December 2033.
	if _, err := f.dsar.CompleteTask(f.ctx, &dsarv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "cleura", DsarId: r.DsarId, SystemId: "billing",
		Outcome: eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, Retained: []*eventsv1.Retention{{
			Categories: []*commonv1.DataCategory{{Id: "user.financial.invoice"}}, LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGAL_OBLIGATION,
			BasisDetail: "Bokföringslag (1999:1078) 7 kap. 2 §", Until: timestamppb.New(utcDay(2033, 12, 31)),
			Exemption: eventsv1.ExemptionGround_EXEMPTION_GROUND_LEGAL_OBLIGATION, Law: "Bokföringslag (1999:1078) 7 kap. 2 §"}}}); err != nil {
		t.Fatal(err)
	}
	f.waitState(t, "cleura", r.DsarId, dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED)

	retainedBy := func() map[string]time.Time {
		resp, err := f.retention.ExplainSubject(f.ctx, &retentionv1.ExplainSubjectRequest{TenantId: "cleura", SubjectId: "subject-ada"})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]time.Time{}
		for _, v := range resp.Verdicts {
			if v.RetainedBy != "" && v.Category.Id == "user.financial.invoice" {
				out[v.RetainedBy] = v.PurgeAt.AsTime()
			}
		}
		return out
	}
	eventually.True(t, "both retained answers are scheduled in retention", func() bool {
		got := retainedBy()
		return got["billing"].Equal(utcDay(2033, 12, 31)) && got["ledger"].Equal(utcDay(2032, 1, 1))
	})

	fromRetention := func() []*eventsv1.Event {
		var out []*eventsv1.Event
		for _, ev := range ledger.seen() {
			if ev.Source == "lethe/retention" && ev.Cause.GetId() == r.DsarId {
				out = append(out, ev)
			}
		}
		return out
	}
	sweep := func(at time.Time) int {
		t.Helper()
		f.clock.Set(at)
		n, err := f.ret.Sweep(f.ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := sweep(utcDay(2032, 1, 1)); n != 1 {
		t.Fatalf("the sweep at the ledger's until-date fired %d, want 1", n)
	}
	eventually.True(t, "the ledger was told to erase on 2032-01-01", func() bool { return len(fromRetention()) == 1 })
	if n := sweep(utcDay(2033, 12, 30)); n != 0 {
		t.Fatalf("billing's data was erased before its until-date (%d fired)", n)
	}
	if n := sweep(utcDay(2033, 12, 31)); n != 1 {
		t.Fatalf("the sweep at billing's until-date fired %d, want 1", n)
	}
	// Every system holding the category sees the directive; billing owes
	// the answer.
	eventually.True(t, "billing's data was erased on 2033-12-31", func() bool { return len(fromRetention()) == 2 })
	if got := retainedBy(); len(got) != 0 {
		t.Fatalf("retained data still scheduled after its erasure: %v", got)
	}
}
