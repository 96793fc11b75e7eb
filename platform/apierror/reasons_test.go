package apierror

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"go/types"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// upperSnake is the form of every reason: UPPER_SNAKE, as google.rpc.ErrorInfo
// asks ("a constant value that identifies the proximate cause", matching
// [A-Z][A-Z0-9_]+[A-Z0-9]).
var upperSnake = regexp.MustCompile(`^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$`)

// declaredReasons reads reasons.go: every Reason* constant and its value.
func declaredReasons(t *testing.T) (map[string]string, []*ast.ValueSpec) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "reasons.go", nil, parser.ParseComments)
	if err != nil {
		t.Fatal(err)
	}
	reasons := map[string]string{}
	var specs []*ast.ValueSpec
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				lit, ok := vs.Values[i].(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					t.Fatalf("%s is not a string literal", name.Name)
				}
				v, _ := strconv.Unquote(lit.Value)
				reasons[name.Name] = v
			}
			specs = append(specs, vs)
		}
	}
	return reasons, specs
}

// TestReasonsAreUpperSnakeUniqueAndDocumented holds reasons.go to its
// rules: each reason UPPER_SNAKE, none twice, each constant named for its
// value (ReasonTaskNotOpen = "TASK_NOT_OPEN") and saying when it is used.
func TestReasonsAreUpperSnakeUniqueAndDocumented(t *testing.T) {
	reasons, specs := declaredReasons(t)
	if len(reasons) < 20 {
		t.Fatalf("reasons.go declares %d reasons; the services use more", len(reasons))
	}
	seen := map[string]string{}
	for name, v := range reasons {
		if !upperSnake.MatchString(v) {
			t.Errorf("%s = %q is not UPPER_SNAKE", name, v)
		}
		if other, ok := seen[v]; ok {
			t.Errorf("%s and %s are both %q", name, other, v)
		}
		seen[v] = name
		if want := "Reason" + camel(v); name != want {
			t.Errorf("%s = %q: name it %s", name, v, want)
		}
	}
	for _, s := range specs {
		if s.Doc == nil || !strings.HasPrefix(s.Doc.Text(), s.Names[0].Name+": ") {
			t.Errorf("%s has no doc comment saying when it is used (\"// %[1]s: ...\")", s.Names[0].Name)
		}
	}
}

// camel turns TASK_NOT_OPEN into TaskNotOpen.
func camel(v string) string {
	var b strings.Builder
	for _, w := range strings.Split(v, "_") {
		b.WriteString(w[:1] + strings.ToLower(w[1:]))
	}
	return b.String()
}

// TestEveryReasonIsDeclaredHere scans the repository's non-generated,
// non-test Go files: every reason passed to FailedPrecondition or
// Unavailable must be a constant of reasons.go, never a literal or a
// constant declared elsewhere, and no other file declares Reason*
// constants of its own. Tests may make up reasons to exercise the kit.
func TestEveryReasonIsDeclaredHere(t *testing.T) {
	reasons, _ := declaredReasons(t)
	root := repositoryRoot(t)
	fset := token.NewFileSet()
	var problems []string
	calls := 0
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch {
			case rel == "gen", rel == "third_party", strings.HasPrefix(d.Name(), "."), d.Name() == "testdata":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.ParseComments)
		if err != nil {
			return err
		}
		if ast.IsGenerated(f) {
			return nil
		}
		inKit := filepath.ToSlash(filepath.Dir(rel)) == "platform/apierror"
		if inKit && filepath.Base(rel) == "reasons.go" {
			return nil
		}
		n, ps := checkReasons(fset, f, inKit, reasons)
		calls += n
		for _, p := range ps {
			problems = append(problems, filepath.ToSlash(rel)+":"+p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The services return reasons from some forty places; far fewer means
	// the scan missed the tree.
	if calls < 30 {
		t.Fatalf("found %d calls that pass a reason under %s; the scan is not seeing the services", calls, root)
	}
	for _, p := range problems {
		t.Error(p)
	}
}

// TestCheckReasonsFindsLiteralsAndForeignConstants proves the scan can
// fail: a literal reason, a constant of another package and a local Reason
// constant are each reported; a reasons.go constant is not.
func TestCheckReasonsFindsLiteralsAndForeignConstants(t *testing.T) {
	src := `package svc
const ReasonMine = "MINE"
func f() {
	_ = apierror.FailedPrecondition("task_final", "x")
	_ = apierror.Unavailable(other.ReasonX, "x", 0)
	_ = apierror.FailedPrecondition(ReasonMine, "x")
	_ = apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, "x")
}
`
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "svc.go", src, 0)
	if err != nil {
		t.Fatal(err)
	}
	calls, problems := checkReasons(fset, f, false, map[string]string{"ReasonTaskNotOpen": "TASK_NOT_OPEN"})
	if calls != 4 || len(problems) != 4 {
		t.Fatalf("%d calls, problems:\n%s\nwant 4 calls and 4 problems (the constant, three calls)", calls, strings.Join(problems, "\n"))
	}
	for i, want := range []string{"2:", "4:", "5:", "6:"} {
		if !strings.HasPrefix(problems[i], want) {
			t.Errorf("problem %d = %q; want it on line %s", i, problems[i], want)
		}
	}
}

// checkReasons reports, as "line: problem", every reason argument in f
// that is not a constant of reasons.go, and every Reason* constant f
// declares; it returns how many reason arguments it saw. inKit is true for
// package apierror itself, whose constructors pass their reason parameter
// on.
func checkReasons(fset *token.FileSet, f *ast.File, inKit bool, reasons map[string]string) (int, []string) {
	var problems []string
	report := func(n ast.Node, format string, args ...any) {
		problems = append(problems, strconv.Itoa(fset.Position(n.Pos()).Line)+": "+fmt.Sprintf(format, args...))
	}
	calls := 0
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.ValueSpec:
			for _, name := range n.Names {
				if strings.HasPrefix(name.Name, "Reason") && len(name.Name) > len("Reason") {
					report(name, "%s declares a reason outside platform/apierror/reasons.go", name.Name)
				}
			}
		case *ast.CallExpr:
			arg := reasonArg(n, inKit)
			if arg == nil {
				return true
			}
			calls++
			switch a := arg.(type) {
			case *ast.SelectorExpr:
				if x, ok := a.X.(*ast.Ident); ok && x.Name == "apierror" {
					if _, ok := reasons[a.Sel.Name]; ok {
						return true
					}
				}
			case *ast.Ident:
				if _, ok := reasons[a.Name]; ok && inKit {
					return true
				}
				if inKit && a.Name == "reason" {
					return true
				}
			}
			report(arg, "the reason %s is not a constant of platform/apierror/reasons.go", types.ExprString(arg))
		}
		return true
	})
	return calls, problems
}

// reasonArg returns the reason argument of a call to a constructor that
// takes one, or nil.
func reasonArg(c *ast.CallExpr, inKit bool) ast.Expr {
	name := ""
	switch fn := c.Fun.(type) {
	case *ast.SelectorExpr:
		if x, ok := fn.X.(*ast.Ident); ok && x.Name == "apierror" {
			name = fn.Sel.Name
		}
	case *ast.Ident:
		if inKit {
			name = fn.Name
		}
	}
	switch {
	case (name == "FailedPrecondition" || name == "Unavailable") && len(c.Args) > 0:
		return c.Args[0]
	case name == "withInfo" && len(c.Args) > 1:
		return c.Args[1]
	}
	return nil
}

// repositoryRoot is the directory of go.work above this package.
func repositoryRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.work above the package directory")
		}
		dir = parent
	}
}
