package dsar

import (
	"context"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/platform/store"
)

// serviceActor is the actor of transitions the service makes itself.
const serviceActor = "lethe/dsar"

// statutoryPeriod is Art. 12(3)'s "one month of receipt".
var statutoryPeriod = period.Period{Months: 1}

// defaultMaxReceiptAge is how far back a time of receipt may be given
// when the tenant's max_receipt_age is unset.
const defaultMaxReceiptAge = 30 * 24 * time.Hour

// transitions lists what each state may become. Final states are absent:
// nothing follows them.
var transitions = map[dsarv1.RequestState][]dsarv1.RequestState{
	dsarv1.RequestState_REQUEST_STATE_RECEIVED: {
		dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY, dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS,
		dsarv1.RequestState_REQUEST_STATE_REJECTED, dsarv1.RequestState_REQUEST_STATE_CANCELLED,
	},
	dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY: {
		dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS,
		dsarv1.RequestState_REQUEST_STATE_REJECTED, dsarv1.RequestState_REQUEST_STATE_CANCELLED,
	},
	dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS: {
		dsarv1.RequestState_REQUEST_STATE_COMPLETED, dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED,
		dsarv1.RequestState_REQUEST_STATE_REJECTED, dsarv1.RequestState_REQUEST_STATE_CANCELLED,
	},
}

func isFinal(st dsarv1.RequestState) bool {
	_, open := transitions[st]
	return !open
}

func isOpen(st dsarv1.RequestState) bool { return !isFinal(st) }

// illegal is the error of a transition the state machine does not allow.
func illegal(from, to dsarv1.RequestState) error {
	return apierror.FailedPrecondition(apierror.ReasonIllegalTransition, fmt.Sprintf("a request in state %s cannot become %s", from, to))
}

// actorOf names the caller for the request's history.
func actorOf(ctx context.Context) string {
	if id, ok := auth.FromContext(ctx); ok && id.Name != "" {
		return id.Name
	}
	return serviceActor
}

// transitionTx moves r to state to, recording the step on the request and
// as its own entry in the audit log, in the caller's transaction.
func (s *Service) transitionTx(tx *bolt.Tx, r *dsarv1.Request, to dsarv1.RequestState, actor, note string) error {
	from := r.State
	if !slices.Contains(transitions[from], to) {
		return illegal(from, to)
	}
	now := s.Clock.Now()
	r.State = to
	r.History = append(r.History, &dsarv1.Transition{From: from, To: to, At: timestamppb.New(now), Actor: actor, Note: note})
	if isFinal(to) {
		r.ClosedAt = timestamppb.New(now)
		if err := store.BucketTx(tx, bucketPending).Delete([]byte(r.DsarId)); err != nil {
			return err
		}
		if err := store.BucketTx(tx, bucketFollowing).Delete([]byte(r.DsarId)); err != nil {
			return err
		}
	}
	// The clock runs again when verification is over (verified, or the
	// request closed), not when a code is sent: the subject's time to
	// answer it is verification time too.
	if to != dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY {
		resumeClock(r.Deadline, now)
	}
	return s.Audit.AppendTx(tx, audit.Entry{Actor: actor, Method: "transition " + from.String() + " -> " + to.String(),
		TenantID: r.TenantId, Target: r.DsarId, Code: "OK"})
}

// resumeClock ends a verification pause.
func resumeClock(d *dsarv1.Deadline, now time.Time) {
	if d.PausedSince == nil {
		return
	}
	paused := d.Paused.AsDuration() + now.Sub(d.PausedSince.AsTime())
	d.Paused, d.PausedSince = durationpb.New(paused), nil
}

// computeDeadlines fills the due dates from receipt, the paused time (as
// if a pause running now ended now), the extension and the SLA, counted as
// Regulation 1182/71 counts in the request's time zone: from the day of
// receipt, to the end of the last day (31 January + 1 month ends at the
// end of the last day of February), and for the statutory deadline past a
// last day on a Saturday, Sunday or public holiday of the request's
// holiday calendar (Art. 3(4)). The SLA is the tenant's promise in
// calendar days; no holiday moves it.
func computeDeadlines(d *dsarv1.Deadline, now time.Time) {
	start := d.ReceivedAt.AsTime().Add(d.Paused.AsDuration())
	if d.PausedSince != nil && now.After(d.PausedSince.AsTime()) {
		start = start.Add(now.Sub(d.PausedSince.AsTime()))
	}
	loc := zoneOf(d)
	p := statutoryPeriod
	if d.Extension != nil {
		p.Months += int(d.Extension.Months)
	}
	due := period.DueIn(start, p, loc, period.CalendarOf(d.HolidayCalendar))
	d.StatutoryDueAt, d.StatutoryDueDate, d.HolidaysPassed = timestamppb.New(due.At), due.LastDay.String(), nil
	for _, h := range due.Skipped {
		d.HolidaysPassed = append(d.HolidaysPassed, fmt.Sprintf("%s %s, %s", h.Date, h.Name, h.Source))
	}
	if d.Sla != nil {
		last := period.Period{Days: int(d.Sla.AsDuration() / (24 * time.Hour))}.LastDay(period.DateOf(start.In(loc)))
		d.SlaDueAt, d.SlaDueDate = timestamppb.New(last.EndIn(loc)), last.String()
	}
}

