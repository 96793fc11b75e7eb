package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

// A plan is what applying a tenant file would change: the file against the
// live configuration the services list. It is computed from the same list
// RPCs `lethe export` reads, so export then diff finds nothing.

// live is a tenant's configuration as the services hold it now.
type live struct {
	exists     bool
	tenant     *registryv1.Tenant
	categories map[string]*registryv1.Category // the tenant's own
	taxonomy   map[string]bool                 // built-in ids; nil when unknown
	purposes   map[string]*consentv1.Purpose
	systems    map[string]*registryv1.System
	activities map[string]*registryv1.ProcessingActivity
	rules      map[string]*retentionv1.Rule
	holds      map[string]*retentionv1.Hold // in force and ended
	web        *consentv1.WebSettings       // nil when the tenant has none
}

// notFoundKind returns the kind of a NotFound answer ("tenant"), or "".
func notFoundKind(err error) string {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.NotFound {
		return ""
	}
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			return info.Metadata["kind"]
		}
	}
	return ""
}

// waitTenant retries fn while a service answers that it does not know the
// tenant yet: the consent and retention services learn of a new tenant
// from the registry's event, a moment after CreateTenant.
func waitTenant(ctx context.Context, fn func() error) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := fn()
		if err == nil || notFoundKind(err) != "tenant" || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// fetchLive reads a tenant's configuration from every service.
func fetchLive(ctx context.Context, cl *clients, tenantID string) (*live, error) {
	l := &live{
		categories: map[string]*registryv1.Category{}, purposes: map[string]*consentv1.Purpose{},
		systems: map[string]*registryv1.System{}, activities: map[string]*registryv1.ProcessingActivity{},
		rules: map[string]*retentionv1.Rule{}, holds: map[string]*retentionv1.Hold{},
	}
	cctx, cancel := cl.call(ctx)
	t, err := cl.registry.GetTenant(cctx, &registryv1.GetTenantRequest{TenantId: tenantID})
	cancel()
	switch {
	case notFoundKind(err) == "tenant":
		// A new tenant: the built-in taxonomy is the same for every tenant,
		// so any other tenant's listing tells which categories exist.
		l.taxonomy, err = anyTaxonomy(ctx, cl)
		return l, err
	case err != nil:
		return nil, fmt.Errorf("registry: get tenant %s: %w", tenantID, err)
	}
	l.exists, l.tenant = true, t.Tenant

	cats, err := listCategories(ctx, cl, tenantID)
	if err != nil {
		return nil, err
	}
	l.taxonomy = map[string]bool{}
	for _, c := range cats {
		if c.BuiltIn {
			l.taxonomy[c.Id] = true
		} else {
			l.categories[c.Id] = c
		}
	}
	if err := l.fetchRegistry(ctx, cl, tenantID); err != nil {
		return nil, err
	}
	if err := l.fetchPolicies(ctx, cl, tenantID); err != nil {
		return nil, err
	}
	return l, nil
}

// fetchRegistry reads the tenant's systems and processing activities.
func (l *live) fetchRegistry(ctx context.Context, cl *clients, tenantID string) error {
	systems, err := listAll(func(size int32, token string) (*registryv1.ListSystemsResponse, error) {
		cctx, cancel := cl.call(ctx)
		defer cancel()
		return cl.registry.ListSystems(cctx, &registryv1.ListSystemsRequest{TenantId: tenantID, PageSize: size, PageToken: token})
	})
	if err != nil {
		return wrapErr("registry: list systems", err)
	}
	for _, s := range systems.Systems {
		l.systems[s.SystemId] = s
	}
	activities, err := listAll(func(size int32, token string) (*registryv1.ListActivitiesResponse, error) {
		cctx, cancel := cl.call(ctx)
		defer cancel()
		return cl.registry.ListActivities(cctx, &registryv1.ListActivitiesRequest{TenantId: tenantID, PageSize: size, PageToken: token})
	})
	if err != nil {
		return wrapErr("registry: list activities", err)
	}
	for _, a := range activities.Activities {
		l.activities[a.ActivityId] = a
	}
	return nil
}

