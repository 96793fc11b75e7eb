package rules

import (
	"slices"
	"strings"
	"testing"
	"time"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

const (
	erase     = eventsv1.ErasureAction_ERASURE_ACTION_ERASE
	anonymise = eventsv1.ErasureAction_ERASURE_ACTION_ANONYMISE
)

// day is midnight UTC of a date, where retention dates fall.
func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// iso parses an ISO 8601 period with the platform's parser, as a rule
// arriving over the API would be.
func iso(t testing.TB, s string) period.Period {
	t.Helper()
	p, err := period.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// evalCase is one Evaluate call and what the verdict must say. want is
// compared without its Explanation; explains lists phrases the
// explanation must contain.
type evalCase struct {
	name     string
	rules    []Rule
	category string
	subject  string
	facts    Facts
	holds    []Hold
	now      time.Time
	want     Verdict
	explains []string
}

// run checks each case, and for every case that the seed configuration is
// valid, that the verdict is explained, and that it does not depend on
// the order of rules and holds or on being asked twice.
func run(t *testing.T, cases []evalCase) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			for _, r := range c.rules {
				if errs := ValidateRule(r); errs != nil {
					t.Fatalf("seed rule %s is invalid: %v", r.ID, errs)
				}
			}
			for _, h := range c.holds {
				if errs := ValidateHold(h); errs != nil {
					t.Fatalf("seed hold %s is invalid: %v", h.ID, errs)
				}
			}
			subject := c.subject
			if subject == "" {
				subject = "subject-1"
			}
			got := Evaluate(c.rules, c.category, subject, c.facts, c.holds, c.now)
			explanation := strings.Join(got.Explanation, "\n")
			if len(got.Explanation) == 0 {
				t.Error("empty explanation")
			}
			if decision(got) != decision(c.want) {
				t.Errorf("verdict\n got %+v\nwant %+v\nexplanation:\n%s", decision(got), decision(c.want), explanation)
			}
			for _, phrase := range c.explains {
				if !strings.Contains(explanation, phrase) {
					t.Errorf("explanation lacks %q:\n%s", phrase, explanation)
				}
			}
			again := Evaluate(c.rules, c.category, subject, c.facts, c.holds, c.now)
			if decision(again) != decision(got) || !slices.Equal(again.Explanation, got.Explanation) {
				t.Error("a second evaluation of the same inputs differs")
			}
			reversed := Evaluate(reverse(c.rules), c.category, subject, c.facts, reverse(c.holds), c.now)
			if decision(reversed) != decision(got) {
				t.Errorf("listing rules and holds in reverse changes the verdict to %+v", decision(reversed))
			}
		})
	}
}

// verdictDecision is a Verdict without its explanation, comparable with ==.
type verdictDecision struct {
	Due                           bool
	PurgeAt, KeptUntil            time.Time
	Action                        eventsv1.ErasureAction
	RuleID, MinimumRuleID, HeldBy string
}

func decision(v Verdict) verdictDecision {
	return verdictDecision{v.Due, v.PurgeAt, v.KeptUntil, v.Action, v.RuleID, v.MinimumRuleID, v.HeldBy}
}

func reverse[T any](s []T) []T {
	r := slices.Clone(s)
	slices.Reverse(r)
	return r
}

