package tenantfile

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/lethe-privacy/lethe/platform/period"
)

// The codec maps YAML onto the services' own API messages, field by field,
// through their descriptors: a tenant file's objects are the messages the
// configuration RPCs take, spelled for people. Four spellings differ from
// protojson, because they are what a privacy engineer writes:
//
//   - enum values are the value's name without the enum's prefix, in lower
//     case ("consent" for LEGAL_BASIS_CONSENT); the full name is accepted;
//   - google.protobuf.Duration is an ISO 8601 duration of weeks, days and
//     time ("P14D", "P730D", "PT12H"): an exact length, so no years or
//     months;
//   - google.protobuf.Timestamp is RFC 3339 or a date ("2018-05-25", at
//     midnight UTC);
//   - lethe.common.v1.DataCategory is its dotted id as a plain string.
//
// Every field name is the proto field's JSON name (lowerCamelCase), so a
// server's complaint about "system.parent_system_id" points at
// "parentSystemId" in the file.

const (
	dataCategoryName = "lethe.common.v1.DataCategory"
	timestampName    = "google.protobuf.Timestamp"
	durationName     = "google.protobuf.Duration"
)

// outputOnly lists fields the services set and a file must not.
var outputOnly = map[protoreflect.FullName]string{
	"lethe.registry.v1.Tenant.created_at":   "set by the registry",
	"lethe.registry.v1.Tenant.updated_at":   "set by the registry",
	"lethe.registry.v1.Category.built_in":   "set by the registry",
	"lethe.registry.v1.System.effective_at": "each version takes effect when it is applied; the registry keeps the history",
	"lethe.retention.v1.Hold.released_at":   "set when a hold is released (lethe retention holds release)",
}

// renamed lists keys an earlier version of the file format spelled
// otherwise, by message, with today's spelling: a file still written the
// old way is told what to write rather than only that a key is unknown.
var renamed = map[protoreflect.FullName]map[string]string{
	"lethe.registry.v1.TenantSettings": {"verificationChannel": "verificationMethod"},
}

// decoder turns YAML nodes into messages and records where every field was
// written.
type decoder struct {
	file     string
	problems *[]Problem
	pos      map[string]Pos
}

func (d *decoder) fail(n *yaml.Node, path, format string, args ...any) {
	*d.problems = append(*d.problems, Problem{File: d.file, Line: n.Line, Column: n.Column, Field: displayPath(path), Message: fmt.Sprintf(format, args...)})
}

func (d *decoder) mark(path string, n *yaml.Node) {
	d.pos[path] = Pos{Line: n.Line, Column: n.Column}
}

// decodeMessage fills m from the mapping n; path is m's place in the file
// in proto field names ("systems[2].transfer").
func (d *decoder) decodeMessage(n *yaml.Node, m protoreflect.Message, path string) {
	d.mark(path, n)
	desc := m.Descriptor()
	if special(desc) {
		d.decodeSpecial(n, m, path)
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of %s fields, found %s", desc.Name(), kindName(n))
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		fd := desc.Fields().ByJSONName(k.Value)
		if fd == nil {
			fd = desc.Fields().ByName(protoreflect.Name(k.Value))
			if fd != nil {
				d.fail(k, join(path, string(fd.Name())), "write %q, not %q", fd.JSONName(), k.Value)
				continue
			}
			if now, ok := renamed[desc.FullName()][k.Value]; ok {
				d.fail(k, join(path, k.Value), "%q is now called %q", k.Value, now)
				continue
			}
			d.fail(k, join(path, k.Value), "unknown field %q of %s; known: %s", k.Value, desc.Name(), strings.Join(knownFields(desc), ", "))
			continue
		}
		fpath := join(path, string(fd.Name()))
		if seen[k.Value] {
			d.fail(k, fpath, "field %q written twice", k.Value)
			continue
		}
		seen[k.Value] = true
		if why, ok := outputOnly[fd.FullName()]; ok {
			d.fail(k, fpath, "%q cannot be written in a tenant file: %s", k.Value, why)
			continue
		}
		d.mark(fpath, k)
		if v.Tag == "!!null" {
			continue
		}
		switch {
		case fd.IsList():
			if v.Kind != yaml.SequenceNode {
				d.fail(v, fpath, "want a list, found %s", kindName(v))
				continue
			}
			list := m.Mutable(fd).List()
			for j, item := range v.Content {
				ipath := fmt.Sprintf("%s[%d]", fpath, j)
				d.mark(ipath, item)
				if fd.Kind() == protoreflect.MessageKind {
					el := list.NewElement()
					d.decodeMessage(item, el.Message(), ipath)
					list.Append(el)
				} else if val, ok := d.scalar(item, fd, ipath); ok {
					list.Append(val)
				}
			}
		case fd.IsMap():
			d.decodeMap(v, m.Mutable(fd).Map(), fd, fpath)
		case fd.Kind() == protoreflect.MessageKind:
			d.decodeMessage(v, m.Mutable(fd).Message(), fpath)
		default:
			if val, ok := d.scalar(v, fd, fpath); ok {
				m.Set(fd, val)
			}
		}
	}
}

