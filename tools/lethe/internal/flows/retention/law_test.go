package retention_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

const (
	endOfFinancialYear = retentionv1.PeriodAnchor_PERIOD_ANCHOR_END_OF_FINANCIAL_YEAR
	endOfCalendarYear  = retentionv1.PeriodAnchor_PERIOD_ANCHOR_END_OF_CALENDAR_YEAR_OF_FINANCIAL_YEAR_END
)

func anchored(kind retentionv1.TriggerKind, period string, anchor retentionv1.PeriodAnchor) *retentionv1.Trigger {
	return &retentionv1.Trigger{Kind: kind, Period: period, Anchor: anchor}
}

// keptUntil returns the date a category's minimum rule keeps it until, and
// the explanation.
func (f *fixture) keptUntil(t testing.TB, tenant, subject, category string) (time.Time, string) {
	t.Helper()
	resp, err := f.retention.ExplainSubject(f.ctx, &retentionv1.ExplainSubjectRequest{TenantId: tenant, SubjectId: subject})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range resp.Verdicts {
		if v.Category.Id == category {
			return v.KeptUntil.AsTime(), strings.Join(v.Explanation, "\n")
		}
	}
	t.Fatalf("%s of %s is not tracked", category, subject)
	return time.Time{}, ""
}

// Bokföringslag (1999:1078) 7 kap. 2 §: accounting records are kept "till
// och med det sjunde året efter utgången av det kalenderår då
// räkenskapsåret avslutades". An invoice of 15 March 2024 in a calendar
// financial year is kept through 31 December 2031; in a financial year
// ending 30 June 2025, through 31 December 2032. Each is purged on the
// first day after, not one day before.
func TestBokforingslagen7Kap2KeepsThroughTheSeventhYear(t *testing.T) {
	f := start(t)
	f.tenantWith(t, "cleura", nil) // the calendar year: the default
	f.tenantWith(t, "brokenyear", &registryv1.TenantSettings{FinancialYearEnd: "06-30"})
	for _, tenant := range []string{"cleura", "brokenyear"} {
		f.system(t, tenant, "billing-"+tenant, erased, "user.financial.invoice")
		f.rule(t, tenant, &retentionv1.Rule{RuleId: "bfl-7-2", Category: &commonv1.DataCategory{Id: "user.financial"}, Minimum: true,
			Triggers: []*retentionv1.Trigger{anchored(sinceCollected, "P7Y", endOfCalendarYear)},
			Basis:    "Bokföringslag (1999:1078) 7 kap. 2 §"})
		f.rule(t, tenant, &retentionv1.Rule{RuleId: "billing.purge", Category: &commonv1.DataCategory{Id: "user.financial"},
			Triggers: []*retentionv1.Trigger{trigger(sinceEnded, "customer", "P0D")}, Action: erase, Basis: "No longer needed"})
	}
	f.signal(t, "cleura", "sven", collected, "", day(2024, 3, 15).Add(10*time.Hour), "user.financial.invoice")
	f.signal(t, "brokenyear", "sven", collected, "", day(2025, 3, 15), "user.financial.invoice")
	for _, tenant := range []string{"cleura", "brokenyear"} {
		f.signal(t, tenant, "sven", ended, "customer", day(2025, 9, 1))
	}

	for tenant, want := range map[string]time.Time{"cleura": day(2032, 1, 1), "brokenyear": day(2033, 1, 1)} {
		at, why := f.keptUntil(t, tenant, "sven", "user.financial.invoice")
		if !at.Equal(want) || !strings.Contains(why, "counted from the end of calendar year") {
			t.Fatalf("%s: kept until %v, want %v (the end of 31 December)\n%s", tenant, at, want, why)
		}
		f.wantPurgeAt(t, tenant, "sven", "user.financial.invoice", want)
	}
	if n := f.sweepAt(t, day(2031, 12, 31).Add(23*time.Hour+59*time.Minute)); n != 0 {
		t.Fatalf("purged on 31 December 2031, the last day the act keeps the invoice (%d fired)", n)
	}
	f.sweepAt(t, day(2032, 1, 1))
	wantDirectives(t, f.directives(t, 1), "billing-cleura sven billing.purge ERASE [user.financial.invoice]")
	f.sweepAt(t, day(2032, 12, 31).Add(23*time.Hour))
	if got := f.directives(t, 1); len(got) != 1 {
		t.Fatalf("the broken-year invoice was purged in 2032: %v", got)
	}
	f.sweepAt(t, day(2033, 1, 1))
	wantDirectives(t, f.directives(t, 2),
		"billing-brokenyear sven billing.purge ERASE [user.financial.invoice]",
		"billing-cleura sven billing.purge ERASE [user.financial.invoice]")
}

