package apierror_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/lethe-privacy/lethe/platform/apierror"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
)

// failing answers Echo with the error registered under the request's text,
// so that each error below crosses a real gRPC call through the kit
// server's chain, whose error boundary is ToStatus.
type failing struct {
	kittestv1.UnimplementedKitTestServiceServer
	errs map[string]error
}

func (f failing) Echo(_ context.Context, req *kittestv1.EchoRequest) (*kittestv1.EchoResponse, error) {
	return nil, f.errs[req.Text]
}

// overTheWire returns the error a client receives when a handler returns
// err, through a kit server on a real gRPC connection.
func overTheWire(t *testing.T, err error) error {
	t.Helper()
	conn := servertest.Start(t, server.Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, func(s *server.Server) {
		s.Register(&kittestv1.KitTestService_ServiceDesc, failing{errs: map[string]error{"err": err}})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, got := kittestv1.NewKitTestServiceClient(conn).Echo(ctx, &kittestv1.EchoRequest{Text: "err"})
	if got == nil {
		t.Fatal("the call succeeded")
	}
	return got
}

// details returns the details of err's status, failing on any that does
// not decode.
func details(t *testing.T, err error) []proto.Message {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%v is not a status", err)
	}
	var out []proto.Message
	for _, d := range st.Details() {
		m, ok := d.(proto.Message)
		if !ok {
			t.Fatalf("detail %v did not decode", d)
		}
		out = append(out, m)
	}
	return out
}

func wantDetails(t *testing.T, err error, want ...proto.Message) {
	t.Helper()
	got := details(t, err)
	if len(got) != len(want) {
		t.Fatalf("details = %v, want %v", got, want)
	}
	for i := range want {
		if !proto.Equal(got[i], want[i]) {
			t.Fatalf("detail %d = %v, want %v", i, got[i], want[i])
		}
	}
}

// TestInvalidArgumentNamesTheFields: the violations travel, in order, as a
// google.rpc.BadRequest a client reads back with Violations, and the
// message names each field.
func TestInvalidArgumentNamesTheFields(t *testing.T) {
	violations := []apierror.FieldViolation{
		{Field: "scope.categories[0].id", Description: "unknown category"},
		{Field: "request_id", Description: "required"},
	}
	err := apierror.InvalidArgument(violations...)
	if err.Code() != codes.InvalidArgument {
		t.Fatalf("code = %v", err.Code())
	}
	if want := "invalid argument: scope.categories[0].id: unknown category; request_id: required"; err.Error() != want {
		t.Fatalf("message = %q, want %q", err.Error(), want)
	}
	badRequest := &errdetails.BadRequest{FieldViolations: []*errdetails.BadRequest_FieldViolation{
		{Field: "scope.categories[0].id", Description: "unknown category"},
		{Field: "request_id", Description: "required"},
	}}
	wantDetails(t, err, badRequest)

	wire := overTheWire(t, err)
	if status.Code(wire) != codes.InvalidArgument || status.Convert(wire).Message() != err.Error() {
		t.Fatalf("over the wire = %v, want %v", wire, err)
	}
	wantDetails(t, wire, badRequest)
	if got := apierror.Violations(wire); fmt.Sprint(got) != fmt.Sprint(violations) {
		t.Fatalf("Violations = %+v, want %+v", got, violations)
	}

	// Invalid is the one-field form.
	one := apierror.Invalid("tenant_id", "required")
	if got := apierror.Violations(one); len(got) != 1 || got[0] != (apierror.FieldViolation{Field: "tenant_id", Description: "required"}) {
		t.Fatalf("Violations(Invalid) = %+v", got)
	}
}

// TestViolationsCapped: at most MaxViolations are listed, then one entry
// says how many more there were; the caller's slice is left alone. A
// hundred thousand violations reach the client as InvalidArgument, not as
// a dropped connection (the headers the status travels in would overflow).
func TestViolationsCapped(t *testing.T) {
	many := func(n int) []apierror.FieldViolation {
		out := make([]apierror.FieldViolation, n)
		for i := range out {
			out[i] = apierror.FieldViolation{Field: fmt.Sprintf("items[%d].id", i), Description: "not a token"}
		}
		return out
	}

	exact := apierror.Violations(apierror.InvalidArgument(many(apierror.MaxViolations)...))
	if len(exact) != apierror.MaxViolations || exact[len(exact)-1].Field != fmt.Sprintf("items[%d].id", apierror.MaxViolations-1) {
		t.Fatalf("%d violations listed %d, the last %+v; want all and no note", apierror.MaxViolations, len(exact), exact[len(exact)-1])
	}

	input := many(apierror.MaxViolations + 7)
	got := apierror.Violations(apierror.InvalidArgument(input...))
	if len(got) != apierror.MaxViolations+1 {
		t.Fatalf("%d violations listed %d, want %d and a note", len(input), len(got), apierror.MaxViolations)
	}
	if got[apierror.MaxViolations-1] != input[apierror.MaxViolations-1] {
		t.Fatalf("the last listed violation = %+v, want %+v", got[apierror.MaxViolations-1], input[apierror.MaxViolations-1])
	}
	if note := got[apierror.MaxViolations]; note != (apierror.FieldViolation{Description: "and 7 more violations"}) {
		t.Fatalf("note = %+v, want one saying 7 more", note)
	}
	if input[apierror.MaxViolations].Field != fmt.Sprintf("items[%d].id", apierror.MaxViolations) {
		t.Fatalf("the caller's slice was overwritten: %+v", input[apierror.MaxViolations])
	}

	huge := apierror.InvalidArgument(many(100_000)...)
	wire := overTheWire(t, huge)
	if status.Code(wire) != codes.InvalidArgument {
		t.Fatalf("100,000 violations over the wire = %v, want InvalidArgument", wire)
	}
	got = apierror.Violations(wire)
	if len(got) != apierror.MaxViolations+1 || got[apierror.MaxViolations].Description != "and 99950 more violations" {
		t.Fatalf("over the wire: %d violations, the last %+v", len(got), got[len(got)-1])
	}
}

// TestReasonsAndRetry: the errors a caller branches on carry an ErrorInfo
// with a stable reason in Lethe's domain; Unavailable adds a RetryInfo
// when it knows how long to back off. All of it survives the wire.
func TestReasonsAndRetry(t *testing.T) {
	info := func(reason string, metadata map[string]string) *errdetails.ErrorInfo {
		return &errdetails.ErrorInfo{Reason: reason, Domain: apierror.Domain, Metadata: metadata}
	}
	for _, tc := range []struct {
		name    string
		err     *apierror.Error
		code    codes.Code
		message string
		details []proto.Message
	}{
		{"NotFound", apierror.NotFound("purpose", "newsletter"), codes.NotFound, `purpose "newsletter" not found`,
			[]proto.Message{info(apierror.ReasonNotFound, map[string]string{"kind": "purpose", "id": "newsletter"})}},
		{"FailedPrecondition", apierror.FailedPrecondition(apierror.ReasonTaskNotOpen, "the task is final"), codes.FailedPrecondition, "the task is final",
			[]proto.Message{info("TASK_NOT_OPEN", nil)}},
		{"AlreadyExists", apierror.AlreadyExists("tenant", "clio"), codes.AlreadyExists, `tenant "clio" already exists`,
			[]proto.Message{info("ALREADY_EXISTS", nil)}},
		{"PermissionDenied", apierror.PermissionDenied("not for this tenant"), codes.PermissionDenied, "not for this tenant",
			[]proto.Message{info(apierror.ReasonPermissionDenied, nil)}},
		{"Unauthenticated", apierror.Unauthenticated("no credentials"), codes.Unauthenticated, "no credentials", nil},
		{"Unavailable with a delay", apierror.Unavailable(apierror.ReasonBacklogFull, "backlog full", 3*time.Second), codes.Unavailable, "backlog full",
			[]proto.Message{info(apierror.ReasonBacklogFull, nil), &errdetails.RetryInfo{RetryDelay: durationpb.New(3 * time.Second)}}},
		{"Unavailable without a delay", apierror.Unavailable(apierror.ReasonBacklogFull, "backlog full", 0), codes.Unavailable, "backlog full",
			[]proto.Message{info(apierror.ReasonBacklogFull, nil)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.err.Code() != tc.code || tc.err.Error() != tc.message {
				t.Fatalf("error = %v %q, want %v %q", tc.err.Code(), tc.err.Error(), tc.code, tc.message)
			}
			wantDetails(t, tc.err, tc.details...)
			wire := overTheWire(t, tc.err)
			if st := status.Convert(wire); st.Code() != tc.code || st.Message() != tc.message {
				t.Fatalf("over the wire = %v, want %v %q", wire, tc.code, tc.message)
			}
			wantDetails(t, wire, tc.details...)
			if apierror.Violations(wire) != nil {
				t.Fatalf("Violations(%v) = %v, want nil", tc.code, apierror.Violations(wire))
			}
		})
	}
}

// TestToStatus: domain errors keep their status and details, wrapped or
// not; statuses pass through with their own message; context ends keep
// their meaning; anything else is a bare Internal that reveals nothing of
// its text, neither from ToStatus nor over the wire.
func TestToStatus(t *testing.T) {
	if apierror.ToStatus(nil) != nil {
		t.Fatal("ToStatus(nil) is not nil")
	}
	const secret = "open /var/lib/lethe/consent.db: alice@example.com"
	notFound := apierror.NotFound("purpose", "newsletter")
	downstream := status.New(codes.Unavailable, "registry draining")
	downstream, err := downstream.WithDetails(&errdetails.ErrorInfo{Reason: "DRAINING", Domain: apierror.Domain})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		err     error
		code    codes.Code
		message string
		details int
	}{
		{"plain error", errors.New(secret), codes.Internal, "internal error", 0},
		{"wrapped plain error", fmt.Errorf("put %s: %w", secret, io.ErrUnexpectedEOF), codes.Internal, "internal error", 0},
		{"domain error", notFound, codes.NotFound, notFound.Error(), 1},
		{"wrapped domain error", fmt.Errorf("lookup for %s: %w", secret, notFound), codes.NotFound, notFound.Error(), 1},
		{"context canceled", fmt.Errorf("%s: %w", secret, context.Canceled), codes.Canceled, "request canceled", 0},
		{"deadline", fmt.Errorf("%s: %w", secret, context.DeadlineExceeded), codes.DeadlineExceeded, "deadline exceeded", 0},
		{"status", downstream.Err(), codes.Unavailable, "registry draining", 1},
		// A status from a call to another service, wrapped with context
		// for the log: the caller sees the status, not the wrapping text.
		{"wrapped status", fmt.Errorf("registry: get system for %s: %w", secret, downstream.Err()), codes.Unavailable, "registry draining", 1},
		{"status Unknown", status.Error(codes.Unknown, secret), codes.Internal, "internal error", 0},
		{"status OK on an error", okStatus{}, codes.Internal, "internal error", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := apierror.ToStatus(tc.err)
			if st.Code() != tc.code || st.Message() != tc.message || len(st.Details()) != tc.details {
				t.Fatalf("ToStatus = %v %q with %d details, want %v %q with %d", st.Code(), st.Message(), len(st.Details()), tc.code, tc.message, tc.details)
			}
			wire := status.Convert(overTheWire(t, tc.err))
			if wire.Code() != tc.code || wire.Message() != tc.message || len(wire.Details()) != tc.details {
				t.Fatalf("over the wire = %v %q with %d details, want %v %q with %d", wire.Code(), wire.Message(), len(wire.Details()), tc.code, tc.message, tc.details)
			}
			if strings.Contains(fmt.Sprint(wire.Proto()), "alice") {
				t.Fatalf("the caller saw the error's text: %v", wire.Proto())
			}
		})
	}
}

