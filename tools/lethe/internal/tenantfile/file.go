// Package tenantfile reads and writes tenant files: one tenant's whole
// privacy set-up — settings, purposes, retention rules and holds, systems,
// records of processing, its own data categories — declared in YAML, as
// `lethe apply` takes it and `lethe export` writes it.
//
// The objects of a file are the services' own API messages (see codec.go
// for the spelling), so a file maps one to one onto the configuration RPCs
// and a new field in a proto is a new field in the file. docs/tenant-files.md
// describes the format; examples/tenants holds five companies' files and the
// JSON Schema generated from this package (Schema).
package tenantfile

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"unicode"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
)

// APIVersion and Kind open every tenant file, so that a later format can be
// told apart and a stray YAML file is refused.
const (
	APIVersion = "lethe.dev/v1"
	Kind       = "Tenant"
)

// File is a tenant's declared configuration.
type File struct {
	// Path is where the file was read from, for messages.
	Path string
	// Tenant is the tenant with its settings, DSAR settings among them.
	Tenant *registryv1.Tenant
	// Categories are the tenant's own data categories, under the built-in
	// taxonomy.
	Categories []*registryv1.Category
	// Purposes are the consent service's purposes.
	Purposes []*consentv1.Purpose
	// Systems are the registry's systems, processors and recipients.
	Systems []*registryv1.System
	// Activities are the records of processing (Art. 30).
	Activities []*registryv1.ProcessingActivity
	// Rules are the retention rules, purge and minimum.
	Rules []*retentionv1.Rule
	// Holds are the legal holds that must be in force.
	Holds []*retentionv1.Hold
	// Web configures the tenant's public consent endpoint for browsers
	// (ConsentService.PutWebSettings); nil for none.
	Web *consentv1.WebSettings

	pos map[string]Pos
}

// Pos is a place in a file.
type Pos struct{ Line, Column int }

// Problem is one thing wrong with a file, at a place.
type Problem struct {
	File         string
	Line, Column int
	// Field is the path of the field in the file's spelling
	// ("systems[2].parentSystemId").
	Field   string
	Message string
}

func (p Problem) String() string {
	loc := p.File
	if p.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Column)
	}
	if p.Field == "" {
		return loc + ": " + p.Message
	}
	return fmt.Sprintf("%s: %s: %s", loc, p.Field, p.Message)
}

// Problems is every problem found in a file; an error.
type Problems []Problem

