// Package apierror is how Lethe's handlers say what went wrong. A domain
// error is an *Error that carries its own gRPC code and machine-readable
// details (google.rpc.BadRequest field violations, ErrorInfo, RetryInfo), so
// a caller can tell which field to fix or when to retry without parsing
// messages. Anything else that reaches the gRPC boundary is turned into
// Internal by ToStatus, and its text never leaves the process.
package apierror

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/protoadapt"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Domain is the ErrorInfo domain of every error Lethe returns.
const Domain = "lethe.dev"

// FieldViolation names one invalid field of a request, by its proto field
// path (for example "scope.categories[0].id").
type FieldViolation struct {
	Field       string
	Description string
}

// Error is a domain error with its gRPC status. Build one with the
// constructors below; handlers return it as is.
type Error struct {
	code    codes.Code
	message string
	details []protoadapt.MessageV1
}

// Error returns the message the caller sees.
func (e *Error) Error() string { return e.message }

// Code returns the gRPC code.
func (e *Error) Code() codes.Code { return e.code }

// GRPCStatus lets grpc-go send the error with its code and details.
func (e *Error) GRPCStatus() *status.Status {
	st := status.New(e.code, e.message)
	if len(e.details) == 0 {
		return st
	}
	withDetails, err := st.WithDetails(e.details...)
	if err != nil {
		// Details are our own well-formed messages; failing to attach them
		// must still not lose the code.
		return st
	}
	return withDetails
}

// MaxViolations is the most field violations one error lists. A status and
// its details travel in HTTP/2 headers: 100,000 invalid items listed one
// by one overflowed them, and the client's whole connection was dropped
// instead of the call being refused.
const MaxViolations = 50

// InvalidArgument reports invalid request fields as InvalidArgument with a
// BadRequest detail listing every violation, up to MaxViolations; a last
// entry then says how many more there were.
func InvalidArgument(violations ...FieldViolation) *Error {
	if n := len(violations); n > MaxViolations {
		violations = append(violations[:MaxViolations:MaxViolations], FieldViolation{
			Description: fmt.Sprintf("and %d more violations", n-MaxViolations),
		})
	}
	br := &errdetails.BadRequest{}
	parts := make([]string, 0, len(violations))
	for _, v := range violations {
		br.FieldViolations = append(br.FieldViolations, &errdetails.BadRequest_FieldViolation{
			Field:       v.Field,
			Description: v.Description,
		})
		parts = append(parts, v.Field+": "+v.Description)
	}
	return &Error{
		code:    codes.InvalidArgument,
		message: "invalid argument: " + strings.Join(parts, "; "),
		details: []protoadapt.MessageV1{br},
	}
}

// Invalid is InvalidArgument for a single field.
func Invalid(field, description string) *Error {
	return InvalidArgument(FieldViolation{Field: field, Description: description})
}

// NotFound reports that an object of the given kind ("tenant", "purpose")
// and id does not exist.
func NotFound(kind, id string) *Error {
	return &Error{
		code:    codes.NotFound,
		message: fmt.Sprintf("%s %q not found", kind, id),
		details: []protoadapt.MessageV1{&errdetails.ErrorInfo{
			Reason:   ReasonNotFound,
			Domain:   Domain,
			Metadata: map[string]string{"kind": kind, "id": id},
		}},
	}
}

// FailedPrecondition reports that the request conflicts with the current
// state (an illegal transition, a reused request id); reason is a stable
// UPPER_SNAKE identifier a caller can branch on.
func FailedPrecondition(reason, message string) *Error {
	return withInfo(codes.FailedPrecondition, reason, message)
}

// WithMetadata adds key-value pairs to the error's ErrorInfo detail, for a
// caller to read what the message says in words (the revision a replica
// holds); an error without an ErrorInfo is returned unchanged.
func (e *Error) WithMetadata(kv map[string]string) *Error {
	for _, d := range e.details {
		if info, ok := d.(*errdetails.ErrorInfo); ok {
			if info.Metadata == nil {
				info.Metadata = map[string]string{}
			}
			for k, v := range kv {
				info.Metadata[k] = v
			}
		}
	}
	return e
}