// Kirjanpitolaki (1336/1997) 2 luku 10 §: vouchers (tositteet) are kept six
// years "sen vuoden lopusta, jonka aikana tilikausi on päättynyt", books
// (kirjanpitokirjat) ten years "tilikauden päättymisestä". With a
// financial year ending 30 April, a voucher of 1 September 2016 (financial
// year ending 30 April 2017) is kept through 31 December 2023 and a book
// entry of the same day through 30 April 2027. A moved financial year end
// reschedules what is tracked.
func TestKirjanpitolaki2Luku10KeepsVouchersAndBooks(t *testing.T) {
	f := start(t)
	f.tenantWith(t, "clevenio", &registryv1.TenantSettings{FinancialYearEnd: "04-30"})
	if _, err := f.registry.DefineCategory(f.ctx, &registryv1.DefineCategoryRequest{RequestId: f.id(), TenantId: "clevenio",
		Category: &registryv1.Category{Id: "user.financial.ledger", Name: "Accounting books"}}); err != nil {
		t.Fatal(err)
	}
	f.rule(t, "clevenio", &retentionv1.Rule{RuleId: "kpl-vouchers", Category: &commonv1.DataCategory{Id: "user.financial"}, Minimum: true,
		Triggers: []*retentionv1.Trigger{anchored(sinceCollected, "P6Y", endOfCalendarYear)},
		Basis:    "Kirjanpitolaki (1336/1997) 2 luku 10 §: tositteet"})
	f.rule(t, "clevenio", &retentionv1.Rule{RuleId: "kpl-books", Category: &commonv1.DataCategory{Id: "user.financial.ledger"}, Minimum: true,
		Triggers: []*retentionv1.Trigger{anchored(sinceCollected, "P10Y", endOfFinancialYear)},
		Basis:    "Kirjanpitolaki (1336/1997) 2 luku 10 §: kirjanpitokirjat"})
	f.rule(t, "clevenio", &retentionv1.Rule{RuleId: "accounting.purge", Category: &commonv1.DataCategory{Id: "user.financial"},
		Triggers: []*retentionv1.Trigger{trigger(sinceEnded, "customer", "P0D")}, Action: erase, Basis: "No longer needed"})
	f.signal(t, "clevenio", "aino", collected, "", day(2016, 9, 1), "user.financial.invoice", "user.financial.ledger")
	f.signal(t, "clevenio", "aino", ended, "customer", day(2018, 1, 1))

	if at, why := f.keptUntil(t, "clevenio", "aino", "user.financial.invoice"); !at.Equal(day(2024, 1, 1)) {
		t.Fatalf("voucher kept until %v, want through 31 December 2023\n%s", at, why)
	}
	if at, why := f.keptUntil(t, "clevenio", "aino", "user.financial.ledger"); !at.Equal(day(2027, 5, 1)) || !strings.Contains(why, "kpl-books") {
		t.Fatalf("book kept until %v, want through 30 April 2027 under kpl-books\n%s", at, why)
	}

	// The tenant moves to the calendar year: the voucher's financial year
	// now ends 31 December 2016, and so does its calendar year.
	if _, err := f.registry.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: "clevenio", DisplayName: "clevenio"}}); err != nil {
		t.Fatal(err)
	}
	eventually.Succeeds(t, "the book is kept until 2027-01-01 after the move to the calendar year", func() error {
		if at, why := f.keptUntil(t, "clevenio", "aino", "user.financial.ledger"); !at.Equal(day(2027, 1, 1)) {
			return fmt.Errorf("kept until %v\n%s", at, why)
		}
		return nil
	})
	if at, _ := f.keptUntil(t, "clevenio", "aino", "user.financial.invoice"); !at.Equal(day(2023, 1, 1)) {
		t.Fatalf("voucher kept until %v, want 2023-01-01", at)
	}
}