func (ps Problems) Error() string {
	lines := make([]string, len(ps))
	for i, p := range ps {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// Read reads and decodes a tenant file. A file that does not decode
// returns Problems naming each place.
func Read(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(path, data)
}

// envelope is the mapping at the top of a file.
var envelopeFields = []string{"apiVersion", "kind", "tenant", "categories", "purposes", "systems", "activities", "retention", "web"}

// Parse decodes a tenant file's bytes; path names it in problems.
func Parse(path string, data []byte) (*File, error) {
	root, err := rootMapping(path, data)
	if err != nil {
		return nil, err
	}
	f := &File{Path: path, pos: map[string]Pos{}}
	var problems []Problem
	d := &decoder{file: path, problems: &problems, pos: f.pos}
	fields := d.envelope(root)
	if v := fields["apiVersion"]; v == nil || v.Value != APIVersion {
		d.fail(orNode(v, root), "apiVersion", "want apiVersion: %s", APIVersion)
	}
	if v := fields["kind"]; v == nil || v.Value != Kind {
		d.fail(orNode(v, root), "kind", "want kind: %s", Kind)
	}
	if v := fields["tenant"]; v == nil {
		d.fail(root, "tenant", "required: the tenant's id, name and settings")
	} else {
		f.Tenant = &registryv1.Tenant{}
		d.decodeMessage(v, f.Tenant.ProtoReflect(), "tenant")
	}
	decodeList(d, fields["categories"], "categories", &f.Categories)
	decodeList(d, fields["purposes"], "purposes", &f.Purposes)
	decodeList(d, fields["systems"], "systems", &f.Systems)
	decodeList(d, fields["activities"], "activities", &f.Activities)
	if v := fields["retention"]; v != nil {
		d.decodeRetention(v, f)
	}
	if v := fields["web"]; v != nil && v.Tag != "!!null" {
		f.Web = &consentv1.WebSettings{}
		d.decodeMessage(v, f.Web.ProtoReflect(), "web")
	}
	if len(problems) > 0 {
		return nil, sortProblems(problems)
	}
	return f, nil
}

// rootMapping returns the mapping of the file's one YAML document, or the
// problem that stops the file being read at all: bad YAML, a second
// document, no mapping, anchors and aliases.
func rootMapping(path string, data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&doc); err != nil {
		return nil, Problems{yamlProblem(path, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		return nil, Problems{{File: path, Line: extra.Line, Message: "one tenant per file: a second YAML document starts here"}}
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, Problems{{File: path, Line: 1, Column: 1, Message: "a tenant file is a mapping with apiVersion, kind and tenant"}}
	}
	root := doc.Content[0]
	if hasAlias(root) {
		return nil, Problems{{File: path, Line: 1, Column: 1, Message: "YAML anchors and aliases are not supported: write each object out"}}
	}
	return root, nil
}

// envelope returns the top-level fields by name, failing unknown and
// repeated ones.
func (d *decoder) envelope(root *yaml.Node) map[string]*yaml.Node {
	fields := map[string]*yaml.Node{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		switch {
		case !contains(envelopeFields, k.Value):
			d.fail(k, k.Value, "unknown field %q; a tenant file has %s", k.Value, strings.Join(envelopeFields, ", "))
		case fields[k.Value] != nil:
			d.fail(k, k.Value, "field %q written twice", k.Value)
		default:
			fields[k.Value] = v
			d.mark(k.Value, k)
		}
	}
	return fields
}

// decodeRetention decodes the retention mapping's rules and holds into f.
func (d *decoder) decodeRetention(v *yaml.Node, f *File) {
	if v.Kind != yaml.MappingNode {
		d.fail(v, "retention", "want a mapping with rules and holds")
		return
	}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		switch k.Value {
		case "rules":
			d.mark("retention.rules", k)
			decodeList(d, val, "retention.rules", &f.Rules)
		case "holds":
			d.mark("retention.holds", k)
			decodeList(d, val, "retention.holds", &f.Holds)
		default:
			d.fail(k, "retention."+k.Value, "unknown field %q; retention has rules and holds", k.Value)
		}
	}
}

func decodeList[T proto.Message](d *decoder, n *yaml.Node, path string, out *[]T) {
	if n == nil || n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		d.fail(n, path, "want a list, found %s", kindName(n))
		return
	}
	for i, item := range n.Content {
		var zero T
		m := zero.ProtoReflect().Type().New()
		d.decodeMessage(item, m, fmt.Sprintf("%s[%d]", path, i))
		*out = append(*out, m.Interface().(T))
	}
}

func hasAlias(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		return true
	}
	for _, c := range n.Content {
		if hasAlias(c) {
			return true
		}
	}
	return false
}

func orNode(n, alt *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return alt
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// yamlProblem turns a YAML syntax error ("yaml: line 7: …") into a
// Problem.
func yamlProblem(path string, err error) Problem {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	var line int
	if _, scanErr := fmt.Sscanf(msg, "line %d:", &line); scanErr == nil {
		msg = strings.TrimSpace(msg[strings.Index(msg, ":")+1:])
	}
	var te *yaml.TypeError
	if errors.As(err, &te) {
		msg = strings.Join(te.Errors, "; ")
	}
	return Problem{File: path, Line: line, Message: "not valid YAML: " + msg}
}

func sortProblems(ps []Problem) Problems {
	sort.SliceStable(ps, func(i, j int) bool {
		if ps[i].Line != ps[j].Line {
			return ps[i].Line < ps[j].Line
		}
		return ps[i].Column < ps[j].Column
	})
	return ps
}

// At returns the problem at the closest written place of path (proto field
// names, "systems[2].transfer.scc_version"): the field itself, or the
// nearest enclosing field written in the file.
func (f *File) At(path, message string) Problem {
	p := Problem{File: f.Path, Field: displayPath(path), Message: message}
	for q := path; q != ""; q = parent(q) {
		if pos, ok := f.pos[q]; ok {
			p.Line, p.Column = pos.Line, pos.Column
			break
		}
	}
	return p
}

// parent strips the last field or index from a path.
func parent(path string) string {
	if strings.HasSuffix(path, "]") {
		return path[:strings.LastIndex(path, "[")]
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i]
	}
	return ""
}

