package wirefuzz

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	validatepb "buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

const (
	timestampName protoreflect.FullName = "google.protobuf.Timestamp"
	durationName  protoreflect.FullName = "google.protobuf.Duration"
	// maxDepth bounds how deep the filler and the target walk descend, so
	// a recursive message type ends.
	maxDepth = 4
	// repairRounds bounds the base's repair: each round fixes what the
	// previous one left.
	repairRounds = 6
)

// builder makes base requests: every field filled with a plausible value,
// then each field protovalidate refuses tried with candidate values until
// it passes. A base that still fails (a message-level rule the filler
// cannot satisfy) is used as it is; Run then asks less of its mutations
// (see baseline).
type builder struct {
	tenant    string
	now       time.Time
	validator protovalidate.Validator
}

func newBuilder(tenant string, now time.Time) (*builder, error) {
	v, err := protovalidate.New()
	if err != nil {
		return nil, err
	}
	return &builder{tenant: tenant, now: now, validator: v}, nil
}

// base returns a filled and repaired request of type mt.
func (b *builder) base(mt protoreflect.MessageType) proto.Message {
	m := mt.New()
	b.fill(m, 0)
	b.repair(m.Interface())
	return m.Interface()
}

func isWKT(md protoreflect.MessageDescriptor) bool {
	return md.FullName() == timestampName || md.FullName() == durationName
}

// unsetInBase are fields the base leaves out because a service accepts
// them only with another value of a sibling field than the one the filler
// picks: a system's webhook and connector go only with the answer modes
// WEBHOOK and CONNECTOR, and the filler picks SDK, the first.
var unsetInBase = map[protoreflect.FullName]bool{
	"lethe.registry.v1.System.webhook":   true,
	"lethe.registry.v1.System.connector": true,
}

func (b *builder) fill(m protoreflect.Message, depth int) {
	fields := m.Descriptor().Fields()
	groups := oneofRules(m.Descriptor())
	for i := range fields.Len() {
		fd := fields.Get(i)
		if unsetInBase[fd.FullName()] {
			continue
		}
		if o := fd.ContainingOneof(); o != nil && !o.IsSynthetic() && m.WhichOneof(o) != nil {
			continue // one member of a oneof: the first
		}
		if g, ok := groups[fd.Name()]; ok && slices.ContainsFunc(g, func(n protoreflect.Name) bool {
			other := fields.ByName(n)
			return n != fd.Name() && other != nil && m.Has(other)
		}) {
			continue // one field of a protovalidate oneof rule: the first
		}
		switch {
		case fd.IsMap():
			// Left empty: no Lethe request needs a map to be valid.
		case fd.IsList():
			list := m.Mutable(fd).List()
			if fd.Message() != nil {
				if depth >= maxDepth {
					continue
				}
				e := list.NewElement()
				b.fillMessage(e.Message(), depth+1)
				list.Append(e)
			} else {
				list.Append(b.scalar(fd))
			}
		case fd.Message() != nil:
			if depth >= maxDepth && !isWKT(fd.Message()) {
				continue
			}
			b.fillMessage(m.Mutable(fd).Message(), depth+1)
		default:
			m.Set(fd, b.scalar(fd))
		}
	}
}

func (b *builder) fillMessage(m protoreflect.Message, depth int) {
	switch m.Descriptor().FullName() {
	case timestampName:
		setTimestamp(m, b.now.Add(-time.Hour))
	case durationName:
		setDuration(m, 24*time.Hour)
	default:
		b.fill(m, depth)
	}
}

func setTimestamp(m protoreflect.Message, t time.Time) {
	proto.Reset(m.Interface())
	proto.Merge(m.Interface(), timestamppb.New(t))
}

func setDuration(m protoreflect.Message, d time.Duration) {
	proto.Reset(m.Interface())
	proto.Merge(m.Interface(), durationpb.New(d))
}