// zoneOf returns the zone a request's deadlines are counted in. A request
// filed before zones were recorded has none and counts in UTC, as it did.
func zoneOf(d *dsarv1.Deadline) *time.Location {
	if d.TimeZone == "" {
		return time.UTC
	}
	loc, err := period.LoadZone(d.TimeZone)
	if err != nil {
		// The zone loaded when the request was filed, and zones are
		// compiled in: this cannot happen short of a corrupt record.
		return time.UTC
	}
	return loc
}

// enteredAt is when a request was entered into Lethe.
func enteredAt(r *dsarv1.Request) time.Time {
	switch {
	case r.Deadline.EnteredAt != nil:
		return r.Deadline.EnteredAt.AsTime()
	case len(r.History) > 0:
		return r.History[0].At.AsTime()
	}
	return r.Deadline.ReceivedAt.AsTime()
}

// asOf returns r's state and deadlines as they stood at t, and false when
// r had not been received yet. A request counts from its time of receipt,
// even when it was entered later (the law counts from receipt); its state
// is the last one its history reached by t; an extension counts once
// granted. The verification pause is one interval, from the request's
// entry until verification was over; at a t inside it the clock is paused.
func asOf(r *dsarv1.Request, t time.Time) (dsarv1.RequestState, *dsarv1.Deadline, bool) {
	if r.Deadline.ReceivedAt.AsTime().After(t) {
		return dsarv1.RequestState_REQUEST_STATE_UNSPECIFIED, nil, false
	}
	st := dsarv1.RequestState_REQUEST_STATE_RECEIVED
	for _, h := range r.History {
		if h.At.AsTime().After(t) {
			break
		}
		st = h.To
	}
	d := proto.Clone(r.Deadline).(*dsarv1.Deadline)
	if d.Extension != nil && d.Extension.GrantedAt.AsTime().After(t) {
		d.Extension = nil
	}
	if d.VerificationPausesDeadline {
		from := enteredAt(r)
		switch {
		case t.Before(from):
			d.Paused, d.PausedSince = nil, nil
		case d.PausedSince != nil || t.Before(from.Add(d.Paused.AsDuration())):
			d.Paused, d.PausedSince = nil, timestamppb.New(from)
		}
	}
	computeDeadlines(d, t)
	return st, d, true
}

// earliestDue is the earlier of the statutory and SLA due dates.
func earliestDue(d *dsarv1.Deadline) time.Time {
	due := d.StatutoryDueAt.AsTime()
	if d.SlaDueAt != nil && d.SlaDueAt.AsTime().Before(due) {
		due = d.SlaDueAt.AsTime()
	}
	return due
}

// putRequestTx stores a request and, once committed, updates the metrics.
func (s *Service) putRequestTx(tx *bolt.Tx, r *dsarv1.Request) error {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(r)
	if err != nil {
		return err
	}
	if err := store.BucketTx(tx, bucketRequests).Put(store.Key(r.TenantId, r.DsarId), b); err != nil {
		return err
	}
	snap := summaryOf(r)
	tx.OnCommit(func() { s.metrics.update(snap) })
	return nil
}

// mutateTx loads an open request for a mutation; it refuses unknown
// tenants, unknown requests and, unless allowFinal, final ones.
func (s *Service) loadTx(tx *bolt.Tx, tenant, id string) (*dsarv1.Request, error) {
	if err := s.tenants.RequireTx(tx, tenant); err != nil {
		return nil, err
	}
	return requestTx(tx, tenant, id)
}

// view is a request as a caller sees it now: deadlines of a paused
// request move with the clock, and an open request shows each system's
// task as it stands and, while its fan-out keeps failing, why
// (fanout_problem). pending says whether the request's fan-out was still
// to commit in the transaction r was read in. The record of a failure is
// cleared just after the attempt that succeeds has committed, so the
// problem is shown only while the fan-out is pending, and not beside
// tasks read after that commit.
func (s *Service) view(r *dsarv1.Request, pending bool) *dsarv1.Request {
	out := proto.Clone(r).(*dsarv1.Request)
	if isOpen(out.State) {
		computeDeadlines(out.Deadline, s.Clock.Now())
	}
	if out.State == dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
		if ts, err := s.tracker.CauseTasks(r.TenantId, causeOf(r.DsarId)); err == nil && len(ts) > 0 {
			out.Result = resultOf(ts, out.Result)
			pending = false
		}
		// The fan-out's failure is the running process's, kept in
		// memory: it is attached here and never stored.
		if rec, ok := s.fanout.get(r.DsarId); ok && pending {
			out.FanoutProblem = rec.problem()
		}
	}
	return out
}

