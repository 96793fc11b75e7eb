package dsar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// plan is a request's fan-out, worked out from the neighbours before the
// write transaction that commits it.
type plan struct {
	// event is the directive to publish, nil when nothing is sent.
	event  *eventsv1.Event
	expect []tasks.Expect
	// held lists systems not sent the directive, every category of theirs
	// in scope being under a legal hold.
	held []*dsarv1.Task
	// heldCategories are every held category with its hold.
	heldCategories []*dsarv1.HeldCategory
	// consentCauses are the causes the consent service tracks.
	consentCauses []*commonv1.Cause
	// info is the Art. 15(1) information, for access and portability.
	info []byte
	// manual marks a request that waits for a person (Art. 22 review).
	manual bool
}

// fanoutNow fans a request out right after its verification committed;
// a failure is logged and left to the sweep.
func (s *Service) fanoutNow(ctx context.Context, tenant, id string) {
	_ = s.tryFanout(ctx, tenant, id)
	s.reportFanoutHealth()
}

// tryFanout fans the request out and keeps the record of failing
// fan-outs: a failure is logged with its step, since when and how many
// attempts, counted in lethe.dsar.fanout.failing and shown on the request
// until an attempt succeeds. The caller reports the health detail
// (reportFanoutHealth) once it has tried all it tries.
func (s *Service) tryFanout(ctx context.Context, tenant, id string) error {
	err := s.fanoutRequest(ctx, tenant, id)
	if err == nil {
		s.fanout.clear(id)
		return nil
	}
	if ctx.Err() == nil {
		rec := s.fanout.record(id, tenant, err, s.Clock.Now())
		s.Logger.Warn("dsar: fan-out failed; the sweep retries it", "tenant", tenant, "request", id,
			"step", stepLabel(rec.step), "failing_since", rec.since, "attempts", rec.attempts, "error", rec.err)
	}
	return err
}

// fanoutPendingTx reports whether id's fan-out has yet to commit.
func fanoutPendingTx(tx *bolt.Tx, id string) bool {
	return store.BucketTx(tx, bucketPending).Get([]byte(id)) != nil
}

