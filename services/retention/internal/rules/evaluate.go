package rules

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/lethe-privacy/lethe/platform/period"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Evaluate decides when subject's data of category may be purged under
// rules, given the facts known and the holds in force, as of now.
//
// The steps are those of the package documentation: earliest fired purge
// rule, postponed to the latest fired minimum rule (an unfired minimum
// keeps the data indefinitely), then past every hold covering the data.
// Holds are checked at the later of the purge date and now: a purge date
// already past has not happened yet, so a hold placed since still stops it.
// That is all now is used for, besides wording: a fact dated after now
// (a contract ending next month) already fixes its date, so the verdict
// filed by the scheduler does not change merely because time passes.
//
// The verdict does not depend on the order of rules or holds, only the
// order of explanation sentences does. Ties are broken thus:
//   - two purge rules on the same date: erase before anonymise, because
//     data minimisation (GDPR Art. 5(1)(c)) prefers the data gone to the
//     data transformed, then the smaller rule id;
//   - two minimum rules on the same date, or several unfired ones, and
//     several holds without an end: the smaller id;
//   - holds with ends active together: the latest end, then the smaller id.
//
// Evaluate expects rules and holds that pass ValidateRule and ValidateHold,
// but never panics on others: a trigger of unknown kind never fires, a
// rule without triggers is ignored, and a minimum rule with several
// triggers keeps the data until the latest of them (indefinitely if one
// has not fired), the reading that cannot cut a legal obligation short.
func Evaluate(rules []Rule, category, subject string, f Facts, holds []Hold, now time.Time) Verdict {
	e := &evaluation{}
	for _, r := range rules {
		e.consider(r, category, f)
	}
	if !e.earliestPurge(category) {
		return e.v
	}
	at, ok := e.minimumRetention()
	if !ok {
		return e.v
	}
	at, ok = e.legalHolds(at, holds, subject, category, now)
	if !ok {
		return e.v
	}
	e.v.Due, e.v.PurgeAt = true, at
	if at.After(now) {
		e.say("Due: %s on %s.", actionName(e.v.Action), date(at))
	} else {
		e.say("Due: %s on %s, already reached on %s, so at the next sweep.", actionName(e.v.Action), date(at), date(now))
	}
	return e.v
}

// evaluation is one run of Evaluate: the verdict with its explanation so
// far, and what the rules covering the category set.
type evaluation struct {
	v                  Verdict
	purge, minimum     limit // the winners of steps 1 and 2
	hasPurge, hasMin   bool
	purgeTies          []string // rules setting the same date as purge
	open               string   // the unfired minimum rule, if any
	hasOpen            bool
	covering, minimums int
}

func (e *evaluation) say(format string, args ...any) {
	e.v.Explanation = append(e.v.Explanation, fmt.Sprintf(format, args...))
}

// consider explains rule r and keeps what it sets, if it covers category.
func (e *evaluation) consider(r Rule, category string, f Facts) {
	if !contract.CategoryCovers(r.Category, category) {
		return
	}
	e.covering++
	switch {
	case len(r.Triggers) == 0:
		e.say("%s has no trigger, so it sets no date.", ruleName(r))
	case r.Minimum:
		e.considerMinimum(r, f)
	default:
		e.considerPurge(r, f)
	}
}

// considerMinimum keeps minimum rule r if it is unfired (the smallest id
// of those) or keeps the data longest (then the smallest id).
func (e *evaluation) considerMinimum(r Rule, f Facts) {
	e.minimums++
	at, fired, sentence := minimumLimit(r, f)
	e.say("%s", sentence)
	switch {
	case !fired:
		if !e.hasOpen || r.ID < e.open {
			e.open, e.hasOpen = r.ID, true
		}
	case !e.hasMin || at.After(e.minimum.at) || at.Equal(e.minimum.at) && r.ID < e.minimum.rule:
		e.minimum, e.hasMin = limit{at: at, rule: r.ID}, true
	}
}

// considerPurge keeps purge rule r if it has fired and wins over the
// purge limit so far (limit.before), noting the rules that tie on its
// date.
func (e *evaluation) considerPurge(r Rule, f Facts) {
	at, fired, sentence := purgeLimit(r, f)
	e.say("%s", sentence)
	if !fired {
		return
	}
	c := limit{at: at, rule: r.ID, action: r.Action}
	switch {
	case !e.hasPurge || c.before(e.purge):
		if e.hasPurge && at.Equal(e.purge.at) {
			e.purgeTies = append(e.purgeTies, e.purge.rule)
		} else {
			e.purgeTies = nil
		}
		e.purge, e.hasPurge = c, true
	case at.Equal(e.purge.at):
		e.purgeTies = append(e.purgeTies, r.ID)
	}
}