// fetchPolicies reads the tenant's purposes, retention rules and holds.
// The consent and retention services learn a new tenant from the
// registry's events, so their listings wait for it (waitTenant).
func (l *live) fetchPolicies(ctx context.Context, cl *clients, tenantID string) error {
	purposes, err := listAll(func(size int32, token string) (resp *consentv1.ListPurposesResponse, err error) {
		err = waitTenant(ctx, func() error {
			cctx, cancel := cl.call(ctx)
			defer cancel()
			resp, err = cl.consent.ListPurposes(cctx, &consentv1.ListPurposesRequest{TenantId: tenantID, PageSize: size, PageToken: token})
			return err
		})
		return resp, err
	})
	if err != nil {
		return wrapErr("consent: list purposes", err)
	}
	for _, p := range purposes.Purposes {
		l.purposes[p.PurposeId] = p
	}
	cctx, cancel := cl.call(ctx)
	web, err := cl.consent.GetWebSettings(cctx, &consentv1.GetWebSettingsRequest{TenantId: tenantID})
	cancel()
	switch {
	case notFoundKind(err) == "web settings":
	case err != nil:
		return wrapErr("consent: get web settings", err)
	default:
		l.web = web.Settings
	}
	rules, err := listAll(func(size int32, token string) (resp *retentionv1.ListRulesResponse, err error) {
		err = waitTenant(ctx, func() error {
			cctx, cancel := cl.call(ctx)
			defer cancel()
			resp, err = cl.retention.ListRules(cctx, &retentionv1.ListRulesRequest{TenantId: tenantID, PageSize: size, PageToken: token})
			return err
		})
		return resp, err
	})
	if err != nil {
		return wrapErr("retention: list rules", err)
	}
	for _, r := range rules.Rules {
		l.rules[r.RuleId] = r
	}
	holds, err := listAll(func(size int32, token string) (*retentionv1.ListHoldsResponse, error) {
		cctx, cancel := cl.call(ctx)
		defer cancel()
		return cl.retention.ListHolds(cctx, &retentionv1.ListHoldsRequest{TenantId: tenantID, IncludeEnded: true, PageSize: size, PageToken: token})
	})
	if err != nil {
		return wrapErr("retention: list holds", err)
	}
	for _, h := range holds.Holds {
		l.holds[h.HoldId] = h
	}
	return nil
}

func listCategories(ctx context.Context, cl *clients, tenantID string) ([]*registryv1.Category, error) {
	resp, err := listAll(func(size int32, token string) (*registryv1.ListCategoriesResponse, error) {
		cctx, cancel := cl.call(ctx)
		defer cancel()
		return cl.registry.ListCategories(cctx, &registryv1.ListCategoriesRequest{TenantId: tenantID, PageSize: size, PageToken: token})
	})
	if err != nil {
		return nil, wrapErr("registry: list categories", err)
	}
	return resp.Categories, nil
}

// anyTaxonomy returns the built-in category ids as another tenant's listing
// shows them, or nil on a platform without tenants.
func anyTaxonomy(ctx context.Context, cl *clients) (map[string]bool, error) {
	cctx, cancel := cl.call(ctx)
	resp, err := cl.registry.ListTenants(cctx, &registryv1.ListTenantsRequest{PageSize: 1})
	cancel()
	if err != nil {
		return nil, wrapErr("registry: list tenants", err)
	}
	if len(resp.Tenants) == 0 {
		return nil, nil
	}
	cats, err := listCategories(ctx, cl, resp.Tenants[0].TenantId)
	if err != nil {
		return nil, err
	}
	ids := map[string]bool{}
	for _, c := range cats {
		if c.BuiltIn {
			ids[c.Id] = true
		}
	}
	return ids, nil
}

// platformError is an answer of a service that is not about the file: the
// platform is unreachable, refused the caller, or failed.
type platformError struct{ err error }

func (e *platformError) Error() string { return e.err.Error() }
func (e *platformError) Unwrap() error { return e.err }

func wrapErr(what string, err error) error {
	if err == nil {
		return nil
	}
	return &platformError{fmt.Errorf("%s: %w", what, err)}
}

// op is what a change does.
type op string

const (
	opCreate op = "create"
	opUpdate op = "update"
	opDelete op = "delete"
)

