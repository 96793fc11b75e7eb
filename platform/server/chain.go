package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"strings"
	"time"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"buf.build/go/protovalidate"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/timerange"
)

// unaryChain is the interceptor chain of every unary call. The order is a
// contract that tests hold, outermost first:
//
//  1. recovery       a panic anywhere below becomes Internal; the stack is logged
//     (tracing)      the telemetry stats handler wraps all of this chain
//  2. error boundary domain errors keep their status and details; any other
//     error becomes Internal and its text stays in the process
//  3. logging        one line per call, with the raw error and the identity
//  4. authentication who is calling (identity on the context)
//  5. decoding       a request the codec could not decode is InvalidArgument
//     naming the field at fault (see requestCodec)
//  6. authorization  may this identity call this method for this tenant;
//     denials are audited, with bounded ids
//  7. validation     the request's protovalidate rules, and the time window
//     of every Timestamp and Duration (package timerange);
//     violations are InvalidArgument naming each field
//  8. audit          every successful mutation is recorded in the service's
//     hash-chained audit log, in the mutation's own
//     transaction when the handler uses package mutation
//
// Authentication precedes decoding and validation so that an
// unauthenticated caller learns nothing about what a valid request looks
// like. Decoding precedes authorization because a message that did not
// decode is empty: authorizing it would judge a tenant the caller never
// named.
func (s *Server) unaryChain() []grpc.UnaryServerInterceptor {
	return []grpc.UnaryServerInterceptor{
		s.recoverUnary,
		s.boundaryUnary,
		s.logUnary,
		s.authenticateUnary,
		s.decodedUnary,
		s.authorizeUnary,
		s.validateUnary,
		s.auditUnary,
	}
}

// streamChain applies the same slots to streaming calls. A stream's
// requests arrive after the call starts, so authorization by tenant and
// validation run on each received message.
func (s *Server) streamChain() []grpc.StreamServerInterceptor {
	return []grpc.StreamServerInterceptor{
		s.recoverStream,
		s.boundaryStream,
		s.logStream,
		s.authenticateStream,
		s.checkMessagesStream,
	}
}

// publicMethod reports whether a method is served to anyone: health, which
// load balancers and the kubelet probe without credentials.
func publicMethod(fullMethod string) bool {
	return strings.HasPrefix(fullMethod, "/"+healthpb.Health_ServiceDesc.ServiceName+"/")
}

// --- 1. recovery ---

func (s *Server) recoverUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (resp any, err error) {
	defer s.recoverPanic(ctx, info.FullMethod, &err)
	return handler(ctx, req)
}

func (s *Server) recoverStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) (err error) {
	defer s.recoverPanic(ss.Context(), info.FullMethod, &err)
	return handler(srv, ss)
}

func (s *Server) recoverPanic(ctx context.Context, method string, err *error) {
	if r := recover(); r != nil {
		s.cfg.Logger.ErrorContext(ctx, "panic in handler", "method", method, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		*err = status.Error(codes.Internal, "internal error")
	}
}

// --- 2. error boundary ---

func (s *Server) boundaryUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		return nil, apierror.ToStatus(err).Err()
	}
	return resp, nil
}

func (s *Server) boundaryStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if err := handler(srv, ss); err != nil {
		return apierror.ToStatus(err).Err()
	}
	return nil
}

// --- 3. logging ---

// callLog carries what inner slots learn about a call (the identity) out to
// the logging slot, and the request's decoding error in to the decoding
// slot.
type callLog struct {
	identity string
	// malformed is taken from the codec here, before any slot can refuse
	// the call, so that a refused call (unauthenticated garbage) leaves
	// nothing behind in the codec.
	malformed error
}

type callLogKey struct{}

func (s *Server) logUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	cl := &callLog{malformed: s.codec.take(req)}
	start := time.Now()
	resp, err := handler(context.WithValue(ctx, callLogKey{}, cl), req)
	s.logCall(ctx, info.FullMethod, cl, start, err)
	return resp, err
}

