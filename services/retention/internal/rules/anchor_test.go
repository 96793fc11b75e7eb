package rules

import (
	"strings"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/platform/period"
)

// Bokföringslag (1999:1078) 7 kap. 2 § through the engine: the minimum
// counts from the end of the calendar year in which the invoice's
// financial year ended, says so, and a trigger whose anchor the engine
// does not know never fires, so the data is kept rather than purged from
// the fact.
func TestAnchoredMinimumBokforingslagen7Kap2(t *testing.T) {
	june := period.YearEnd{Month: time.June, Day: 30}
	minimum := func(anchor period.Anchor) Rule {
		return Rule{ID: "bfl", Category: "user.financial", Minimum: true, Basis: "Bokföringslag (1999:1078) 7 kap. 2 §",
			Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P7Y"), Anchor: anchor, YearEnd: june}}}
	}
	purge := Rule{ID: "purge", Category: "user", Action: erase, Basis: "at once",
		Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P0D")}}}
	facts := Facts{Collected: day(2025, 3, 15)}

	v := Evaluate([]Rule{purge, minimum(period.EndOfCalendarYearOfFinancialYearEnd)}, "user.financial.invoice", "sven", facts, nil, day(2026, 1, 1))
	why := strings.Join(v.Explanation, " ")
	if !v.Due || !v.PurgeAt.Equal(day(2033, 1, 1)) || !v.KeptUntil.Equal(day(2033, 1, 1)) ||
		!strings.Contains(why, "financial year ending 2025-06-30") || !strings.Contains(why, "end of calendar year 2025") {
		t.Fatalf("verdict %+v, want kept through 31 December 2032 and explained", v)
	}

	v = Evaluate([]Rule{purge, minimum(period.Anchor(99))}, "user.financial.invoice", "sven", facts, nil, day(2040, 1, 1))
	if v.Due || v.MinimumRuleID != "bfl" || !strings.Contains(strings.Join(v.Explanation, " "), "unknown anchor") {
		t.Fatalf("an unknown anchor let the data go: %+v", v)
	}
	if errs := ValidateRule(minimum(period.Anchor(99))); len(errs) != 1 || errs[0].Field != "rule.triggers[0].anchor" {
		t.Fatalf("ValidateRule of an unknown anchor = %v", errs)
	}
}

// Kirjanpitolaki (1336/1997) 2 luku 10 §: what minimum rules keep of a
// subject's items, with dates, and without one where the fact is unknown.
func TestObligationsKirjanpitolaki2Luku10(t *testing.T) {
	vouchers := Rule{ID: "vouchers", Category: "user.financial", Minimum: true, Basis: "tositteet",
		Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P6Y"), Anchor: period.EndOfCalendarYearOfFinancialYearEnd}}}
	books := Rule{ID: "books", Category: "user.financial.ledger", Minimum: true, Basis: "kirjanpitokirjat",
		Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P10Y"), Anchor: period.EndOfFinancialYear}}}
	purge := Rule{ID: "purge", Category: "user", Action: erase, Basis: "x", Triggers: []Trigger{{Kind: SinceCollection}}}
	items := []Item{
		{Category: "user.financial.invoice", Facts: Facts{Collected: day(2024, 3, 15)}},
		{Category: "user.financial.ledger", Facts: Facts{Collected: day(2024, 3, 15)}},
		{Category: "user.financial.billing"}, // nothing known
		{Category: "user.contact", Facts: Facts{Collected: day(2024, 3, 15)}},
	}
	var got []string
	for _, o := range Obligations([]Rule{purge, vouchers, books}, items, day(2026, 1, 1)) {
		got = append(got, o.Rule.ID+" "+o.Category+" "+date(o.Until))
	}
	want := []string{
		"vouchers user.financial.invoice 2031-01-01",
		"vouchers user.financial.ledger 2031-01-01",
		"vouchers user.financial.billing 0001-01-01",
		"books user.financial.ledger 2035-01-01",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("obligations:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if obs := Obligations([]Rule{vouchers}, items[:1], day(2031, 1, 1)); len(obs) != 0 {
		t.Fatalf("an obligation that ran out is listed: %v", obs)
	}
}