// TestClickLearn enforces ClickLearn's four retention rules, each with a
// different trigger.
func TestClickLearn(t *testing.T) {
	usage := Rule{
		ID: "usage-data", Category: "user.usage", Action: erase,
		Basis:    "1 year without using the application",
		Triggers: []Trigger{{Kind: SinceLastActivity, Period: iso(t, "P1Y")}},
	}
	licence := Rule{
		ID: "licence", Category: "user.licence", Action: erase,
		Basis:    "5 years after maintenance ends",
		Triggers: []Trigger{{Kind: SinceRelationshipEnded, Name: "maintenance", Period: iso(t, "P5Y")}},
	}
	community := Rule{
		ID: "community", Category: "user.community", Action: erase,
		Basis: "3 years without logging on, 3 years after suspension without re-activation, or at once on revocation",
		Triggers: []Trigger{
			{Kind: SinceLastActivity, Period: iso(t, "P3Y")},
			{Kind: SinceSuspension, Period: iso(t, "P3Y")},
			{Kind: SinceEvent, Name: "membership_revoked", Period: iso(t, "P0D")},
		},
	}
	newsletter := Rule{
		ID: "newsletter", Category: "user.newsletter", Action: erase,
		Basis:    "newsletter sign-up, on consent (Art. 6(1)(a)) until withdrawn",
		Triggers: []Trigger{{Kind: SinceConsentWithdrawal, Name: "newsletter", Period: iso(t, "P0D")}},
	}
	// "Unless another basis remains": the same address serves a customer's
	// contract, so it stays while the contract runs.
	customer := Rule{
		ID: "customer-contact", Category: "user.newsletter", Minimum: true,
		Basis:    "also needed to perform the customer's contract (Art. 6(1)(b))",
		Triggers: []Trigger{{Kind: SinceRelationshipEnded, Name: "contract", Period: iso(t, "P0D")}},
	}
	all := []Rule{usage, licence, community, newsletter, customer}
	now := day(2025, 6, 1)

	run(t, []evalCase{
		{
			name: "usage data: never used, a year after collection", rules: all, category: "user.usage",
			facts: Facts{Collected: day(2025, 1, 1)}, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2026, 1, 1), Action: erase, RuleID: "usage-data"},
			explains: []string{"no activity since collection on 2025-01-01 plus P1Y, so due 2026-01-01", "Due: erase on 2026-01-01."},
		},
		{
			name: "usage data: activity at month 11 moves the purge to a year after it", rules: all, category: "user.usage",
			facts: Facts{Collected: day(2025, 1, 1), LastActivity: day(2025, 12, 1)}, now: day(2025, 12, 1),
			want:     Verdict{Due: true, PurgeAt: day(2026, 12, 1), Action: erase, RuleID: "usage-data"},
			explains: []string{"usage-data: 1 year without using the application — last activity 2025-12-01 plus P1Y, so due 2026-12-01."},
		},
		{
			name: "licence: kept while maintenance runs", rules: all, category: "user.licence",
			facts: Facts{Collected: day(2019, 3, 1)}, now: now,
			want:     Verdict{},
			explains: []string{`relationship "maintenance" has not ended`, "No purge rule covering category user.licence has fired"},
		},
		{
			name: "licence: maintenance ending starts the 5-year clock", rules: all, category: "user.licence",
			facts: Facts{Collected: day(2019, 3, 1), RelationshipEnded: map[string]time.Time{"maintenance": day(2026, 6, 30)}}, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2031, 6, 30), Action: erase, RuleID: "licence"},
			explains: []string{`relationship "maintenance" ended 2026-06-30 plus P5Y, so due 2031-06-30`},
		},
		{
			name: "community: 3 years without logging on", rules: all, category: "user.community",
			facts: Facts{Collected: day(2020, 1, 1), LastActivity: day(2024, 1, 1)}, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2027, 1, 1), Action: erase, RuleID: "community"},
			explains: []string{"not suspended", `event "membership_revoked" has not happened`, "whichever comes first: 2027-01-01"},
		},
		{
			// A suspended member may still log on to read; the suspension
			// clock is the first to run out.
			name: "community: 3 years after suspension without re-activation", rules: all, category: "user.community",
			facts: Facts{Collected: day(2020, 1, 1), LastActivity: day(2024, 9, 1), Suspended: day(2024, 6, 1)}, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2027, 6, 1), Action: erase, RuleID: "community"},
			explains: []string{"suspended 2024-06-01 without re-activation plus P3Y, so due 2027-06-01", "whichever comes first: 2027-06-01"},
		},
		{
			name: "community: re-activation cancels the suspension clock", rules: all, category: "user.community",
			facts: Facts{Collected: day(2020, 1, 1), LastActivity: day(2024, 9, 1), Suspended: day(2024, 6, 1), Reactivated: day(2024, 8, 1)}, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2027, 9, 1), Action: erase, RuleID: "community"},
			explains: []string{"suspended 2024-06-01 but re-activated 2024-08-01, which cancels the suspension clock"},
		},
		{
			name: "community: revocation purges at once", rules: all, category: "user.community",
			facts:    Facts{Collected: day(2020, 1, 1), LastActivity: day(2025, 1, 10), Events: map[string]time.Time{"membership_revoked": day(2025, 2, 1)}},
			now:      day(2025, 2, 1),
			want:     Verdict{Due: true, PurgeAt: day(2025, 2, 1), Action: erase, RuleID: "community"},
			explains: []string{`event "membership_revoked" on 2025-02-01 plus P0D, so due 2025-02-01`, "already reached on 2025-02-01, so at the next sweep"},
		},
		{
			name: "newsletter: kept while consent stands", rules: []Rule{newsletter}, category: "user.newsletter",
			facts: Facts{Collected: day(2024, 1, 1)}, now: now,
			want:     Verdict{},
			explains: []string{`consent to "newsletter" not withdrawn`},
		},
		{
			name: "newsletter: purged at once on withdrawal", rules: []Rule{newsletter}, category: "user.newsletter",
			facts: Facts{Collected: day(2024, 1, 1), ConsentWithdrawn: map[string]time.Time{"newsletter": day(2025, 3, 1)}}, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2025, 3, 1), Action: erase, RuleID: "newsletter"},
			explains: []string{`consent to "newsletter" withdrawn 2025-03-01`},
		},
		{
			name: "newsletter: another basis keeps it after withdrawal", rules: all, category: "user.newsletter",
			facts: Facts{Collected: day(2024, 1, 1), ConsentWithdrawn: map[string]time.Time{"newsletter": day(2025, 3, 1)}}, now: now,
			want:     Verdict{Action: erase, RuleID: "newsletter", MinimumRuleID: "customer-contact"},
			explains: []string{`relationship "contract" has not ended, so kept for as long as that lasts`, "Not due: minimum rule customer-contact"},
		},
		{
			name: "newsletter: purged when the other basis ends", rules: all, category: "user.newsletter",
			facts: Facts{
				Collected:         day(2024, 1, 1),
				ConsentWithdrawn:  map[string]time.Time{"newsletter": day(2025, 3, 1)},
				RelationshipEnded: map[string]time.Time{"contract": day(2025, 5, 1)},
			},
			now:  now,
			want: Verdict{Due: true, PurgeAt: day(2025, 5, 1), Action: erase, RuleID: "newsletter", KeptUntil: day(2025, 5, 1), MinimumRuleID: "customer-contact"},
		},
		{
			name: "withdrawal of another purpose does not fire a named one", rules: []Rule{newsletter}, category: "user.newsletter",
			facts: Facts{ConsentWithdrawn: map[string]time.Time{"webinars": day(2025, 3, 1)}}, now: now,
			want: Verdict{},
		},
	})
}

