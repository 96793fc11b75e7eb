package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

// Exit codes scripts can rely on, for every operator command.
const (
	exitOK = 0
	// exitNo is a negative answer: diff found changes, consent check
	// denied, audit verify found a broken chain.
	exitNo = 1
	// exitUsage is a mistake in the command line.
	exitUsage = 2
	// exitRefused is a tenant file or request the platform (or the
	// command, before sending it) refused as invalid or conflicting.
	// apply and diff change nothing in that case.
	exitRefused = 3
	// exitPlatform is a platform that could not be reached, refused the
	// caller, or failed.
	exitPlatform = 4
)

// fileFlags collects repeated -f flags.
type fileFlags []string

func (f *fileFlags) String() string     { return strings.Join(*f, ",") }
func (f *fileFlags) Set(v string) error { *f = append(*f, v); return nil }

// newFlagSet builds a command's flags with a help text that teaches.
func newFlagSet(name, help string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("lethe "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), strings.TrimLeft(help, "\n"))
		fmt.Fprint(fs.Output(), "\nFlags:\n")
		fs.PrintDefaults()
	}
	return fs
}

// parse parses args and returns the exit code to stop with, or -1 to go
// on.
func parse(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	return -1
}

// expandFiles turns -f arguments into tenant files: a folder stands for
// the *.yaml and *.yml files in it.
func expandFiles(args []string) ([]string, error) {
	var out []string
	for _, a := range args {
		info, err := os.Stat(a)
		if err != nil {
			return nil, err
		}
		if !info.IsDir() {
			out = append(out, a)
			continue
		}
		var found []string
		for _, pattern := range []string{"*.yaml", "*.yml"} {
			m, _ := filepath.Glob(filepath.Join(a, pattern))
			found = append(found, m...)
		}
		if len(found) == 0 {
			return nil, fmt.Errorf("%s: no *.yaml files in it", a)
		}
		sort.Strings(found)
		out = append(out, found...)
	}
	return out, nil
}

// loadedPlan is one file, read, checked and compared with the platform.
type loadedPlan struct {
	file *tenantfile.File
	plan *plan
}

// readFiles reads every file, and refuses a tenant declared in two. The
// returned code is -1 when everything is fine.
func readFiles(paths []string, stderr io.Writer) ([]*tenantfile.File, int) {
	files, err := expandFiles(paths)
	if err != nil {
		fmt.Fprintln(stderr, "lethe:", err)
		return nil, exitUsage
	}
	var problems tenantfile.Problems
	var parsed []*tenantfile.File
	tenants := map[string]string{}
	for _, path := range files {
		f, err := tenantfile.Read(path)
		var ps tenantfile.Problems
		switch {
		case errors.As(err, &ps):
			problems = append(problems, ps...)
			continue
		case err != nil:
			fmt.Fprintln(stderr, "lethe:", err)
			return nil, exitUsage
		}
		if first, dup := tenants[f.TenantID()]; dup {
			problems = append(problems, f.At("tenant.tenant_id", fmt.Sprintf("tenant %q is declared in %s too", f.TenantID(), first)))
			continue
		}
		tenants[f.TenantID()] = path
		parsed = append(parsed, f)
	}
	if len(problems) > 0 {
		return nil, reportProblems(stderr, problems)
	}
	return parsed, -1
}

// prepare reads every file, checks it without and with the platform (every
// change with validate_only) and computes the plans. Nothing is changed.
// The returned code is -1 when everything is fine.
func prepare(ctx context.Context, cl *clients, paths []string, prune bool, stderr io.Writer) ([]loadedPlan, int) {
	parsed, code := readFiles(paths, stderr)
	if code >= 0 {
		return nil, code
	}
	var problems tenantfile.Problems
	var plans []loadedPlan
	for _, f := range parsed {
		l, err := fetchLive(ctx, cl, f.TenantID())
		if err != nil {
			return nil, reportPlatform(stderr, err)
		}
		if ps := f.Validate(l.taxonomy); len(ps) > 0 {
			problems = append(problems, ps...)
			continue
		}
		p, ps := makePlan(f, l, cl, prune)
		problems = append(problems, ps...)
		plans = append(plans, loadedPlan{file: f, plan: p})
	}
	if len(problems) == 0 {
		for _, lp := range plans {
			ps, err := lp.plan.preflight(ctx, cl)
			if err != nil {
				return nil, reportPlatform(stderr, err)
			}
			problems = append(problems, ps...)
		}
	}
	if len(problems) > 0 {
		return nil, reportProblems(stderr, problems)
	}
	return plans, -1
}

