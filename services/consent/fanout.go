package consent

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// expect asks the registry which systems must honour a limit on the given
// purposes (all of the subject's processing when purposes is empty). It
// runs before the write transaction: a network call must not hold the
// store's single writer.
func (s *Service) expect(ctx context.Context, tenant string, purposes []string) ([]tasks.Expect, error) {
	if s.registry == nil {
		return nil, errors.New("consent: no registry connection to route limits")
	}
	if len(purposes) == 0 {
		return s.registry.Expect(ctx, tenant, registryclient.Scope{All: true})
	}
	seen := map[string]bool{}
	var out []tasks.Expect
	for _, p := range purposes {
		systems, err := s.registry.Expect(ctx, tenant, registryclient.Scope{Purpose: p})
		if err != nil {
			return nil, err
		}
		for _, e := range systems {
			if !seen[e.SystemID] {
				seen[e.SystemID] = true
				out = append(out, e)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SystemID < out[j].SystemID })
	return out, nil
}

// publishLimitTx publishes a limit event about a subject and tracks one
// task per expected system, in the caller's transaction.
func (s *Service) publishLimitTx(ctx context.Context, tx *bolt.Tx, tenant, subject string, cause *commonv1.Cause, expect []tasks.Expect, ev *eventsv1.Event) error {
	ev.TenantId, ev.SubjectId, ev.Cause = tenant, subject, cause
	return s.tracker.PublishTx(ctx, tx, ev, expect)
}

// GetFanout implements ConsentService. A cause under which nothing
// was published for the tenant (an unknown id, another tenant's) is
// NotFound.
func (s *Service) GetFanout(_ context.Context, req *consentv1.GetFanoutRequest) (*consentv1.GetFanoutResponse, error) {
	if err := s.tenants.Require(req.TenantId); err != nil {
		return nil, err
	}
	all, published, err := s.tracker.Fanout(req.TenantId, req.Cause)
	if err != nil {
		return nil, err
	}
	if !published {
		// Not "complete": nothing was ever sent under this cause, for this
		// tenant.
		return nil, apierror.NotFound("cause", req.Cause.GetId())
	}
	resp := &consentv1.GetFanoutResponse{Complete: true}
	for _, t := range all {
		pt := &consentv1.Task{SystemId: t.SystemID, State: taskState(t.State)}
		if o, err := t.OutcomeProto(); err != nil {
			return nil, err
		} else if o != nil {
			pt.Outcome, pt.Reason = o.Kind, o.Reason
		}
		resp.Complete = resp.Complete && t.State == tasks.StateFinal
		resp.Tasks = append(resp.Tasks, pt)
	}
	sortBy(resp.Tasks, func(t *consentv1.Task) string { return t.SystemId })
	return resp, nil
}

func taskState(s tasks.State) commonv1.TaskState {
	switch s {
	case tasks.StateOpen:
		return commonv1.TaskState_TASK_STATE_OPEN
	case tasks.StateStalled:
		return commonv1.TaskState_TASK_STATE_STALLED
	case tasks.StateFinal:
		return commonv1.TaskState_TASK_STATE_FINAL
	}
	return commonv1.TaskState_TASK_STATE_UNSPECIFIED
}

// CompleteTask records an operator's answer for a manual system's task: the
// system honours the limit now (APPLIED), it does not concern the system
// (NOT_APPLICABLE) or the system could not (FAILED).
func (s *Service) CompleteTask(ctx context.Context, req *consentv1.CompleteTaskRequest) (*consentv1.CompleteTaskResponse, error) {
	if req.Outcome == eventsv1.OutcomeKind_OUTCOME_KIND_FAILED && req.Reason == "" {
		return nil, apierror.Invalid("reason", "required for FAILED: say why, in words an operator can act on")
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.CompleteTaskResponse, error) {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		all, err := s.tracker.CauseTasksTx(tx, req.TenantId, req.Cause)
		if err != nil {
			return nil, err
		}
		i := slices.IndexFunc(all, func(t tasks.Task) bool { return t.SystemID == req.SystemId })
		if i < 0 {
			return nil, apierror.NotFound("task", req.SystemId)
		}
		task := all[i]
		switch {
		case task.Mode != commonv1.AnswerMode_ANSWER_MODE_MANUAL:
			return nil, apierror.FailedPrecondition(apierror.ReasonAnswersItself, fmt.Sprintf("system %s answers itself (%s); it reports its own outcome", req.SystemId, task.Mode))
		case task.State == tasks.StateFinal:
			return nil, apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, fmt.Sprintf("the task of system %s is final already", req.SystemId))
		}
		o := &eventsv1.Outcome{
			EventId: task.EventID, TenantId: req.TenantId, SystemId: req.SystemId, Cause: req.Cause,
			Kind: req.Outcome, Reason: req.Reason, ReportedAt: timestamppb.New(s.Clock.Now()),
		}
		if _, err := s.tracker.RecordOutcomeTx(tx, o); err != nil {
			return nil, err
		}
		return &consentv1.CompleteTaskResponse{Task: &consentv1.Task{
			SystemId: req.SystemId, State: commonv1.TaskState_TASK_STATE_FINAL, Outcome: req.Outcome, Reason: req.Reason,
		}}, nil
	})
}
