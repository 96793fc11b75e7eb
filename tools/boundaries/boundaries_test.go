package boundaries_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/lethe-privacy/lethe/tools/boundaries"
)

func edge(from, to string, test bool) boundaries.Edge {
	return boundaries.Edge{Importer: boundaries.Root + from, Imported: boundaries.Root + to, Test: test}
}

// TestCheckFindsEveryViolation: on a made-up graph breaking each rule once,
// beside edges each rule allows, the check reports exactly the breaking
// edges, each with the rule it breaks.
func TestCheckFindsEveryViolation(t *testing.T) {
	allowed := []boundaries.Edge{
		edge("gen/go/lethe/dsar/v1", "gen/go/lethe/common/v1", false),
		{Importer: boundaries.Root + "gen/go/lethe/dsar/v1", Imported: "google.golang.org/grpc"},
		edge("sdk/subscriber", "sdk/contract", false),
		edge("sdk/subscriber", "gen/go/lethe/events/v1", true),
		edge("platform/outbox", "sdk/contract", false),
		edge("platform/outbox", "platform/store", true),
		edge("tools/lethe/internal/flows/tasks", "sdk/subscriber", true),
		edge("services/consent", "services/consent/internal/decision", false),
		edge("services/consent/internal/decision", "platform/period", false),
		edge("services/dsar", "sdk/subscriber", true),
		edge("tools/lethe", "services/dsar", false),
		edge("tools/lethe/internal/flows/dsar", "services/consent", true),
		edge("tools/lethe", "tools/wirefuzz", true),
		edge("tools/wirefuzz", "platform/apierror", false),
		edge("deploy", "sdk/contract", false),
		edge("deploy", "services/consent", true), // a test reads the deployable's flags
	}
	broken := []boundaries.Edge{
		edge("gen/go/lethe/dsar/v1", "platform/apierror", false),
		edge("sdk/ledger", "platform/store", true),
		edge("platform/tasks", "sdk/subscriber", true), // the kit's tests neither
		edge("platform/outbox", "sdk/subscriber", true),
		edge("platform/service", "services/registry", false),
		edge("services/dsar", "services/consent", true),
		edge("services/consent/internal/decision", "services/registry/internal/routing", false),
		edge("services/retention", "tools/lethe", false),
		edge("tools/wirefuzz", "services/dsar", false),
		edge("deploy", "services/consent", false), // only tests may
		edge("deploy", "tools/lethe", true),
		edge("examples/demo", "gen/go/lethe/common/v1", false), // no rule covers it
	}
	var graph []boundaries.Edge
	for i := range max(len(allowed), len(broken)) {
		if i < len(allowed) {
			graph = append(graph, allowed[i])
		}
		if i < len(broken) {
			graph = append(graph, broken[i])
		}
	}
	got := boundaries.Check(boundaries.Rules, graph)
	var gotEdges []boundaries.Edge
	for _, v := range got {
		gotEdges = append(gotEdges, v.Edge)
		t.Log(v)
	}
	if !slices.Equal(gotEdges, broken) {
		t.Fatalf("violations:\n%v\nwant:\n%v", gotEdges, broken)
	}
	wantRule := []string{"gen/go", "sdk", "platform", "platform", "platform", "services/*", "services/*", "services/*", "tools", "deploy", "deploy", ""}
	for i, v := range got {
		if v.Rule.From != wantRule[i] {
			t.Errorf("%v broke the rule of %q, want %q", v.Edge, v.Rule.From, wantRule[i])
		}
	}
	if s := got[5].String(); !strings.Contains(s, "services/dsar → "+boundaries.Root+"services/consent (test)") ||
		!strings.Contains(s, "no service imports another") {
		t.Errorf("a violation reads %q; want the edge, that it is a test's, and the rule's reason", s)
	}
}

