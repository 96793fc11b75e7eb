package rules

import (
	"fmt"
	"unicode/utf8"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Length limits, in bytes, as the proto will allow them.
const (
	// MaxIDLen bounds rule and hold ids, which appear in every verdict.
	MaxIDLen = 128
	// MaxCategoryLen bounds a category, as the event contract does.
	MaxCategoryLen = contract.MaxCategoryLen
	// MaxNameLen bounds a trigger's relationship, purpose or event name.
	MaxNameLen = 200
	// MaxTextLen bounds a rule's basis and a hold's reason.
	MaxTextLen = 1000
	// MaxSubjectLen bounds a hold's subject, as the events' subject_id.
	MaxSubjectLen = 256
)

// FieldError says which field of a rule or hold is wrong. Field is a path
// as in the request proto ("rule.triggers[0].period") and Description
// reads well after it, so the gRPC layer can pass both on as a BadRequest
// field violation.
type FieldError struct {
	Field       string
	Description string
}

// Error returns "field: description".
func (e FieldError) Error() string { return e.Field + ": " + e.Description }

// ValidateRule returns every problem with r, or nil if there is none. It
// checks the rule on its own; whether its category exists in the tenant's
// taxonomy is for the caller, which holds the taxonomy.
func ValidateRule(r Rule) []FieldError {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Description: fmt.Sprintf(format, args...)})
	}

	if msg := checkID(r.ID); msg != "" {
		add("rule.rule_id", "%s", msg)
	}
	if !contract.ValidCategory(r.Category) {
		add("rule.category.id", "must be a dotted category such as user.financial: lower-case letters, digits and underscores in segments joined by single dots, at most %d bytes", MaxCategoryLen)
	}
	// The basis is what the subject is told when data outlives an erasure
	// request, and what accountability (GDPR Art. 5(2)) asks the tenant to
	// show for every storage period: a rule without one is not accepted.
	if msg := checkText(r.Basis); msg != "" {
		add("rule.basis", "%s", msg)
	}

	switch {
	case len(r.Triggers) == 0:
		add("rule.triggers", "needs at least one trigger")
	case r.Minimum && len(r.Triggers) > 1:
		// "Keep at least P after X or after Y" has no single reading a
		// lawyer would accept; one obligation, one clock, one rule.
		add("rule.triggers", "a minimum-retention rule has exactly one trigger, not %d: declare one rule per obligation", len(r.Triggers))
	}
	seen := make(map[[2]string]int, len(r.Triggers))
	for i, t := range r.Triggers {
		field := fmt.Sprintf("rule.triggers[%d]", i)
		validateTrigger(field, t, add)
		key := [2]string{t.Kind.String(), t.Name}
		if j, dup := seen[key]; dup {
			add(field, "repeats rule.triggers[%d]: one clock per fact", j)
		} else {
			seen[key] = i
		}
	}

	switch {
	case r.Minimum && r.Action != eventsv1.ErasureAction_ERASURE_ACTION_UNSPECIFIED:
		add("rule.action", "must be unset on a minimum-retention rule, which never purges")
	case !r.Minimum && r.Action != eventsv1.ErasureAction_ERASURE_ACTION_ERASE && r.Action != eventsv1.ErasureAction_ERASURE_ACTION_ANONYMISE:
		add("rule.action", "must be ERASURE_ACTION_ERASE or ERASURE_ACTION_ANONYMISE")
	}
	return errs
}