// decodeMap fills a map of strings to strings (a connector's parameters)
// or to messages (a banner's texts by language) from the mapping n; maps
// of other types do not occur in the API's configuration messages.
func (d *decoder) decodeMap(n *yaml.Node, mp protoreflect.Map, fd protoreflect.FieldDescriptor, path string) {
	messages := fd.MapValue().Kind() == protoreflect.MessageKind
	if fd.MapKey().Kind() != protoreflect.StringKind || (fd.MapValue().Kind() != protoreflect.StringKind && !messages) {
		d.fail(n, path, "maps of %s to %s are not supported in tenant files", fd.MapKey().Kind(), fd.MapValue().Kind())
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(n, path, "want a mapping of names to values, found %s", kindName(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		kpath := fmt.Sprintf("%s[%q]", path, k.Value)
		d.mark(kpath, k)
		if messages && k.Kind == yaml.ScalarNode {
			key := protoreflect.ValueOfString(k.Value).MapKey()
			if mp.Has(key) {
				d.fail(k, kpath, "%q written twice", k.Value)
				continue
			}
			m := mp.NewValue()
			d.decodeMessage(v, m.Message(), kpath)
			mp.Set(key, m)
			continue
		}
		if messages || k.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
			d.fail(k, kpath, "want a name and a single value")
			continue
		}
		key := protoreflect.ValueOfString(k.Value).MapKey()
		if mp.Has(key) {
			d.fail(k, kpath, "%q written twice", k.Value)
			continue
		}
		mp.Set(key, protoreflect.ValueOfString(v.Value))
	}
}

func special(desc protoreflect.MessageDescriptor) bool {
	switch desc.FullName() {
	case dataCategoryName, timestampName, durationName:
		return true
	}
	return false
}

func (d *decoder) decodeSpecial(n *yaml.Node, m protoreflect.Message, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "want a single value, found %s", kindName(n))
		return
	}
	switch m.Descriptor().FullName() {
	case dataCategoryName:
		m.Set(m.Descriptor().Fields().ByName("id"), protoreflect.ValueOfString(n.Value))
	case timestampName:
		t, err := ParseTime(n.Value)
		if err != nil {
			d.fail(n, path, "%v", err)
			return
		}
		proto.Merge(m.Interface(), timestamppb.New(t))
	case durationName:
		dur, err := ParseDuration(n.Value)
		if err != nil {
			d.fail(n, path, "%v", err)
			return
		}
		proto.Merge(m.Interface(), durationpb.New(dur))
	}
}

