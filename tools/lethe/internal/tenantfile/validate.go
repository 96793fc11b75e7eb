package tenantfile

import (
	"fmt"
	"maps"
	"slices"
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
	"activity": "activity", "rule": "rule", "hold": "hold", "web": "settings",
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
	case *consentv1.WebSettings:
		return &consentv1.PutWebSettingsRequest{RequestId: id, TenantId: tenantID, Settings: m}
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
	v := &validation{f: f, taxonomy: taxonomy}
	v.protoRules()
	v.uniqueIDs()
	v.categoryParents()
	v.tenantCountries()
	for i, s := range f.Systems {
		v.system(fmt.Sprintf("systems[%d]", i), s)
	}
	for i, a := range f.Activities {
		v.activity(fmt.Sprintf("activities[%d]", i), a)
	}
	for i, r := range f.Rules {
		v.rule(fmt.Sprintf("retention.rules[%d]", i), r)
	}
	for i, h := range f.Holds {
		if h.Category != nil {
			v.checkCategory(fmt.Sprintf("retention.holds[%d].category", i), h.Category.Id)
		}
	}
	if f.Web != nil {
		v.web(f.Web)
	}
	if len(v.ps) == 0 {
		return nil
	}
	return sortProblems(v.ps)
}

// web checks that the banner names purposes the file declares and that
// its default language has texts; the consent service checks the rest
// (origins, keys, a text for every shown purpose).
func (v *validation) web(w *consentv1.WebSettings) {
	for i, id := range w.ShownPurposeIds {
		if !v.has("purpose", id) {
			v.add(fmt.Sprintf("web.shown_purpose_ids[%d]", i), "purpose %q is not declared in this file", id)
		}
	}
	for _, lang := range slices.Sorted(maps.Keys(w.Texts)) {
		for _, id := range slices.Sorted(maps.Keys(w.Texts[lang].Purposes)) {
			if !v.has("purpose", id) {
				v.add(fmt.Sprintf("web.texts[%q].purposes[%q]", lang, id), "purpose %q is not declared in this file", id)
			}
		}
	}
	if _, ok := w.Texts[w.DefaultLanguage]; !ok && w.DefaultLanguage != "" {
		v.add("web.default_language", "%q has no texts", w.DefaultLanguage)
	}
}

// validation is one run of Validate: the file, the taxonomy it is checked
// against, the ids it declares and the problems found so far.
type validation struct {
	f        *File
	taxonomy map[string]bool
	// seen maps "kind/id" to the path of the object that first declared
	// it; uniqueIDs fills it, and the reference checks read it.
	seen map[string]string
	ps   []Problem
}

func (v *validation) add(path, format string, args ...any) {
	v.ps = append(v.ps, v.f.At(path, fmt.Sprintf(format, args...)))
}

// protoRules checks the rules the protos declare, through the request each
// object travels in.
func (v *validation) protoRules() {
	tenantID := v.f.TenantID()
	for _, o := range v.f.Objects() {
		err := protovalidate.Validate(wrap(o, tenantID))
		if ve, ok := err.(*protovalidate.ValidationError); ok {
			for _, vi := range ve.Violations {
				v.ps = append(v.ps, v.f.FieldProblem(o, protovalidate.FieldPathString(vi.Proto.GetField()), vi.Proto.GetMessage()))
			}
		} else if err != nil {
			v.add(o.Path, "%v", err)
		}
	}
}

// uniqueIDs reports an id declared twice for one kind, and records where
// each was declared first.
func (v *validation) uniqueIDs() {
	v.seen = map[string]string{}
	for _, o := range v.f.Objects() {
		if o.Kind == "tenant" || o.ID == "" {
			continue
		}
		key := o.Kind + "/" + o.ID
		if first, dup := v.seen[key]; dup {
			v.add(o.Path, "%s %q is declared twice (first at %s)", o.Kind, o.ID, displayPath(first))
			continue
		}
		v.seen[key] = o.Path
	}
}

// has reports whether the file declares an object of kind with id.
func (v *validation) has(kind, id string) bool {
	_, ok := v.seen[kind+"/"+id]
	return ok
}

// known reports whether category id may be used: the tenant's own
// categories extend the taxonomy.
func (v *validation) known(id string) bool {
	return v.has("category", id) || v.taxonomy == nil || v.taxonomy[id]
}