// earliestPurge is step 1, the purge limit: the earliest date a fired
// purge rule sets. It reports false, with the reason explained, when no
// purge rule has fired.
func (e *evaluation) earliestPurge(category string) bool {
	switch {
	case e.covering == 0:
		e.say("No retention rule covers category %s, so no purge date is set: the data is kept until a rule covers it.", category)
		return false
	case !e.hasPurge && e.covering == e.minimums:
		e.say("Only minimum-retention rules cover category %s, and they never purge by themselves: no purge date is set.", category)
		return false
	case !e.hasPurge:
		e.say("No purge rule covering category %s has fired, so no purge date is set.", category)
		return false
	}
	e.v.RuleID, e.v.Action = e.purge.rule, e.purge.action
	e.say("Purge limit: %s on %s under %s, the earliest date set by a purge rule.", actionName(e.purge.action), date(e.purge.at), e.purge.rule)
	if len(e.purgeTies) > 0 {
		slices.Sort(e.purgeTies)
		e.say("%s set the same date; %s wins, as erasure is preferred to anonymisation (data minimisation, GDPR Art. 5(1)(c)) and then the smaller rule id.",
			strings.Join(e.purgeTies, ", "), e.purge.rule)
	}
	return true
}

// minimumRetention is step 2: the purge limit postponed to the latest
// fired minimum rule. It reports false when an unfired minimum rule keeps
// the data indefinitely.
func (e *evaluation) minimumRetention() (time.Time, bool) {
	at := e.purge.at
	switch {
	case e.hasOpen:
		e.v.MinimumRuleID = e.open
		e.say("Not due: minimum rule %s keeps the data for as long as its trigger has not fired, and for its period after.", e.open)
		return time.Time{}, false
	case e.hasMin && e.minimum.at.After(at):
		e.v.KeptUntil, e.v.MinimumRuleID = e.minimum.at, e.minimum.rule
		e.say("Minimum rule %s keeps the data until %s, after the purge limit %s: the purge waits until %s.",
			e.minimum.rule, date(e.minimum.at), date(at), date(e.minimum.at))
		return e.minimum.at, true
	case e.hasMin:
		e.say("Minimum rule %s keeps the data until %s, not after the purge limit %s, so it does not postpone the purge.",
			e.minimum.rule, date(e.minimum.at), date(at))
	default:
		e.say("No minimum-retention rule applies.")
	}
	return at, true
}

// legalHolds is step 3: the purge date at moved past every hold covering
// the data, checked where the purge would actually happen (at, or now if
// that is later). It reports false when a hold without an end keeps the
// data until it is released.
func (e *evaluation) legalHolds(at time.Time, holds []Hold, subject, category string, now time.Time) (time.Time, bool) {
	check := at
	if now.After(check) {
		check = now
	}
	blocking := activeHolds(holds, subject, category, check)
	if len(blocking) == 0 {
		e.say("No legal hold covers the data on %s.", date(check))
	}
	// Each pass moves check past at least one hold's end, so the loop
	// ends after at most len(holds) passes.
	for len(blocking) > 0 {
		h := blocking[0]
		e.v.HeldBy = h.ID
		if h.End.IsZero() {
			e.say("Not due: hold %s (%s) covers the data on %s and has no end, so it is held until the hold is released.",
				h.ID, h.Reason, date(check))
			return time.Time{}, false
		}
		e.say("Hold %s (%s) covers the data on %s until %s: the purge moves to %s.",
			h.ID, h.Reason, date(check), date(h.End), date(h.End))
		at, check = h.End, h.End
		blocking = activeHolds(holds, subject, category, check)
	}
	return at, true
}

// limit is a date a rule sets: a purge date or a minimum's keep-until.
type limit struct {
	at     time.Time
	rule   string
	action eventsv1.ErasureAction
}

// before reports whether purge limit c wins over d: earlier, then the
// stricter action, then the smaller rule id, so that the winner does not
// depend on the order rules are listed in.
func (c limit) before(d limit) bool {
	if !c.at.Equal(d.at) {
		return c.at.Before(d.at)
	}
	if rc, rd := strictness(c.action), strictness(d.action); rc != rd {
		return rc < rd
	}
	if c.action != d.action {
		return c.action < d.action
	}
	return c.rule < d.rule
}

// strictness ranks actions for ties, strictest first: erasure leaves
// nothing, anonymisation leaves data that must stay unlinkable, and an
// invalid action is ranked last so a valid rule always wins over it.
func strictness(a eventsv1.ErasureAction) int {
	switch a {
	case eventsv1.ErasureAction_ERASURE_ACTION_ERASE:
		return 0
	case eventsv1.ErasureAction_ERASURE_ACTION_ANONYMISE:
		return 1
	}
	return 2
}