// oneofRules maps each field named by a message's protovalidate oneof
// rules to the fields of its rule.
func oneofRules(md protoreflect.MessageDescriptor) map[protoreflect.Name][]protoreflect.Name {
	opts := md.Options()
	if opts == nil || !proto.HasExtension(opts, validatepb.E_Message) {
		return nil
	}
	rules, _ := proto.GetExtension(opts, validatepb.E_Message).(*validatepb.MessageRules)
	out := map[protoreflect.Name][]protoreflect.Name{}
	for _, o := range rules.GetOneof() {
		var names []protoreflect.Name
		for _, f := range o.GetFields() {
			names = append(names, protoreflect.Name(f))
		}
		for _, n := range names {
			out[n] = names
		}
	}
	return out
}

// scalar is a field's first plausible value, by its name where that says
// more than its type.
func (b *builder) scalar(fd protoreflect.FieldDescriptor) protoreflect.Value {
	name := string(fd.Name())
	switch fd.Kind() {
	case protoreflect.StringKind:
		switch {
		case name == "page_token" || strings.HasPrefix(name, "parent_"):
			return protoreflect.ValueOfString("")
		case name == "period":
			return protoreflect.ValueOfString("P1Y")
		case name == "tenant_id":
			return protoreflect.ValueOfString(b.tenant)
		case name == "request_id":
			return protoreflect.ValueOfString("00000000-0000-4000-8000-000000000000")
		case strings.Contains(name, "email"):
			return protoreflect.ValueOfString("fuzz@example.com")
		case strings.Contains(name, "country"):
			return protoreflect.ValueOfString("SE")
		}
		return protoreflect.ValueOfString("fuzz")
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes([]byte("fuzz"))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(false)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		for i := range values.Len() {
			if values.Get(i).Number() != 0 {
				return protoreflect.ValueOfEnum(values.Get(i).Number())
			}
		}
		return protoreflect.ValueOfEnum(0)
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(1)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(1)
	}
	return numberValue(fd, 1)
}

// numberValue converts n to the Value of an integer field's kind.
func numberValue(fd protoreflect.FieldDescriptor, n int64) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(n))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(n)
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(n))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(n))
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(n))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(n))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(n))
	}
	return protoreflect.Value{}
}

// violations returns the field paths protovalidate refuses in m, each
// with its path elements.
func (b *builder) violations(m proto.Message) map[string][]*validatepb.FieldPathElement {
	err := b.validator.Validate(m)
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) {
		return nil
	}
	out := map[string][]*validatepb.FieldPathElement{}
	for _, v := range verr.Violations {
		out[protovalidate.FieldPathString(v.Proto.GetField())] = v.Proto.GetField().GetElements()
	}
	return out
}

// repair tries candidate values in every field protovalidate refuses.
func (b *builder) repair(m proto.Message) {
	for range repairRounds {
		bad := b.violations(m)
		if len(bad) == 0 {
			return
		}
		fixed := false
		for _, path := range slices.Sorted(maps.Keys(bad)) {
			elems := bad[path]
			s, ok := resolve(m.ProtoReflect(), elems)
			if !ok {
				continue
			}
			old, had := s.get()
			for _, c := range b.candidates(s) {
				s.set(c)
				if _, still := b.violations(m)[path]; !still {
					fixed = true
					break
				}
				if had || s.index >= 0 {
					s.set(old)
				} else {
					s.clear()
				}
			}
		}
		if !fixed {
			return
		}
	}
}

