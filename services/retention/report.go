package retention

import (
	"bytes"
	"context"
	"encoding/json"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// ruleCounts are a rule's counters. Tasks is the number of system answers
// the rule's directives await in all; what is not answered is pending.
type ruleCounts struct {
	Directives int64 `json:"directives,omitempty"`
	Tasks      int64 `json:"tasks,omitempty"`
	Purged     int64 `json:"purged,omitempty"`
	Anonymised int64 `json:"anonymised,omitempty"`
	Retained   int64 `json:"retained,omitempty"`
	NotFound   int64 `json:"not_found,omitempty"`
	Failed     int64 `json:"failed,omitempty"`
	Held       int64 `json:"held,omitempty"`
}

// countTx changes a rule's counters in tx.
func countTx(tx *bolt.Tx, tenant, rule string, change func(*ruleCounts)) error {
	b := store.BucketTx(tx, bucketReport)
	k := store.Key(tenant, rule)
	var c ruleCounts
	if v := b.Get(k); v != nil {
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
	}
	change(&c)
	v, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return b.Put(k, v)
}

// onTaskFinal runs in the transaction that closed one of the service's
// tasks: it counts the answer for its rule, and turns a "retained until"
// answer into a deferred erasure of what the system keeps.
func (s *Service) onTaskFinal(tx *bolt.Tx, task tasks.Task, o *eventsv1.Outcome) error {
	if task.CauseKind != commonv1.CauseKind_CAUSE_KIND_RETENTION_RULE {
		return nil
	}
	err := countTx(tx, task.TenantID, task.CauseID, func(c *ruleCounts) {
		switch o.GetKind() {
		case eventsv1.OutcomeKind_OUTCOME_KIND_ERASED:
			c.Purged++
		case eventsv1.OutcomeKind_OUTCOME_KIND_ANONYMISED:
			c.Anonymised++
		case eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED:
			c.Retained++
		case eventsv1.OutcomeKind_OUTCOME_KIND_FAILED:
			c.Failed++
		default:
			c.NotFound++
		}
	})
	if err != nil || o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_RETAINED {
		return err
	}
	// The subject is the event's, as the service sent it, not what the
	// answer claims.
	ev, ok, err := s.tracker.EventTx(tx, task.EventID)
	if err != nil || !ok {
		return err
	}
	return s.deferTx(tx, task.TenantID, ev.SubjectId, task.SystemID, ev.Cause, ev.GetErasureRequested().GetAction(), o.Retained)
}

// GetRuleReport counts, per rule, what was purged, anonymised, held,
// pending and failed.
func (s *Service) GetRuleReport(ctx context.Context, req *retentionv1.GetRuleReportRequest) (*retentionv1.GetRuleReportResponse, error) {
	resp := &retentionv1.GetRuleReportResponse{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		prefix := store.Key(req.TenantId)
		if req.RuleId != "" {
			prefix = store.Key(req.TenantId, req.RuleId)
		}
		c := store.BucketTx(tx, bucketReport).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			_, rule, err := splitSubjectKey(k)
			if err != nil {
				return err
			}
			var n ruleCounts
			if err := json.Unmarshal(v, &n); err != nil {
				return err
			}
			answered := n.Purged + n.Anonymised + n.Retained + n.NotFound + n.Failed
			resp.Rules = append(resp.Rules, &retentionv1.RuleReport{
				RuleId: rule, Directives: n.Directives, Purged: n.Purged, Anonymised: n.Anonymised,
				Retained: n.Retained, NotFound: n.NotFound, Failed: n.Failed,
				Pending: n.Tasks - answered, Held: n.Held,
			})
		}
		return nil
	})
	return resp, err
}