// TestCleura keeps billing data for the years Swedish accounting law
// requires, and honours legal holds.
func TestCleura(t *testing.T) {
	// The minimum runs from collection, each invoice on its own clock: the
	// Act's duty attaches to each accounting record, and a final invoice
	// issued after the contract ended must still be kept its full term,
	// which a clock from the contract's end would cut short. (The Act
	// counts to the end of the seventh year after the financial year
	// closes; a tenant matches that exactly with a "financial_year_closed"
	// event, or over-approximates with P8Y. P7Y is the seed's figure.)
	billing := Rule{
		ID: "billing-7y", Category: "user.financial", Minimum: true,
		Basis:    "Swedish Accounting Act (1999:1078) ch. 7 § 2",
		Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P7Y")}},
	}
	customer := Rule{
		ID: "customer-data", Category: "user", Action: erase,
		Basis:    "customer data erased 1 year after the contract ends",
		Triggers: []Trigger{{Kind: SinceRelationshipEnded, Name: "contract", Period: iso(t, "P1Y")}},
	}
	rules := []Rule{billing, customer}
	facts := Facts{Collected: day(2024, 3, 15), RelationshipEnded: map[string]time.Time{"contract": day(2025, 1, 31)}}
	now := day(2026, 2, 1)
	kept := Verdict{Due: true, PurgeAt: day(2031, 3, 15), Action: erase, RuleID: "customer-data", KeptUntil: day(2031, 3, 15), MinimumRuleID: "billing-7y"}
	held := func(h Verdict, id string, at time.Time) Verdict {
		h.HeldBy = id
		if at.IsZero() {
			h.Due, h.PurgeAt = false, time.Time{}
		} else {
			h.PurgeAt = at
		}
		return h
	}
	audit := Hold{ID: "tax-audit", Reason: "Skatteverket audit of 2024", Subject: "cust-42", Category: "user.financial", Start: day(2030, 6, 1), End: day(2032, 1, 1)}
	open := audit
	open.End = time.Time{}

	run(t, []evalCase{
		{
			name: "billing under a 7-year minimum is not purged by a shorter rule", rules: rules,
			category: "user.financial.invoice", subject: "cust-42", facts: facts, now: now,
			want: kept,
			explains: []string{
				"billing-7y: Swedish Accounting Act (1999:1078) ch. 7 § 2 — minimum retention: collected 2024-03-15 plus P7Y, so kept at least until 2031-03-15.",
				"Minimum rule billing-7y keeps the data until 2031-03-15, after the purge limit 2026-01-31: the purge waits until 2031-03-15.",
			},
		},
		{
			name: "data outside the billing category goes at the shorter rule", rules: rules,
			category: "user.contact", subject: "cust-42", facts: facts, now: now,
			want:     Verdict{Due: true, PurgeAt: day(2026, 1, 31), Action: erase, RuleID: "customer-data"},
			explains: []string{"No minimum-retention rule applies.", "already reached on 2026-02-01"},
		},
		{
			name: "a hold with an end moves the purge to its end", rules: rules,
			category: "user.financial.invoice", subject: "cust-42", facts: facts, holds: []Hold{audit}, now: now,
			want:     held(kept, "tax-audit", day(2032, 1, 1)),
			explains: []string{"Hold tax-audit (Skatteverket audit of 2024) covers the data on 2031-03-15 until 2032-01-01: the purge moves to 2032-01-01."},
		},
		{
			name: "a hold without an end blocks a due purge", rules: rules,
			category: "user.financial.invoice", subject: "cust-42", facts: facts, holds: []Hold{open}, now: now,
			want:     held(kept, "tax-audit", time.Time{}),
			explains: []string{"Not due: hold tax-audit", "held until the hold is released"},
		},
		{
			name: "a released hold: due at the original date", rules: rules,
			category: "user.financial.invoice", subject: "cust-42", facts: facts, holds: nil, now: now,
			want: kept,
		},
		{
			name: "a hold on another subject does not apply", rules: rules,
			category: "user.financial.invoice", subject: "cust-7", facts: facts, holds: []Hold{open}, now: now,
			want:     kept,
			explains: []string{"No legal hold covers the data on 2031-03-15."},
		},
		{
			name: "a tenant-wide hold applies to everything", rules: rules,
			category: "user.financial.invoice", subject: "cust-7", facts: facts, now: now,
			holds: []Hold{{ID: "litigation", Reason: "pending litigation", Start: day(2026, 1, 1)}},
			want:  held(kept, "litigation", time.Time{}),
		},
		{
			name: "a hold that ended before the purge date does not apply", rules: rules,
			category: "user.financial.invoice", subject: "cust-42", facts: facts, now: now,
			holds: []Hold{{ID: "old", Reason: "closed claim", Subject: "cust-42", Start: day(2025, 1, 1), End: day(2026, 1, 1)}},
			want:  kept,
		},
		{
			// The purge date has passed but the sweep has not run: a hold
			// placed since must still stop it.
			name: "a hold placed after an overdue date blocks it", rules: rules,
			category: "user.contact", subject: "cust-42", facts: facts, now: now,
			holds: []Hold{{ID: "claim", Reason: "customer claim", Subject: "cust-42", Start: day(2026, 1, 15)}},
			want:  Verdict{Action: erase, RuleID: "customer-data", HeldBy: "claim"},
		},
		{
			name: "overlapping holds: the purge waits for the last", rules: rules,
			category: "user.financial.invoice", subject: "cust-42", facts: facts, now: now,
			holds: []Hold{
				audit,
				{ID: "appeal", Reason: "appeal of the audit", Category: "user.financial.invoice", Start: day(2031, 12, 1), End: day(2033, 1, 1)},
				{ID: "later", Reason: "starts after the appeal ends", Start: day(2033, 1, 2)},
			},
			want:     held(kept, "appeal", day(2033, 1, 1)),
			explains: []string{"the purge moves to 2032-01-01", "Hold appeal (appeal of the audit) covers the data on 2032-01-01 until 2033-01-01"},
		},
		{
			// Purging the broader item would purge the held invoices with it.
			name: "a hold on a narrower category protects the broader item", rules: rules,
			category: "user.financial", subject: "cust-42", facts: facts, now: now,
			holds: []Hold{{ID: "invoice-dispute", Reason: "disputed invoice", Category: "user.financial.invoice"}},
			want:  held(kept, "invoice-dispute", time.Time{}),
		},
		{
			name: "only a minimum rule: it never purges by itself", rules: []Rule{billing},
			category: "user.financial", facts: facts, now: now,
			want:     Verdict{},
			explains: []string{"Only minimum-retention rules cover category user.financial"},
		},
	})
}