// purgeLimit returns the earliest date r's fired triggers set, whether any
// fired, and the sentence explaining it.
func purgeLimit(r Rule, f Facts) (time.Time, bool, string) {
	var (
		earliest time.Time
		fired    int
		parts    = make([]string, 0, len(r.Triggers))
	)
	for _, t := range r.Triggers {
		start, fact, ok := t.start(f)
		if !ok {
			parts = append(parts, fact)
			continue
		}
		start, fact = t.anchored(start, fact)
		due := t.Period.AddTo(start)
		parts = append(parts, fmt.Sprintf("%s plus %s, so due %s", fact, t.Period, date(due)))
		if fired == 0 || due.Before(earliest) {
			earliest = due
		}
		fired++
	}
	sentence := ruleName(r) + " — " + strings.Join(parts, "; ")
	switch {
	case fired == 0 && len(r.Triggers) == 1:
		sentence += ", so this rule sets no date yet."
	case fired == 0:
		sentence += "; none has fired, so this rule sets no date yet."
	case len(r.Triggers) > 1:
		sentence += fmt.Sprintf("; whichever comes first: %s.", date(earliest))
	default:
		sentence += "."
	}
	return earliest, fired > 0, sentence
}

// minimumLimit returns the date minimum rule r keeps the data until,
// whether every trigger has fired (if one has not, the data is kept
// indefinitely), and the sentence explaining it.
func minimumLimit(r Rule, f Facts) (time.Time, bool, string) {
	var (
		latest time.Time
		fired  = true
		parts  = make([]string, 0, len(r.Triggers))
	)
	for _, t := range r.Triggers {
		start, fact, ok := t.start(f)
		if !ok {
			fired = false
			parts = append(parts, fact+fmt.Sprintf(", so kept for as long as that lasts and %s after", t.Period))
			continue
		}
		start, fact = t.anchored(start, fact)
		until := t.Period.AddTo(start)
		parts = append(parts, fmt.Sprintf("%s plus %s, so kept at least until %s", fact, t.Period, date(until)))
		if until.After(latest) {
			latest = until
		}
	}
	return latest, fired, ruleName(r) + " — minimum retention: " + strings.Join(parts, "; ") + "."
}

// anchored moves a fired trigger's start to its anchor, and says so after
// the fact's phrase. Years end at midnight in the fact's location (UTC as
// stored), so "the end of 2024" is 2025-01-01T00:00 and a period of P7Y
// from it keeps the data through 31 December 2031.
func (t Trigger) anchored(start time.Time, fact string) (time.Time, string) {
	switch t.Anchor {
	case period.EndOfFinancialYear:
		end := t.YearEnd.FinancialYearEnd(start)
		return end, fmt.Sprintf("%s, in the financial year ending %s (the tenant's year ends on %s)",
			fact, date(end.AddDate(0, 0, -1)), t.YearEnd)
	case period.EndOfCalendarYearOfFinancialYearEnd:
		fyEnd := t.YearEnd.FinancialYearEnd(start).AddDate(0, 0, -1)
		return t.YearEnd.Anchor(t.Anchor, start), fmt.Sprintf("%s, in the financial year ending %s (the tenant's year ends on %s), counted from the end of calendar year %d",
			fact, date(fyEnd), t.YearEnd, fyEnd.Year())
	}
	return start, fact
}

// start returns when t's clock started under f, a phrase stating the fact
// (or its absence) for the explanation, and whether the trigger has fired.
func (t Trigger) start(f Facts) (time.Time, string, bool) {
	if !t.Anchor.Known() {
		// Never "from the fact": that could cut a legal obligation short.
		return time.Time{}, fmt.Sprintf("a trigger with the unknown anchor %s never fires", t.Anchor), false
	}
	switch t.Kind {
	case SinceCollection:
		if f.Collected.IsZero() {
			return time.Time{}, "collection not recorded", false
		}
		return f.Collected, "collected " + date(f.Collected), true
	case SinceLastActivity:
		return f.lastActivityStart()
	case SinceRelationshipEnded:
		if at := f.RelationshipEnded[t.Name]; !at.IsZero() {
			return at, fmt.Sprintf("relationship %q ended %s", t.Name, date(at)), true
		}
		return time.Time{}, fmt.Sprintf("relationship %q has not ended", t.Name), false
	case SinceSuspension:
		return f.suspensionStart()
	case SinceConsentWithdrawal:
		return f.withdrawalStart(t.Name)
	case SinceEvent:
		if at := f.Events[t.Name]; !at.IsZero() {
			return at, fmt.Sprintf("event %q on %s", t.Name, date(at)), true
		}
		return time.Time{}, fmt.Sprintf("event %q has not happened", t.Name), false
	}
	return time.Time{}, fmt.Sprintf("trigger of unknown kind %s never fires", t.Kind), false
}