func (s *Server) logStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	cl := &callLog{}
	start := time.Now()
	ctx := context.WithValue(ss.Context(), callLogKey{}, cl)
	err := handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
	s.logCall(ss.Context(), info.FullMethod, cl, start, err)
	return err
}

// logCall writes one line per call: successful calls at debug (the hot
// path must not pay for a log line per call), client errors at info, server
// errors at error with the raw error, which the boundary hides from the
// caller.
func (s *Server) logCall(ctx context.Context, method string, cl *callLog, start time.Time, err error) {
	code := apierror.ToStatus(err).Code()
	level := slog.LevelDebug
	switch code {
	case codes.OK, codes.Canceled:
	case codes.Internal, codes.Unknown, codes.DataLoss, codes.Unimplemented:
		level = slog.LevelError
	default:
		level = slog.LevelInfo
	}
	logger := s.cfg.Logger
	if !logger.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("method", method),
		slog.String("code", code.String()),
		slog.Duration("duration", time.Since(start)),
	}
	if cl.identity != "" {
		attrs = append(attrs, slog.String("identity", cl.identity))
	}
	if sc := trace.SpanContextFromContext(ctx); sc.HasTraceID() {
		attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
	}
	if err != nil {
		attrs = append(attrs, slog.String("error", err.Error()))
	}
	logger.LogAttrs(ctx, level, "rpc", attrs...)
}

// --- 4. authentication ---

func (s *Server) authenticate(ctx context.Context, method string) (context.Context, error) {
	if publicMethod(method) {
		return ctx, nil
	}
	id, err := s.cfg.Authenticator.Authenticate(ctx)
	if err != nil {
		return nil, err
	}
	if cl, ok := ctx.Value(callLogKey{}).(*callLog); ok {
		cl.identity = id.Name
	}
	return auth.NewContext(ctx, id), nil
}

func (s *Server) authenticateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	ctx, err := s.authenticate(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func (s *Server) authenticateStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	ctx, err := s.authenticate(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return handler(srv, &contextStream{ServerStream: ss, ctx: ctx})
}

// --- 5. decoding ---

func (s *Server) decodedUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if cl, ok := ctx.Value(callLogKey{}).(*callLog); ok && cl.malformed != nil {
		return nil, cl.malformed
	}
	return handler(ctx, req)
}

// --- 6. authorization ---

// tenantScoped is implemented by every request message with a tenant_id
// field (protoc-gen-go generates the getter).
type tenantScoped interface{ GetTenantId() string }

