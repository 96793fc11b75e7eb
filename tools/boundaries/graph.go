package boundaries

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
)

// listed is the part of `go list -json` output that Graph reads.
type listed struct {
	ImportPath string
	// ForTest is set on a package compiled for a test binary: the package
	// under test itself, its external test package, or a dependency
	// recompiled because it depends on the package under test.
	ForTest string
	Imports []string
	Error   *struct{ Err string }
}

// Load returns the import graph of the packages of the module in dir and
// their dependencies, test files included: `go list -json -deps -test ./...`.
func Load(dir string) ([]Edge, error) {
	cmd := exec.Command("go", "list", "-json", "-deps", "-test", "./...")
	cmd.Dir = dir
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("go list in %s: %w\n%s", dir, err, stderr.Bytes())
	}
	return Graph(bytes.NewReader(out))
}

// Graph reads `go list -json -deps -test` output and returns its edges,
// each once: an import made by a package's code is not also reported as a
// test import. Test binaries' generated main packages are left out.
func Graph(r io.Reader) ([]Edge, error) {
	dec := json.NewDecoder(r)
	var edges []Edge
	index := map[[2]string]int{}
	for {
		var p listed
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return nil, fmt.Errorf("decode go list output: %w", err)
		}
		if p.Error != nil {
			return nil, fmt.Errorf("go list: %s: %s", p.ImportPath, p.Error.Err)
		}
		importer, _, _ := strings.Cut(p.ImportPath, " ")
		if p.ForTest == "" && strings.HasSuffix(importer, ".test") {
			continue // a test binary's generated main
		}
		// The package under test and its external test package import
		// for tests; a dependency recompiled for the test imports as its
		// code does.
		test := false
		if base, ok := strings.CutSuffix(importer, "_test"); ok && p.ForTest == base {
			importer, test = base, true
		} else if p.ForTest != "" && importer == p.ForTest {
			test = true
		}
		for _, imp := range p.Imports {
			imported, _, _ := strings.Cut(imp, " ")
			key := [2]string{importer, imported}
			if i, ok := index[key]; ok {
				edges[i].Test = edges[i].Test && test
				continue
			}
			index[key] = len(edges)
			edges = append(edges, Edge{Importer: importer, Imported: imported, Test: test})
		}
	}
	return edges, nil
}