// validateTrigger reports to add what is wrong with trigger t, at field,
// on its own: its kind, anchor, name and period.
func validateTrigger(field string, t Trigger, add func(field, format string, args ...any)) {
	if !t.Kind.known() {
		add(field+".kind", "must be one of SinceCollection, SinceLastActivity, SinceRelationshipEnded, SinceSuspension, SinceConsentWithdrawal, SinceEvent")
	}
	if !t.Anchor.Known() {
		add(field+".anchor", "must be unset (the fact), END_OF_FINANCIAL_YEAR or END_OF_CALENDAR_YEAR_OF_FINANCIAL_YEAR_END")
	}
	validateTriggerName(field+".name", t, add)
	// Round-tripping through the ISO 8601 text is what the rule will
	// be stored and sent as, so it also catches negative parts, parts
	// beyond the parser's limits and sub-second time.
	if back, err := period.Parse(t.Period.String()); err != nil || back != t.Period {
		add(field+".period", "must be an ISO 8601 duration with whole non-negative parts within Lethe's limits (P1Y, P18M, P30D, P0D), not %s", t.Period)
	}
}

// validateTriggerName reports to add a name that t's kind needs and
// lacks, that is malformed, or that a kind naming nothing has.
func validateTriggerName(field string, t Trigger, add func(field, format string, args ...any)) {
	switch t.Kind {
	case SinceRelationshipEnded, SinceEvent:
		if t.Name == "" {
			add(field, "is required for %s: the %s it runs from", t.Kind, map[TriggerKind]string{SinceRelationshipEnded: "relationship", SinceEvent: "event"}[t.Kind])
		} else if !contract.ValidDotted(t.Name, MaxNameLen) {
			add(field, "must be lower-case letters, digits and underscores, optionally in dotted segments, at most %d bytes", MaxNameLen)
		}
	case SinceConsentWithdrawal:
		if t.Name != "" && !contract.ValidDotted(t.Name, MaxNameLen) {
			add(field, "must be a purpose id (lower-case letters, digits and underscores, optionally in dotted segments, at most %d bytes), or empty for any purpose", MaxNameLen)
		}
	default:
		if t.Name != "" && t.Kind.known() {
			add(field, "must be empty for %s, which names nothing", t.Kind)
		}
	}
}

// ValidateHold returns every problem with h, or nil if there is none.
func ValidateHold(h Hold) []FieldError {
	var errs []FieldError
	add := func(field, format string, args ...any) {
		errs = append(errs, FieldError{Field: field, Description: fmt.Sprintf(format, args...)})
	}
	if msg := checkID(h.ID); msg != "" {
		add("hold.hold_id", "%s", msg)
	}
	// A hold suspends the subject's right to erasure (GDPR Art. 17(3)(e)):
	// the reason must be on record.
	if msg := checkText(h.Reason); msg != "" {
		add("hold.reason", "%s", msg)
	}
	if len(h.Subject) > MaxSubjectLen || !utf8.ValidString(h.Subject) {
		add("hold.subject_id", "must be valid UTF-8 of at most %d bytes, or empty for every subject", MaxSubjectLen)
	}
	if h.Category != "" && !contract.ValidCategory(h.Category) {
		add("hold.category.id", "must be a dotted category such as user.financial, or empty for every category")
	}
	if !h.End.IsZero() && !h.Start.IsZero() && !h.End.After(h.Start) {
		add("hold.end_time", "must be after hold.start_time (%s), or unset for a hold until released", date(h.Start))
	}
	return errs
}

// checkID returns why id is not a valid rule or hold id, or "". Ids are
// quoted in explanations and reports, so they are kept to characters that
// read unambiguously there.
func checkID(id string) string {
	if id == "" {
		return "is required"
	}
	if len(id) > MaxIDLen {
		return fmt.Sprintf("must be at most %d bytes", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		switch c := id[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '_', c == '.':
		default:
			return "must be letters, digits, '-', '_' and '.' only"
		}
	}
	return ""
}

// checkText returns why s is not a valid basis or reason, or "".
func checkText(s string) string {
	switch {
	case s == "":
		return "is required"
	case len(s) > MaxTextLen:
		return fmt.Sprintf("must be at most %d bytes", MaxTextLen)
	case !utf8.ValidString(s):
		return "must be valid UTF-8"
	}
	return ""
}