// restrict publishes restriction.applied or restriction.lifted as the
// consent service does.
func (f *fixture) restrict(t testing.TB, tenant, subject string, body any) {
	t.Helper()
	ev := &eventsv1.Event{Id: f.id(), TenantId: tenant, SubjectId: subject, OccurredAt: timestamppb.New(f.clock.Now()), Source: "lethe/consent",
		Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_RESTRICTION, Id: f.id()}}
	switch b := body.(type) {
	case *eventsv1.RestrictionApplied:
		ev.Body = &eventsv1.Event_RestrictionApplied{RestrictionApplied: b}
	case *eventsv1.RestrictionLifted:
		ev.Body = &eventsv1.Event_RestrictionLifted{RestrictionLifted: b}
	}
	f.publish(t, ev)
}

// waitRestrictions waits until the retention service has taken every
// restriction event published so far: the sync point before asserting
// that nothing was purged.
func (f *fixture) waitRestrictions(t testing.TB, published uint64) {
	t.Helper()
	f.tookAll(t, "lethe-retention-restrictions", published)
}

// GDPR Art. 18(1)(b) and (c): a subject who wants the data kept has it
// restricted instead of erased, and Art. 18(2) leaves storage as the only
// processing: a retention purge due meanwhile waits, held by the
// restriction, until the restriction is lifted. The events may arrive
// twice, and a ground that asks nothing to be kept (Art. 18(1)(a)) holds
// nothing.
func TestArticle18RestrictionHoldsPurgesUntilLifted(t *testing.T) {
	f := start(t)
	f.tenant(t, "clicklearn")
	f.system(t, "clicklearn", "lms", erased, "user.behavior.usage")
	f.rule(t, "clicklearn", &retentionv1.Rule{RuleId: "usage", Category: &commonv1.DataCategory{Id: "user.behavior.usage"},
		Triggers: []*retentionv1.Trigger{trigger(sinceCollected, "", "P1Y")}, Action: erase, Basis: "A year"})
	for _, s := range []string{"rita", "axel"} {
		f.signal(t, "clicklearn", s, collected, "", day(2025, 1, 1), "user.behavior.usage")
	}
	legalClaims := &eventsv1.RestrictionApplied{RestrictionId: "0190-rita", Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_LEGAL_CLAIMS}
	f.restrict(t, "clicklearn", "rita", legalClaims)
	f.restrict(t, "clicklearn", "rita", legalClaims) // redelivered
	f.restrict(t, "clicklearn", "axel", &eventsv1.RestrictionApplied{RestrictionId: "0190-axel",
		Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED})
	f.waitRestrictions(t, 3)

	holds, err := f.retention.ListHolds(f.ctx, &retentionv1.ListHoldsRequest{TenantId: "clicklearn", SubjectId: "rita"})
	if err != nil || len(holds.Holds) != 1 || holds.Holds[0].HoldId != "restriction-0190-rita" ||
		!strings.Contains(holds.Holds[0].Reason, "Art. 18(1)(c)") || !strings.Contains(holds.Holds[0].Reason, "Art. 18(2)") {
		t.Fatalf("holds of rita = %v, %v; want one restriction hold citing Art. 18(1)(c) and 18(2)", holds, err)
	}
	f.sweepAt(t, day(2026, 11, 24))
	wantDirectives(t, f.directives(t, 1), "lms axel usage ERASE [user.behavior.usage]")
	if _, why := f.purgeAt(t, "clicklearn", "rita", "user.behavior.usage"); !strings.Contains(strings.Join(why, " "), "restriction-0190-rita") {
		t.Fatalf("rita's purge is not explained by her restriction:\n%s", strings.Join(why, "\n"))
	}

	f.restrict(t, "clicklearn", "rita", &eventsv1.RestrictionLifted{RestrictionId: "0190-rita"})
	f.restrict(t, "clicklearn", "rita", &eventsv1.RestrictionLifted{RestrictionId: "0190-rita"})
	f.waitRestrictions(t, 5)
	f.sweepAt(t, day(2026, 11, 25))
	wantDirectives(t, f.directives(t, 2),
		"lms axel usage ERASE [user.behavior.usage]",
		"lms rita usage ERASE [user.behavior.usage]")

	// A lift overtaking its restriction leaves nothing held.
	f.signal(t, "clicklearn", "olle", collected, "", day(2025, 1, 1), "user.behavior.usage")
	f.restrict(t, "clicklearn", "olle", &eventsv1.RestrictionLifted{RestrictionId: "0190-olle"})
	f.restrict(t, "clicklearn", "olle", &eventsv1.RestrictionApplied{RestrictionId: "0190-olle",
		Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_UNLAWFUL_PROCESSING})
	f.waitRestrictions(t, 7)
	if holds, err := f.retention.ListHolds(f.ctx, &retentionv1.ListHoldsRequest{TenantId: "clicklearn", SubjectId: "olle"}); err != nil || len(holds.Holds) != 0 {
		t.Fatalf("holds of olle after a lift overtook its restriction = %v, %v; want none", holds, err)
	}
}

