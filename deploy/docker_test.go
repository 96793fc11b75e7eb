package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/lethe-privacy/lethe/deploy"
)

// instruction is one Dockerfile instruction with its continuation lines
// joined.
type instruction struct {
	cmd  string // upper case: FROM, COPY, …
	args string
}

func parseDockerfile(t *testing.T, path string) []instruction {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []instruction
	var cur string
	for _, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if cur == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if strings.HasSuffix(trimmed, "\\") {
			cur += strings.TrimSuffix(trimmed, "\\") + " "
			continue
		}
		cur += trimmed
		cmd, args, _ := strings.Cut(cur, " ")
		out = append(out, instruction{strings.ToUpper(cmd), strings.TrimSpace(args)})
		cur = ""
	}
	return out
}

// repoRoot is the build context of every Dockerfile.
func repoRoot() string { return filepath.Dir(deploy.Dir()) }

// workspaceModules returns the folders go.work uses.
func workspaceModules(t *testing.T) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), "go.work"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, m := range regexp.MustCompile(`(?m)^\s*\.\/(\S+)\s*$`).FindAllStringSubmatch(string(data), -1) {
		dirs = append(dirs, m[1])
	}
	if len(dirs) == 0 {
		t.Fatal("go.work uses no modules")
	}
	return dirs
}

// siblingModules returns the repository folders module dir's go.mod
// replaces modules with, transitively.
func siblingModules(t *testing.T, dir string, seen map[string]bool) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(), dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`=>\s*(\.\.?/\S+)`).FindAllStringSubmatch(string(data), -1) {
		sib := filepath.ToSlash(filepath.Clean(filepath.Join(dir, m[1])))
		if !seen[sib] {
			seen[sib] = true
			siblingModules(t, sib, seen)
		}
	}
}

// TestDockerfiles checks the container build files, which cannot be built
// here: one per deployable, a golang builder over the go.work workspace, a
// static binary, a distroless final stage run as a non-root user, nothing
// fetched from a URL, and every path they copy or build present in the
// repository.
func TestDockerfiles(t *testing.T) {
	cmds, err := filepath.Glob(filepath.Join(repoRoot(), "services", "*", "cmd", "lethe-*"))
	if err != nil || len(cmds) == 0 {
		t.Fatalf("no deployables under services/*/cmd: %v", err)
	}
	for _, cmd := range cmds {
		svc := filepath.Base(filepath.Dir(filepath.Dir(cmd)))
		name := filepath.Base(cmd)
		t.Run(name, func(t *testing.T) {
			checkDockerfile(t, filepath.Join(deploy.Dir(), "docker", svc+".Dockerfile"), "services/"+svc, name)
		})
	}
	// lethe-connect, built from the SDK's module.
	t.Run("lethe-connect", func(t *testing.T) {
		checkDockerfile(t, filepath.Join(deploy.Dir(), "docker", "connect.Dockerfile"), "sdk", "lethe-connect")
	})
}

// checkDockerfile checks the build file at path of binary, whose main
// package is <module>/.../cmd/<binary> in the repository folder module.
func checkDockerfile(t *testing.T, path, module, binary string) {
	instrs := parseDockerfile(t, path)
	var stages [][]instruction
	for _, in := range instrs {
		if in.cmd == "FROM" {
			stages = append(stages, nil)
		}
		if len(stages) == 0 {
			if in.cmd != "ARG" {
				t.Fatalf("%s before the first FROM", in.cmd)
			}
			continue
		}
		stages[len(stages)-1] = append(stages[len(stages)-1], in)
	}
	if len(stages) < 2 {
		t.Fatalf("%d stages; want a builder and a final stage", len(stages))
	}
	builder, final := stages[0], stages[len(stages)-1]

	if !strings.HasPrefix(builder[0].args, "golang:1.26") {
		t.Errorf("builder is %q, want golang:1.26", builder[0].args)
	}
	image := strings.Fields(final[0].args)[0]
	if image != "scratch" && !strings.HasPrefix(image, "gcr.io/distroless/static") {
		t.Errorf("final stage is %q, want distroless static or scratch", image)
	}

	// The final stage's last USER is who the container runs as.
	user := ""
	for _, in := range final {
		if in.cmd == "USER" {
			user = in.args
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if uid == "" || uid == "root" || uid == "0" {
		t.Errorf("final stage runs as %q, want a non-root user", user)
	}

	cgoOff := false
	var copied []string
	built := false
	for _, in := range instrs {
		switch in.cmd {
		case "ADD":
			if regexp.MustCompile(`(?i)(https?|git)://|git@`).MatchString(in.args) {
				t.Errorf("ADD of a remote source: %s", in.args)
			}
		case "ENV":
			if regexp.MustCompile(`\bCGO_ENABLED=0\b`).MatchString(in.args) {
				cgoOff = true
			}
		case "COPY":
			if strings.Contains(in.args, "--from=") {
				continue
			}
			fields := strings.Fields(in.args)
			var srcs []string
			for _, f := range fields[:len(fields)-1] {
				if !strings.HasPrefix(f, "--") {
					srcs = append(srcs, f)
				}
			}
			for _, src := range srcs {
				if _, err := os.Stat(filepath.Join(repoRoot(), src)); err != nil {
					t.Errorf("COPY %s: not in the repository", src)
				}
				copied = append(copied, strings.TrimSuffix(src, "/"))
			}
		case "RUN":
			if m := regexp.MustCompile(`go build .*?(\./\S+)\s*$`).FindStringSubmatch(in.args); m != nil {
				built = true
				if !strings.HasPrefix(m[1], "./"+module+"/") || !strings.HasSuffix(m[1], "/cmd/"+binary) {
					t.Errorf("builds %s, want ./%s/…/cmd/%s", m[1], module, binary)
				}
				if main, err := filepath.Glob(filepath.Join(repoRoot(), m[1], "*.go")); err != nil || len(main) == 0 {
					t.Errorf("build path %s has no Go files", m[1])
				}
			}
		}
	}
	if !cgoOff {
		t.Error("CGO_ENABLED=0 is not set: the binary would need a C library the final image lacks")
	}
	if !built {
		t.Error("no go build of the deployable")
	}
	// go.work lists every module; the go command refuses a workspace
	// whose modules lack a go.mod.
	for _, m := range workspaceModules(t) {
		if !slices.Contains(copied, m+"/go.mod") {
			t.Errorf("the workspace module %s's go.mod is not copied", m)
		}
	}
	if !slices.Contains(copied, "go.work") {
		t.Error("go.work is not copied: the build would not use the workspace")
	}
	// Every module the service is built from: its own and its siblings.
	need := map[string]bool{module: true}
	siblingModules(t, module, need)
	for dir := range need {
		if !slices.Contains(copied, dir) {
			t.Errorf("the sources of %s, which %s needs, are not copied", dir, binary)
		}
	}

	var entry string
	for _, in := range final {
		if in.cmd == "ENTRYPOINT" {
			entry = in.args
		}
	}
	if entry != `["/`+binary+`"]` {
		t.Errorf("ENTRYPOINT %s, want the exec form [\"/%s\"]", entry, binary)
	}
}