// change is one call the plan makes.
type change struct {
	obj    tenantfile.Object
	op     op
	before proto.Message // live, normalised; nil for create
	after  proto.Message // desired; nil for delete
	// deps are the objects the call needs to exist ("tenant",
	// "category/x", "system/y"); when the plan itself creates one, the
	// call can be checked with validate_only only once its turn comes.
	deps []string
	call func(ctx context.Context, requestID string, validateOnly bool) error
}

func (c *change) key() string {
	if c.obj.Kind == "tenant" {
		return "tenant"
	}
	return c.obj.Kind + "/" + c.obj.ID
}

// name is how output names the changed object: "system clio/newsletter".
func (c *change) name(tenant string) string {
	if c.obj.Kind == "tenant" {
		return "tenant " + tenant
	}
	return c.obj.Kind + " " + tenant + "/" + c.obj.ID
}

// requestID derives the change's idempotency key from its content and the
// state it changes: applying the same file twice sends the same ids (so a
// retried apply never acts twice), and a later change back to an earlier
// state gets a new id instead of the first answer replayed.
func (c *change) requestID(tenant string) string {
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s\x00", tenant, c.key(), c.op)
	for _, m := range []proto.Message{c.before, c.after} {
		if m != nil {
			b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
			fmt.Fprintf(h, "%d\x00", len(b))
			h.Write(b)
		}
	}
	return "lethe-apply-" + hex.EncodeToString(h.Sum(nil))[:40]
}

// plan is a file's changes against the live state.
type plan struct {
	file    *tenantfile.File
	live    *live
	changes []*change
	// unmanaged are live objects the file does not declare, left alone
	// without --prune (or that no RPC can remove).
	unmanaged []string
}

// normalise clears what the services set on their own, so that a live
// object compares equal to the declaration it came from.
func normalise(m proto.Message, desired proto.Message) proto.Message {
	if m == nil {
		return nil
	}
	m = proto.Clone(m)
	switch v := m.(type) {
	case *registryv1.Tenant:
		v.CreatedAt, v.UpdatedAt = nil, nil
	case *registryv1.System:
		v.EffectiveAt = nil
	case *registryv1.Category:
		v.BuiltIn = false
		// A category that states no provenance takes its parent's; the
		// registry answers the inherited value, which the file's silence
		// agrees with.
		if d, ok := desired.(*registryv1.Category); ok && d.Provenance == registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED {
			v.Provenance = registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED
		}
	case *retentionv1.Hold:
		v.ReleasedAt = nil
		if d, ok := desired.(*retentionv1.Hold); ok && d.StartTime == nil {
			v.StartTime = nil
		}
	}
	return m
}

// makePlan compares the file with the live state. Problems are conflicts
// no call can resolve (a hold cannot be changed, a category not
// redefined), placed in the file.
func makePlan(f *tenantfile.File, l *live, cl *clients, prune bool) (*plan, tenantfile.Problems) {
	pl := &planner{plan: &plan{file: f, live: l}, cl: cl, tenant: f.TenantID(), prune: prune, declared: map[string]bool{}}
	for _, o := range f.Objects() {
		pl.declared[o.Kind+"/"+o.ID] = true
		c, current := pl.desired(o)
		pl.compare(c, current)
	}
	// Live objects the file does not declare, after every declared change.
	pl.removeRegistry()
	pl.removeRetention()
	pl.unmanagedConfiguration()
	return pl.plan, pl.problems
}

// planner is one run of makePlan: the plan it builds, what it needs to
// build the calls, and what it has found so far.
type planner struct {
	*plan
	cl       *clients
	tenant   string
	prune    bool
	declared map[string]bool // "kind/id" of every object in the file
	problems tenantfile.Problems
}