func reportProblems(w io.Writer, ps tenantfile.Problems) int {
	for _, p := range ps {
		fmt.Fprintln(w, p.String())
	}
	fmt.Fprintf(w, "lethe: %d problem(s); nothing was changed\n", len(ps))
	return exitRefused
}

func reportPlatform(w io.Writer, err error) int {
	fmt.Fprintln(w, "lethe:", err)
	return exitPlatform
}

// fileCmd is a command over tenant files (apply, diff, validate): the
// connection flags and -f, given at least once.
type fileCmd struct {
	name   string
	conn   connFlags
	files  fileFlags
	fs     *flag.FlagSet
	stderr io.Writer
	// ctx and cl are set by plan; close releases them.
	ctx   context.Context
	cl    *clients
	close func()
}

func newFileCmd(name, help string, stderr io.Writer) *fileCmd {
	c := &fileCmd{name: name, fs: newFlagSet(name, help, stderr), stderr: stderr, close: func() {}}
	c.conn.register(c.fs)
	c.fs.Var(&c.files, "f", "tenant file, or a folder of them (repeatable)")
	return c
}

// parse parses args; a code >= 0 means stop with it.
func (c *fileCmd) parse(args []string) int {
	if code := parse(c.fs, args); code >= 0 {
		return code
	}
	if len(c.files) == 0 {
		fmt.Fprintf(c.stderr, "lethe %s: -f FILE is required\n", c.name)
		return exitUsage
	}
	return -1
}

// plan connects to the platform and plans every file (see prepare); a code
// >= 0 means stop with it. The caller defers close.
func (c *fileCmd) plan(prune bool) ([]loadedPlan, int) {
	cl, _, err := c.conn.dial()
	if err != nil {
		fmt.Fprintf(c.stderr, "lethe %s: %v\n", c.name, err)
		return nil, exitUsage
	}
	ctx, stop := signalContext()
	c.ctx, c.cl, c.close = ctx, cl, func() { stop(); cl.Close() }
	return prepare(ctx, cl, c.files, prune, c.stderr)
}

const applyHelp = `
Usage: lethe apply -f FILE|FOLDER [-f ...] [flags]

Makes the platform's configuration of each tenant what its tenant file
declares (docs/tenant-files.md): the tenant and its settings, its own data
categories, systems, purposes, records of processing, retention rules and
legal holds.

Every file is checked first — its YAML, the API's rules, references
between its objects, then every change by the services themselves with
validate_only — and nothing is changed unless everything passes; problems
name file, line and field. Then each change is made and printed. Applying
the same file again changes nothing: request ids are derived from each
change's content and the state it changes, so a retried apply never acts
twice.

Objects on the platform that a file does not declare are left alone and
listed; --prune removes the systems, activities and rules among them and
releases their holds. Purposes and categories cannot be removed.

Examples:
  lethe apply -f examples/tenants/clio.yaml
  lethe apply -f examples/tenants/            # all five example tenants
  lethe apply -f clio.yaml --prune --context prod

Exit codes: 0 applied (or nothing to do), 2 usage, 3 a file is invalid or
conflicts with the platform (nothing changed), 4 the platform failed.
`