// ExtendDeadline implements DsarService: once, by one or two months,
// with a reason, and only within the first month after receipt.
func (s *Service) ExtendDeadline(ctx context.Context, req *dsarv1.ExtendDeadlineRequest) (*dsarv1.ExtendDeadlineResponse, error) {
	return mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.ExtendDeadlineResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		now := s.Clock.Now()
		d := r.Deadline
		// The first month is the statutory period without an extension,
		// counted from receipt as the deadline is.
		first := proto.Clone(d).(*dsarv1.Deadline)
		first.Extension = nil
		computeDeadlines(first, now)
		switch {
		case isFinal(r.State):
			return nil, apierror.FailedPrecondition(apierror.ReasonIllegalTransition, fmt.Sprintf("a %s request has no deadline to extend", r.State))
		case d.Extension != nil:
			return nil, apierror.FailedPrecondition(apierror.ReasonExtensionRefused, "the deadline was extended already; Art. 12(3) allows one extension")
		case now.After(first.StatutoryDueAt.AsTime()):
			return nil, apierror.FailedPrecondition(apierror.ReasonExtensionRefused, fmt.Sprintf(
				"an extension must be given within one month of receipt (Art. 12(3)); received %s, that month ended with %s (%s)",
				d.ReceivedAt.AsTime().In(zoneOf(d)).Format(time.RFC3339), first.StatutoryDueDate, zoneOf(d)))
		}
		d.Extension = &dsarv1.Extension{Months: req.Months, Reason: req.Reason, GrantedAt: timestamppb.New(now)}
		computeDeadlines(d, now)
		r.History = append(r.History, &dsarv1.Transition{From: r.State, To: r.State, At: timestamppb.New(now), Actor: actorOf(ctx),
			Note: fmt.Sprintf("deadline extended by %d month(s)", req.Months)})
		if err := s.putRequestTx(tx, r); err != nil {
			return nil, err
		}
		return &dsarv1.ExtendDeadlineResponse{Request: s.viewAt(r, s.Clock.Now())}, nil
	})
}

// RejectRequest implements DsarService. The refusal names the remedies
// open to the subject (Art. 12(4)), with the tenant's supervisory
// authority as its settings are now. "No data held" is refused as a
// reason: it is a confirmation (Art. 15(1)), which a request whose every
// system answered NOT_FOUND completes with.
func (s *Service) RejectRequest(ctx context.Context, req *dsarv1.RejectRequestRequest) (*dsarv1.RejectRequestResponse, error) {
	//lint:ignore SA1019 refusing the deprecated value is the point
	if req.Reason == dsarv1.RejectionReason_REJECTION_REASON_NO_DATA {
		return nil, apierror.Invalid("reason", "holding no data of the subject is not a refusal but the confirmation Art. 15(1) gives: answer the systems' tasks NOT_FOUND and the request completes with result.no_data_held")
	}
	settings, err := s.tenantSettings(ctx, req.TenantId)
	if err != nil {
		return nil, err
	}
	return mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.RejectRequestResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		r.Rejection = &dsarv1.Rejection{Reason: req.Reason, Detail: req.Detail, Remedies: remediesOf(settings)}
		if err := s.closeTx(tx, r, dsarv1.RequestState_REQUEST_STATE_REJECTED, actorOf(ctx), "rejected: "+req.Reason.String()); err != nil {
			return nil, err
		}
		return &dsarv1.RejectRequestResponse{Request: s.viewAt(r, s.Clock.Now())}, nil
	})
}

// CancelRequest implements DsarService.
func (s *Service) CancelRequest(ctx context.Context, req *dsarv1.CancelRequestRequest) (*dsarv1.CancelRequestResponse, error) {
	return mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.CancelRequestResponse, error) {
		r, err := s.loadTx(tx, req.TenantId, req.DsarId)
		if err != nil {
			return nil, err
		}
		if err := s.closeTx(tx, r, dsarv1.RequestState_REQUEST_STATE_CANCELLED, actorOf(ctx), "cancelled at the subject's wish"); err != nil {
			return nil, err
		}
		return &dsarv1.CancelRequestResponse{Request: s.viewAt(r, s.Clock.Now())}, nil
	})
}