// slotAt finds the slot a field path in protovalidate's notation
// ("a.b[0].c") names in m, creating the messages on the way.
func slotAt(m protoreflect.Message, path string) (slot, bool) {
	parts := strings.Split(path, ".")
	for i, part := range parts {
		name, index := part, -1
		if j := strings.IndexByte(part, '['); j >= 0 {
			n, err := strconv.Atoi(strings.TrimSuffix(part[j+1:], "]"))
			if err != nil {
				return slot{}, false // a map key
			}
			name, index = part[:j], n
		}
		fd := m.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil || fd.IsMap() || (index >= 0 && (!fd.IsList() || index >= m.Get(fd).List().Len())) {
			return slot{}, false
		}
		if i == len(parts)-1 {
			return slot{parent: m, fd: fd, index: index}, true
		}
		switch {
		case fd.Message() == nil, fd.IsList() && index < 0:
			return slot{}, false
		case index >= 0:
			m = m.Mutable(fd).List().Get(index).Message()
		default:
			m = m.Mutable(fd).Message()
		}
	}
	return slot{}, false
}

// slot is one field of one message, or one element of a list field.
type slot struct {
	parent protoreflect.Message
	fd     protoreflect.FieldDescriptor
	index  int // -1: the field itself
}

func (s slot) get() (protoreflect.Value, bool) {
	if s.index >= 0 {
		return s.parent.Get(s.fd).List().Get(s.index), true
	}
	if !s.parent.Has(s.fd) {
		return protoreflect.Value{}, false
	}
	v := s.parent.Get(s.fd)
	if s.fd.Message() != nil && !s.fd.IsList() {
		// A copy, so that trying a candidate does not change the original.
		return protoreflect.ValueOfMessage(proto.Clone(v.Message().Interface()).ProtoReflect()), true
	}
	return v, true
}

func (s slot) set(v protoreflect.Value) {
	if s.index >= 0 {
		s.parent.Mutable(s.fd).List().Set(s.index, v)
		return
	}
	s.parent.Set(s.fd, v)
}

// clear unsets the field, or removes the list element.
func (s slot) clear() {
	if s.index < 0 {
		s.parent.Clear(s.fd)
		return
	}
	list := s.parent.Mutable(s.fd).List()
	for i := s.index; i+1 < list.Len(); i++ {
		list.Set(i, list.Get(i+1))
	}
	list.Truncate(list.Len() - 1)
}

// resolve finds the slot a protovalidate field path names in m.
func resolve(m protoreflect.Message, elems []*validatepb.FieldPathElement) (slot, bool) {
	for i, e := range elems {
		fd := m.Descriptor().Fields().ByNumber(protoreflect.FieldNumber(e.GetFieldNumber()))
		if fd == nil || fd.IsMap() {
			return slot{}, false
		}
		index := -1
		if sub, ok := e.GetSubscript().(*validatepb.FieldPathElement_Index); ok && fd.IsList() {
			index = int(sub.Index)
			if index >= m.Get(fd).List().Len() {
				return slot{}, false
			}
		}
		if i == len(elems)-1 {
			if fd.IsList() && index < 0 {
				return slot{}, false // a rule on the list as a whole
			}
			return slot{parent: m, fd: fd, index: index}, true
		}
		switch {
		case fd.Message() == nil:
			return slot{}, false
		case index >= 0:
			m = m.Mutable(fd).List().Get(index).Message()
		case fd.IsList():
			return slot{}, false
		default:
			m = m.Mutable(fd).Message()
		}
	}
	return slot{}, false
}

