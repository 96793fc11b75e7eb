package retention

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
)

// ExplainSubject says, per tracked category, when the subject's data will
// be purged and why.
func (s *Service) ExplainSubject(ctx context.Context, req *retentionv1.ExplainSubjectRequest) (*retentionv1.ExplainSubjectResponse, error) {
	resp := &retentionv1.ExplainSubjectResponse{}
	if _, err := s.applyJournal(); err != nil {
		return nil, err
	}
	now := s.Clock.Now()
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		st, tracked, err := s.loadTx(tx, req.TenantId, req.SubjectId)
		if err != nil {
			return err
		}
		if !tracked {
			return apierror.NotFound("subject", req.SubjectId)
		}
		p, err := s.policyTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		verdicts := st.verdicts(p, req.SubjectId, now)
		for _, c := range slices.Sorted(maps.Keys(verdicts)) {
			v := verdicts[c]
			out := &retentionv1.Verdict{
				Category: category(c), Action: v.Action, RuleId: v.RuleID, MinimumRuleId: v.MinimumRuleID,
				KeptUntil: ts(v.KeptUntil), HeldBy: v.HeldBy, Explanation: v.Explanation,
			}
			if v.Due {
				out.PurgeAt = ts(v.PurgeAt)
			}
			if done, ok := st.Purged[c]; ok {
				out.PurgedAt = ts(done.At)
				if !st.pending(c, v) {
					out.Explanation = append(slices.Clip(out.Explanation),
						fmt.Sprintf("Purged: a directive under %s was issued on %s.", done.Rule, done.At.Format(time.DateOnly)))
				}
			}
			resp.Verdicts = append(resp.Verdicts, out)
		}
		resp.Verdicts = append(resp.Verdicts, deferredVerdicts(st.Deferred, now)...)
		return nil
	})
	return resp, err
}

// deferredVerdicts explains the data systems kept when they answered an
// erasure RETAINED: one verdict per kept category, due at the until-date,
// when the system that kept it is told to erase it.
func deferredVerdicts(kept []deferred, now time.Time) []*retentionv1.Verdict {
	var out []*retentionv1.Verdict
	for _, d := range kept {
		action := actionOf(d.Action)
		if action == eventsv1.ErasureAction_ERASURE_ACTION_UNSPECIFIED {
			action = eventsv1.ErasureAction_ERASURE_ACTION_ERASE
		}
		basis := d.Basis
		if basis == "" {
			basis = "a basis it did not state"
		}
		due := fmt.Sprintf("Due: the retention service tells %s to erase it on %s.", d.System, d.Until.UTC().Format(time.DateOnly))
		if !d.Until.After(now) {
			due = fmt.Sprintf("Due: %s, already reached, so at the next sweep.", d.Until.UTC().Format(time.DateOnly))
		}
		for _, c := range slices.Sorted(slices.Values(d.Categories)) {
			out = append(out, &retentionv1.Verdict{
				Category: category(c), PurgeAt: ts(d.Until), Action: action, RetainedBy: d.System,
				Explanation: []string{
					fmt.Sprintf("System %s kept this data when it answered the erasure under %s %s: %s, until %s.",
						d.System, causeName(d.CauseKind), d.CauseID, basis, d.Until.UTC().Format(time.DateOnly)),
					due,
				},
			})
		}
	}
	return out
}

// causeName words a cause kind for an explanation.
func causeName(k commonv1.CauseKind) string {
	switch k {
	case commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST:
		return "data-subject request"
	case commonv1.CauseKind_CAUSE_KIND_RETENTION_RULE:
		return "retention rule"
	}
	return strings.ToLower(strings.TrimPrefix(k.String(), "CAUSE_KIND_"))
}

