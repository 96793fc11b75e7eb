// Package boundaries states which parts of Lethe may import which, as data,
// and checks an import graph against it. Its test runs the check on the
// workspace (`go list -json -deps -test` in every module of go.work), so
// `make test` fails on an import that crosses a boundary, in a test file
// as much as in the code. docs/design.md ("Boundaries") gives the reasons.
package boundaries

import (
	"fmt"
	"slices"
	"strings"
)

// Root is the import path every Lethe package starts with.
const Root = "github.com/lethe-privacy/lethe/"

// Rule says what the packages under From may import of Lethe. Paths are
// relative to Root and name a package and every package under it;
// "services/*" stands for each service, and "services/*" in May for that
// same service (a service imports itself, not another).
type Rule struct {
	// From names the importing packages.
	From string
	// May lists what they may import, in code and tests alike.
	May []string
	// TestMay lists what their tests may import besides.
	TestMay []string
	// Why is the reason, as docs/design.md gives it.
	Why string
}

// Rules are Lethe's boundaries. The first rule whose From holds a package
// applies to it (the more specific first); a Lethe package under no rule is
// itself a violation, so a new top-level folder must be given one.
var Rules = []Rule{
	{From: "gen/go", May: []string{"gen/go"},
		Why: "generated code is the wire's vocabulary and depends on nothing of Lethe"},
	{From: "sdk", May: []string{"gen/go", "sdk"},
		Why: "downstream systems build on the SDK alone; it carries nothing of the platform into them"},
	{From: "platform", May: []string{"gen/go", "sdk/contract", "platform"},
		Why: "the kit knows the wire (gen/go and the contract both sides share, sdk/contract) and no service, nor the SDK's client side"},
	{From: "services/*", May: []string{"gen/go", "sdk", "platform", "services/*"},
		Why: "a service is built on the kit and talks to the others over the wire only: no service imports another, in tests either " +
			"(tests that need several run them under tools/lethe with platform/service/servicetest)"},
	{From: "tools/lethe", May: []string{"gen/go", "sdk", "platform", "services", "tools"},
		Why: "the CLI and lethe dev compose every service; the only place that may import services together"},
	{From: "tools", May: []string{"gen/go", "sdk", "platform", "tools"},
		Why: "other tools use the API and the kit, not the services"},
	{From: "deploy", May: []string{"gen/go", "sdk", "platform", "deploy"},
		TestMay: []string{"services"},
		Why: "deploy's code uses the kit and the SDK; its tests check the manifests against each deployable's flags and refusals, " +
			"which only the services' Factory values know"},
}

// Edge is one import in the graph: Importer imports Imported. Test is set
// when the import is made by a test file of Importer (or its external test
// package), not by its code.
type Edge struct {
	Importer, Imported string
	Test               bool
}

// Violation is an edge that no rule allows.
type Violation struct {
	Edge
	// Rule is the rule of the importer that the edge breaks; From is empty
	// when no rule covers the importer.
	Rule Rule
}

func (v Violation) String() string {
	kind := ""
	if v.Test {
		kind = " (test)"
	}
	if v.Rule.From == "" {
		return fmt.Sprintf("%s → %s%s: no rule covers %s", v.Importer, v.Imported, kind, v.Importer)
	}
	may := slices.Clone(v.Rule.May)
	if v.Test {
		may = append(may, v.Rule.TestMay...)
	}
	return fmt.Sprintf("%s → %s%s: %s may import only %s (%s)", v.Importer, v.Imported, kind,
		v.Rule.From, strings.Join(may, ", "), v.Rule.Why)
}

// Check returns the edges of graph that rules do not allow, in the
// graph's order. Edges to packages outside Lethe are allowed.
func Check(rules []Rule, graph []Edge) []Violation {
	var out []Violation
	for _, e := range graph {
		imported, ok := strings.CutPrefix(e.Imported, Root)
		if !ok {
			continue
		}
		importer, ok := strings.CutPrefix(e.Importer, Root)
		if !ok {
			continue
		}
		rule, self, found := ruleFor(rules, importer)
		if !found {
			out = append(out, Violation{Edge: e})
			continue
		}
		may := rule.May
		if e.Test {
			may = append(slices.Clone(may), rule.TestMay...)
		}
		if !allowed(may, self, imported) {
			out = append(out, Violation{Edge: e, Rule: rule})
		}
	}
	return out
}

// ruleFor returns the first rule whose From holds pkg, and, for a
// "services/*" rule, the service pkg belongs to ("services/consent").
func ruleFor(rules []Rule, pkg string) (rule Rule, self string, found bool) {
	for _, r := range rules {
		if prefix, ok := strings.CutSuffix(r.From, "/*"); ok {
			rest, ok := strings.CutPrefix(pkg, prefix+"/")
			if !ok {
				continue
			}
			name, _, _ := strings.Cut(rest, "/")
			return r, prefix + "/" + name, true
		}
		if under(pkg, r.From) {
			return r, "", true
		}
	}
	return Rule{}, "", false
}

// allowed reports whether pkg is under one of may; "x/*" is the importer's
// own self.
func allowed(may []string, self, pkg string) bool {
	for _, m := range may {
		if strings.HasSuffix(m, "/*") {
			if self != "" && under(pkg, self) {
				return true
			}
			continue
		}
		if under(pkg, m) {
			return true
		}
	}
	return false
}

// under reports whether pkg is dir or a package under it.
func under(pkg, dir string) bool {
	return pkg == dir || strings.HasPrefix(pkg, dir+"/")
}