// TestGraphReadsGoList: test variants are attributed to the package under
// test, an import its code makes stays a code import, a dependency
// recompiled for a test imports as code, and test mains are left out.
func TestGraphReadsGoList(t *testing.T) {
	const out = `{"ImportPath": "example.com/a", "Imports": ["example.com/b", "fmt"]}
{"ImportPath": "example.com/b", "Imports": ["fmt"]}
{"ImportPath": "example.com/b [example.com/a.test]", "ForTest": "example.com/a", "Imports": ["example.com/c"]}
{"ImportPath": "example.com/a [example.com/a.test]", "ForTest": "example.com/a", "Imports": ["example.com/b [example.com/a.test]", "testing"]}
{"ImportPath": "example.com/a_test [example.com/a.test]", "ForTest": "example.com/a", "Imports": ["example.com/a [example.com/a.test]", "example.com/d"]}
{"ImportPath": "example.com/a.test", "Imports": ["example.com/a_test [example.com/a.test]", "os"]}
`
	got, err := boundaries.Graph(strings.NewReader(out))
	if err != nil {
		t.Fatal(err)
	}
	want := []boundaries.Edge{
		{Importer: "example.com/a", Imported: "example.com/b"},
		{Importer: "example.com/a", Imported: "fmt"},
		{Importer: "example.com/b", Imported: "fmt"},
		{Importer: "example.com/b", Imported: "example.com/c"},
		{Importer: "example.com/a", Imported: "testing", Test: true},
		{Importer: "example.com/a", Imported: "example.com/a", Test: true},
		{Importer: "example.com/a", Imported: "example.com/d", Test: true},
	}
	if !slices.Equal(got, want) {
		t.Fatalf("edges:\n%v\nwant:\n%v", got, want)
	}
	if _, err := boundaries.Graph(strings.NewReader(`{"ImportPath": "x", "Error": {"Err": "no Go files"}}`)); err == nil {
		t.Fatal("a package go list could not load was not reported")
	}
}

// workspace returns the folders of go.work's modules.
func workspace(t *testing.T) []string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOWORK").Output()
	work := strings.TrimSpace(string(out))
	if err != nil || work == "" || work == "off" {
		t.Fatalf("the boundaries are checked in the workspace; go env GOWORK = %q (%v)", work, err)
	}
	cmd := exec.Command("go", "list", "-m", "-f", "{{.Dir}}")
	cmd.Dir = filepath.Dir(work)
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	return strings.Fields(string(out))
}

// TestWorkspaceKeepsItsBoundaries checks every import of every module of
// go.work, test files included, against Rules, and that no service's go.mod
// requires another service.
func TestWorkspaceKeepsItsBoundaries(t *testing.T) {
	modules := workspace(t)
	if len(modules) < 9 {
		t.Fatalf("go.work lists %d modules: %v", len(modules), modules)
	}
	var edges int
	composes := false
	for _, dir := range modules {
		graph, err := boundaries.Load(dir)
		if err != nil {
			t.Fatal(err)
		}
		edges += len(graph)
		for _, v := range boundaries.Check(boundaries.Rules, graph) {
			t.Errorf("%s", v)
		}
		composes = composes || slices.Contains(graph, boundaries.Edge{Importer: boundaries.Root + "tools/lethe",
			Imported: boundaries.Root + "services/consent"})

		mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err != nil {
			t.Fatal(err)
		}
		if name, ok := strings.CutPrefix(filepath.ToSlash(dir), filepath.ToSlash(filepath.Dir(filepath.Dir(dir)))+"/"); ok &&
			strings.HasPrefix(name, "services/") {
			for line := range strings.Lines(string(mod)) {
				for _, word := range strings.Fields(line) {
					if strings.HasPrefix(word, boundaries.Root+"services/") && word != boundaries.Root+name {
						t.Errorf("%s/go.mod names another service: %s", name, strings.TrimSpace(line))
					}
				}
			}
		}
	}
	// The check saw the graph: lethe dev's import of the services is in it.
	if !composes || edges < 1000 {
		t.Fatalf("read %d edges, tools/lethe → services/consent among them: %v", edges, composes)
	}
	t.Logf("%d import edges of %d modules checked", edges, len(modules))
}
