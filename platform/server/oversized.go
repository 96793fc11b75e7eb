package server

import (
	"fmt"
	"strconv"
	"sync"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

// oversized returns the repeated and map fields of msg, wherever they sit,
// that hold more entries than their protovalidate rule allows
// (repeated.max_items, map.max_pairs), without looking at those entries.
//
// protovalidate evaluates every rule of every entry before it reports the
// count: a list of 100,000 entries where 50 are allowed cost seconds of
// CPU per call (10 s under the race detector on a busy machine), which
// any caller could send. Checking the counts first refuses such a request
// at the cost of walking the fields that lead to lists; an entry is only
// visited when its list is within its bound.
func oversized(msg proto.Message) []apierror.FieldViolation {
	var out []apierror.FieldViolation
	walkBounds(msg.ProtoReflect(), "", &out)
	return out
}

// bound is a field that may lead to an oversized list: a list or map with
// a rule of how many entries it may hold (max > 0), or a message field to
// walk into.
type bound struct {
	field protoreflect.FieldDescriptor
	max   uint64
	walk  bool // its entries or value can hold a bounded list
}

var bounds sync.Map // protoreflect.FullName -> []bound

// boundsOf returns the fields of a message type worth walking, cached:
// lists and maps with a bound, and message fields whose type can hold one,
// so that a request without bounded lists (a Check, a signal) costs a map
// lookup.
func boundsOf(md protoreflect.MessageDescriptor) []bound {
	if v, ok := bounds.Load(md.FullName()); ok {
		return v.([]bound)
	}
	out := computeBounds(md, map[protoreflect.FullName]bool{})
	bounds.Store(md.FullName(), out)
	return out
}

// computeBounds finds the fields of md worth walking; visiting holds the
// types being computed, so that a recursive type ends the descent.
func computeBounds(md protoreflect.MessageDescriptor, visiting map[protoreflect.FullName]bool) []bound {
	visiting[md.FullName()] = true
	var out []bound
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		rules, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
		var limit uint64
		switch {
		case fd.IsMap():
			limit = rules.GetMap().GetMaxPairs()
		case fd.IsList():
			limit = rules.GetRepeated().GetMaxItems()
		}
		inner := fd.Message()
		if fd.IsMap() {
			inner = fd.MapValue().Message()
		}
		walksInto := inner != nil && !visiting[inner.FullName()] && len(computeBounds(inner, visiting)) > 0
		if limit > 0 || walksInto {
			out = append(out, bound{field: fd, max: limit, walk: walksInto})
		}
	}
	delete(visiting, md.FullName())
	return out
}

func walkBounds(m protoreflect.Message, prefix string, out *[]apierror.FieldViolation) {
	for _, b := range boundsOf(m.Descriptor()) {
		fd := b.field
		if !m.Has(fd) {
			continue
		}
		name := prefix + string(fd.Name())
		switch {
		case fd.IsMap():
			entries := m.Get(fd).Map()
			if b.max > 0 && uint64(entries.Len()) > b.max {
				*out = append(*out, apierror.FieldViolation{Field: name, Description: fmt.Sprintf("map must be at most %d entries", b.max)})
				continue
			}
			if b.walk {
				entries.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
					walkBounds(v.Message(), name+"["+k.String()+"].", out)
					return true
				})
			}
		case fd.IsList():
			list := m.Get(fd).List()
			if b.max > 0 && uint64(list.Len()) > b.max {
				*out = append(*out, apierror.FieldViolation{Field: name, Description: fmt.Sprintf("value must contain no more than %d item(s)", b.max)})
				continue
			}
			if b.walk {
				for i := range list.Len() {
					walkBounds(list.Get(i).Message(), name+"["+strconv.Itoa(i)+"].", out)
				}
			}
		case b.walk:
			walkBounds(m.Get(fd).Message(), name+".", out)
		}
	}
}