// desired is the change that makes the platform hold o, with its call and
// dependencies but no op yet, and the live object it would replace (nil
// when there is none).
func (pl *planner) desired(o tenantfile.Object) (*change, proto.Message) {
	c := &change{obj: o, after: o.Message}
	var current proto.Message
	switch m := o.Message.(type) {
	case *registryv1.Tenant:
		current = pl.tenantChange(c, m)
	case *registryv1.Category:
		current = pl.categoryChange(c, m)
	case *registryv1.System:
		current = pl.systemChange(c, m)
	case *consentv1.Purpose:
		current = pl.purposeChange(c, m)
	case *registryv1.ProcessingActivity:
		current = pl.activityChange(c, m)
	case *retentionv1.Rule:
		current = pl.ruleChange(c, m)
	case *retentionv1.Hold:
		current = pl.holdChange(c, m)
	case *consentv1.WebSettings:
		current = pl.webChange(c, m)
	}
	if o.Kind != "tenant" {
		c.deps = append(c.deps, "tenant")
	}
	return c, current
}

// liveObject returns objects[id], or a nil interface (not a typed nil)
// when there is none, so the caller can tell a create by current == nil.
func liveObject[M proto.Message](objects map[string]M, id string) proto.Message {
	if cur, ok := objects[id]; ok {
		return cur
	}
	return nil
}

// The calls below read c.op when they run, not when they are built: the
// op is settled by compare, after the call exists.

func (pl *planner) tenantChange(c *change, m *registryv1.Tenant) proto.Message {
	cl := pl.cl
	c.call = func(ctx context.Context, id string, vo bool) error {
		if c.op == opCreate {
			_, err := cl.registry.CreateTenant(ctx, &registryv1.CreateTenantRequest{RequestId: id, Tenant: m, ValidateOnly: vo})
			return err
		}
		_, err := cl.registry.UpdateTenant(ctx, &registryv1.UpdateTenantRequest{RequestId: id, Tenant: m, ValidateOnly: vo})
		return err
	}
	if pl.live.exists {
		return pl.live.tenant
	}
	return nil
}

func (pl *planner) categoryChange(c *change, m *registryv1.Category) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	c.deps = append(c.deps, categoryDep(contract.CategoryParent(m.Id)))
	c.call = func(ctx context.Context, id string, vo bool) error {
		_, err := cl.registry.DefineCategory(ctx, &registryv1.DefineCategoryRequest{RequestId: id, TenantId: tenant, Category: m, ValidateOnly: vo})
		return err
	}
	return liveObject(pl.live.categories, m.Id)
}

func (pl *planner) systemChange(c *change, m *registryv1.System) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	for _, cat := range m.Categories {
		c.deps = append(c.deps, categoryDep(cat.Id))
	}
	if m.ParentSystemId != "" {
		c.deps = append(c.deps, "system/"+m.ParentSystemId)
	}
	c.call = func(ctx context.Context, id string, vo bool) error {
		if c.op == opCreate {
			_, err := cl.registry.RegisterSystem(ctx, &registryv1.RegisterSystemRequest{RequestId: id, TenantId: tenant, System: m, ValidateOnly: vo})
			return err
		}
		_, err := cl.registry.UpdateSystem(ctx, &registryv1.UpdateSystemRequest{RequestId: id, TenantId: tenant, System: m, ValidateOnly: vo})
		return err
	}
	return liveObject(pl.live.systems, m.SystemId)
}

func (pl *planner) purposeChange(c *change, m *consentv1.Purpose) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	c.call = func(ctx context.Context, id string, vo bool) error {
		_, err := cl.consent.PutPurpose(ctx, &consentv1.PutPurposeRequest{RequestId: id, TenantId: tenant, Purpose: m, ValidateOnly: vo})
		return err
	}
	return liveObject(pl.live.purposes, m.PurposeId)
}

// webChange puts the web settings after the purposes the banner shows.
func (pl *planner) webChange(c *change, m *consentv1.WebSettings) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	for _, p := range pl.file.Purposes {
		c.deps = append(c.deps, "purpose/"+p.PurposeId)
	}
	c.call = func(ctx context.Context, id string, vo bool) error {
		_, err := cl.consent.PutWebSettings(ctx, &consentv1.PutWebSettingsRequest{RequestId: id, TenantId: tenant, Settings: m, ValidateOnly: vo})
		return err
	}
	if pl.live.web == nil {
		return nil
	}
	return pl.live.web
}

