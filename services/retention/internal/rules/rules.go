// Package rules decides when a subject's data of one category may be purged,
// and says why, one sentence per step.
//
// It is a pure function of its inputs: no storage, no clock of its own, no
// goroutines. The retention service calls Evaluate whenever a signal moves
// a subject's facts and files the verdict in its schedule; operators and the
// DSAR service read the same verdict's Explanation, so what is enforced and
// what is explained cannot drift apart.
//
// Precedence, in the order Evaluate applies it (see Evaluate for the tie
// breaks):
//
//  1. Purge limit: the earliest date set by a purge rule covering the
//     category whose trigger has fired. No fired purge trigger, no date.
//  2. Minimum retention: never before the latest date a fired minimum rule
//     keeps the data until. A minimum rule whose trigger has not fired keeps
//     the data for as long as that is so (seven years after a contract
//     ends, while the contract runs, is "not yet").
//  3. Legal holds: never while a hold covers the data. A hold with an end
//     moves the purge to that end; one without blocks it until released.
//
// A narrower rule does not override a broader one: "user" purged after a
// year also purges "user.financial.invoice" after a year. Data that must be
// kept longer is kept by a minimum rule, which is exactly what a legal
// obligation is, and which the explanation can then name.
package rules

import (
	"fmt"
	"time"

	"github.com/lethe-privacy/lethe/platform/period"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// TriggerKind says which fact about a subject starts a rule's clock.
//
// The zero value is deliberately no kind, so that a trigger whose kind was
// forgotten (or arrives from a newer client) fails validation and never
// fires, rather than silently meaning "since collection".
type TriggerKind int

const (
	// SinceCollection runs from when the data was collected.
	SinceCollection TriggerKind = iota + 1
	// SinceLastActivity runs from the subject's last activity ("1 year
	// without using the application"); each activity restarts it. A subject
	// never seen active is measured from collection, so that data of people
	// who never used the service is not kept for ever.
	SinceLastActivity
	// SinceRelationshipEnded runs from the end of the relationship named by
	// Trigger.Name ("contract", "maintenance", "membership").
	SinceRelationshipEnded
	// SinceSuspension runs from the subject's suspension; a re-activation at
	// or after the suspension cancels it.
	SinceSuspension
	// SinceConsentWithdrawal runs from the withdrawal of consent to the
	// purpose named by Trigger.Name, or, with no name, from the first
	// withdrawal of any consent.
	SinceConsentWithdrawal
	// SinceEvent runs from the named event ("membership_revoked",
	// "deletion_requested").
	SinceEvent
)

// String returns the kind's name as written in this package
// ("SinceLastActivity"), or "TriggerKind(n)" for an unknown value.
func (k TriggerKind) String() string {
	switch k {
	case SinceCollection:
		return "SinceCollection"
	case SinceLastActivity:
		return "SinceLastActivity"
	case SinceRelationshipEnded:
		return "SinceRelationshipEnded"
	case SinceSuspension:
		return "SinceSuspension"
	case SinceConsentWithdrawal:
		return "SinceConsentWithdrawal"
	case SinceEvent:
		return "SinceEvent"
	}
	return fmt.Sprintf("TriggerKind(%d)", int(k))
}

// known reports whether k is one of the kinds above.
func (k TriggerKind) known() bool { return k >= SinceCollection && k <= SinceEvent }

// Trigger starts a rule's clock: Period after the fact of Kind (and Name)
// the rule applies.
type Trigger struct {
	// Kind is the fact the clock runs from.
	Kind TriggerKind
	// Name is the relationship (SinceRelationshipEnded, required), the
	// consent purpose (SinceConsentWithdrawal, optional: empty means any)
	// or the event (SinceEvent, required); empty for the other kinds.
	Name string
	// Period is how long after the fact the rule applies; the zero period
	// ("P0D") means at once. It is added as EU law counts time limits.
	Period period.Period
	// Anchor moves the fact to the end of its year before Period is added:
	// accounting acts count from the end of the (financial or calendar)
	// year, not from the voucher's date. Zero counts from the fact.
	Anchor period.Anchor
	// YearEnd is the tenant's financial year end, which Anchor uses; the
	// zero value is the calendar year.
	YearEnd period.YearEnd
}

// Rule is one retention rule of a tenant.
type Rule struct {
	// ID names the rule in verdicts, explanations and reports.
	ID string
	// Category is the dotted data category the rule covers, with every
	// category under it: "user.financial" covers "user.financial.invoice"
	// but not "user.financials".
	Category string
	// Triggers start the rule's clock. For a purge rule, whichever fires
	// first sets the date ("until needed or until you ask"). A minimum rule
	// has exactly one.
	Triggers []Trigger
	// Action is what a purge rule does when due: erase or anonymise. It is
	// unset on a minimum rule, which never purges.
	Action eventsv1.ErasureAction
	// Minimum makes this a minimum-retention rule, for a legal obligation:
	// keep the data at least Period after the trigger. It never purges by
	// itself; it only postpones purge rules.
	Minimum bool
	// Basis is the reason or legal basis in words ("Swedish Accounting Act
	// (1999:1078) ch. 7 § 2"). It is quoted in explanations and is what the
	// subject is told when data is kept after an erasure request.
	Basis string
}

// Facts is what is known of one subject's data of one category, from
// signals. A zero time means unknown or never.
type Facts struct {
	// Collected is when the data was collected.
	Collected time.Time
	// LastActivity is the subject's latest activity.
	LastActivity time.Time
	// RelationshipEnded maps a relationship name ("contract") to when it
	// ended. A relationship that resumes is removed by the caller.
	RelationshipEnded map[string]time.Time
	// Suspended is when the subject was last suspended.
	Suspended time.Time
	// Reactivated is when the subject was last re-activated; at or after
	// Suspended, it cancels the suspension's clock.
	Reactivated time.Time
	// ConsentWithdrawn maps a purpose to when consent to it was withdrawn.
	// Consent given again is removed by the caller.
	ConsentWithdrawn map[string]time.Time
	// Events maps an event name ("membership_revoked") to when it happened.
	Events map[string]time.Time
}

// Hold is a legal hold: while it is in force, the data it covers is never
// purged, whatever the rules say.
type Hold struct {
	// ID names the hold in verdicts and explanations.
	ID string
	// Reason says why the data is held (a claim, an audit, an order).
	Reason string
	// Subject is the subject held; empty means every subject.
	Subject string
	// Category is the category held, with every category under it; empty
	// means every category. A tenant-wide hold has both empty.
	Category string
	// Start is when the hold takes effect; zero means it always has.
	Start time.Time
	// End is when the hold lapses (exclusive); zero means until released,
	// which the caller expresses by no longer passing the hold.
	End time.Time
}

// Verdict is when a subject's data of a category may be purged, and why.
type Verdict struct {
	// Due is true when a purge date is known; PurgeAt is then set.
	Due bool
	// PurgeAt is when the data may be purged: the purge limit, postponed
	// by minimum rules and holds. It may be in the past (overdue). Zero
	// when not Due.
	PurgeAt time.Time
	// Action is the winning purge rule's action. Like RuleID it is set
	// whenever a purge rule has fired, even if a minimum rule or a hold
	// keeps the data, so that reports can count what each rule holds back.
	Action eventsv1.ErasureAction
	// RuleID is the purge rule that set the purge limit.
	RuleID string
	// KeptUntil is the date the latest minimum rule keeps the data until,
	// set only when it postponed the purge limit.
	KeptUntil time.Time
	// MinimumRuleID is the minimum rule that postponed the purge to
	// KeptUntil, or that keeps the data indefinitely because its trigger
	// has not fired (Due false, KeptUntil zero).
	MinimumRuleID string
	// HeldBy is the hold that blocks the purge (Due false), or the hold
	// whose end the purge was postponed to (Due true, PurgeAt is its End).
	HeldBy string
	// Explanation says how the verdict was reached, one sentence per step,
	// naming rules, triggers, dates and holds. It is never empty.
	Explanation []string
}
