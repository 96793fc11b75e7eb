// Package wirefuzz sends hostile bytes to every method of every Lethe
// service and says, per method and kind of input, what misbehaved.
//
// It walks the services from the generated descriptors (protoregistry), so a
// method added to a proto is fuzzed without a change here. For each method
// it builds a base request that passes the method's protovalidate rules as
// far as a generic filler can (see base.go), then derives inputs from it:
// a field set to a huge string, control characters, invalid UTF-8, an
// out-of-range number or an out-of-spec timestamp or duration; a 3 MiB
// unknown field; a repeated field of 100,000 items; and inputs that are not
// a message at all: garbage, a truncated encoding, 100,000 nested groups.
// The bytes go out through a codec that passes them through unchanged, so
// malformed wire data reaches the server as sent.
//
// Every input is held to the same properties (see Check): no Internal or
// Unknown status; the server healthy afterwards; an input that does not
// decode is refused as InvalidArgument with a description; a decodable one
// refused as InvalidArgument names the field at fault in a BadRequest
// violation; an input that is invalid by its type's own specification is
// refused; nothing is written for a refused call (the bbolt files' last
// transaction ids and sizes are unchanged); and no accepted call echoes an
// unknown field back.
package wirefuzz

import (
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	// The services' descriptors, registered for Services and Methods.
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	_ "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
)

// Method is one RPC of a service.
type Method struct {
	// FullName is the path gRPC calls, "/lethe.consent.v1.ConsentService/Check".
	FullName string
	// Input and Output are the request and response types.
	Input, Output protoreflect.MessageType
	// ClientStreams and ServerStreams say how the call streams.
	ClientStreams, ServerStreams bool
	// ReadOnly is true for methods the proto marks NO_SIDE_EFFECTS.
	ReadOnly bool
}

// Services returns the full names of every gRPC service in the registered
// lethe.* packages, sorted.
func Services() []string {
	var names []string
	protoregistry.GlobalFiles.RangeFiles(func(fd protoreflect.FileDescriptor) bool {
		if strings.HasPrefix(string(fd.Package()), "lethe.") {
			for i := range fd.Services().Len() {
				names = append(names, string(fd.Services().Get(i).FullName()))
			}
		}
		return true
	})
	sort.Strings(names)
	return names
}

// Methods returns the methods of the named services, in the order of the
// services and of their protos.
func Methods(services ...string) ([]*Method, error) {
	var out []*Method
	for _, name := range services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("service %s: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("%s is not a service", name)
		}
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			in, err := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
			if err != nil {
				return nil, fmt.Errorf("%s input: %w", md.FullName(), err)
			}
			outType, err := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
			if err != nil {
				return nil, fmt.Errorf("%s output: %w", md.FullName(), err)
			}
			opts, _ := md.Options().(*descriptorpb.MethodOptions)
			out = append(out, &Method{
				FullName:      fmt.Sprintf("/%s/%s", sd.FullName(), md.Name()),
				Input:         in,
				Output:        outType,
				ClientStreams: md.IsStreamingClient(),
				ServerStreams: md.IsStreamingServer(),
				ReadOnly:      opts.GetIdempotencyLevel() == descriptorpb.MethodOptions_NO_SIDE_EFFECTS,
			})
		}
	}
	return out, nil
}

// Service is the full name of the method's service.
func (m *Method) Service() string {
	s := strings.TrimPrefix(m.FullName, "/")
	return s[:strings.LastIndex(s, "/")]
}

// Store is the name the method's service gives its store files: the
// package's second segment, "consent" for lethe.consent.v1.
func (m *Method) Store() string {
	parts := strings.Split(m.Service(), ".")
	if len(parts) < 2 {
		return m.Service()
	}
	return parts[1]
}

// Short is the method's name without its package: "ConsentService/Check".
func (m *Method) Short() string {
	s := strings.TrimPrefix(m.FullName, "/")
	if i := strings.LastIndex(s, "."); i >= 0 {
		return s[i+1:]
	}
	return s
}