// scalar converts a scalar node to the value of a non-message field.
func (d *decoder) scalar(n *yaml.Node, fd protoreflect.FieldDescriptor, path string) (protoreflect.Value, bool) {
	if n.Kind != yaml.ScalarNode {
		d.fail(n, path, "want a single value, found %s", kindName(n))
		return protoreflect.Value{}, false
	}
	switch fd.Kind() {
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(n.Value), true
	case protoreflect.BoolKind:
		switch n.Value {
		case "true":
			return protoreflect.ValueOfBool(true), true
		case "false":
			return protoreflect.ValueOfBool(false), true
		}
		d.fail(n, path, "want true or false, found %q", n.Value)
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind,
		protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind,
		protoreflect.Uint32Kind, protoreflect.Fixed32Kind, protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		if v, ok := wholeNumber(fd.Kind(), n.Value); ok {
			return v, true
		}
		d.fail(n, path, "want a whole number, found %q", n.Value)
	case protoreflect.DoubleKind, protoreflect.FloatKind:
		v, err := strconv.ParseFloat(n.Value, 64)
		if err == nil && !math.IsNaN(v) {
			return protoreflect.ValueOfFloat64(v), true
		}
		d.fail(n, path, "want a number, found %q", n.Value)
	case protoreflect.EnumKind:
		if num, ok := EnumValue(fd.Enum(), n.Value); ok {
			return protoreflect.ValueOfEnum(num), true
		}
		d.fail(n, path, "%q is not a %s; one of: %s", n.Value, fd.Enum().Name(), strings.Join(EnumNames(fd.Enum()), ", "))
	default:
		d.fail(n, path, "fields of kind %s are not supported in tenant files", fd.Kind())
	}
	return protoreflect.Value{}, false
}

// wholeNumber parses s as the value of an integer field of kind k, in
// its range.
func wholeNumber(k protoreflect.Kind, s string) (protoreflect.Value, bool) {
	switch k {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		v, err := strconv.ParseInt(s, 10, 32)
		return protoreflect.ValueOfInt32(int32(v)), err == nil
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		v, err := strconv.ParseInt(s, 10, 64)
		return protoreflect.ValueOfInt64(v), err == nil
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		v, err := strconv.ParseUint(s, 10, 32)
		return protoreflect.ValueOfUint32(uint32(v)), err == nil
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		v, err := strconv.ParseUint(s, 10, 64)
		return protoreflect.ValueOfUint64(v), err == nil
	}
	return protoreflect.Value{}, false
}

// enumPrefix is the prefix every value of e carries: LEGAL_BASIS_ for
// LegalBasis.
func enumPrefix(e protoreflect.EnumDescriptor) string {
	var b strings.Builder
	for i, r := range string(e.Name()) {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(r)
	}
	return strings.ToUpper(b.String()) + "_"
}

// EnumName is the file spelling of an enum value: "consent" for
// LEGAL_BASIS_CONSENT.
func EnumName(e protoreflect.EnumDescriptor, num protoreflect.EnumNumber) string {
	v := e.Values().ByNumber(num)
	if v == nil {
		return strconv.Itoa(int(num))
	}
	return strings.ToLower(strings.TrimPrefix(string(v.Name()), enumPrefix(e)))
}

// EnumNames lists the file spellings of e's values, without the
// unspecified one.
func EnumNames(e protoreflect.EnumDescriptor) []string {
	var out []string
	for i := 0; i < e.Values().Len(); i++ {
		if v := e.Values().Get(i); v.Number() != 0 {
			out = append(out, EnumName(e, v.Number()))
		}
	}
	return out
}

// EnumValue reads a file spelling (or the full value name) of an enum
// value. The unspecified value is never accepted: leave the field out.
func EnumValue(e protoreflect.EnumDescriptor, s string) (protoreflect.EnumNumber, bool) {
	name := strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(s), "-", "_"))
	for _, candidate := range []string{enumPrefix(e) + name, name} {
		if v := e.Values().ByName(protoreflect.Name(candidate)); v != nil && v.Number() != 0 {
			return v.Number(), true
		}
	}
	return 0, false
}

// ParseTime reads RFC 3339 or a date at midnight UTC.
func ParseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.DateOnly, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("want a date (2018-05-25) or an RFC 3339 time (2018-05-25T10:00:00Z), found %q", s)
}

// FormatTime writes t as ParseTime reads it, a date when it is midnight
// UTC.
func FormatTime(t time.Time) string {
	t = t.UTC()
	if t.Equal(t.Truncate(24 * time.Hour)) {
		return t.Format(time.DateOnly)
	}
	return t.Format(time.RFC3339Nano)
}