// candidates are the values a refused field is tried with, most likely
// first.
func (b *builder) candidates(s slot) []protoreflect.Value {
	fd := s.fd
	if fd.IsList() && s.index < 0 {
		return nil // a list as a whole is only ever cleared
	}
	var out []protoreflect.Value
	switch fd.Kind() {
	case protoreflect.StringKind:
		rules := stringRules(fd)
		strs := append(append(rules.GetIn(), rules.GetExample()...),
			"fuzz", "fuzz-1", "user.contact.email", "SE", "fuzz@example.com",
			"3f1c6a52-8a4e-4b7e-9d0a-2b5f1c9e7a10", "https://example.com/privacy",
			"+46700000000", "2026-01", "1", "Fuzz", "")
		if c := rules.GetConst(); c != "" {
			strs = append([]string{c}, strs...)
		}
		for _, str := range strs {
			if n := int(rules.GetMinLen()); len(str) < n {
				str += strings.Repeat("x", n-len(str))
			}
			out = append(out, protoreflect.ValueOfString(str))
		}
	case protoreflect.BytesKind:
		out = append(out, protoreflect.ValueOfBytes([]byte("fuzz")), protoreflect.ValueOfBytes(make([]byte, 32)))
	case protoreflect.BoolKind:
		out = append(out, protoreflect.ValueOfBool(true), protoreflect.ValueOfBool(false))
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		for i := range values.Len() {
			out = append(out, protoreflect.ValueOfEnum(values.Get(i).Number()))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		switch fd.Message().FullName() {
		case timestampName:
			for _, d := range []time.Duration{-time.Hour, time.Hour, 48 * time.Hour, 400 * 24 * time.Hour, -400 * 24 * time.Hour} {
				out = append(out, protoreflect.ValueOfMessage(timestamppb.New(b.now.Add(d)).ProtoReflect()))
			}
		case durationName:
			for _, d := range []time.Duration{24 * time.Hour, time.Hour, 720 * time.Hour, time.Second, 8760 * time.Hour} {
				out = append(out, protoreflect.ValueOfMessage(durationpb.New(d).ProtoReflect()))
			}
		default:
			var m protoreflect.Message
			if s.index >= 0 {
				m = s.parent.Get(fd).List().NewElement().Message()
			} else {
				m = s.parent.NewField(fd).Message()
			}
			b.fill(m, 1)
			out = append(out, protoreflect.ValueOfMessage(m))
		}
	default:
		for _, n := range []int64{1, 0, 7, 30, 100, 365, 1000, -1} {
			out = append(out, numberValue(fd, n))
		}
	}
	return out
}

// stringRules are a string field's protovalidate rules, or nil.
func stringRules(fd protoreflect.FieldDescriptor) *validatepb.StringRules {
	opts := fd.Options()
	if opts == nil || !proto.HasExtension(opts, validatepb.E_Field) {
		return nil
	}
	rules, _ := proto.GetExtension(opts, validatepb.E_Field).(*validatepb.FieldRules)
	if fd.IsList() {
		return rules.GetRepeated().GetItems().GetString()
	}
	return rules.GetString()
}

// target is a field of the base request an input changes.
type target struct {
	path  string // protovalidate's notation: "purpose.notice_versions[0].effective_at"
	steps []step
	fd    protoreflect.FieldDescriptor
	whole bool // a list field as a whole, not one element
	// created is the path of the outermost message on the way to the
	// field that the base does not hold, which changing the field
	// creates; empty when the base holds every message on the way.
	created string
}

type step struct {
	fd    protoreflect.FieldDescriptor
	index int // a list element, or -1
}

// targets lists the fields of base an input can change: every field, every
// first element of a list the base filled, and the fields of the messages
// they hold, maxDepth deep.
func targets(base protoreflect.Message) []target {
	var out []target
	var walk func(md protoreflect.MessageDescriptor, m protoreflect.Message, prefix, created string, steps []step, depth int)
	walk = func(md protoreflect.MessageDescriptor, m protoreflect.Message, prefix, created string, steps []step, depth int) {
		fields := md.Fields()
		for i := range fields.Len() {
			fd := fields.Get(i)
			if fd.IsMap() {
				continue
			}
			path := prefix + string(fd.Name())
			own := append(append([]step(nil), steps...), step{fd: fd, index: -1})
			if fd.IsList() {
				out = append(out, target{path: path, steps: own, fd: fd, whole: true, created: created})
				if m == nil || m.Get(fd).List().Len() == 0 {
					continue
				}
				elem := append(append([]step(nil), steps...), step{fd: fd, index: 0})
				epath := path + "[0]"
				out = append(out, target{path: epath, steps: elem, fd: fd, created: created})
				if fd.Message() != nil && !isWKT(fd.Message()) && depth < maxDepth {
					walk(fd.Message(), m.Get(fd).List().Get(0).Message(), epath+".", created, elem, depth+1)
				}
				continue
			}
			out = append(out, target{path: path, steps: own, fd: fd, created: created})
			if fd.Message() != nil && !isWKT(fd.Message()) && depth < maxDepth {
				var child protoreflect.Message
				childCreated := created
				if m != nil && m.Has(fd) {
					child = m.Get(fd).Message()
				} else if childCreated == "" {
					childCreated = path
				}
				walk(fd.Message(), child, path+".", childCreated, own, depth+1)
			}
		}
	}
	walk(base.Descriptor(), base, "", "", nil, 0)
	return out
}

// slotIn returns the target's slot in m (a clone of the base), creating the
// messages on the way.
func (t target) slotIn(m protoreflect.Message) slot {
	for _, s := range t.steps[:len(t.steps)-1] {
		if s.index >= 0 {
			m = m.Mutable(s.fd).List().Get(s.index).Message()
		} else {
			m = m.Mutable(s.fd).Message()
		}
	}
	last := t.steps[len(t.steps)-1]
	return slot{parent: m, fd: last.fd, index: last.index}
}

// messageIn returns the message the target field holds in m, creating it;
// the target must be a message field (or element).
func (t target) messageIn(m protoreflect.Message) protoreflect.Message {
	s := t.slotIn(m)
	if s.index >= 0 {
		return s.parent.Mutable(s.fd).List().Get(s.index).Message()
	}
	return s.parent.Mutable(s.fd).Message()
}

// isNumber reports whether a field holds a number (or an enum's number).
func isNumber(fd protoreflect.FieldDescriptor) bool {
	switch fd.Kind() {
	case protoreflect.BoolKind, protoreflect.StringKind, protoreflect.BytesKind,
		protoreflect.MessageKind, protoreflect.GroupKind:
		return false
	}
	return true
}

// outOfRange are the extreme values of a number field's kind.
func outOfRange(fd protoreflect.FieldDescriptor) []namedValue {
	switch fd.Kind() {
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return []namedValue{
			{"MinInt32", protoreflect.ValueOfInt32(math.MinInt32)},
			{"MaxInt32", protoreflect.ValueOfInt32(math.MaxInt32)},
			{"-1", protoreflect.ValueOfInt32(-1)},
		}
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return []namedValue{
			{"MinInt64", protoreflect.ValueOfInt64(math.MinInt64)},
			{"MaxInt64", protoreflect.ValueOfInt64(math.MaxInt64)},
			{"-1", protoreflect.ValueOfInt64(-1)},
		}
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return []namedValue{{"MaxUint32", protoreflect.ValueOfUint32(math.MaxUint32)}}
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return []namedValue{{"MaxUint64", protoreflect.ValueOfUint64(math.MaxUint64)}}
	case protoreflect.EnumKind:
		return []namedValue{
			{"undefined enum 999", protoreflect.ValueOfEnum(999)},
			{"undefined enum -1", protoreflect.ValueOfEnum(-1)},
			{"undefined enum MaxInt32", protoreflect.ValueOfEnum(math.MaxInt32)},
		}
	case protoreflect.FloatKind:
		return []namedValue{
			{"NaN", protoreflect.ValueOfFloat32(float32(math.NaN()))},
			{"+Inf", protoreflect.ValueOfFloat32(float32(math.Inf(1)))},
			{"-MaxFloat32", protoreflect.ValueOfFloat32(-math.MaxFloat32)},
		}
	case protoreflect.DoubleKind:
		return []namedValue{
			{"NaN", protoreflect.ValueOfFloat64(math.NaN())},
			{"-Inf", protoreflect.ValueOfFloat64(math.Inf(-1))},
			{"MaxFloat64", protoreflect.ValueOfFloat64(math.MaxFloat64)},
		}
	}
	return nil
}

type namedValue struct {
	name  string
	value protoreflect.Value
}