func runApply(args []string, stdout, stderr io.Writer) int {
	c := newFileCmd("apply", applyHelp, stderr)
	var prune bool
	c.fs.BoolVar(&prune, "prune", false, "remove systems, activities, rules and holds the file does not declare")
	if code := c.parse(args); code >= 0 {
		return code
	}
	defer c.close()
	plans, code := c.plan(prune)
	if code >= 0 {
		return code
	}
	for _, lp := range plans {
		if len(lp.plan.changes) == 0 {
			fmt.Fprintf(stdout, "tenant %s unchanged\n", lp.file.TenantID())
			continue
		}
		err := lp.plan.apply(c.ctx, c.cl, stdout)
		var ps tenantfile.Problems
		switch {
		case errors.As(err, &ps):
			return reportApplyProblems(stderr, ps)
		case err != nil:
			return reportPlatform(stderr, err)
		}
		for _, u := range lp.plan.unmanaged {
			fmt.Fprintf(stdout, "%s: %s left as it is\n", lp.file.TenantID(), u)
		}
	}
	return exitOK
}

// reportApplyProblems reports a change a service refused in the middle of
// an apply: possible only for a change that depends on an object the same
// apply created, which the services cannot check in advance.
func reportApplyProblems(w io.Writer, ps tenantfile.Problems) int {
	for _, p := range ps {
		fmt.Fprintln(w, p.String())
	}
	fmt.Fprintln(w, "lethe apply: stopped; the changes printed above were made. Fix the file and apply it again.")
	return exitRefused
}

const diffHelp = `
Usage: lethe diff -f FILE|FOLDER [-f ...] [flags]

Shows what "lethe apply" would change, without changing anything: each
object that would be created (+), updated (~) or, with --prune, removed
(-), with its live and declared YAML line by line. The services check
every change with validate_only, as apply does.

Examples:
  lethe diff -f examples/tenants/clio.yaml
  lethe export --tenant clio > clio.yaml && lethe diff -f clio.yaml   # exit 0

Exit codes, as kubectl diff: 0 nothing would change, 1 something would,
2 usage, 3 a file is invalid or conflicts with the platform, 4 the platform
failed.
`

func runDiff(args []string, stdout, stderr io.Writer) int {
	c := newFileCmd("diff", diffHelp, stderr)
	var prune bool
	c.fs.BoolVar(&prune, "prune", false, "show the removals apply --prune would make")
	if code := c.parse(args); code >= 0 {
		return code
	}
	defer c.close()
	plans, code := c.plan(prune)
	if code >= 0 {
		return code
	}
	changed := false
	for _, lp := range plans {
		lp.plan.describe(stdout)
		changed = changed || len(lp.plan.changes) > 0
	}
	if changed {
		return exitNo
	}
	return exitOK
}

const validateHelp = `
Usage: lethe validate -f FILE|FOLDER [-f ...] [flags]

Checks tenant files as apply does — YAML, the API's rules, references,
and (when the platform is reachable) every change with validate_only —
and changes nothing. With --offline it does not contact the platform.

Examples:
  lethe validate -f examples/tenants/
  lethe validate --offline -f clio.yaml

Exit codes: 0 valid, 2 usage, 3 invalid, 4 the platform failed.
`

func runValidate(args []string, stdout, stderr io.Writer) int {
	c := newFileCmd("validate", validateHelp, stderr)
	var offline bool
	c.fs.BoolVar(&offline, "offline", false, "check without the platform (the built-in taxonomy is not checked)")
	if code := c.parse(args); code >= 0 {
		return code
	}
	if offline {
		files, code := readFiles(c.files, stderr)
		if code >= 0 {
			return code
		}
		var problems tenantfile.Problems
		for _, f := range files {
			problems = append(problems, f.Validate(nil)...)
		}
		if len(problems) > 0 {
			return reportProblems(stderr, problems)
		}
		fmt.Fprintf(stdout, "%d file(s) valid\n", len(files))
		return exitOK
	}
	defer c.close()
	plans, code := c.plan(false)
	if code >= 0 {
		return code
	}
	fmt.Fprintf(stdout, "%d file(s) valid\n", len(plans))
	return exitOK
}