// ParseDuration reads an ISO 8601 duration of exact length: weeks, days
// and time, no years or months (whose length varies).
func ParseDuration(s string) (time.Duration, error) {
	p, err := period.Parse(s)
	if err != nil {
		return 0, err
	}
	if p.Years != 0 || p.Months != 0 {
		return 0, fmt.Errorf("%q: a duration here is an exact length; write days (P365D), not years or months", s)
	}
	return time.Duration(p.Weeks*7+p.Days)*24*time.Hour + p.Time, nil
}

// FormatDuration writes d as ParseDuration reads it: days when whole.
func FormatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	if d == 0 {
		return "P0D"
	}
	out := "P"
	if days := d / day; days > 0 {
		out += strconv.FormatInt(int64(days), 10) + "D"
		d -= days * day
	}
	if d == 0 {
		return out
	}
	out += "T"
	if h := d / time.Hour; h > 0 {
		out += strconv.FormatInt(int64(h), 10) + "H"
		d -= h * time.Hour
	}
	if m := d / time.Minute; m > 0 {
		out += strconv.FormatInt(int64(m), 10) + "M"
		d -= m * time.Minute
	}
	if d > 0 {
		out += strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "S"
	}
	return out
}

// Encode renders m as a YAML mapping in the file's spelling, fields in
// declaration order, unset fields left out.
func Encode(m protoreflect.Message) *yaml.Node {
	desc := m.Descriptor()
	if special(desc) {
		return encodeSpecial(m)
	}
	n := &yaml.Node{Kind: yaml.MappingNode}
	fields := desc.Fields()
	for i := 0; i < fields.Len(); i++ {
		fd := fields.Get(i)
		if !m.Has(fd) {
			continue
		}
		if _, ok := outputOnly[fd.FullName()]; ok {
			continue
		}
		var v *yaml.Node
		switch {
		case fd.IsList():
			v = &yaml.Node{Kind: yaml.SequenceNode}
			list := m.Get(fd).List()
			for j := 0; j < list.Len(); j++ {
				v.Content = append(v.Content, encodeValue(fd, list.Get(j)))
			}
			if allScalar(v.Content) && len(v.Content) <= 8 {
				v.Style = yaml.FlowStyle
			}
		case fd.IsMap():
			v = &yaml.Node{Kind: yaml.MappingNode}
			mp := m.Get(fd).Map()
			keys := make([]string, 0, mp.Len())
			mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
				keys = append(keys, k.String())
				return true
			})
			slices.Sort(keys) // a stable file whatever the map's order
			for _, k := range keys {
				v.Content = append(v.Content, str(k), encodeValue(fd.MapValue(), mp.Get(protoreflect.ValueOfString(k).MapKey())))
			}
		default:
			v = encodeValue(fd, m.Get(fd))
		}
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: fd.JSONName()}, v)
	}
	return n
}

func allScalar(nodes []*yaml.Node) bool {
	return !slices.ContainsFunc(nodes, func(n *yaml.Node) bool { return n.Kind != yaml.ScalarNode })
}

func encodeValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) *yaml.Node {
	switch fd.Kind() {
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return Encode(v.Message())
	case protoreflect.EnumKind:
		return str(EnumName(fd.Enum(), v.Enum()))
	case protoreflect.StringKind:
		return str(v.String())
	default:
		return &yaml.Node{Kind: yaml.ScalarNode, Value: v.String()}
	}
}

func encodeSpecial(m protoreflect.Message) *yaml.Node {
	switch msg := m.Interface().(type) {
	case *timestamppb.Timestamp:
		return str(FormatTime(msg.AsTime()))
	case *durationpb.Duration:
		return str(FormatDuration(msg.AsDuration()))
	default:
		return str(m.Get(m.Descriptor().Fields().ByName("id")).String())
	}
}

// str is a string scalar, quoted by the encoder only where YAML would read
// it as something else.
func str(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s}
}

func knownFields(desc protoreflect.MessageDescriptor) []string {
	var out []string
	for i := 0; i < desc.Fields().Len(); i++ {
		fd := desc.Fields().Get(i)
		if _, ok := outputOnly[fd.FullName()]; !ok {
			out = append(out, fd.JSONName())
		}
	}
	return out
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	return fmt.Sprintf("%q", n.Value)
}

func join(path, field string) string {
	if path == "" {
		return field
	}
	return path + "." + field
}
