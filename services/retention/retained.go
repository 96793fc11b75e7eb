package retention

import (
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// deferTx schedules what a system kept ("retained until D") for erasure by
// that system at D, under the cause of the directive it answered, and
// reschedules the subject. The same retention recorded twice (a redelivered
// answer) is kept once. A date already past is not scheduled: asking again
// at once would only get the same answer, in a loop; the answer stays
// visible on its task.
func (s *Service) deferTx(tx *bolt.Tx, tenant, subject, system string, cause *commonv1.Cause, action eventsv1.ErasureAction, kept []*eventsv1.Retention) error {
	p, err := s.policyTx(tx, tenant)
	if err != nil {
		return err
	}
	now := s.Clock.Now()
	_, err = s.updateSubjectTx(tx, tenant, subject, p, func(st *subjectState) {
		for _, r := range kept {
			if _, err := factTime(r.Until); err != nil {
				s.Logger.Warn("retention: a system kept data until a date no schedule can hold; not scheduling it",
					"tenant", tenant, "system", system, "cause", cause.GetId(), "error", err)
				continue
			}
			if !r.Until.AsTime().After(now) {
				s.Logger.Warn("retention: a system kept data until a date already past; not scheduling it again",
					"tenant", tenant, "system", system, "cause", cause.GetId(), "until", r.Until.AsTime())
				continue
			}
			d := deferred{Until: r.Until.AsTime(), System: system, CauseKind: cause.GetKind(), CauseID: cause.GetId(), Action: int32(action),
				Basis: r.BasisDetail}
			for _, c := range r.Categories {
				d.Categories = append(d.Categories, c.Id)
			}
			if !slices.ContainsFunc(st.Deferred, d.equal) {
				st.Deferred = append(st.Deferred, d)
			}
		}
	})
	return err
}

func (d deferred) equal(e deferred) bool {
	return d.Until.Equal(e.Until) && d.System == e.System && d.CauseKind == e.CauseKind && d.CauseID == e.CauseID &&
		d.Action == e.Action && d.Basis == e.Basis && slices.Equal(d.Categories, e.Categories)
}

// handleRetained schedules the erasure, at its until-date, of what a system
// kept when it answered another service's erasure ("retained under
// accounting law until 2031-12-31", to a data-subject request): the DSAR
// service tells the subject, the retention service keeps the promise. The
// answers to the retention service's own directives arrive through its
// task tracker (onTaskFinal) and are skipped here.
func (s *Service) handleRetained(msg jetstream.Msg) {
	tenant, system, ok := contract.ParseOutcomeSubject(msg.Subject())
	var outcomes []*eventsv1.Outcome
	if ok {
		var err error
		outcomes, err = contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
		ok = err == nil
	}
	var retained []*eventsv1.Outcome
	for _, o := range outcomes {
		// A system answers only for itself, on its own NATS subject.
		ok = ok && o.TenantId == tenant && o.SystemId == system && validSubject(o.SubjectId)
		if o.Kind == eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED && o.GetCause().GetKind() != commonv1.CauseKind_CAUSE_KIND_RETENTION_RULE {
			retained = append(retained, o)
		}
	}
	if !ok {
		_ = msg.Term()
		return
	}
	if len(retained) == 0 {
		_ = msg.Ack()
		return
	}
	err := s.DB.Batch(func(tx *bolt.Tx) error {
		for _, o := range retained {
			if err := s.deferTx(tx, tenant, o.SubjectId, system, o.Cause, eventsv1.ErasureAction_ERASURE_ACTION_ERASE, o.Retained); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		s.Logger.Error("retention: scheduling retained data failed; it will be redelivered", "system", system, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// validSubject is the subject id syntax of lethe.common.v1.SubjectRef.
func validSubject(id string) bool {
	if id == "" || len(id) > 256 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < '!' || id[i] > '~' {
			return false
		}
	}
	return true
}