// checkCategory reports a well-formed category id that is not known (a
// malformed one the proto rules report already).
func (v *validation) checkCategory(path, id string) {
	if id != "" && contract.ValidCategory(id) && !v.known(id) {
		v.add(path, "no category %q in the tenant's taxonomy; use a built-in one or declare it under categories", id)
	}
}

// categoryParents reports a tenant category whose parent is not known.
func (v *validation) categoryParents() {
	for i, c := range v.f.Categories {
		if p := contract.CategoryParent(c.Id); p != "" && !v.known(p) {
			v.add(fmt.Sprintf("categories[%d].id", i), "its parent %q is not in the taxonomy", p)
		}
	}
}

// checkCountry reports a code that is not an ISO 3166-1 alpha-2 country.
func (v *validation) checkCountry(path, code string) {
	if code == "" {
		return
	}
	if r, err := language.ParseRegion(code); err != nil || !r.IsCountry() || r.String() != code {
		v.add(path, "%q is not an ISO 3166-1 alpha-2 country code", code)
	}
}

// tenantCountries checks the countries of the tenant's settings.
func (v *validation) tenantCountries() {
	v.checkCountry("tenant.settings.country", v.f.Tenant.GetSettings().GetCountry())
	v.checkCountry("tenant.settings.supervisory_authority.country", v.f.Tenant.GetSettings().GetSupervisoryAuthority().GetCountry())
}

// system checks one system at path: its country, categories, purposes and
// its place in the processor chain.
func (v *validation) system(path string, s *registryv1.System) {
	v.checkCountry(path+".country", s.Country)
	for j, c := range s.Categories {
		v.checkCategory(fmt.Sprintf("%s.categories[%d]", path, j), c.Id)
	}
	for j, p := range s.PurposeIds {
		if !v.has("purpose", p) {
			v.add(fmt.Sprintf("%s.purpose_ids[%d]", path, j), "no purpose %q is declared in this file", p)
		}
	}
	v.parentSystem(path, s)
}

// parentSystem checks that a system has a declared parent exactly when it
// is a sub-processor.
func (v *validation) parentSystem(path string, s *registryv1.System) {
	sub := s.Kind == commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR
	switch {
	case s.ParentSystemId != "" && !v.has("system", s.ParentSystemId):
		v.add(path+".parent_system_id", "no system %q is declared in this file", s.ParentSystemId)
	case s.ParentSystemId != "" && !sub:
		v.add(path+".parent_system_id", "only a sub_processor has a parent system")
	case s.ParentSystemId == "" && sub:
		v.add(path+".kind", "a sub_processor names the processor that engaged it in parentSystemId")
	}
}

// activity checks one processing activity at path: its categories and the
// purpose, systems and retention rule it names.
func (v *validation) activity(path string, a *registryv1.ProcessingActivity) {
	for j, c := range a.Categories {
		v.checkCategory(fmt.Sprintf("%s.categories[%d]", path, j), c.Id)
	}
	if a.PurposeId != "" && !v.has("purpose", a.PurposeId) {
		v.add(path+".purpose_id", "no purpose %q is declared in this file", a.PurposeId)
	}
	for j, s := range a.RecipientSystemIds {
		if !v.has("system", s) {
			v.add(fmt.Sprintf("%s.recipient_system_ids[%d]", path, j), "no system %q is declared in this file", s)
		}
	}
	if a.RetentionRuleId != "" && !v.has("rule", a.RetentionRuleId) {
		v.add(path+".retention_rule_id", "no retention rule %q is declared in this file", a.RetentionRuleId)
	}
}

// rule checks one retention rule at path: its category, its periods, and
// its shape (a minimum rule has one trigger and no action; a purge rule
// has an action).
func (v *validation) rule(path string, r *retentionv1.Rule) {
	v.checkCategory(path+".category", r.GetCategory().GetId())
	for j, t := range r.Triggers {
		if _, err := period.Parse(t.Period); t.Period != "" && err != nil {
			v.add(fmt.Sprintf("%s.triggers[%d].period", path, j), "%v", err)
		}
	}
	switch {
	case r.Minimum && len(r.Triggers) != 1:
		v.add(path+".triggers", "a minimum rule has exactly one trigger")
	case r.Minimum && r.Action != 0:
		v.add(path+".action", "a minimum rule never purges: leave action out")
	case !r.Minimum && r.Action == 0:
		v.add(path+".action", "a purge rule says what to do: erase or anonymise")
	}
}