// fanoutPending retries the fan-out of every verified request whose
// fan-out has not committed.
func (s *Service) fanoutPending(ctx context.Context) error {
	pending := map[string]string{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, bucketPending).ForEach(func(k, v []byte) error {
			pending[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return err
	}
	s.fanout.keepOnly(pending)
	for id, tenant := range pending {
		// Each failure is logged by tryFanout; the sweep goes on with
		// the others.
		_ = s.tryFanout(ctx, tenant, id)
	}
	s.reportFanoutHealth()
	return nil
}

// fanoutRequest works out a request's plan and commits it: the directive and
// one task per system, or the consent service's causes to follow. Running
// it twice is harmless: the second finds the request no longer pending,
// and the consent service answers a repeated call with its first answer.
// An error names the step that failed (stepOf) and holds no subject id.
func (s *Service) fanoutRequest(ctx context.Context, tenant, id string) error {
	var r *dsarv1.Request
	var pending bool
	err := s.DB.View(func(tx *bolt.Tx) error {
		pending = fanoutPendingTx(tx, id)
		var err error
		r, err = requestTx(tx, tenant, id)
		return err
	})
	if err != nil || !pending {
		return atStep(dsarv1.FanoutStep_FANOUT_STEP_COMMIT, err)
	}
	p, err := s.plan(ctx, r)
	if err != nil {
		return redactFanoutError(err, r.SubjectId)
	}
	// Batch: fan-outs of concurrent verifications share one commit. The
	// function changes nothing when the request is no longer pending, so
	// running it twice is harmless.
	return atStep(dsarv1.FanoutStep_FANOUT_STEP_COMMIT, s.DB.Batch(func(tx *bolt.Tx) error {
		return s.commitPlanTx(ctx, tx, tenant, id, p)
	}))
}

// commitPlanTx commits the plan p of a request pending fan-out: the
// directive and one task per system, or the consent service's causes to
// follow. It changes nothing when the request is no longer pending.
func (s *Service) commitPlanTx(ctx context.Context, tx *bolt.Tx, tenant, id string, p *plan) error {
	if !fanoutPendingTx(tx, id) {
		return nil
	}
	r, err := requestTx(tx, tenant, id)
	if err != nil {
		return err
	}
	if err := store.BucketTx(tx, bucketPending).Delete([]byte(id)); err != nil {
		return err
	}
	sec, err := secretsTx(tx, id)
	if err != nil {
		return err
	}
	sec.Info = p.info
	r.ConsentCauses = p.consentCauses
	r.Result = &dsarv1.Result{Tasks: p.held, Held: p.heldCategories}
	if p.event != nil {
		sec.Events = append(sec.Events, p.event.Id)
	}
	if err := putSecretsTx(tx, id, sec); err != nil {
		return err
	}
	if err := s.putRequestTx(tx, r); err != nil {
		return err
	}
	switch {
	case len(p.consentCauses) > 0:
		return store.BucketTx(tx, bucketFollowing).Put([]byte(id), []byte(tenant))
	case p.manual:
		return nil
	case p.event != nil:
		// With no system to expect the tracker completes the cause at
		// once (onCauseComplete, in this transaction).
		return s.tracker.PublishTx(ctx, tx, p.event, p.expect)
	default:
		// Nothing to send: everything in scope is held, or no system
		// holds data in scope.
		return s.finishTx(tx, r, nil)
	}
}

// planAhead works out, before the write that verifies a request, the
// fan-out that write can commit with the verification (AttestIdentity):
// one commit of dsar.db instead of two, and the directive is in the
// outbox when the verification returns. Only plans that merely read from
// the neighbours are worked out ahead (erasure, rectification, access,
// portability): an objection, a restriction or a withdrawal changes the
// consent service, which must not happen before the verification
// commits. It returns nil when the request cannot be verified now or a
// neighbour fails; the fan-out after the commit (fanoutNow) and the sweep
// then do it as before, and record the failure.
func (s *Service) planAhead(ctx context.Context, tenant, id string) *plan {
	var r *dsarv1.Request
	if err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		r, err = requestTx(tx, tenant, id)
		return err
	}); err != nil {
		return nil
	}
	switch r.State {
	case dsarv1.RequestState_REQUEST_STATE_RECEIVED, dsarv1.RequestState_REQUEST_STATE_VERIFYING_IDENTITY:
	default:
		return nil
	}
	switch r.Type {
	case dsarv1.RequestType_REQUEST_TYPE_ERASURE, dsarv1.RequestType_REQUEST_TYPE_RECTIFICATION,
		dsarv1.RequestType_REQUEST_TYPE_ACCESS, dsarv1.RequestType_REQUEST_TYPE_PORTABILITY:
	default:
		return nil
	}
	p, err := s.plan(ctx, r)
	if err != nil {
		return nil
	}
	return p
}

// plan asks the neighbours what the request's fan-out is. An error names
// its step (atStep).
func (s *Service) plan(ctx context.Context, r *dsarv1.Request) (*plan, error) {
	cause := causeOf(r.DsarId)
	ev := &eventsv1.Event{Id: outbox.NewEventID(), TenantId: r.TenantId, SubjectId: r.SubjectId, Cause: cause}
	switch r.Type {
	case dsarv1.RequestType_REQUEST_TYPE_ERASURE:
		return s.planErasure(ctx, r, ev)
	case dsarv1.RequestType_REQUEST_TYPE_RECTIFICATION:
		return s.planRectification(ctx, r, ev)
	case dsarv1.RequestType_REQUEST_TYPE_ACCESS, dsarv1.RequestType_REQUEST_TYPE_PORTABILITY:
		return s.planAccess(ctx, r, ev)
	case dsarv1.RequestType_REQUEST_TYPE_OBJECTION, dsarv1.RequestType_REQUEST_TYPE_RESTRICTION,
		dsarv1.RequestType_REQUEST_TYPE_CONSENT_WITHDRAWAL:
		return s.planConsent(ctx, r, cause)
	case dsarv1.RequestType_REQUEST_TYPE_AUTOMATED_DECISION_REVIEW:
		return &plan{manual: true}, nil
	}
	return &plan{}, nil
}