// TestClevenio keeps data as long as needed or until the subject asks for
// deletion, whichever comes first: two triggers on one rule.
func TestClevenio(t *testing.T) {
	prospect := Rule{
		ID: "prospect", Category: "prospect.contact", Action: erase,
		Basis: "as long as needed (2 years without engagement) or until the subject asks for deletion, whichever comes first",
		Triggers: []Trigger{
			{Kind: SinceLastActivity, Period: iso(t, "P2Y")},
			{Kind: SinceEvent, Name: "deletion_requested", Period: iso(t, "P0D")},
		},
	}
	rules := []Rule{prospect}
	run(t, []evalCase{
		{
			name: "no request: as long as needed", rules: rules, category: "prospect.contact",
			facts: Facts{Collected: day(2024, 1, 1), LastActivity: day(2025, 1, 1)}, now: day(2025, 6, 1),
			want: Verdict{Due: true, PurgeAt: day(2027, 1, 1), Action: erase, RuleID: "prospect"},
		},
		{
			name: "a request comes first", rules: rules, category: "prospect.contact",
			facts:    Facts{Collected: day(2024, 1, 1), LastActivity: day(2025, 1, 1), Events: map[string]time.Time{"deletion_requested": day(2025, 6, 1)}},
			now:      day(2025, 6, 1),
			want:     Verdict{Due: true, PurgeAt: day(2025, 6, 1), Action: erase, RuleID: "prospect"},
			explains: []string{"whichever comes first: 2025-06-01"},
		},
		{
			name: "no longer needed before the request", rules: rules, category: "prospect.contact",
			facts: Facts{Collected: day(2021, 1, 1), LastActivity: day(2022, 1, 1), Events: map[string]time.Time{"deletion_requested": day(2025, 6, 1)}},
			now:   day(2025, 6, 1),
			want:  Verdict{Due: true, PurgeAt: day(2024, 1, 1), Action: erase, RuleID: "prospect"},
		},
	})
}

