package wirefuzz

import (
	"fmt"
	"strings"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

// Check names a property an input broke.
type Check string

// The properties every input is held to.
const (
	// CheckStatus: the status was Internal, Unknown, DataLoss or
	// Unimplemented, Unavailable without Lethe's ErrorInfo (a broken
	// transport), or a unary call ran out of time.
	CheckStatus Check = "bad-status"
	// CheckUnhealthy: after the call, the process had exited or a service
	// no longer answered health SERVING.
	CheckUnhealthy Check = "unhealthy"
	// CheckUndecodable: bytes the protobuf decoder refuses were not
	// answered InvalidArgument with a description. No field can be named
	// for bytes that do not parse, so none is asked for.
	CheckUndecodable Check = "undecodable-not-invalid-argument"
	// CheckFieldNotNamed: a decodable request refused as InvalidArgument
	// carried no BadRequest violation naming a field (with a description).
	CheckFieldNotNamed Check = "field-not-named"
	// CheckWrongField: the base request passes validation, the input
	// changed one field, and the refusal named neither that field nor one
	// inside or around it, nor one inside the message the change had to
	// create (Input.Created: setting a field of a oneof's other member
	// leaves that member's required fields unset).
	CheckWrongField Check = "wrong-field"
	// CheckAcceptedInvalid: a value invalid by its type's specification
	// (a Timestamp or Duration out of range) was accepted.
	CheckAcceptedInvalid Check = "accepted-invalid"
	// CheckWrote: a refused call changed one of its service's store files
	// (a commit, or its size), on the first try and again on a retry once
	// the platform was quiet. A call cut short (deadline, broken transport) is not held to
	// it: the server may still be at work.
	CheckWrote Check = "wrote-on-refusal"
	// CheckEchoedUnknown: an accepted call's response carried unknown
	// fields: the server kept bytes it does not understand.
	CheckEchoedUnknown Check = "unknown-field-echoed"
)

// Outcome is what a call returned.
type Outcome struct {
	Code    codes.Code
	Message string
	// BadRequest is whether the status carried a BadRequest detail;
	// Violations are its field violations.
	BadRequest bool
	Violations []apierror.FieldViolation
	// LetheInfo is whether the status carried an ErrorInfo of Lethe's
	// domain (a deliberate Unavailable, say).
	LetheInfo bool
	// Response is an accepted unary call's response, or a server stream's
	// first message.
	Response []byte
	// Open is true when a server stream was accepted and stayed open
	// until the fuzzer's deadline, as a subscription does.
	Open bool
}

// Accepted reports whether the call was accepted.
func (o Outcome) Accepted() bool { return o.Code == codes.OK || o.Open }

// Refused reports whether the server answered the call with a refusal: not
// accepted, and not cut short by a deadline, a cancellation or a broken
// transport, after which the server may still be at work.
func (o Outcome) Refused() bool {
	switch {
	case o.Accepted(), o.Code == codes.DeadlineExceeded, o.Code == codes.Canceled,
		o.Code == codes.Unavailable && !o.LetheInfo:
		return false
	}
	return true
}

func outcomeOf(err error) Outcome {
	st := status.Convert(err)
	o := Outcome{Code: st.Code(), Message: st.Message()}
	for _, d := range st.Details() {
		switch d := d.(type) {
		case *errdetails.BadRequest:
			o.BadRequest = true
			for _, v := range d.GetFieldViolations() {
				o.Violations = append(o.Violations, apierror.FieldViolation{Field: v.GetField(), Description: v.GetDescription()})
			}
		case *errdetails.ErrorInfo:
			o.LetheInfo = d.GetDomain() == apierror.Domain
		}
	}
	return o
}

// Misbehaviour is one broken property of one input.
type Misbehaviour struct {
	Check  Check
	Detail string
}

// check holds one outcome to the properties that do not need the server's
// state: status, decoding, field naming, spec validity, echoes.
// baseValid is whether the method's base request passes validation (its
// own outcome is not InvalidArgument), so a refusal of an input that
// changed one field must be about that field.
func check(in *Input, out Outcome, baseValid bool) []Misbehaviour {
	var bad []Misbehaviour
	add := func(c Check, format string, args ...any) {
		bad = append(bad, Misbehaviour{Check: c, Detail: fmt.Sprintf(format, args...)})
	}
	switch {
	case out.Code == codes.Internal, out.Code == codes.Unknown, out.Code == codes.DataLoss, out.Code == codes.Unimplemented,
		out.Code == codes.Unavailable && !out.LetheInfo,
		out.Code == codes.DeadlineExceeded && !in.Method.ServerStreams:
		add(CheckStatus, "%s %q", out.Code, out.Message)
		return bad
	}
	if !in.Decodable {
		if out.Code != codes.InvalidArgument || strings.TrimSpace(out.Message) == "" {
			add(CheckUndecodable, "%s %q (decoder: %s)", out.Code, out.Message, in.DecodeError)
		}
		return bad
	}
	if out.Code == codes.InvalidArgument {
		if !namesAField(out) {
			add(CheckFieldNotNamed, "%q, violations %v", out.Message, out.Violations)
		} else if baseValid && in.Field != "" && !aboutChange(in, out) {
			add(CheckWrongField, "changed %s, refusal names %v", in.Field, fields(out))
		}
	}
	if out.Accepted() && in.InvalidBySpec {
		add(CheckAcceptedInvalid, "%s accepted", in.Value)
	}
	if out.Code == codes.OK && len(out.Response) > 0 {
		resp := in.Method.Output.New().Interface()
		if err := proto.Unmarshal(out.Response, resp); err == nil {
			if path, ok := unknownIn(resp.ProtoReflect(), ""); ok {
				add(CheckEchoedUnknown, "response carries unknown fields at %q", path)
			}
		}
	}
	return bad
}

// aboutChange reports whether a refusal names the field the input changed,
// one inside or around it, or one inside the message the change created.
func aboutChange(in *Input, out Outcome) bool {
	return namesField(out, in.Field) || (in.Created != "" && namesField(out, in.Created))
}

func namesAField(out Outcome) bool {
	for _, v := range out.Violations {
		if v.Field != "" && strings.TrimSpace(v.Description) != "" {
			return true
		}
	}
	return false
}

// namesField reports whether a violation names path, a field inside it, or
// a message around it (a rule across fields, such as an order of list
// items, is reported on their parent).
func namesField(out Outcome, path string) bool {
	for _, v := range out.Violations {
		f := v.Field
		switch {
		case f == "":
		case f == path, within(f, path), within(path, f):
			return true
		}
	}
	return false
}

// within reports whether path a lies inside path b.
func within(a, b string) bool {
	return len(a) > len(b) && strings.HasPrefix(a, b) && (a[len(b)] == '.' || a[len(b)] == '[')
}

func fields(out Outcome) []string {
	var f []string
	for _, v := range out.Violations {
		f = append(f, v.Field)
	}
	return f
}

// unknownIn returns the path of the first message in m with unknown
// fields ("" for m itself), and whether there is one.
func unknownIn(m protoreflect.Message, path string) (string, bool) {
	if len(m.GetUnknown()) > 0 {
		return path, true
	}
	found, ok := "", false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		p := path + string(fd.Name())
		if path != "" {
			p = path + "." + string(fd.Name())
		}
		if fd.IsList() {
			for i := range v.List().Len() {
				if found, ok = unknownIn(v.List().Get(i).Message(), fmt.Sprintf("%s[%d]", p, i)); ok {
					return false
				}
			}
			return true
		}
		found, ok = unknownIn(v.Message(), p)
		return !ok
	})
	return found, ok
}
