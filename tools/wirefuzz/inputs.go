package wirefuzz

import (
	"bytes"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Kind is a kind of input.
type Kind string

// The kinds of input, in the order a method is given them.
const (
	// KindBase is the method's base request itself.
	KindBase Kind = "base"
	// KindEmpty is zero bytes: every field unset.
	KindEmpty Kind = "empty"
	// KindHugeString sets a string field to 64 KiB to 1 MiB.
	KindHugeString Kind = "huge-string"
	// KindControlChars sets a string field to text with NUL, ESC, CR LF,
	// DEL and a right-to-left override.
	KindControlChars Kind = "control-chars"
	// KindInvalidUTF8 sets a string field to bytes that are not UTF-8,
	// which proto3 forbids: the message does not decode.
	KindInvalidUTF8 Kind = "invalid-utf8"
	// KindOutOfRange sets a number field to its kind's extremes, or an
	// enum field to an undefined number.
	KindOutOfRange Kind = "out-of-range"
	// KindTimestamp sets a Timestamp outside its specification (years 1 to
	// 9999, nanos 0 to 999,999,999): Min/MaxInt64 seconds, year 0, year
	// 34089, negative or overflowing nanos.
	KindTimestamp Kind = "timestamp"
	// KindDuration sets a Duration outside its specification (±10,000
	// years, nanos of the seconds' sign, |nanos| < 1e9).
	KindDuration Kind = "duration"
	// KindUnknownField adds a field the message does not declare: 3 MiB
	// (or a few bytes) of field 999.
	KindUnknownField Kind = "unknown-field"
	// KindRepeated100k sets a repeated field to 100,000 items.
	KindRepeated100k Kind = "repeated-100k"
	// KindWrongWireType adds a declared field with the wrong wire type.
	KindWrongWireType Kind = "wrong-wire-type"
	// KindGarbage is random bytes.
	KindGarbage Kind = "garbage"
	// KindTruncated is the base request cut short.
	KindTruncated Kind = "truncated"
	// KindDeepGroups is the base request followed by deeply nested groups
	// of an undeclared field: 100,000 deep (past the decoder's limit of
	// 10,000) or 9,000 deep.
	KindDeepGroups Kind = "deep-groups"
)

// Kinds are every kind of input but the base, in schedule order.
var Kinds = []Kind{
	KindEmpty, KindHugeString, KindControlChars, KindInvalidUTF8, KindOutOfRange,
	KindTimestamp, KindDuration, KindUnknownField, KindRepeated100k, KindWrongWireType,
	KindGarbage, KindTruncated, KindDeepGroups,
}

// HeavyKinds are the kinds whose inputs are large or slow to refuse: a
// bounded run sends only a few of each (Config.Heavy).
var HeavyKinds = map[Kind]bool{KindHugeString: true, KindUnknownField: true, KindRepeated100k: true, KindDeepGroups: true}

// Input is one request to send.
type Input struct {
	Method *Method
	Kind   Kind
	// Field is the path of the field the input changes, in protovalidate's
	// notation; empty when the input changes no one field.
	Field string
	// Created is the path of the message the input had to create to reach
	// Field, one the base request did not hold (a oneof's other member, an
	// unset message field); empty when Field's parents were all there. A
	// refusal may name that message's own required fields.
	Created string
	// Value says what the input holds, briefly.
	Value string
	// Bytes are sent as they are.
	Bytes []byte
	// Decodable is whether the Go protobuf decoder, which the server's
	// codec uses, accepts Bytes; DecodeError is its error otherwise.
	Decodable   bool
	DecodeError string
	// InvalidBySpec is true when the value breaks its type's own
	// specification, so the input must be refused whatever the method.
	InvalidBySpec bool
}

const (
	unknownFieldSize = 3 << 20
	repeatedItems    = 100_000
	deepGroups       = 100_000
	shallowGroups    = 9_000
)

// timestampValues and durationValues are out of their specification.
var (
	timestampValues = []struct {
		name    string
		seconds int64
		nanos   int32
	}{
		{"seconds MinInt64", math.MinInt64, 0},
		{"seconds MaxInt64", math.MaxInt64, 0},
		{"{5s, -5ns}", 5, -5},
		{"year 0", time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 0},
		{"year 34089", time.Date(34089, 1, 1, 0, 0, 0, 0, time.UTC).Unix(), 0},
		{"nanos 1e9", 0, 1_000_000_000},
	}
	durationValues = []struct {
		name    string
		seconds int64
		nanos   int32
	}{
		{"seconds MinInt64", math.MinInt64, 0},
		{"seconds MaxInt64", math.MaxInt64, 0},
		{"{5s, -5ns}", 5, -5},
		{"{-5s, 5ns}", -5, 5},
		{"nanos 1e9", 0, 1_000_000_000},
		{"10,000 years and a second", 315_576_000_001, 0},
	}
	controlStrings = []string{
		"fuzz\x00id", "\x1b[2J\x1b[H", "line\r\nInjected: yes", "del\x7f\x08", "\u202efuzz", "tab\tbell\a",
	}
	invalidUTF8 = []string{
		"bad\xff\xfeutf8", "\xc3\x28invalid", "sur\xed\xa0\x80gate", "over\xf8\x88\x80\x80\x80long", "\xc0\xaf\xe0\x80\xaf",
	}
)

// generator derives a method's inputs from its base request.
type generator struct {
	rng     *rand.Rand
	method  *Method
	base    proto.Message
	targets []target
}

var marshal = proto.MarshalOptions{Deterministic: true}

func (g *generator) encode(m proto.Message) []byte {
	b, err := marshal.Marshal(m)
	if err != nil {
		panic(fmt.Sprintf("wirefuzz: marshal %s: %v", g.method.FullName, err))
	}
	return b
}

// fresh is a clone of the base with a new request id, so that a mutation
// is never answered from an earlier call's idempotency record.
func (g *generator) fresh() proto.Message {
	m := proto.Clone(g.base)
	if fd := m.ProtoReflect().Descriptor().Fields().ByName("request_id"); fd != nil && fd.Kind() == protoreflect.StringKind {
		m.ProtoReflect().Set(fd, protoreflect.ValueOfString(uuid4(g.rng)))
	}
	return m
}

func uuid4(rng *rand.Rand) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// fits returns the targets the filter accepts.
func (g *generator) fits(ok func(target) bool) []target {
	var fit []target
	for _, t := range g.targets {
		if ok(t) {
			fit = append(fit, t)
		}
	}
	return fit
}

// pick returns a random target the filter accepts.
func (g *generator) pick(ok func(target) bool) (target, bool) {
	fit := g.fits(ok)
	if len(fit) == 0 {
		return target{}, false
	}
	return fit[g.rng.IntN(len(fit))], true
}

func scalarOf(kind protoreflect.Kind) func(target) bool {
	return func(t target) bool { return !t.whole && t.fd.Kind() == kind }
}

func messageOf(name protoreflect.FullName) func(target) bool {
	return func(t target) bool { return !t.whole && t.fd.Message() != nil && t.fd.Message().FullName() == name }
}

// applicable reports whether the method's request has a field the kind
// needs.
func (g *generator) applicable(k Kind) bool {
	var ok func(target) bool
	switch k {
	case KindHugeString, KindControlChars, KindInvalidUTF8:
		ok = scalarOf(protoreflect.StringKind)
	case KindOutOfRange:
		ok = func(t target) bool { return !t.whole && isNumber(t.fd) }
	case KindTimestamp:
		ok = messageOf(timestampName)
	case KindDuration:
		ok = messageOf(durationName)
	case KindRepeated100k:
		ok = func(t target) bool { return t.whole }
	case KindWrongWireType:
		ok = func(t target) bool { return len(t.steps) == 1 }
	default:
		return true
	}
	return len(g.fits(ok)) > 0
}

// input makes one input of kind k.
func (g *generator) input(k Kind) *Input {
	in := &Input{Method: g.method, Kind: k}
	m := g.fresh()
	switch k {
	case KindBase, KindEmpty, KindGarbage, KindTruncated:
		g.wholeMessage(in, k, m)
	case KindHugeString, KindControlChars, KindInvalidUTF8, KindOutOfRange, KindTimestamp, KindDuration:
		g.badValue(in, k, m)
	case KindUnknownField, KindRepeated100k, KindWrongWireType, KindDeepGroups:
		g.badStructure(in, k, m)
	}
	err := proto.Unmarshal(in.Bytes, g.method.Input.New().Interface())
	in.Decodable = err == nil
	if err != nil {
		in.DecodeError = err.Error()
	}
	return in
}

// wholeMessage makes the inputs of kind k that are m as a whole: as it
// is, nothing, random bytes, or m cut short.
func (g *generator) wholeMessage(in *Input, k Kind, m proto.Message) {
	switch k {
	case KindBase:
		in.Bytes = g.encode(m)
	case KindEmpty:
		in.Bytes = []byte{}
	case KindGarbage:
		n := 1 + g.rng.IntN(2048)
		if g.rng.IntN(2) == 0 {
			n = 1 + g.rng.IntN(16)
		}
		in.Bytes = make([]byte, n)
		for i := range in.Bytes {
			in.Bytes[i] = byte(g.rng.Uint32())
		}
		in.Value = fmt.Sprintf("%d random bytes", n)
	case KindTruncated:
		full := g.encode(m)
		if len(full) < 2 {
			in.Bytes, in.Value = []byte{0x0a}, "a lone length-delimited tag"
			return
		}
		cut := 1 + g.rng.IntN(len(full)-1)
		in.Bytes, in.Value = full[:cut], fmt.Sprintf("%d of %d bytes", cut, len(full))
	}
}

// badValue makes the inputs of kind k that put one bad value in one field
// of m.
func (g *generator) badValue(in *Input, k Kind, m proto.Message) {
	r := m.ProtoReflect()
	switch k {
	case KindHugeString:
		t, _ := g.pick(scalarOf(protoreflect.StringKind))
		n := (64 << 10) << g.rng.IntN(5) // 64 KiB to 1 MiB
		t.slotIn(r).set(protoreflect.ValueOfString(strings.Repeat("a", n)))
		in.Field, in.Value, in.Bytes = t.path, fmt.Sprintf("%d KiB of 'a'", n>>10), g.encode(m)
		in.Created = t.created
	case KindControlChars:
		t, _ := g.pick(scalarOf(protoreflect.StringKind))
		s := controlStrings[g.rng.IntN(len(controlStrings))]
		t.slotIn(r).set(protoreflect.ValueOfString(s))
		in.Field, in.Value, in.Bytes = t.path, fmt.Sprintf("%q", s), g.encode(m)
		in.Created = t.created
	case KindInvalidUTF8:
		t, _ := g.pick(scalarOf(protoreflect.StringKind))
		bad := invalidUTF8[g.rng.IntN(len(invalidUTF8))]
		in.Field, in.Value, in.Bytes = t.path, fmt.Sprintf("%q", bad), g.withRawString(m, t, bad)
		in.Created = t.created
	case KindOutOfRange:
		t, _ := g.pick(func(t target) bool { return !t.whole && isNumber(t.fd) })
		vals := outOfRange(t.fd)
		v := vals[g.rng.IntN(len(vals))]
		t.slotIn(r).set(v.value)
		in.Field, in.Value, in.Bytes = t.path, v.name, g.encode(m)
		in.Created = t.created
	case KindTimestamp:
		t, _ := g.pick(messageOf(timestampName))
		v := timestampValues[g.rng.IntN(len(timestampValues))]
		setSecondsNanos(t.messageIn(r), v.seconds, v.nanos)
		in.Field, in.Value, in.Bytes, in.InvalidBySpec = t.path, v.name, g.encode(m), true
		in.Created = t.created
	case KindDuration:
		t, _ := g.pick(messageOf(durationName))
		v := durationValues[g.rng.IntN(len(durationValues))]
		setSecondsNanos(t.messageIn(r), v.seconds, v.nanos)
		in.Field, in.Value, in.Bytes, in.InvalidBySpec = t.path, v.name, g.encode(m), true
		in.Created = t.created
	}
}

// badStructure makes the inputs of kind k that keep m's values but break
// its shape: a field it does not declare, a list too long, a field on the
// wrong wire type, groups nested too deep.
func (g *generator) badStructure(in *Input, k Kind, m proto.Message) {
	switch k {
	case KindUnknownField:
		g.unknownField(in, m)
	case KindRepeated100k:
		t, _ := g.pick(func(t target) bool { return t.whole })
		s := t.slotIn(m.ProtoReflect())
		list := s.parent.Mutable(s.fd).List()
		item := list.NewElement()
		if list.Len() > 0 && g.small(list.Get(0)) {
			item = list.Get(0)
		}
		list.Truncate(0)
		for range repeatedItems {
			list.Append(item)
		}
		in.Field, in.Value, in.Bytes = t.path, fmt.Sprintf("%d items", repeatedItems), g.encode(m)
		in.Created = t.created
	case KindWrongWireType:
		t, _ := g.pick(func(t target) bool { return len(t.steps) == 1 })
		var raw []byte
		if wireType(t.fd) == protowire.BytesType {
			raw = protowire.AppendFixed32(protowire.AppendTag(nil, t.fd.Number(), protowire.Fixed32Type), 7)
		} else {
			raw = protowire.AppendBytes(protowire.AppendTag(nil, t.fd.Number(), protowire.BytesType), []byte("wrong"))
		}
		in.Field, in.Value, in.Bytes = t.path, "field sent with the wrong wire type", append(g.encode(m), raw...)
		in.Created = t.created
	case KindDeepGroups:
		depth := deepGroups
		if g.rng.IntN(2) == 0 {
			depth = shallowGroups
		}
		num := undeclared(m.ProtoReflect().Descriptor())
		start := protowire.AppendTag(nil, num, protowire.StartGroupType)
		end := protowire.AppendTag(nil, num, protowire.EndGroupType)
		b := g.encode(m)
		b = append(b, bytes.Repeat(start, depth)...)
		in.Bytes, in.Value = append(b, bytes.Repeat(end, depth)...), fmt.Sprintf("groups %d deep", depth)
	}
}

// unknownField adds a field no message declares to m or, half the time
// when there is one, to a message inside it.
func (g *generator) unknownField(in *Input, m proto.Message) {
	r := m.ProtoReflect()
	holder := r
	if t, ok := g.pick(func(t target) bool {
		return t.fd.Message() != nil && !isWKT(t.fd.Message()) && !t.whole
	}); ok && g.rng.IntN(2) == 0 {
		holder, in.Field = t.messageIn(r), t.path
	}
	size := unknownFieldSize
	if g.rng.IntN(4) == 0 {
		size = 16
	}
	num := undeclared(holder.Descriptor())
	raw := protowire.AppendTag(nil, num, protowire.BytesType)
	raw = protowire.AppendBytes(raw, bytes.Repeat([]byte{'u'}, size))
	holder.SetUnknown(append(holder.GetUnknown(), raw...))
	in.Value, in.Bytes = fmt.Sprintf("%d bytes in undeclared field %d", size, num), g.encode(m)
}

// small reports whether a list item is cheap enough to repeat 100,000 times
// within gRPC's default 4 MiB message limit.
func (g *generator) small(v protoreflect.Value) bool {
	if m, ok := v.Interface().(protoreflect.Message); ok {
		return proto.Size(m.Interface()) <= 24
	}
	if s, ok := v.Interface().(string); ok {
		return len(s) <= 24
	}
	return true
}

// withRawString encodes m with the target string set to bad, which is not
// UTF-8 and so cannot be marshalled: it marshals a same-length placeholder
// and swaps the bytes, so no enclosing length changes.
func (g *generator) withRawString(m proto.Message, t target, bad string) []byte {
	const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	for {
		ph := make([]byte, len(bad))
		for i := range ph {
			ph[i] = letters[g.rng.IntN(len(letters))]
		}
		t.slotIn(m.ProtoReflect()).set(protoreflect.ValueOfString(string(ph)))
		b := g.encode(m)
		if bytes.Count(b, ph) == 1 {
			return bytes.Replace(b, ph, []byte(bad), 1)
		}
	}
}

func setSecondsNanos(m protoreflect.Message, seconds int64, nanos int32) {
	fields := m.Descriptor().Fields()
	m.Set(fields.ByName("seconds"), protoreflect.ValueOfInt64(seconds))
	m.Set(fields.ByName("nanos"), protoreflect.ValueOfInt32(nanos))
}

// undeclared is a field number the message does not declare: 999, or the
// first free one after it.
func undeclared(md protoreflect.MessageDescriptor) protowire.Number {
	n := protowire.Number(999)
	for md.Fields().ByNumber(n) != nil || md.ReservedRanges().Has(n) {
		n++
	}
	return n
}

// wireType is the wire type a field is encoded with (packed lists as
// bytes).
func wireType(fd protoreflect.FieldDescriptor) protowire.Type {
	if fd.IsList() && fd.IsPacked() {
		return protowire.BytesType
	}
	switch fd.Kind() {
	case protoreflect.StringKind, protoreflect.BytesKind, protoreflect.MessageKind:
		return protowire.BytesType
	case protoreflect.GroupKind:
		return protowire.StartGroupType
	case protoreflect.Fixed32Kind, protoreflect.Sfixed32Kind, protoreflect.FloatKind:
		return protowire.Fixed32Type
	case protoreflect.Fixed64Kind, protoreflect.Sfixed64Kind, protoreflect.DoubleKind:
		return protowire.Fixed64Type
	}
	return protowire.VarintType
}