// AlreadyExists reports that the object to create exists already.
func AlreadyExists(kind, id string) *Error {
	return withInfo(codes.AlreadyExists, ReasonAlreadyExists, fmt.Sprintf("%s %q already exists", kind, id))
}

// PermissionDenied reports that the caller may not do this.
func PermissionDenied(message string) *Error {
	return withInfo(codes.PermissionDenied, ReasonPermissionDenied, message)
}

// Unauthenticated reports that the caller could not be identified.
func Unauthenticated(message string) *Error {
	return &Error{code: codes.Unauthenticated, message: message}
}

// Unavailable reports a temporary condition; retryAfter, when positive, is
// sent as a RetryInfo detail so well-behaved clients back off for that long.
func Unavailable(reason, message string, retryAfter time.Duration) *Error {
	e := withInfo(codes.Unavailable, reason, message)
	if retryAfter > 0 {
		e.details = append(e.details, &errdetails.RetryInfo{RetryDelay: durationpb.New(retryAfter)})
	}
	return e
}

func withInfo(code codes.Code, reason, message string) *Error {
	return &Error{
		code:    code,
		message: message,
		details: []protoadapt.MessageV1{&errdetails.ErrorInfo{Reason: reason, Domain: Domain}},
	}
}

// ToStatus is the one boundary between handlers and callers: it returns the
// status a caller sees for err. Domain errors and statuses made by grpc-go
// (such as another service's answer) pass through, also when wrapped, with
// their own message: the wrapping text is for the log; context ends become
// Canceled or DeadlineExceeded; anything else becomes a bare Internal whose
// message reveals nothing, because an unexpected error's text may carry
// file paths, keys or personal data. The caller (the logging interceptor)
// logs the original error.
func ToStatus(err error) *status.Status {
	if err == nil {
		return nil
	}
	var domain *Error
	if errors.As(err, &domain) {
		return domain.GRPCStatus()
	}
	switch {
	case errors.Is(err, context.Canceled):
		return status.New(codes.Canceled, "request canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.New(codes.DeadlineExceeded, "deadline exceeded")
	}
	// Not status.FromError: for a wrapped status it returns the whole
	// err.Error() as the message, wrapping text and all.
	var grpcErr interface{ GRPCStatus() *status.Status }
	if errors.As(err, &grpcErr) {
		if st := grpcErr.GRPCStatus(); st != nil && st.Code() != codes.Unknown && st.Code() != codes.OK {
			return st
		}
	}
	return status.New(codes.Internal, "internal error")
}

// Violations returns the field violations err carries, for clients that
// point a person at the field to fix; nil when err is not InvalidArgument
// with a BadRequest detail.
func Violations(err error) []FieldViolation {
	st, ok := status.FromError(err)
	if !ok || st.Code() != codes.InvalidArgument {
		return nil
	}
	var out []FieldViolation
	for _, d := range st.Details() {
		if br, ok := d.(*errdetails.BadRequest); ok {
			for _, v := range br.FieldViolations {
				out = append(out, FieldViolation{Field: v.Field, Description: v.Description})
			}
		}
	}
	return out
}

// MaxEcho is the most bytes of a caller-supplied value that Lethe echoes in
// an error, writes to a log line or records in an audit entry before the
// caller's input has been validated.
const MaxEcho = 128

// Echo returns a caller-supplied value fit to echo before it has been
// validated: a denied call's tenant or request id is recorded in the audit
// chain, which is never pruned, and repeated in the error and the log. A
// value of at most MaxEcho printable ASCII bytes is returned as it is;
// anything else as its first printable bytes and a digest of the whole
// ("abc…sha256:9f86d081884c7d65"), so that repeated attempts with one
// value stay recognisable without storing it.
func Echo(s string) string {
	printable := 0
	for printable < len(s) && printable < MaxEcho && s[printable] >= '!' && s[printable] <= '~' {
		printable++
	}
	if printable == len(s) {
		return s
	}
	sum := sha256.Sum256([]byte(s))
	return s[:min(printable, MaxEcho/2)] + "…sha256:" + hex.EncodeToString(sum[:8])
}