// okStatus is an error whose status says OK: still an error, never a
// success without a response.
type okStatus struct{}

func (okStatus) Error() string              { return "alice: not really an error" }
func (okStatus) GRPCStatus() *status.Status { return status.New(codes.OK, "alice") }

// TestViolationsOfOtherErrors: Violations is nil for anything but an
// InvalidArgument with a BadRequest.
func TestViolationsOfOtherErrors(t *testing.T) {
	for name, err := range map[string]error{
		"nil":                       nil,
		"plain error":               errors.New("invalid argument: request_id: required"),
		"NotFound":                  apierror.NotFound("purpose", "p"),
		"InvalidArgument, bare":     status.Error(codes.InvalidArgument, "request_id: required"),
		"FailedPrecondition status": status.Error(codes.FailedPrecondition, "x"),
	} {
		if got := apierror.Violations(err); got != nil {
			t.Errorf("%s: Violations = %+v, want nil", name, got)
		}
	}
}

// TestEcho: a caller's value is echoed as it is when it is at most
// MaxEcho printable ASCII bytes; otherwise as its printable start (at most
// half of MaxEcho) and a digest of the whole, which stays the same for the
// same value and tells different values apart.
func TestEcho(t *testing.T) {
	digest := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "…sha256:" + hex.EncodeToString(sum[:8])
	}
	longest := strings.Repeat("~", apierror.MaxEcho)
	tooLong := strings.Repeat("a", apierror.MaxEcho+1)
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"clio", "clio"},
		{"r-1!~", "r-1!~"},
		{longest, longest},
		{tooLong, tooLong[:apierror.MaxEcho/2] + digest(tooLong)},
		{"r-1\nOK forged audit line", "r-1" + digest("r-1\nOK forged audit line")},
		{"two words", "two" + digest("two words")},
		{"\x00clio", digest("\x00clio")},
		{"\x1b[2Jclio", digest("\x1b[2Jclio")},
		{"réquest", "r" + digest("réquest")},
		{"clio\x7f", "clio" + digest("clio\x7f")},
	} {
		got := apierror.Echo(tc.in)
		if got != tc.want {
			t.Errorf("Echo(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if apierror.Echo(tc.in) != got {
			t.Errorf("Echo(%q) is not stable", tc.in)
		}
		if strings.ContainsFunc(got, func(r rune) bool { return r != '…' && (r < '!' || r > '~') }) {
			t.Errorf("Echo(%q) = %q holds a character that is not printable ASCII", tc.in, got)
		}
	}
	// Two long values that start alike stay apart.
	a, b := tooLong+"x", tooLong+"y"
	if apierror.Echo(a) == apierror.Echo(b) {
		t.Fatalf("Echo(%q) = Echo(%q) = %q", a, b, apierror.Echo(a))
	}
	// However long the value, the echo is bounded.
	if got := apierror.Echo(strings.Repeat("a", 1<<20)); len(got) > apierror.MaxEcho {
		t.Fatalf("Echo of 1 MiB = %d bytes, want at most %d", len(got), apierror.MaxEcho)
	}
}