func (pl *planner) activityChange(c *change, m *registryv1.ProcessingActivity) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	for _, cat := range m.Categories {
		c.deps = append(c.deps, categoryDep(cat.Id))
	}
	for _, s := range m.RecipientSystemIds {
		c.deps = append(c.deps, "system/"+s)
	}
	c.call = func(ctx context.Context, id string, vo bool) error {
		_, err := cl.registry.PutActivity(ctx, &registryv1.PutActivityRequest{RequestId: id, TenantId: tenant, Activity: m, ValidateOnly: vo})
		return err
	}
	return liveObject(pl.live.activities, m.ActivityId)
}

func (pl *planner) ruleChange(c *change, m *retentionv1.Rule) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	c.deps = append(c.deps, categoryDep(m.GetCategory().GetId()))
	c.call = func(ctx context.Context, id string, vo bool) error {
		_, err := cl.retention.PutRule(ctx, &retentionv1.PutRuleRequest{RequestId: id, TenantId: tenant, Rule: m, ValidateOnly: vo})
		return err
	}
	return liveObject(pl.live.rules, m.RuleId)
}

func (pl *planner) holdChange(c *change, m *retentionv1.Hold) proto.Message {
	cl, tenant := pl.cl, pl.tenant
	if m.Category != nil {
		c.deps = append(c.deps, categoryDep(m.Category.Id))
	}
	c.call = func(ctx context.Context, id string, vo bool) error {
		_, err := cl.retention.PlaceHold(ctx, &retentionv1.PlaceHoldRequest{RequestId: id, TenantId: tenant, Hold: m, ValidateOnly: vo})
		return err
	}
	return liveObject(pl.live.holds, m.HoldId)
}

// compare settles c's op against current, the live object (nil for none):
// a create, an update, nothing when they are equal, or a problem when no
// RPC can make the change.
func (pl *planner) compare(c *change, current proto.Message) {
	if current == nil {
		c.op = opCreate
		pl.changes = append(pl.changes, c)
		return
	}
	c.before = normalise(current, c.obj.Message)
	if proto.Equal(c.before, c.obj.Message) {
		return
	}
	c.op = opUpdate
	if why := unchangeable(c.obj, current); why != "" {
		// What no RPC can change is a conflict for a person to resolve.
		pl.problems = append(pl.problems, pl.file.At(c.obj.Path, why))
		return
	}
	pl.changes = append(pl.changes, c)
}

// unchangeable says why no RPC can change the live object current into
// o, or "" when one can: a category cannot be redefined, a hold cannot be
// changed or placed again once released.
func unchangeable(o tenantfile.Object, current proto.Message) string {
	switch o.Kind {
	case "category":
		return fmt.Sprintf("category %q is defined differently on the platform, and a category cannot be redefined; declare it as exported (lethe export) or use a new id", o.ID)
	case "hold":
		h := current.(*retentionv1.Hold)
		why := "differs from the hold in force, and a hold cannot be changed"
		if h.ReleasedAt != nil {
			why = "was released on " + h.ReleasedAt.AsTime().Format(time.DateOnly) + ", and a released hold cannot be placed again"
		}
		return fmt.Sprintf("hold %q %s; use a new hold id (and release the old one)", o.ID, why)
	}
	return ""
}

func (pl *planner) undeclared(kind, id string) bool { return !pl.declared[kind+"/"+id] }

// remove plans the deletion of an undeclared live object (see deletion).
func (pl *planner) remove(kind, id string, current proto.Message, call func(context.Context, string, bool) error) {
	if d := pl.deletion(kind, id, current, pl.prune, call); d != nil {
		pl.changes = append(pl.changes, d)
	}
}

// removeRegistry plans the removal of undeclared activities, then of
// undeclared systems, sub-processors before the processors that engaged
// them.
func (pl *planner) removeRegistry() {
	cl, tenant, l := pl.cl, pl.tenant, pl.live
	for _, id := range sortedKeys(l.activities) {
		if pl.undeclared("activity", id) {
			pl.remove("activity", id, l.activities[id], func(ctx context.Context, rid string, vo bool) error {
				_, err := cl.registry.DeleteActivity(ctx, &registryv1.DeleteActivityRequest{RequestId: rid, TenantId: tenant, ActivityId: id, ValidateOnly: vo})
				return err
			})
		}
	}
	systems := sortedKeys(l.systems)
	sort.SliceStable(systems, func(i, j int) bool {
		return l.systems[systems[i]].ParentSystemId != "" && l.systems[systems[j]].ParentSystemId == ""
	})
	for _, id := range systems {
		if pl.undeclared("system", id) {
			pl.remove("system", id, l.systems[id], func(ctx context.Context, rid string, vo bool) error {
				_, err := cl.registry.RemoveSystem(ctx, &registryv1.RemoveSystemRequest{RequestId: rid, TenantId: tenant, SystemId: id, ValidateOnly: vo})
				return err
			})
		}
	}
}