const exportHelp = `
Usage: lethe export --tenant TENANT [flags]

Writes a tenant's live configuration as a tenant file: what apply would
need to recreate it. Exporting and then diffing the export shows nothing.
Holds are exported only while in force.

Examples:
  lethe export --tenant clio > clio.yaml
  lethe export --tenant clio --context prod -out clio-prod.yaml
`

func runExport(args []string, stdout, stderr io.Writer) int {
	var conn connFlags
	var tenant, out string
	fs := newFlagSet("export", exportHelp, stderr)
	conn.register(fs)
	fs.StringVar(&tenant, "tenant", "", "the tenant to export (required)")
	fs.StringVar(&out, "out", "", "file to write (default standard output)")
	if code := parse(fs, args); code >= 0 {
		return code
	}
	if tenant == "" {
		fmt.Fprintln(stderr, "lethe export: --tenant is required")
		return exitUsage
	}
	cl, ctxConf, err := conn.dial()
	if err != nil {
		fmt.Fprintln(stderr, "lethe export:", err)
		return exitUsage
	}
	defer cl.Close()
	ctx, stop := signalContext()
	defer stop()
	l, err := fetchLive(ctx, cl, tenant)
	if err != nil {
		return reportPlatform(stderr, err)
	}
	if !l.exists {
		fmt.Fprintf(stderr, "lethe export: tenant %q not found\n", tenant)
		return exitRefused
	}
	f := exportFile(l)
	data, err := f.Marshal(fmt.Sprintf("Tenant %s exported by lethe from %s on %s.\nApply with: lethe apply -f FILE",
		tenant, ctxConf.Address, time.Now().UTC().Format(time.RFC3339)))
	if err != nil {
		fmt.Fprintln(stderr, "lethe export:", err)
		return exitPlatform
	}
	if out == "" {
		_, err = stdout.Write(data)
	} else {
		err = os.WriteFile(out, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(stderr, "lethe export:", err)
		return exitUsage
	}
	return exitOK
}

// exportFile turns the live state into a tenant file.
func exportFile(l *live) *tenantfile.File {
	f := &tenantfile.File{Tenant: normalise(l.tenant, nil).(*registryv1.Tenant)}
	for _, id := range sortedKeys(l.categories) {
		f.Categories = append(f.Categories, normalise(l.categories[id], nil).(*registryv1.Category))
	}
	for _, id := range sortedKeys(l.purposes) {
		f.Purposes = append(f.Purposes, l.purposes[id])
	}
	f.Web = l.web
	for _, id := range sortedKeys(l.systems) {
		f.Systems = append(f.Systems, normalise(l.systems[id], nil).(*registryv1.System))
	}
	for _, id := range sortedKeys(l.activities) {
		f.Activities = append(f.Activities, l.activities[id])
	}
	for _, id := range sortedKeys(l.rules) {
		f.Rules = append(f.Rules, l.rules[id])
	}
	for _, id := range sortedKeys(l.holds) {
		h := l.holds[id]
		if h.ReleasedAt != nil || (h.EndTime != nil && !h.EndTime.AsTime().After(time.Now())) {
			continue
		}
		f.Holds = append(f.Holds, normalise(h, h).(*retentionv1.Hold))
	}
	return f
}

const schemaHelp = `
Usage: lethe schema

Prints the JSON Schema of tenant files (examples/tenants/schema.json is
this output). Editors use it to complete and check files: with the YAML
language server, start a file with
  # yaml-language-server: $schema=./schema.json
`

func runSchema(args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("schema", schemaHelp, stderr)
	if code := parse(fs, args); code >= 0 {
		return code
	}
	data, err := tenantfile.Schema()
	if err != nil {
		fmt.Fprintln(stderr, "lethe schema:", err)
		return exitPlatform
	}
	_, _ = stdout.Write(data)
	return exitOK
}

// exitFor maps a failed call to an exit code: refused requests are 3, an
// unreachable or failing platform 4.
func exitFor(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.FailedPrecondition, codes.NotFound, codes.AlreadyExists, codes.OutOfRange:
		return exitRefused
	}
	return exitPlatform
}
