package tenantfile

import (
	"fmt"
	"strings"

	"buf.build/go/protovalidate"
	"golang.org/x/text/language"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// requestField is the field that carries each kind of object in its
// configuration request: the prefix of the field paths the services name
// in their InvalidArgument answers ("system.country").
var requestField = map[string]string{
	"tenant": "tenant", "category": "category", "purpose": "purpose", "system": "system",
	"activity": "activity", "rule": "rule", "hold": "hold",
}

// FieldProblem places a field a service named for an object — a path of
// the object's request such as "system.transfer.scc_version" — in the
// file.
func (f *File) FieldProblem(o Object, field, message string) Problem {
	rest, ok := strings.CutPrefix(field, requestField[o.Kind])
	switch {
	case ok && (rest == "" || rest[0] == '.' || rest[0] == '['):
		return f.At(o.Path+rest, message)
	case field == "tenant_id":
		return f.At("tenant.tenant_id", message)
	case field == "":
		return f.At(o.Path, message)
	}
	return f.At(o.Path, field+": "+message)
}

// wrap puts an object into the request that carries it, as the service
// validates it.
func wrap(o Object, tenantID string) proto.Message {
	const id = "validate"
	switch m := o.Message.(type) {
	case *registryv1.Tenant:
		return &registryv1.CreateTenantRequest{RequestId: id, Tenant: m}
	case *registryv1.Category:
		return &registryv1.DefineCategoryRequest{RequestId: id, TenantId: tenantID, Category: m}
	case *consentv1.Purpose:
		return &consentv1.PutPurposeRequest{RequestId: id, TenantId: tenantID, Purpose: m}
	case *registryv1.System:
		return &registryv1.RegisterSystemRequest{RequestId: id, TenantId: tenantID, System: m}
	case *registryv1.ProcessingActivity:
		return &registryv1.PutActivityRequest{RequestId: id, TenantId: tenantID, Activity: m}
	case *retentionv1.Rule:
		return &retentionv1.PutRuleRequest{RequestId: id, TenantId: tenantID, Rule: m}
	case *retentionv1.Hold:
		return &retentionv1.PlaceHoldRequest{RequestId: id, TenantId: tenantID, Hold: m}
	}
	panic(fmt.Sprintf("tenantfile: no request for %T", o.Message))
}

// Validate checks everything that can be checked without the platform:
// the rules the API's protos declare (the same protovalidate rules every
// service checks first), unique ids, references between the file's
// objects, country codes, retention periods and rule shapes. taxonomy is
// the set of category ids the tenant may use besides its own (the built-in
// taxonomy, as the registry lists it); nil skips that check.
func (f *File) Validate(taxonomy map[string]bool) Problems {
	var ps []Problem
	add := func(path, format string, args ...any) { ps = append(ps, f.At(path, fmt.Sprintf(format, args...))) }
	tenantID := f.TenantID()

	// The proto rules, through the request each object travels in.
	for _, o := range f.Objects() {
		err := protovalidate.Validate(wrap(o, tenantID))
		if ve, ok := err.(*protovalidate.ValidationError); ok {
			for _, v := range ve.Violations {
				ps = append(ps, f.FieldProblem(o, protovalidate.FieldPathString(v.Proto.GetField()), v.Proto.GetMessage()))
			}
		} else if err != nil {
			add(o.Path, "%v", err)
		}
	}

	// Unique ids per kind.
	seen := map[string]string{}
	for _, o := range f.Objects() {
		if o.Kind == "tenant" || o.ID == "" {
			continue
		}
		key := o.Kind + "/" + o.ID
		if first, dup := seen[key]; dup {
			add(o.Path, "%s %q is declared twice (first at %s)", o.Kind, o.ID, displayPath(first))
			continue
		}
		seen[key] = o.Path
	}
	has := func(kind, id string) bool { _, ok := seen[kind+"/"+id]; return ok }

	// Categories: the tenant's own extend the taxonomy.
	known := func(id string) bool { return has("category", id) || taxonomy == nil || taxonomy[id] }
	checkCategory := func(path, id string) {
		if id != "" && contract.ValidCategory(id) && !known(id) {
			add(path, "no category %q in the tenant's taxonomy; use a built-in one or declare it under categories", id)
		}
	}
	for i, c := range f.Categories {
		if p := contract.CategoryParent(c.Id); p != "" && !known(p) {
			add(fmt.Sprintf("categories[%d].id", i), "its parent %q is not in the taxonomy", p)
		}
	}

	checkCountry := func(path, code string) {
		if code == "" {
			return
		}
		if r, err := language.ParseRegion(code); err != nil || !r.IsCountry() || r.String() != code {
			add(path, "%q is not an ISO 3166-1 alpha-2 country code", code)
		}
	}
	checkCountry("tenant.settings.country", f.Tenant.GetSettings().GetCountry())
	checkCountry("tenant.settings.supervisory_authority.country", f.Tenant.GetSettings().GetSupervisoryAuthority().GetCountry())

	for i, s := range f.Systems {
		path := fmt.Sprintf("systems[%d]", i)
		checkCountry(path+".country", s.Country)
		for j, c := range s.Categories {
			checkCategory(fmt.Sprintf("%s.categories[%d]", path, j), c.Id)
		}
		for j, p := range s.PurposeIds {
			if !has("purpose", p) {
				add(fmt.Sprintf("%s.purpose_ids[%d]", path, j), "no purpose %q is declared in this file", p)
			}
		}
		switch {
		case s.ParentSystemId != "" && !has("system", s.ParentSystemId):
			add(path+".parent_system_id", "no system %q is declared in this file", s.ParentSystemId)
		case s.ParentSystemId != "" && s.Kind != commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR:
			add(path+".parent_system_id", "only a sub_processor has a parent system")
		case s.ParentSystemId == "" && s.Kind == commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR:
			add(path+".kind", "a sub_processor names the processor that engaged it in parentSystemId")
		}
	}
	for i, a := range f.Activities {
		path := fmt.Sprintf("activities[%d]", i)
		for j, c := range a.Categories {
			checkCategory(fmt.Sprintf("%s.categories[%d]", path, j), c.Id)
		}
		if a.PurposeId != "" && !has("purpose", a.PurposeId) {
			add(path+".purpose_id", "no purpose %q is declared in this file", a.PurposeId)
		}
		for j, s := range a.RecipientSystemIds {
			if !has("system", s) {
				add(fmt.Sprintf("%s.recipient_system_ids[%d]", path, j), "no system %q is declared in this file", s)
			}
		}
		if a.RetentionRuleId != "" && !has("rule", a.RetentionRuleId) {
			add(path+".retention_rule_id", "no retention rule %q is declared in this file", a.RetentionRuleId)
		}
	}
	for i, r := range f.Rules {
		path := fmt.Sprintf("retention.rules[%d]", i)
		checkCategory(path+".category", r.GetCategory().GetId())
		for j, t := range r.Triggers {
			if _, err := period.Parse(t.Period); t.Period != "" && err != nil {
				add(fmt.Sprintf("%s.triggers[%d].period", path, j), "%v", err)
			}
		}
		switch {
		case r.Minimum && len(r.Triggers) != 1:
			add(path+".triggers", "a minimum rule has exactly one trigger")
		case r.Minimum && r.Action != 0:
			add(path+".action", "a minimum rule never purges: leave action out")
		case !r.Minimum && r.Action == 0:
			add(path+".action", "a purge rule says what to do: erase or anonymise")
		}
	}
	for i, h := range f.Holds {
		if h.Category != nil {
			checkCategory(fmt.Sprintf("retention.holds[%d].category", i), h.Category.Id)
		}
	}
	if len(ps) == 0 {
		return nil
	}
	return sortProblems(ps)
}