// removeRetention plans the deletion of undeclared rules and the release
// of undeclared holds still in force.
func (pl *planner) removeRetention() {
	cl, tenant, l := pl.cl, pl.tenant, pl.live
	for _, id := range sortedKeys(l.rules) {
		if pl.undeclared("rule", id) {
			pl.remove("rule", id, l.rules[id], func(ctx context.Context, rid string, vo bool) error {
				_, err := cl.retention.DeleteRule(ctx, &retentionv1.DeleteRuleRequest{RequestId: rid, TenantId: tenant, RuleId: id, ValidateOnly: vo})
				return err
			})
		}
	}
	now := time.Now()
	for _, id := range sortedKeys(l.holds) {
		if h := l.holds[id]; pl.undeclared("hold", id) && holdInForce(h, now) {
			pl.remove("hold", id, h, func(ctx context.Context, rid string, vo bool) error {
				_, err := cl.retention.ReleaseHold(ctx, &retentionv1.ReleaseHoldRequest{RequestId: rid, TenantId: tenant, HoldId: id, ValidateOnly: vo})
				return err
			})
		}
	}
}

// holdInForce reports whether h is neither released nor ended at now.
func holdInForce(h *retentionv1.Hold, now time.Time) bool {
	return h.ReleasedAt == nil && (h.EndTime == nil || h.EndTime.AsTime().After(now))
}

// unmanagedConfiguration notes the undeclared purposes and categories,
// which no RPC removes.
func (pl *planner) unmanagedConfiguration() {
	for _, id := range sortedKeys(pl.live.purposes) {
		if pl.undeclared("purpose", id) {
			pl.unmanaged = append(pl.unmanaged, "purpose/"+id+" (no RPC deletes a purpose: consent records refer to it)")
		}
	}
	for _, id := range sortedKeys(pl.live.categories) {
		if pl.undeclared("category", id) {
			pl.unmanaged = append(pl.unmanaged, "category/"+id+" (no RPC deletes a category)")
		}
	}
}

// deletion is the change that removes an undeclared live object, or nil
// (and a note) without --prune.
func (p *plan) deletion(kind, id string, current proto.Message, prune bool, call func(context.Context, string, bool) error) *change {
	if !prune {
		p.unmanaged = append(p.unmanaged, kind+"/"+id+" (not in the file; --prune removes it)")
		return nil
	}
	return &change{obj: tenantfile.Object{Kind: kind, ID: id}, op: opDelete, before: normalise(current, nil), call: call}
}

func categoryDep(id string) string {
	if id == "" {
		return ""
	}
	return "category/" + id
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// deferred reports whether c depends on something the plan itself
// creates: the services cannot check it before that exists.
func (p *plan) deferred(c *change) bool {
	creates := map[string]bool{}
	for _, o := range p.changes {
		if o.op == opCreate {
			creates[o.key()] = true
		}
	}
	for _, d := range c.deps {
		if d != "" && creates[d] {
			return true
		}
	}
	return false
}

// preflight asks each service to check every change with validate_only,
// where it can be checked before anything is applied. It returns the
// problems placed in the file; a platform failure is an error.
func (p *plan) preflight(ctx context.Context, cl *clients) (tenantfile.Problems, error) {
	var problems tenantfile.Problems
	tenant := p.file.TenantID()
	for _, c := range p.changes {
		if p.deferred(c) {
			continue
		}
		cctx, cancel := cl.call(ctx)
		err := waitTenant(cctx, func() error { return c.call(cctx, c.requestID(tenant), true) })
		cancel()
		ps, perr := p.placeError(c, err)
		if perr != nil {
			return nil, perr
		}
		problems = append(problems, ps...)
	}
	return problems, nil
}

// placeError turns a service's refusal of a change into problems placed
// in the file; any other failure is returned as an error.
func (p *plan) placeError(c *change, err error) (tenantfile.Problems, error) {
	if err == nil {
		return nil, nil
	}
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.InvalidArgument:
		var ps tenantfile.Problems
		for _, v := range apierror.Violations(err) {
			ps = append(ps, p.file.FieldProblem(c.obj, v.Field, v.Description))
		}
		if len(ps) == 0 {
			ps = append(ps, p.file.At(c.obj.Path, st.Message()))
		}
		return ps, nil
	case codes.FailedPrecondition, codes.AlreadyExists, codes.NotFound:
		return tenantfile.Problems{p.file.At(c.obj.Path, fmt.Sprintf("%s %s refused: %s", c.obj.Kind, c.obj.ID, st.Message()))}, nil
	}
	return nil, wrapErr(fmt.Sprintf("%s %s %s", c.op, c.obj.Kind, c.obj.ID), err)
}

