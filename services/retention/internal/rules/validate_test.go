package rules

import (
	"slices"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/platform/period"
)

func TestValidateRule(t *testing.T) {
	valid := Rule{
		ID: "billing-7y", Category: "user.financial", Minimum: true,
		Basis:    "Swedish Accounting Act (1999:1078) ch. 7 § 2",
		Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P7Y")}},
	}
	purge := Rule{
		ID: "community", Category: "user.community", Action: erase, Basis: "3 years without logging on",
		Triggers: []Trigger{
			{Kind: SinceLastActivity, Period: iso(t, "P3Y")},
			{Kind: SinceEvent, Name: "membership_revoked"},
			{Kind: SinceConsentWithdrawal},
			{Kind: SinceConsentWithdrawal, Name: "marketing.newsletter", Period: iso(t, "PT12H")},
		},
	}
	with := func(r Rule, change func(*Rule)) Rule {
		r.Triggers = slices.Clone(r.Triggers)
		change(&r)
		return r
	}
	cases := []struct {
		name   string
		rule   Rule
		fields []string
	}{
		{"valid minimum", valid, nil},
		{"valid purge with several triggers", purge, nil},
		{"anonymise", with(purge, func(r *Rule) { r.Action = anonymise }), nil},
		{"no id", with(valid, func(r *Rule) { r.ID = "" }), []string{"rule.rule_id"}},
		{"id with spaces", with(valid, func(r *Rule) { r.ID = "billing 7y" }), []string{"rule.rule_id"}},
		{"no category", with(valid, func(r *Rule) { r.Category = "" }), []string{"rule.category.id"}},
		{"malformed category", with(valid, func(r *Rule) { r.Category = "user..financial" }), []string{"rule.category.id"}},
		{"upper-case category", with(valid, func(r *Rule) { r.Category = "User.Financial" }), []string{"rule.category.id"}},
		{"no basis", with(valid, func(r *Rule) { r.Basis = "" }), []string{"rule.basis"}},
		{"no triggers", with(valid, func(r *Rule) { r.Triggers = nil }), []string{"rule.triggers"}},
		{"minimum with two triggers", with(valid, func(r *Rule) {
			r.Triggers = append(r.Triggers, Trigger{Kind: SinceRelationshipEnded, Name: "contract", Period: iso(t, "P7Y")})
		}), []string{"rule.triggers"}},
		{"unknown kind", with(valid, func(r *Rule) { r.Triggers[0].Kind = 0 }), []string{"rule.triggers[0].kind"}},
		{"relationship without name", with(valid, func(r *Rule) { r.Triggers[0].Kind = SinceRelationshipEnded }), []string{"rule.triggers[0].name"}},
		{"event without name", with(purge, func(r *Rule) { r.Triggers[1].Name = "" }), []string{"rule.triggers[1].name"}},
		{"malformed event name", with(purge, func(r *Rule) { r.Triggers[1].Name = "Membership Revoked" }), []string{"rule.triggers[1].name"}},
		{"name on a kind that names nothing", with(valid, func(r *Rule) { r.Triggers[0].Name = "contract" }), []string{"rule.triggers[0].name"}},
		{"negative period", with(valid, func(r *Rule) { r.Triggers[0].Period = period.Period{Years: -7} }), []string{"rule.triggers[0].period"}},
		{"period beyond the limits", with(valid, func(r *Rule) { r.Triggers[0].Period = period.Period{Years: 101} }), []string{"rule.triggers[0].period"}},
		{"sub-second period", with(valid, func(r *Rule) { r.Triggers[0].Period = period.Period{Time: time.Millisecond} }), []string{"rule.triggers[0].period"}},
		{"duplicate trigger", with(purge, func(r *Rule) { r.Triggers = append(r.Triggers, r.Triggers[0]) }), []string{"rule.triggers[4]"}},
		{"purge rule without action", with(purge, func(r *Rule) { r.Action = 0 }), []string{"rule.action"}},
		{"unknown action", with(purge, func(r *Rule) { r.Action = 7 }), []string{"rule.action"}},
		{"minimum rule with an action", with(valid, func(r *Rule) { r.Action = erase }), []string{"rule.action"}},
		{"several problems, all reported", Rule{Triggers: []Trigger{{}}}, []string{
			"rule.rule_id", "rule.category.id", "rule.basis", "rule.triggers[0].kind", "rule.action",
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			errs := ValidateRule(c.rule)
			var fields []string
			for _, e := range errs {
				fields = append(fields, e.Field)
				if e.Description == "" {
					t.Errorf("%s: no description", e.Field)
				}
			}
			if !slices.Equal(fields, c.fields) {
				t.Errorf("fields %q, want %q (%v)", fields, c.fields, errs)
			}
		})
	}
}

func TestValidateHold(t *testing.T) {
	valid := Hold{ID: "tax-audit", Reason: "audit", Subject: "cust-42", Category: "user.financial", Start: day(2026, 1, 1), End: day(2027, 1, 1)}
	with := func(change func(*Hold)) Hold { h := valid; change(&h); return h }
	cases := []struct {
		name   string
		hold   Hold
		fields []string
	}{
		{"valid", valid, nil},
		{"tenant-wide until released", Hold{ID: "litigation", Reason: "pending litigation"}, nil},
		{"end before start", with(func(h *Hold) { h.End = day(2025, 12, 31) }), []string{"hold.end_time"}},
		{"end equal to start holds nothing", with(func(h *Hold) { h.End = h.Start }), []string{"hold.end_time"}},
		{"no id", with(func(h *Hold) { h.ID = "" }), []string{"hold.hold_id"}},
		{"no reason", with(func(h *Hold) { h.Reason = "" }), []string{"hold.reason"}},
		{"malformed category", with(func(h *Hold) { h.Category = "user." }), []string{"hold.category.id"}},
		{"invalid subject", with(func(h *Hold) { h.Subject = "\xff" }), []string{"hold.subject_id"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var fields []string
			for _, e := range ValidateHold(c.hold) {
				fields = append(fields, e.Field)
			}
			if !slices.Equal(fields, c.fields) {
				t.Errorf("fields %q, want %q", fields, c.fields)
			}
		})
	}
	if got := (FieldError{Field: "hold.end", Description: "must be after hold.start"}).Error(); got != "hold.end: must be after hold.start" {
		t.Errorf("Error() = %q", got)
	}
}