// planRectification routes the corrections' categories to the systems
// that hold them.
func (s *Service) planRectification(ctx context.Context, r *dsarv1.Request, ev *eventsv1.Event) (*plan, error) {
	var cats []string
	for _, c := range r.GetRectification().Corrections {
		cats = append(cats, c.Category.Id)
	}
	expect, err := s.expect(ctx, r.TenantId, registryclient.Scope{Categories: cats})
	if err != nil {
		return nil, err
	}
	ev.Body = &eventsv1.Event_RectificationRequested{RectificationRequested: &eventsv1.RectificationRequested{Categories: categories(cats)}}
	return &plan{event: ev, expect: expect}, nil
}

// planAccess routes an access or portability request's categories (all
// when it names none) and gathers what Art. 15 tells the subject; a
// portable copy asks only for data on the bases Art. 20(1)(a) names.
func (s *Service) planAccess(ctx context.Context, r *dsarv1.Request, ev *eventsv1.Event) (*plan, error) {
	portable := r.Type == dsarv1.RequestType_REQUEST_TYPE_PORTABILITY
	cats := r.GetAccess().GetCategories()
	if portable {
		cats = r.GetPortability().Categories
	}
	scope := registryclient.Scope{All: len(cats) == 0}
	for _, c := range cats {
		scope.Categories = append(scope.Categories, c.Id)
	}
	expect, err := s.expect(ctx, r.TenantId, scope)
	if err != nil {
		return nil, err
	}
	info, err := s.article15(ctx, r.TenantId)
	if err != nil {
		return nil, err
	}
	body := &eventsv1.AccessRequested{Scope: &eventsv1.Scope{All: len(cats) == 0, Categories: cats}, Portability: portable}
	if portable {
		body.LegalBases = portableBases
	}
	ev.Body = &eventsv1.Event_AccessRequested{AccessRequested: body}
	return &plan{event: ev, expect: expect, info: info}, nil
}

// planConsent hands an objection, a restriction or a withdrawal of
// consent to the consent service, which fans it out; the request follows
// the causes it answers with.
func (s *Service) planConsent(ctx context.Context, r *dsarv1.Request, cause *commonv1.Cause) (*plan, error) {
	if s.consent == nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_CONSENT, errors.New("dsar: no consent connection"))
	}
	p := &plan{consentCauses: []*commonv1.Cause{cause}}
	switch r.Type {
	case dsarv1.RequestType_REQUEST_TYPE_OBJECTION:
		o := r.GetObjection()
		if _, err := s.consent.RecordObjection(ctx, &consentv1.RecordObjectionRequest{RequestId: "dsar-" + r.DsarId, TenantId: r.TenantId,
			SubjectId: r.SubjectId, Scope: o.Scope, PurposeIds: o.PurposeIds, Cause: cause}); err != nil {
			return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_CONSENT, fmt.Errorf("consent: record objection: %w", err))
		}
	case dsarv1.RequestType_REQUEST_TYPE_RESTRICTION:
		x := r.GetRestriction()
		if _, err := s.consent.ApplyRestriction(ctx, &consentv1.ApplyRestrictionRequest{RequestId: "dsar-" + r.DsarId, TenantId: r.TenantId,
			SubjectId: r.SubjectId, Ground: x.Ground, PurposeIds: x.PurposeIds, Cause: cause}); err != nil {
			return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_CONSENT, fmt.Errorf("consent: apply restriction: %w", err))
		}
	case dsarv1.RequestType_REQUEST_TYPE_CONSENT_WITHDRAWAL:
		causes, err := s.withdrawConsents(ctx, r)
		if err != nil {
			return nil, err
		}
		p.consentCauses = causes
	}
	return p, nil
}