// TestClevio erases or anonymises data no longer needed: the action is
// the winning rule's.
func TestClevio(t *testing.T) {
	stats := Rule{
		ID: "learning-stats", Category: "user.course.progress", Action: anonymise,
		Basis:    "course statistics anonymised 2 years after last use",
		Triggers: []Trigger{{Kind: SinceLastActivity, Period: iso(t, "P2Y")}},
	}
	account := Rule{
		ID: "account-deleted", Category: "user.course", Action: erase,
		Basis:    "courses deleted with the account",
		Triggers: []Trigger{{Kind: SinceEvent, Name: "account_deleted", Period: iso(t, "P0D")}},
	}
	twin := stats
	twin.ID, twin.Action, twin.Basis = "z-stats-erase", erase, "same date, stricter action"
	facts := Facts{Collected: day(2023, 1, 1), LastActivity: day(2024, 2, 29)}
	run(t, []evalCase{
		{
			// 29 February plus 2 years ends on the last day of February.
			name: "anonymise carried", rules: []Rule{stats, account}, category: "user.course.progress", facts: facts, now: day(2025, 1, 1),
			want:     Verdict{Due: true, PurgeAt: day(2026, 2, 28), Action: anonymise, RuleID: "learning-stats"},
			explains: []string{"Due: anonymise on 2026-02-28."},
		},
		{
			name: "account deletion erases before anonymisation would", rules: []Rule{stats, account}, category: "user.course.progress",
			facts: Facts{Collected: facts.Collected, LastActivity: facts.LastActivity, Events: map[string]time.Time{"account_deleted": day(2025, 1, 1)}},
			now:   day(2025, 1, 1),
			want:  Verdict{Due: true, PurgeAt: day(2025, 1, 1), Action: erase, RuleID: "account-deleted"},
		},
		{
			name: "a tie prefers erasure over anonymisation", rules: []Rule{stats, twin}, category: "user.course.progress", facts: facts, now: day(2025, 1, 1),
			want:     Verdict{Due: true, PurgeAt: day(2026, 2, 28), Action: erase, RuleID: "z-stats-erase"},
			explains: []string{"learning-stats set the same date; z-stats-erase wins, as erasure is preferred to anonymisation"},
		},
	})
}