// Erasure under GDPR Art. 17 does not reach data a legal obligation keeps
// (Art. 17(3)(b)): ListObligations tells the DSAR service what the minimum
// rules keep of the subject's data in scope, on which basis and until when
// (Bokföringslag (1999:1078) 7 kap. 2 §), and, for categories Lethe tracks
// nothing of, that they are kept without a known date.
func TestListObligationsNamesWhatIsKeptAndUntilWhen(t *testing.T) {
	f := start(t)
	f.tenant(t, "cleura")
	f.rule(t, "cleura", &retentionv1.Rule{RuleId: "bfl-7-2", Category: &commonv1.DataCategory{Id: "user.financial"}, Minimum: true,
		Triggers: []*retentionv1.Trigger{anchored(sinceCollected, "P7Y", endOfCalendarYear)}, Basis: "Bokföringslag (1999:1078) 7 kap. 2 §"})
	f.signal(t, "cleura", "sven", collected, "", day(2024, 3, 15), "user.financial.invoice", "user.contact.email")

	list := func(subject string, cats ...string) []*eventsv1.Obligation {
		t.Helper()
		req := &retentionv1.ListObligationsRequest{TenantId: "cleura", SubjectId: subject}
		for _, c := range cats {
			req.Categories = append(req.Categories, &commonv1.DataCategory{Id: c})
		}
		resp, err := f.retention.ListObligations(f.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Obligations
	}
	describe := func(obs []*eventsv1.Obligation) string {
		var out []string
		for _, o := range obs {
			var cats []string
			for _, c := range o.Categories {
				cats = append(cats, c.Id)
			}
			until := "no date"
			if o.Until != nil {
				until = o.Until.AsTime().Format(time.DateOnly)
			}
			out = append(out, o.RuleId+" "+strings.Join(cats, ",")+" "+until+" "+o.LegalBasis.String())
		}
		return strings.Join(out, "; ")
	}
	for _, tc := range []struct {
		subject string
		scope   []string
		want    string
	}{
		{"sven", nil, "bfl-7-2 user.financial.invoice 2032-01-01 LEGAL_BASIS_LEGAL_OBLIGATION"},
		{"sven", []string{"user"}, "bfl-7-2 user.financial.invoice 2032-01-01 LEGAL_BASIS_LEGAL_OBLIGATION"},
		{"sven", []string{"user.contact"}, ""},
		// Nothing tracked of the subject: kept, without a date.
		{"nobody", nil, "bfl-7-2 user.financial no date LEGAL_BASIS_LEGAL_OBLIGATION"},
		{"nobody", []string{"user.financial.billing"}, "bfl-7-2 user.financial.billing no date LEGAL_BASIS_LEGAL_OBLIGATION"},
	} {
		if got := describe(list(tc.subject, tc.scope...)); got != tc.want {
			t.Errorf("obligations of %s in %v = %q, want %q", tc.subject, tc.scope, got, tc.want)
		}
	}
	// Once the obligation has run out, nothing is kept.
	f.clock.Set(day(2032, 1, 1))
	if got := list("sven"); len(got) != 0 {
		t.Errorf("obligations after 2031 = %s, want none", describe(got))
	}
}
