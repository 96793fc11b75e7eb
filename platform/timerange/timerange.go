// Package timerange refuses the times and durations Lethe cannot stand
// behind: every google.protobuf.Timestamp and google.protobuf.Duration in a
// message, wherever it sits, is checked in one place.
//
// protovalidate's rules check a field where a rule is written; a field
// without one accepted anything the wire can carry. A signal that occurred
// at seconds = MinInt64 was stored, and every pass of the retention journal
// then failed to format it ("year outside of range [0,9999]"), stopping
// purges for every tenant. A purpose lifetime of MaxInt64 seconds could not
// be listed again. Checking every field by type, including fields added
// later, closes that class of input for good.
//
// The window is deliberately narrow: nothing Lethe records happened before
// 1970 or will happen after 2200, and no period it keeps (a lifetime, a
// deadline, an SLA) is negative or longer than a hundred years.
package timerange

import (
	"fmt"
	"strconv"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

var (
	// Earliest is the first instant a Timestamp may hold.
	Earliest = time.Date(1970, 1, 1, 0, 0, 0, 0, time.UTC)
	// Latest is the first instant after the last one a Timestamp may hold.
	Latest = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// Longest is the longest Duration accepted: a hundred years of 365.25 days.
const Longest = 36525 * 24 * time.Hour

// Violation is one field out of range, named by its path as protovalidate
// names fields ("purpose.default_lifetime", "holds[2].start_time").
type Violation struct {
	Field       string
	Description string
}

var (
	timestampName = (&timestamppb.Timestamp{}).ProtoReflect().Descriptor().FullName()
	durationName  = (&durationpb.Duration{}).ProtoReflect().Descriptor().FullName()
)

// Check returns every Timestamp and Duration in m that is invalid or
// outside the window, in field order.
func Check(m proto.Message) []Violation {
	r := m.ProtoReflect()
	if !holdsTime(r.Descriptor()) {
		return nil
	}
	var out []Violation
	check(r, "", &out)
	return out
}

// CheckTimestamp returns why t cannot be accepted, or "".
func CheckTimestamp(t *timestamppb.Timestamp) string {
	if err := t.CheckValid(); err != nil {
		return "not a valid timestamp"
	}
	if at := t.AsTime(); at.Before(Earliest) || !at.Before(Latest) {
		return fmt.Sprintf("must lie in [%s, %s)", Earliest.Format(time.DateOnly), Latest.Format(time.DateOnly))
	}
	return ""
}

// CheckDuration returns why d cannot be accepted, or "".
func CheckDuration(d *durationpb.Duration) string {
	if err := d.CheckValid(); err != nil {
		return "not a valid duration (seconds and nanos must have the same sign)"
	}
	if v := d.AsDuration(); v < 0 || v > Longest {
		return "must lie in [0, 100 years]"
	}
	return ""
}

// InWindow reports whether t lies in [Earliest, Latest): for times that
// arrive other than in a message, such as those read back from a store
// written before this check existed.
func InWindow(t time.Time) bool { return !t.Before(Earliest) && t.Before(Latest) }

func check(m protoreflect.Message, prefix string, out *[]Violation) {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if fd.Message() == nil || !m.Has(fd) || !holdsTime(fd.Message()) {
			continue
		}
		path := string(fd.Name())
		if prefix != "" {
			path = prefix + "." + path
		}
		v := m.Get(fd)
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				value(l.Get(i).Message(), path+"["+strconv.Itoa(i)+"]", out)
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				continue
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				value(mv.Message(), path+"["+strconv.Quote(k.String())+"]", out)
				return true
			})
		default:
			value(v.Message(), path, out)
		}
	}
}

// value checks one message-typed value at path.
func value(m protoreflect.Message, path string, out *[]Violation) {
	var why string
	switch m.Descriptor().FullName() {
	case timestampName:
		why = CheckTimestamp(m.Interface().(*timestamppb.Timestamp))
	case durationName:
		why = CheckDuration(m.Interface().(*durationpb.Duration))
	default:
		check(m, path, out)
		return
	}
	if why != "" {
		*out = append(*out, Violation{Field: path, Description: why})
	}
}

// holds caches, per message type, whether a Timestamp or Duration can be
// reached from it, so that messages without one (most reads) cost a map
// lookup.
var holds sync.Map // protoreflect.FullName → bool

func holdsTime(md protoreflect.MessageDescriptor) bool {
	if v, ok := holds.Load(md.FullName()); ok {
		return v.(bool)
	}
	found := reaches(md, map[protoreflect.FullName]bool{})
	holds.Store(md.FullName(), found)
	return found
}

// reaches walks md's message-typed fields; visiting guards recursive types.
func reaches(md protoreflect.MessageDescriptor, visiting map[protoreflect.FullName]bool) bool {
	switch name := md.FullName(); {
	case name == timestampName || name == durationName:
		return true
	case visiting[name]:
		return false
	default:
		visiting[name] = true
	}
	fields := md.Fields()
	for i := range fields.Len() {
		if sub := fields.Get(i).Message(); sub != nil && reaches(sub, visiting) {
			return true
		}
	}
	return false
}