// withdrawConsents records a withdrawal per purpose the request names. A
// withdrawal's cause is its consent record: the consent service owns it.
// The request follows one record per purpose.
func (s *Service) withdrawConsents(ctx context.Context, r *dsarv1.Request) ([]*commonv1.Cause, error) {
	var causes []*commonv1.Cause
	for i, purpose := range r.GetWithdrawal().PurposeIds {
		resp, err := s.consent.RecordConsent(ctx, &consentv1.RecordConsentRequest{RequestId: fmt.Sprintf("dsar-%s-%d", r.DsarId, i),
			TenantId: r.TenantId, SubjectId: r.SubjectId, PurposeId: purpose, Action: consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW,
			Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
		if err != nil {
			return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_CONSENT, fmt.Errorf("consent: withdraw %s: %w", purpose, err))
		}
		causes = append(causes, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: resp.Record.RecordId})
	}
	return causes, nil
}

// portableBases are the legal bases Art. 20(1)(a) makes data portable on.
var portableBases = []commonv1.LegalBasis{commonv1.LegalBasis_LEGAL_BASIS_CONSENT, commonv1.LegalBasis_LEGAL_BASIS_CONTRACT}

func categories(ids []string) []*commonv1.DataCategory {
	out := make([]*commonv1.DataCategory, 0, len(ids))
	for _, id := range ids {
		out = append(out, &commonv1.DataCategory{Id: id})
	}
	return out
}

func (s *Service) expect(ctx context.Context, tenant string, scope registryclient.Scope) ([]tasks.Expect, error) {
	if s.routes == nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_REGISTRY, errors.New("dsar: no registry connection to route directives"))
	}
	expect, err := s.routes.Expect(ctx, tenant, scope)
	if err != nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_REGISTRY, fmt.Errorf("registry: route: %w", err))
	}
	return expect, nil
}

// planErasure routes an erasure and takes out what legal holds cover. A
// hold on a category holds it and everything under it; a system category
// that has a held category under it ("user" above "user.financial") is
// held too, because the event's scope cannot say "all of user except
// user.financial", and erasing held data is the worse mistake. A hold
// without a category holds everything: nothing is sent.
func (s *Service) planErasure(ctx context.Context, r *dsarv1.Request, ev *eventsv1.Event) (*plan, error) {
	p := &plan{}
	e := r.GetErasure()
	var scope []string
	for _, c := range e.Categories {
		scope = append(scope, c.Id)
	}
	// The three questions are independent: they are asked at once, so that
	// the plan waits for the slowest neighbour, not for the three in turn
	// (while every caller of AttestIdentity waits for its plan).
	var (
		expect []tasks.Expect
		holds  []*retentionv1.Hold
		keep   []*eventsv1.Obligation
		errs   [3]error
		asked  sync.WaitGroup
	)
	asked.Go(func() {
		expect, errs[0] = s.expect(ctx, r.TenantId, registryclient.Scope{All: len(scope) == 0, Categories: scope})
	})
	asked.Go(func() { holds, errs[1] = s.holds(ctx, r.TenantId, r.SubjectId) })
	asked.Go(func() { keep, errs[2] = s.obligations(ctx, r.TenantId, r.SubjectId, e.Categories) })
	asked.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err // the first step's, as if asked in turn
		}
	}
	body := &eventsv1.ErasureRequested{Action: e.Action, Scope: &eventsv1.Scope{All: len(scope) == 0, Categories: e.Categories}, Keep: keep}
	ev.Body = &eventsv1.Event_ErasureRequested{ErasureRequested: body}
	if len(holds) == 0 {
		p.event, p.expect = ev, expect
		return p, nil
	}
	systems, err := s.systemCategories(ctx, r.TenantId)
	if err != nil {
		return nil, err
	}
	sendable := p.withhold(expect, systems, scope, holds)
	if len(p.expect) == 0 {
		return p, nil
	}
	body.Scope = &eventsv1.Scope{Categories: categories(sendable)}
	p.event = ev
	return p, nil
}

