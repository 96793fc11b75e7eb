package subscriber

import (
	"errors"
	"fmt"
	"slices"
	"unicode/utf8"

	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Outcome is what a handler reports it did with an event. Build one with
// the functions below; the subscriber fills in the event's ids, the system
// and the time when it reports it.
type Outcome struct {
	kind     eventsv1.OutcomeKind
	reason   string
	retained []*eventsv1.Retention
}

// Kind returns the outcome's kind.
func (o Outcome) Kind() eventsv1.OutcomeKind { return o.kind }

// Reason returns the reason given to NotApplicable or Failed.
func (o Outcome) Reason() string { return o.reason }

// Erased answers an erasure: the data in scope was deleted.
func Erased() Outcome { return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_ERASED} }

// Anonymised answers an erasure that asked for anonymisation: the data in
// scope no longer relates to an identifiable person.
func Anonymised() Outcome { return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_ANONYMISED} }

// Rectified answers a rectification: the data was corrected.
func Rectified() Outcome { return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_RECTIFIED} }

// DataSubmitted answers an access request: the data was submitted over
// gRPC to the service that owns the request.
func DataSubmitted() Outcome { return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_DATA_SUBMITTED} }

// NotFound answers a directive: the system holds no data of the subject in
// scope.
func NotFound() Outcome { return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND} }

// Retained answers an erasure that removed what it could and keeps the
// rest: what is kept, on which legal basis and Art. 17(3) ground (with the
// law cited for a legal obligation), and until when. At least one
// retention is required; the retention service schedules each kept item's
// erasure for its until-date.
func Retained(kept ...*eventsv1.Retention) Outcome {
	return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED, retained: kept}
}

// Applied answers a limit: the system now honours it.
func Applied() Outcome { return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED} }

// NotApplicable answers a limit that does not concern the system, for
// example a withdrawn purpose it does not process. The reason is logged
// with the event id; the contract has no field for it on the wire.
func NotApplicable(reason string) Outcome {
	return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE, reason: reason}
}

// Failed reports that the system cannot carry the event out, in words an
// operator can act on. Use it for failures that retrying will not fix; for
// transient ones return an error from the handler instead, and the event
// is delivered again.
func Failed(reason string) Outcome {
	return Outcome{kind: eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, reason: reason}
}

// Limits from the Outcome message in events.proto.
const (
	maxReasonRunes      = 2000
	maxSubjectIDRunes   = 256
	maxBasisDetailRunes = 1000
)

// answers lists the outcome kinds that answer each event kind, as the
// contract's outcome table does (docs/events.md); FAILED answers any.
var answers = func() map[contract.Kind][]eventsv1.OutcomeKind {
	directive := []eventsv1.OutcomeKind{eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND}
	limit := []eventsv1.OutcomeKind{eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED, eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE}
	m := map[contract.Kind][]eventsv1.OutcomeKind{
		contract.KindErasureRequested: append(directive,
			eventsv1.OutcomeKind_OUTCOME_KIND_ERASED, eventsv1.OutcomeKind_OUTCOME_KIND_ANONYMISED, eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED),
		contract.KindRectificationRequested: append(directive, eventsv1.OutcomeKind_OUTCOME_KIND_RECTIFIED),
		contract.KindAccessRequested:        append(directive, eventsv1.OutcomeKind_OUTCOME_KIND_DATA_SUBMITTED),
	}
	for _, k := range contract.Limits {
		m[k] = limit
	}
	return m
}()

// outcomeOf builds the Outcome message that answers ev for the subscriber's
// system.
func (s *Subscriber) outcomeOf(ev *Event, out Outcome) *eventsv1.Outcome {
	return &eventsv1.Outcome{
		EventId:    ev.pb.GetId(),
		TenantId:   ev.pb.GetTenantId(),
		SystemId:   s.cfg.SystemID,
		SubjectId:  ev.pb.GetSubjectId(),
		Cause:      ev.pb.GetCause(),
		Kind:       out.kind,
		Retained:   out.retained,
		Reason:     truncate(out.reason, maxReasonRunes),
		ReportedAt: timestamppb.Now(),
	}
}

// validateOutcome checks that o has what the proto requires of an outcome
// and answers an event of kind, so that a handler's mistake is caught here,
// not by the task tracker after it was published.
func validateOutcome(o *eventsv1.Outcome, kind contract.Kind) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	checkOutcomeHeader(o, bad)
	checkOutcomeKind(o, kind, bad)
	checkOutcomeRetained(o, bad)
	if o.GetKind() == eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED {
		for _, p := range contract.CheckRetained("retained", o.GetRetained()) {
			errs = append(errs, p)
		}
	}
	return errors.Join(errs...)
}

// checkOutcomeHeader reports to bad what is wrong with the fields that
// say which event, tenant, system and subject o is about, and when.
func checkOutcomeHeader(o *eventsv1.Outcome, bad func(format string, args ...any)) {
	if o.GetEventId() == "" {
		bad("event_id is empty")
	}
	if !contract.ValidToken(o.GetTenantId()) {
		bad("tenant_id %q is not a lower-case token", o.GetTenantId())
	}
	if !contract.ValidToken(o.GetSystemId()) {
		bad("system_id %q is not a lower-case token", o.GetSystemId())
	}
	if utf8.RuneCountInString(o.GetSubjectId()) > maxSubjectIDRunes {
		bad("subject_id is longer than %d characters", maxSubjectIDRunes)
	}
	if o.GetCause() == nil {
		bad("cause is not set")
	}
	if o.GetReportedAt() == nil {
		bad("reported_at is not set")
	}
}

// checkOutcomeKind reports to bad an outcome kind that does not answer an
// event of kind, and a missing or overlong reason.
func checkOutcomeKind(o *eventsv1.Outcome, kind contract.Kind, bad func(format string, args ...any)) {
	switch k := o.GetKind(); {
	case k == eventsv1.OutcomeKind_OUTCOME_KIND_UNSPECIFIED:
		bad("kind is not set")
	case k == eventsv1.OutcomeKind_OUTCOME_KIND_FAILED:
		if o.GetReason() == "" {
			bad("a FAILED outcome needs a reason")
		}
	case !slices.Contains(answers[kind], k):
		bad("%s does not answer a %s event", k, kind)
	}
	if utf8.RuneCountInString(o.GetReason()) > maxReasonRunes {
		bad("reason is longer than %d characters", maxReasonRunes)
	}
}

// checkOutcomeRetained reports to bad a RETAINED outcome that lists
// nothing, and each listed item without a defined basis, its detail or
// its end.
func checkOutcomeRetained(o *eventsv1.Outcome, bad func(format string, args ...any)) {
	if o.GetKind() == eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED && len(o.GetRetained()) == 0 {
		bad("a RETAINED outcome lists what is retained")
	}
	for i, r := range o.GetRetained() {
		if lb := r.GetLegalBasis(); lb == 0 || lb.Descriptor().Values().ByNumber(lb.Number()) == nil {
			bad("retained[%d]: legal_basis %v is not a defined basis", i, lb)
		}
		if n := utf8.RuneCountInString(r.GetBasisDetail()); n == 0 || n > maxBasisDetailRunes {
			bad("retained[%d]: basis_detail must have 1 to %d characters", i, maxBasisDetailRunes)
		}
		if r.GetUntil() == nil {
			bad("retained[%d]: until is not set", i)
		}
	}
}

// truncate shortens s to at most n runes.
func truncate(s string, n int) string {
	for i := range s {
		if n == 0 {
			return s[:i]
		}
		n--
	}
	return s
}