// PreviewPurges evaluates every tracked subject of the tenant under the
// current or candidate rules and counts, per rule, what would be purged
// before the window's end. It reads a snapshot and writes nothing; its cost
// follows the tenant's subjects, which is why it is a preview and not what
// the scheduler does.
func (s *Service) PreviewPurges(ctx context.Context, req *retentionv1.PreviewPurgesRequest) (*retentionv1.PreviewPurgesResponse, error) {
	candidate, err := candidateRules(req.CandidateRules)
	if err != nil {
		return nil, err
	}
	now, until := s.Clock.Now(), req.Until.AsTime()
	if !until.After(now) {
		return nil, apierror.Invalid("until", "must be after now: the window runs from now to until")
	}
	if _, err := s.applyJournal(); err != nil {
		return nil, err
	}
	pv := &purgePreview{until: until, sampleSize: int(req.SampleSize), resp: &retentionv1.PreviewPurgesResponse{},
		rules: map[string]*retentionv1.RulePreview{}, subjects: map[string]map[string]bool{}}
	err = s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		p, err := s.policyTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		if req.CandidateRules != nil {
			p = p.withRules(candidate)
		}
		return s.scheduler.RangeTx(tx, store.Key(req.TenantId), nil, func(key []byte, _ time.Time, payload []byte) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			_, subject, st, err := decodeItem(key, payload)
			if err != nil {
				// One unreadable record does not hide the tenant's other
				// subjects; the sweep parks it when it comes due.
				s.Logger.Warn("retention: preview skips a subject whose record does not decode", "key", fmt.Sprintf("%q", key), "error", err)
				return nil
			}
			pv.resp.SubjectsEvaluated++
			for c, v := range st.verdicts(p, subject, now) {
				pv.count(st, subject, c, v)
			}
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	return pv.response(), nil
}

// candidateRules validates the rules a preview is asked to try, naming a
// bad field under its place in candidate_rules.
func candidateRules(rs []*retentionv1.Rule) ([]rules.Rule, error) {
	var candidate []rules.Rule
	for i, r := range rs {
		rule, err := validateRule(r)
		if err != nil {
			return nil, prefixViolations(err, fmt.Sprintf("candidate_rules[%d].", i))
		}
		candidate = append(candidate, rule)
	}
	return candidate, nil
}

// withRules returns the policy with rs in place of its rules, counting
// their years as the tenant does.
func (p *policy) withRules(rs []rules.Rule) *policy {
	for i := range rs {
		for j := range rs[i].Triggers {
			rs[i].Triggers[j].YearEnd = p.yearEnd
		}
	}
	return &policy{rules: rs, holds: p.holds, yearEnd: p.yearEnd}
}

// purgePreview is PreviewPurges' count, per rule, of what would be
// purged or is held before until.
type purgePreview struct {
	until      time.Time
	sampleSize int
	resp       *retentionv1.PreviewPurgesResponse
	rules      map[string]*retentionv1.RulePreview
	subjects   map[string]map[string]bool // per rule, the subjects counted
}

// count adds the verdict v on subject's data of category c (whose state
// is st) to its rule's preview.
func (pv *purgePreview) count(st *subjectState, subject, c string, v rules.Verdict) {
	if v.RuleID == "" {
		return
	}
	rp, ok := pv.rules[v.RuleID]
	if !ok {
		rp = &retentionv1.RulePreview{RuleId: v.RuleID, Action: v.Action}
		pv.rules[v.RuleID] = rp
		pv.subjects[v.RuleID] = map[string]bool{}
	}
	switch {
	case !v.Due && v.HeldBy != "":
		rp.Held++
	case st.pending(c, v) && v.PurgeAt.Before(pv.until):
		rp.Items++
		if !pv.subjects[v.RuleID][subject] {
			pv.subjects[v.RuleID][subject] = true
			rp.Subjects++
			if len(rp.SampleSubjectIds) < pv.sampleSize {
				rp.SampleSubjectIds = append(rp.SampleSubjectIds, subject)
			}
		}
		if rp.FirstPurgeAt == nil || v.PurgeAt.Before(rp.FirstPurgeAt.AsTime()) {
			rp.FirstPurgeAt = ts(v.PurgeAt)
		}
	}
}

// response is the previews of the rules that would purge or are held, in
// rule order, with their sample subjects sorted.
func (pv *purgePreview) response() *retentionv1.PreviewPurgesResponse {
	resp := pv.resp
	for _, id := range slices.Sorted(maps.Keys(pv.rules)) {
		if rp := pv.rules[id]; rp.Items > 0 || rp.Held > 0 {
			slices.Sort(rp.SampleSubjectIds)
			resp.Rules = append(resp.Rules, rp)
		}
	}
	return resp
}

// prefixViolations re-reports an InvalidArgument's fields under a prefix.
func prefixViolations(err error, prefix string) error {
	vs := apierror.Violations(err)
	if len(vs) == 0 {
		return err
	}
	for i := range vs {
		vs[i].Field = prefix + strings.TrimPrefix(vs[i].Field, "rule.")
	}
	return apierror.InvalidArgument(vs...)
}