// withhold splits the systems expected to answer an erasure of scope by
// the holds: a system with a category in scope that no hold covers stays
// in p.expect, one whose every category in scope is held goes to p.held.
// It returns the categories still sent, sorted.
func (p *plan) withhold(expect []tasks.Expect, systems map[string][]string, scope []string, holds []*retentionv1.Hold) []string {
	seenHeld := map[string]bool{}
	sendable := map[string]bool{}
	for _, x := range expect {
		var send []string
		res := &dsarv1.Task{SystemId: x.SystemID, AnswerMode: x.Mode, State: commonv1.TaskState_TASK_STATE_HELD}
		for _, c := range contract.CategoriesInScope(systems[x.SystemID], scope) {
			h := heldBy(holds, c)
			if h == nil {
				send = append(send, c)
				continue
			}
			hc := heldCategory(c, h)
			res.Held = append(res.Held, hc)
			if !seenHeld[c+"\x00"+h.HoldId] {
				seenHeld[c+"\x00"+h.HoldId] = true
				p.heldCategories = append(p.heldCategories, hc)
			}
		}
		if len(send) == 0 {
			p.held = append(p.held, res)
			continue
		}
		for _, c := range send {
			sendable[c] = true
		}
		p.expect = append(p.expect, x)
	}
	ids := make([]string, 0, len(sendable))
	for c := range sendable {
		ids = append(ids, c)
	}
	sort.Strings(ids)
	return ids
}

// heldBy returns the first of holds that holds category c: a hold without
// a category, or one on c, above it or under it.
func heldBy(holds []*retentionv1.Hold, c string) *retentionv1.Hold {
	for _, h := range holds {
		hc := h.GetCategory().GetId()
		if hc == "" || contract.CategoryCovers(hc, c) || contract.CategoryCovers(c, hc) {
			return h
		}
	}
	return nil
}

func heldCategory(c string, h *retentionv1.Hold) *dsarv1.HeldCategory {
	return &dsarv1.HeldCategory{Category: &commonv1.DataCategory{Id: c}, HoldId: h.HoldId, Reason: h.Reason, Until: h.EndTime}
}

// holds asks the retention service for the holds in force that apply to
// the subject. Without an answer nothing is sent: an erasure that might
// destroy held data waits.
func (s *Service) holds(ctx context.Context, tenant, subject string) ([]*retentionv1.Hold, error) {
	if s.retention == nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_RETENTION, errors.New("dsar: no retention connection to ask for legal holds"))
	}
	var out []*retentionv1.Hold
	token := ""
	for {
		resp, err := s.retention.ListHolds(ctx, &retentionv1.ListHoldsRequest{TenantId: tenant, SubjectId: subject, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_RETENTION, fmt.Errorf("retention: list holds: %w", err))
		}
		now := s.Clock.Now()
		for _, h := range resp.Holds {
			if h.SubjectId != "" && h.SubjectId != subject {
				continue
			}
			if h.StartTime != nil && h.StartTime.AsTime().After(now) {
				continue
			}
			if h.EndTime != nil && !h.EndTime.AsTime().After(now) {
				continue
			}
			out = append(out, h)
		}
		if token = resp.NextPageToken; token == "" {
			return out, nil
		}
	}
}