// displayPath writes a path of proto field names in the file's spelling:
// "parent_system_id" becomes "parentSystemId".
func displayPath(path string) string {
	var b strings.Builder
	upper := false
	for _, r := range path {
		switch {
		case r == '_':
			upper = true
		case upper:
			b.WriteRune(unicode.ToUpper(r))
			upper = false
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// Object is one object of a file: its kind, id and place.
type Object struct {
	// Kind is "tenant", "category", "purpose", "system", "activity", "rule",
	// "hold" or "web".
	Kind string
	// ID is the object's id within the tenant.
	ID string
	// Path is the object's place in the file ("systems[2]").
	Path string
	// Message is the object.
	Message proto.Message
}

// Objects lists the file's objects in the order they are applied: the
// tenant, its categories, systems (processors before their
// sub-processors), purposes, activities, rules, holds, and the web
// settings, which name purposes.
func (f *File) Objects() []Object {
	var out []Object
	if f.Tenant != nil {
		out = append(out, Object{Kind: "tenant", ID: f.Tenant.TenantId, Path: "tenant", Message: f.Tenant})
	}
	for i, c := range f.Categories {
		out = append(out, Object{Kind: "category", ID: c.Id, Path: fmt.Sprintf("categories[%d]", i), Message: c})
	}
	var subs []Object
	for i, s := range f.Systems {
		o := Object{Kind: "system", ID: s.SystemId, Path: fmt.Sprintf("systems[%d]", i), Message: s}
		if s.ParentSystemId != "" {
			subs = append(subs, o)
			continue
		}
		out = append(out, o)
	}
	out = append(out, subs...)
	for i, p := range f.Purposes {
		out = append(out, Object{Kind: "purpose", ID: p.PurposeId, Path: fmt.Sprintf("purposes[%d]", i), Message: p})
	}
	for i, a := range f.Activities {
		out = append(out, Object{Kind: "activity", ID: a.ActivityId, Path: fmt.Sprintf("activities[%d]", i), Message: a})
	}
	for i, r := range f.Rules {
		out = append(out, Object{Kind: "rule", ID: r.RuleId, Path: fmt.Sprintf("retention.rules[%d]", i), Message: r})
	}
	for i, h := range f.Holds {
		out = append(out, Object{Kind: "hold", ID: h.HoldId, Path: fmt.Sprintf("retention.holds[%d]", i), Message: h})
	}
	if f.Web != nil {
		out = append(out, Object{Kind: "web", ID: "settings", Path: "web", Message: f.Web})
	}
	return out
}

// TenantID is the file's tenant id.
func (f *File) TenantID() string { return f.Tenant.GetTenantId() }

// Marshal writes f in the file format, with a comment at the top.
func (f *File) Marshal(comment string) ([]byte, error) {
	root := &yaml.Node{Kind: yaml.MappingNode}
	add := func(key string, v *yaml.Node) {
		root.Content = append(root.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: key}, v)
	}
	add("apiVersion", str(APIVersion))
	add("kind", str(Kind))
	add("tenant", Encode(f.Tenant.ProtoReflect()))
	list := func(key string, msgs []protoreflect.Message) *yaml.Node {
		n := &yaml.Node{Kind: yaml.SequenceNode}
		for _, m := range msgs {
			n.Content = append(n.Content, Encode(m))
		}
		if key != "" {
			add(key, n)
		}
		return n
	}
	list("categories", reflectAll(f.Categories))
	list("purposes", reflectAll(f.Purposes))
	list("systems", reflectAll(f.Systems))
	list("activities", reflectAll(f.Activities))
	retention := &yaml.Node{Kind: yaml.MappingNode}
	retention.Content = append(retention.Content,
		&yaml.Node{Kind: yaml.ScalarNode, Value: "rules"}, list("", reflectAll(f.Rules)),
		&yaml.Node{Kind: yaml.ScalarNode, Value: "holds"}, list("", reflectAll(f.Holds)))
	add("retention", retention)
	if f.Web != nil {
		add("web", Encode(f.Web.ProtoReflect()))
	}
	root.HeadComment = comment

	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// MarshalObject renders one object as YAML, for diffs.
func MarshalObject(m proto.Message) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(Encode(m.ProtoReflect())); err != nil {
		return fmt.Sprintf("<%v>\n", err)
	}
	_ = enc.Close()
	if s := buf.String(); s != "{}\n" {
		return s
	}
	return ""
}

func reflectAll[T proto.Message](msgs []T) []protoreflect.Message {
	out := make([]protoreflect.Message, len(msgs))
	for i, m := range msgs {
		out[i] = m.ProtoReflect()
	}
	return out
}

// Err is ps as an error, or nil when there are none.
func (ps Problems) Err() error {
	if len(ps) == 0 {
		return nil
	}
	return ps
}