// apply makes every change in order, reporting each to w. A change the
// preflight could not check is checked with validate_only right before it
// is made.
func (p *plan) apply(ctx context.Context, cl *clients, w io.Writer) error {
	tenant := p.file.TenantID()
	for _, c := range p.changes {
		id := c.requestID(tenant)
		if p.deferred(c) {
			cctx, cancel := cl.call(ctx)
			err := waitTenant(cctx, func() error { return c.call(cctx, id, true) })
			cancel()
			if ps, perr := p.placeError(c, err); perr != nil || len(ps) > 0 {
				return errors.Join(perr, ps.Err())
			}
		}
		cctx, cancel := cl.call(ctx)
		err := waitTenant(cctx, func() error { return c.call(cctx, id, false) })
		cancel()
		if err != nil {
			ps, perr := p.placeError(c, err)
			return errors.Join(perr, ps.Err())
		}
		fmt.Fprintf(w, "%s %s\n", c.name(tenant), pastTense[c.op])
	}
	return nil
}

var pastTense = map[op]string{opCreate: "created", opUpdate: "updated", opDelete: "deleted"}

// describe writes the plan as a diff: each changed object's live and
// declared YAML, line by line.
func (p *plan) describe(w io.Writer) {
	tenant := p.file.TenantID()
	for _, c := range p.changes {
		where := ""
		if pos := p.file.At(c.obj.Path, ""); pos.Line > 0 {
			where = fmt.Sprintf(" (%s:%d)", p.file.Path, pos.Line)
		}
		sign := map[op]string{opCreate: "+", opUpdate: "~", opDelete: "-"}[c.op]
		fmt.Fprintf(w, "%s %s %s%s\n", sign, c.name(tenant), c.op, where)
		var before, after string
		if c.before != nil {
			before = tenantfile.MarshalObject(c.before)
		}
		if c.after != nil {
			after = tenantfile.MarshalObject(c.after)
		}
		for _, line := range lineDiff(before, after) {
			fmt.Fprintf(w, "    %s\n", line)
		}
	}
	for _, u := range p.unmanaged {
		fmt.Fprintf(w, "  %s: %s left as it is\n", tenant, u)
	}
}

// lineDiff is a longest-common-subsequence diff of two texts, "-", "+" and
// " " prefixed, for the small objects a plan shows.
func lineDiff(a, b string) []string {
	x, y := splitLines(a), splitLines(b)
	lcs := make([][]int, len(x)+1)
	for i := range lcs {
		lcs[i] = make([]int, len(y)+1)
	}
	for i := len(x) - 1; i >= 0; i-- {
		for j := len(y) - 1; j >= 0; j-- {
			if x[i] == y[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out []string
	i, j := 0, 0
	for i < len(x) || j < len(y) {
		switch {
		case i < len(x) && j < len(y) && x[i] == y[j]:
			out = append(out, "  "+x[i])
			i++
			j++
		case i < len(x) && (j == len(y) || lcs[i+1][j] >= lcs[i][j+1]):
			out = append(out, "- "+x[i])
			i++
		default:
			out = append(out, "+ "+y[j])
			j++
		}
	}
	return out
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