// obligations asks the retention service what legal obligations keep of
// the subject's data in the erasure's scope (its minimum-retention rules:
// accounting law and the like, GDPR Art. 17(3)(b)), so that every system
// is told up front which categories it keeps, on which ground and until
// when, and answers RETAINED for them. As with holds, without an answer
// nothing is sent.
func (s *Service) obligations(ctx context.Context, tenant, subject string, scope []*commonv1.DataCategory) ([]*eventsv1.Obligation, error) {
	if s.retention == nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_RETENTION, errors.New("dsar: no retention connection to ask for retention obligations"))
	}
	resp, err := s.retention.ListObligations(ctx, &retentionv1.ListObligationsRequest{TenantId: tenant, SubjectId: subject, Categories: scope})
	if err != nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_RETENTION, fmt.Errorf("retention: list obligations: %w", err))
	}
	return resp.Obligations, nil
}

// systemCategories returns the categories each system of the tenant holds.
func (s *Service) systemCategories(ctx context.Context, tenant string) (map[string][]string, error) {
	systems, err := s.listSystems(ctx, tenant)
	if err != nil {
		return nil, err
	}
	out := map[string][]string{}
	for _, sys := range systems {
		for _, c := range sys.Categories {
			out[sys.SystemId] = append(out[sys.SystemId], c.Id)
		}
	}
	return out, nil
}

func (s *Service) listSystems(ctx context.Context, tenant string) ([]*registryv1.System, error) {
	var out []*registryv1.System
	token := ""
	for {
		resp, err := s.registry.ListSystems(ctx, &registryv1.ListSystemsRequest{TenantId: tenant, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_REGISTRY, fmt.Errorf("registry: list systems: %w", err))
		}
		out = append(out, resp.Systems...)
		if token = resp.NextPageToken; token == "" {
			return out, nil
		}
	}
}