func (s *Server) authorize(ctx context.Context, method string, req any) error {
	if publicMethod(method) {
		return nil
	}
	id, _ := auth.FromContext(ctx)
	r := auth.Request{Identity: id, FullMethod: method}
	if t, ok := req.(tenantScoped); ok {
		r.TenantID = t.GetTenantId()
	}
	err := s.cfg.Policy.Authorize(ctx, r)
	if err == nil {
		return nil
	}
	if log := s.methods[method].audit; log != nil {
		entry := audit.Entry{
			Actor:    id.Name,
			Method:   method,
			TenantID: apierror.Echo(r.TenantID),
			Code:     codes.PermissionDenied.String(),
		}
		if rs, ok := req.(requestScoped); ok {
			entry.RequestID = apierror.Echo(rs.GetRequestId())
		}
		if auditErr := log.Append(entry); auditErr != nil {
			return errors.Join(err, fmt.Errorf("audit a denial: %w", auditErr))
		}
	}
	return err
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.authorize(ctx, info.FullMethod, req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// --- 7. validation ---

func (s *Server) validate(req any) error {
	msg, ok := req.(proto.Message)
	if !ok {
		return nil
	}
	if over := oversized(msg); len(over) > 0 {
		// Refused on the counts alone, before protovalidate walks every
		// entry of a list far longer than allowed.
		return apierror.InvalidArgument(over...)
	}
	var violations []apierror.FieldViolation
	err := s.validator.Validate(msg)
	var verr *protovalidate.ValidationError
	switch {
	case err == nil:
	case errors.As(err, &verr):
		for _, v := range verr.Violations {
			for _, field := range violatedFields(msg, v) {
				violations = append(violations, apierror.FieldViolation{Field: field, Description: v.Proto.GetMessage()})
			}
		}
	default:
		return fmt.Errorf("validate %s: %w", msg.ProtoReflect().Descriptor().FullName(), err)
	}
	if outside := timerange.Check(msg); len(outside) > 0 {
		// A field whose own rule already failed is not named twice.
		named := make(map[string]bool, len(violations))
		for _, v := range violations {
			named[v.Field] = true
		}
		for _, v := range outside {
			if !named[v.Field] {
				violations = append(violations, apierror.FieldViolation{Field: v.Field, Description: v.Description})
			}
		}
	}
	if len(violations) == 0 {
		return nil
	}
	return apierror.InvalidArgument(violations...)
}

// violatedFields names the fields of a violation: its field path, or for a
// message-level oneof rule, which has no path of its own, the fields it
// constrains ("only one of access, erasure, … can be set" names those
// set; "one of … must be set" names them all), so that a caller always
// learns where to look.
func violatedFields(msg proto.Message, v *protovalidate.Violation) []string {
	if path := protovalidate.FieldPathString(v.Proto.GetField()); path != "" || v.Proto.GetRuleId() != "message.oneof" {
		return []string{path}
	}
	m := msg.ProtoReflect()
	rules, _ := proto.GetExtension(m.Descriptor().Options(), validate.E_Message).(*validate.MessageRules)
	for _, oneof := range rules.GetOneof() {
		if !strings.Contains(v.Proto.GetMessage(), strings.Join(oneof.GetFields(), ", ")) {
			continue
		}
		var set []string
		for _, name := range oneof.GetFields() {
			if fd := m.Descriptor().Fields().ByName(protoreflect.Name(name)); fd != nil && m.Has(fd) {
				set = append(set, name)
			}
		}
		if len(set) > 1 {
			return set
		}
		return oneof.GetFields()
	}
	return []string{""}
}

func (s *Server) validateUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if err := s.validate(req); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

// checkMessagesStream authorizes and validates each message a client
// streams in.
func (s *Server) checkMessagesStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	return handler(srv, &checkedStream{ServerStream: ss, server: s, method: info.FullMethod})
}

type checkedStream struct {
	grpc.ServerStream
	server *Server
	method string
}

// RecvMsg receives a message, then authorizes and validates it.
func (c *checkedStream) RecvMsg(m any) error {
	if err := c.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	if err := c.server.codec.take(m); err != nil {
		return err
	}
	if err := c.server.authorize(c.Context(), c.method, m); err != nil {
		return err
	}
	return c.server.validate(m)
}

// --- 8. audit ---

// requestScoped is implemented by every mutation request (request_id field).
type requestScoped interface{ GetRequestId() string }

func (s *Server) auditUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	m := s.methods[info.FullMethod]
	if !m.mutation || m.audit == nil {
		return handler(ctx, req)
	}
	id, _ := auth.FromContext(ctx)
	call := &audit.Call{Entry: audit.Entry{Actor: id.Name, Method: info.FullMethod, Code: codes.OK.String()}}
	// Validation has checked the tenant and request ids of the service's
	// own requests; Echo keeps the chain bounded for any request whose
	// handler does not check its request id itself.
	if t, ok := req.(tenantScoped); ok {
		call.Entry.TenantID = apierror.Echo(t.GetTenantId())
	}
	if r, ok := req.(requestScoped); ok {
		call.Entry.RequestID = apierror.Echo(r.GetRequestId())
	}
	resp, err := handler(audit.NewContext(ctx, m.audit, call), req)
	if err != nil || call.Recorded() {
		return resp, err
	}
	// The handler changed state without the mutation helper (or wrote
	// nothing of its own): record the call now, in its own transaction.
	if err := m.audit.Append(call.Entry); err != nil {
		return nil, fmt.Errorf("audit %s: %w", info.FullMethod, err)
	}
	return resp, nil
}

// contextStream replaces a stream's context.
type contextStream struct {
	grpc.ServerStream
	ctx context.Context
}

// Context returns the replaced context.
func (c *contextStream) Context() context.Context { return c.ctx }