// lastActivityStart is Trigger.start for SinceLastActivity.
func (f Facts) lastActivityStart() (time.Time, string, bool) {
	switch {
	case !f.LastActivity.IsZero() && !f.LastActivity.Before(f.Collected):
		return f.LastActivity, "last activity " + date(f.LastActivity), true
	case !f.Collected.IsZero() && f.LastActivity.IsZero():
		// Never active: measured from collection, or data about people
		// who never used the service would be kept for ever.
		return f.Collected, "no activity since collection on " + date(f.Collected), true
	case !f.Collected.IsZero():
		return f.Collected, "collected " + date(f.Collected) + ", after the last activity " + date(f.LastActivity), true
	}
	return time.Time{}, "neither activity nor collection recorded", false
}

// suspensionStart is Trigger.start for SinceSuspension.
func (f Facts) suspensionStart() (time.Time, string, bool) {
	switch {
	case f.Suspended.IsZero():
		return time.Time{}, "not suspended", false
	case !f.Reactivated.IsZero() && !f.Reactivated.Before(f.Suspended):
		// A re-activation stamped with the suspension's own instant
		// can only have followed it.
		return time.Time{}, fmt.Sprintf("suspended %s but re-activated %s, which cancels the suspension clock",
			date(f.Suspended), date(f.Reactivated)), false
	}
	return f.Suspended, "suspended " + date(f.Suspended) + " without re-activation", true
}

// withdrawalStart is Trigger.start for SinceConsentWithdrawal: the
// withdrawal of consent to purpose, or the first withdrawal when purpose
// is empty (any purpose).
func (f Facts) withdrawalStart(purpose string) (time.Time, string, bool) {
	if purpose != "" {
		if at := f.ConsentWithdrawn[purpose]; !at.IsZero() {
			return at, fmt.Sprintf("consent to %q withdrawn %s", purpose, date(at)), true
		}
		return time.Time{}, fmt.Sprintf("consent to %q not withdrawn", purpose), false
	}
	// Purposes are visited in order so that a tie names the same purpose
	// every time.
	var first time.Time
	for _, p := range slices.Sorted(maps.Keys(f.ConsentWithdrawn)) {
		if at := f.ConsentWithdrawn[p]; !at.IsZero() && (first.IsZero() || at.Before(first)) {
			first, purpose = at, p
		}
	}
	if first.IsZero() {
		return time.Time{}, "no consent withdrawn", false
	}
	return first, fmt.Sprintf("consent to %q withdrawn %s", purpose, date(first)), true
}

// activeHolds returns the holds covering subject's data of category that
// are in force at t, the deciding one first: a hold without an end (the
// smallest id), else the one ending last (then the smallest id).
func activeHolds(holds []Hold, subject, category string, t time.Time) []Hold {
	var active []Hold
	for _, h := range holds {
		if h.covers(subject, category) && h.activeAt(t) {
			active = append(active, h)
		}
	}
	slices.SortFunc(active, func(a, b Hold) int {
		switch {
		case a.End.IsZero() != b.End.IsZero():
			if a.End.IsZero() {
				return -1
			}
			return 1
		case !a.End.Equal(b.End):
			return b.End.Compare(a.End)
		}
		return strings.Compare(a.ID, b.ID)
	})
	return active
}

// covers reports whether h holds subject's data of category. A hold on a
// narrower category also stops the purge of a broader item: purging
// "user.financial" would purge the held "user.financial.invoice" with it.
func (h Hold) covers(subject, category string) bool {
	if h.Subject != "" && h.Subject != subject {
		return false
	}
	return h.Category == "" || contract.CategoryCovers(h.Category, category) || contract.CategoryCovers(category, h.Category)
}

// activeAt reports whether h is in force at t: from Start (inclusive) to
// End (exclusive, so that a purge moved to End is no longer held).
func (h Hold) activeAt(t time.Time) bool {
	return (h.Start.IsZero() || !t.Before(h.Start)) && (h.End.IsZero() || t.Before(h.End))
}

// ruleName introduces a rule in a sentence: its id and basis.
func ruleName(r Rule) string {
	if r.Basis == "" {
		return r.ID
	}
	return r.ID + ": " + r.Basis
}

// actionName is an action as an operator reads it.
func actionName(a eventsv1.ErasureAction) string {
	switch a {
	case eventsv1.ErasureAction_ERASURE_ACTION_ERASE:
		return "erase"
	case eventsv1.ErasureAction_ERASURE_ACTION_ANONYMISE:
		return "anonymise"
	}
	return a.String()
}

// date formats an instant for an explanation: the date alone at midnight
// UTC (where retention dates usually fall), else RFC 3339 in UTC, so that
// the same instant always reads the same whatever its location.
func date(t time.Time) string {
	u := t.UTC()
	if u.Hour() == 0 && u.Minute() == 0 && u.Second() == 0 && u.Nanosecond() == 0 {
		return u.Format(time.DateOnly)
	}
	return u.Format(time.RFC3339Nano)
}
