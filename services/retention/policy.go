package retention

import (
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
)

// policy is a tenant's rules and holds as the rules engine takes them,
// with the tenant's financial year end, which anchored triggers count from.
type policy struct {
	gen     uint64
	yearEnd period.YearEnd
	rules   []rules.Rule
	holds   []rules.Hold
}

// policyCache holds the latest policy read per tenant.
type policyCache struct {
	mu       sync.Mutex
	byTenant map[string]*policy
}

// policyTx returns the tenant's policy as tx sees it.
func (s *Service) policyTx(tx *bolt.Tx, tenant string) (*policy, error) {
	gen := uint64(0)
	if v := store.BucketTx(tx, bucketPolicyGen).Get(store.Key(tenant)); v != nil {
		gen = store.KeyUint64(v)
	}
	yearEnd, err := s.tenants.FinancialYearEndTx(tx, tenant)
	if err != nil {
		// A tenant the directory does not know (any more) has no setting:
		// the registry's default, the calendar year, is what it would say.
		yearEnd = period.CalendarYear
	}
	c := &s.policies
	c.mu.Lock()
	p, ok := c.byTenant[tenant]
	c.mu.Unlock()
	if ok && p.gen == gen && p.yearEnd == yearEnd {
		return p, nil
	}
	p = &policy{gen: gen, yearEnd: yearEnd}
	err = eachTx(tx, bucketRules, tenant, func(v []byte) error {
		r := &retentionv1.Rule{}
		if err := proto.Unmarshal(v, r); err != nil {
			return err
		}
		rule, err := ruleFromProto(r, yearEnd)
		if err != nil {
			return err
		}
		p.rules = append(p.rules, rule)
		return nil
	})
	if err != nil {
		return nil, err
	}
	err = eachTx(tx, bucketHolds, tenant, func(v []byte) error {
		h := &retentionv1.Hold{}
		if err := proto.Unmarshal(v, h); err != nil {
			return err
		}
		if h.ReleasedAt == nil {
			p.holds = append(p.holds, holdFromProto(h))
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if c.byTenant == nil {
		c.byTenant = map[string]*policy{}
	}
	if cur, ok := c.byTenant[tenant]; !ok || cur.gen <= gen {
		c.byTenant[tenant] = p
	}
	c.mu.Unlock()
	return p, nil
}

// bumpPolicyTx records a change of the tenant's rules or holds.
func bumpPolicyTx(tx *bolt.Tx, tenant string) error {
	b := store.BucketTx(tx, bucketPolicyGen)
	gen := uint64(0)
	if v := b.Get(store.Key(tenant)); v != nil {
		gen = store.KeyUint64(v)
	}
	return b.Put(store.Key(tenant), store.Uint64Key(gen+1))
}

// triggerKinds maps the API's trigger kinds to the engine's.
var triggerKinds = map[retentionv1.TriggerKind]rules.TriggerKind{
	retentionv1.TriggerKind_TRIGGER_KIND_SINCE_COLLECTION:         rules.SinceCollection,
	retentionv1.TriggerKind_TRIGGER_KIND_SINCE_LAST_ACTIVITY:      rules.SinceLastActivity,
	retentionv1.TriggerKind_TRIGGER_KIND_SINCE_RELATIONSHIP_ENDED: rules.SinceRelationshipEnded,
	retentionv1.TriggerKind_TRIGGER_KIND_SINCE_SUSPENSION:         rules.SinceSuspension,
	retentionv1.TriggerKind_TRIGGER_KIND_SINCE_CONSENT_WITHDRAWAL: rules.SinceConsentWithdrawal,
	retentionv1.TriggerKind_TRIGGER_KIND_SINCE_EVENT:              rules.SinceEvent,
}

// periodAnchors maps the API's period anchors to the period package's.
var periodAnchors = map[retentionv1.PeriodAnchor]period.Anchor{
	retentionv1.PeriodAnchor_PERIOD_ANCHOR_UNSPECIFIED:                                period.AtFact,
	retentionv1.PeriodAnchor_PERIOD_ANCHOR_END_OF_FINANCIAL_YEAR:                      period.EndOfFinancialYear,
	retentionv1.PeriodAnchor_PERIOD_ANCHOR_END_OF_CALENDAR_YEAR_OF_FINANCIAL_YEAR_END: period.EndOfCalendarYearOfFinancialYearEnd,
}

// ruleFromProto converts a rule for the engine, with the tenant's
// financial year end for its anchored triggers. An unparsable period is an
// InvalidArgument naming the trigger's field.
func ruleFromProto(r *retentionv1.Rule, yearEnd period.YearEnd) (rules.Rule, error) {
	out := rules.Rule{
		ID: r.RuleId, Category: r.GetCategory().GetId(), Action: r.Action,
		Minimum: r.Minimum, Basis: r.Basis,
	}
	for i, t := range r.Triggers {
		p, err := period.Parse(t.Period)
		if err != nil {
			return rules.Rule{}, apierror.Invalid(fmt.Sprintf("rule.triggers[%d].period", i),
				fmt.Sprintf("%q is not an ISO 8601 period such as P1Y, P3Y6M, P30D or P0D: %v", t.Period, err))
		}
		anchor, ok := periodAnchors[t.Anchor]
		if !ok {
			// An anchor from a newer client: never read as "from the fact",
			// which could cut a legal obligation short.
			anchor = period.Anchor(-1)
		}
		out.Triggers = append(out.Triggers, rules.Trigger{Kind: triggerKinds[t.Kind], Name: t.Name, Period: p, Anchor: anchor, YearEnd: yearEnd})
	}
	return out, nil
}

// validateRule checks a rule as the engine reads it; every problem is
// reported, each with its field.
func validateRule(r *retentionv1.Rule) (rules.Rule, error) {
	rule, err := ruleFromProto(r, period.CalendarYear)
	if err != nil {
		return rules.Rule{}, err
	}
	if errs := rules.ValidateRule(rule); len(errs) > 0 {
		return rules.Rule{}, fieldErrors(errs)
	}
	return rule, nil
}

// fieldErrors turns the engine's validation errors into one InvalidArgument
// with a violation per field.
func fieldErrors(errs []rules.FieldError) error {
	violations := make([]apierror.FieldViolation, 0, len(errs))
	for _, e := range errs {
		violations = append(violations, apierror.FieldViolation{Field: e.Field, Description: e.Description})
	}
	return apierror.InvalidArgument(violations...)
}

func holdFromProto(h *retentionv1.Hold) rules.Hold {
	out := rules.Hold{ID: h.HoldId, Reason: h.Reason, Subject: h.SubjectId, Category: h.GetCategory().GetId()}
	if h.StartTime != nil {
		out.Start = h.StartTime.AsTime()
	}
	if h.EndTime != nil {
		out.End = h.EndTime.AsTime()
	}
	return out
}

// inForce reports whether a stored hold still holds at now.
func inForce(h *retentionv1.Hold, now time.Time) bool {
	return h.ReleasedAt == nil && (h.EndTime == nil || h.EndTime.AsTime().After(now))
}

// appliesTo reports whether a hold covers some of the subject's data.
func appliesTo(h *retentionv1.Hold, subject string) bool {
	return h.SubjectId == "" || h.SubjectId == subject
}

func ts(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func category(id string) *commonv1.DataCategory { return &commonv1.DataCategory{Id: id} }