// article15 gathers the information Art. 15(1) gives the subject beside
// the data: purposes and legal bases, categories, recipients (and their
// countries and transfer grounds), retention, the right to complain and
// to whom, and the existence of automated decision-making with the logic
// involved and its significance and consequences (Art. 15(1)(h)); an
// empty list says there is none. It comes from the registry at fan-out, so the package states
// what held when the request was handled.
func (s *Service) article15(ctx context.Context, tenant string) ([]byte, error) {
	t, err := s.registry.GetTenant(ctx, &registryv1.GetTenantRequest{TenantId: tenant})
	if err != nil {
		return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_REGISTRY, fmt.Errorf("registry: get tenant: %w", err))
	}
	var activities []*registryv1.ProcessingActivity
	token := ""
	for {
		resp, err := s.registry.ListActivities(ctx, &registryv1.ListActivitiesRequest{TenantId: tenant, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, atStep(dsarv1.FanoutStep_FANOUT_STEP_REGISTRY, fmt.Errorf("registry: list activities: %w", err))
		}
		activities = append(activities, resp.Activities...)
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	systems, err := s.listSystems(ctx, tenant)
	if err != nil {
		return nil, err
	}
	info := article15Info{Controller: controllerInfo{Name: t.Tenant.GetDisplayName(), Country: t.Tenant.GetSettings().GetCountry()}}
	if dpo := t.Tenant.GetSettings().GetDpo(); dpo != nil {
		info.Controller.DPO = &contactInfo{Name: dpo.Name, Email: dpo.Email, URL: dpo.Url}
	}
	if sa := t.Tenant.GetSettings().GetSupervisoryAuthority(); sa != nil {
		info.RightToComplain = &authorityInfo{Name: sa.Name, Country: sa.Country, URL: sa.Url}
	}
	info.AutomatedDecisionMaking = []automatedInfo{}
	for _, a := range activities {
		pi := purposeInfo{Activity: a.Name, Purpose: a.Purpose, PurposeID: a.PurposeId, LegalBasis: a.LegalBasis.String(),
			Retention: a.Retention, Recipients: a.RecipientSystemIds}
		for _, c := range a.Categories {
			pi.Categories = append(pi.Categories, c.Id)
		}
		info.Purposes = append(info.Purposes, pi)
		if adm := a.AutomatedDecisionMaking; adm != nil {
			ai := automatedInfo{Activity: a.Name, SolelyAutomated: adm.SolelyAutomated, Profiling: adm.Profiling,
				Logic: adm.Logic, Significance: adm.Significance, SpecialCategories: adm.SpecialCategories}
			if adm.Exception != registryv1.Art22Exception_ART22_EXCEPTION_UNSPECIFIED {
				ai.Exception = adm.Exception.String()
			}
			info.AutomatedDecisionMaking = append(info.AutomatedDecisionMaking, ai)
		}
	}
	for _, sys := range systems {
		ri := recipientInfo{SystemID: sys.SystemId, Name: sys.Name, Kind: sys.Kind.String(), Country: sys.Country}
		if sys.Transfer != nil {
			ri.TransferMechanism = sys.Transfer.Mechanism.String()
		}
		for _, c := range sys.Categories {
			ri.Categories = append(ri.Categories, c.Id)
		}
		info.Recipients = append(info.Recipients, ri)
	}
	info.Rights = []string{"rectification (Art. 16)", "erasure (Art. 17)", "restriction (Art. 18)", "objection (Art. 21)", "complaint to a supervisory authority (Art. 77)"}
	if len(info.AutomatedDecisionMaking) > 0 {
		info.Rights = append(info.Rights, "human intervention, expressing one's point of view and contesting an automated decision (Art. 22(3))")
	}
	info.GeneratedAt = s.Clock.Now().Format(time.RFC3339)
	return json.Marshal(info)
}

// The Art. 15(1) information in the package.
type article15Info struct {
	Controller      controllerInfo  `json:"controller"`
	Purposes        []purposeInfo   `json:"purposes"`
	Recipients      []recipientInfo `json:"recipients"`
	Rights          []string        `json:"rights"`
	RightToComplain *authorityInfo  `json:"right_to_complain,omitempty"`
	// AutomatedDecisionMaking is Art. 15(1)(h): empty when the tenant
	// records none, and then says so.
	AutomatedDecisionMaking []automatedInfo `json:"automated_decision_making"`
	GeneratedAt             string          `json:"generated_at"`
}

// automatedInfo is one activity's automated decision-making (Art. 15(1)(h),
// Art. 22).
type automatedInfo struct {
	Activity          string `json:"activity"`
	SolelyAutomated   bool   `json:"solely_automated"`
	Profiling         bool   `json:"profiling"`
	Exception         string `json:"art22_exception,omitempty"`
	Logic             string `json:"logic"`
	Significance      string `json:"significance_and_consequences"`
	SpecialCategories bool   `json:"special_categories,omitempty"`
}

type controllerInfo struct {
	Name    string       `json:"name"`
	Country string       `json:"country,omitempty"`
	DPO     *contactInfo `json:"dpo,omitempty"`
}

type contactInfo struct {
	Name  string `json:"name,omitempty"`
	Email string `json:"email,omitempty"`
	URL   string `json:"url,omitempty"`
}

type authorityInfo struct {
	Name    string `json:"name"`
	Country string `json:"country,omitempty"`
	URL     string `json:"url,omitempty"`
}

type purposeInfo struct {
	Activity   string   `json:"activity"`
	Purpose    string   `json:"purpose"`
	PurposeID  string   `json:"purpose_id,omitempty"`
	LegalBasis string   `json:"legal_basis"`
	Categories []string `json:"categories"`
	Recipients []string `json:"recipients,omitempty"`
	Retention  string   `json:"retention"`
}

type recipientInfo struct {
	SystemID          string   `json:"system_id"`
	Name              string   `json:"name"`
	Kind              string   `json:"kind"`
	Country           string   `json:"country"`
	TransferMechanism string   `json:"transfer_mechanism,omitempty"`
	Categories        []string `json:"categories"`
}