// TestCategoryHierarchy: a rule covers its category and those under it, by
// whole segments.
func TestCategoryHierarchy(t *testing.T) {
	rule := Rule{
		ID: "financial", Category: "user.financial", Action: erase, Basis: "financial data 1 year after collection",
		Triggers: []Trigger{{Kind: SinceCollection, Period: iso(t, "P1Y")}},
	}
	facts := Facts{Collected: day(2025, 1, 1)}
	due := Verdict{Due: true, PurgeAt: day(2026, 1, 1), Action: erase, RuleID: "financial"}
	run(t, []evalCase{
		{name: "itself", rules: []Rule{rule}, category: "user.financial", facts: facts, want: due},
		{name: "a category under it", rules: []Rule{rule}, category: "user.financial.invoice", facts: facts, want: due},
		{name: "two levels under it", rules: []Rule{rule}, category: "user.financial.invoice.line", facts: facts, want: due},
		{
			name: "not a sibling sharing its prefix", rules: []Rule{rule}, category: "user.financials", facts: facts,
			want: Verdict{}, explains: []string{"No retention rule covers category user.financials"},
		},
		{name: "not its parent", rules: []Rule{rule}, category: "user", facts: facts, want: Verdict{}},
	})

	for _, c := range []struct {
		scope, category string
		want            bool
	}{
		{"user.financial", "user.financial", true},
		{"user.financial", "user.financial.invoice", true},
		{"user", "user.financial.invoice", true},
		{"user.financial", "user.financials", false},
		{"user.financial", "user", false},
		{"user.financial", "user.financia", false},
		{"user.financial.invoice", "user.financial", false},
	} {
		if got := contract.CategoryCovers(c.scope, c.category); got != c.want {
			t.Errorf("contract.CategoryCovers(%q, %q) = %v, want %v", c.scope, c.category, got, c.want)
		}
	}
}

// TestEvaluateTolerance: rules that would fail validation still give a
// verdict, and never one that cuts a minimum short.
func TestEvaluateTolerance(t *testing.T) {
	purge := Rule{ID: "p", Category: "c", Action: erase, Basis: "b", Triggers: []Trigger{{Kind: SinceCollection}}}
	facts := Facts{Collected: day(2025, 1, 1), Events: map[string]time.Time{"e": day(2026, 1, 1)}}
	cases := []struct {
		name  string
		rules []Rule
		want  verdictDecision
	}{
		{"unknown trigger kind never fires", []Rule{{ID: "x", Category: "c", Action: erase, Triggers: []Trigger{{Kind: 99}}}}, verdictDecision{}},
		{"rule without triggers is ignored", []Rule{purge, {ID: "m", Category: "c", Minimum: true}}, decision(Verdict{Due: true, PurgeAt: day(2025, 1, 1), Action: erase, RuleID: "p"})},
		{
			"minimum with two triggers keeps until the later", []Rule{purge, {ID: "m", Category: "c", Minimum: true, Triggers: []Trigger{{Kind: SinceCollection}, {Kind: SinceEvent, Name: "e"}}}},
			decision(Verdict{Due: true, PurgeAt: day(2026, 1, 1), Action: erase, RuleID: "p", KeptUntil: day(2026, 1, 1), MinimumRuleID: "m"}),
		},
		{
			"minimum with an unfired trigger keeps indefinitely", []Rule{purge, {ID: "m", Category: "c", Minimum: true, Triggers: []Trigger{{Kind: SinceCollection}, {Kind: SinceEvent, Name: "never"}}}},
			decision(Verdict{Action: erase, RuleID: "p", MinimumRuleID: "m"}),
		},
	}
	for _, c := range cases {
		v := Evaluate(c.rules, "c", "s", facts, nil, day(2025, 1, 1))
		if decision(v) != c.want {
			t.Errorf("%s: got %+v, want %+v", c.name, decision(v), c.want)
		}
		if len(v.Explanation) == 0 {
			t.Errorf("%s: empty explanation", c.name)
		}
	}
}

// TestExplanationDates: an instant reads the same whatever its location.
func TestExplanationDates(t *testing.T) {
	stockholm := time.FixedZone("CET", 3600)
	for _, c := range []struct {
		in   time.Time
		want string
	}{
		{day(2027, 3, 1), "2027-03-01"},
		{time.Date(2027, 3, 1, 1, 0, 0, 0, stockholm), "2027-03-01"},
		{time.Date(2027, 3, 1, 12, 30, 0, 0, time.UTC), "2027-03-01T12:30:00Z"},
	} {
		if got := date(c.in); got != c.want {
			t.Errorf("date(%v) = %q, want %q", c.in, got, c.want)
		}
	}
}
