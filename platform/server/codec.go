package server

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/lethe-privacy/lethe/platform/apierror"
)

// requestCodec is the server's protobuf codec. It differs from grpc-go's in
// two ways, both about what a caller sends:
//
//   - Unknown fields are discarded while decoding. A field this version of
//     the API does not declare has passed no validation rule, so a handler
//     that stored the message as received would keep it unbounded (a 3 MiB
//     field 999 on a purpose grew consent.db by as much) and hand it back to
//     readers. Discarding keeps newer clients working against this server.
//   - A request that does not decode (invalid UTF-8 in a string, a truncated
//     or garbled message, groups nested past the recursion limit) is the
//     caller's mistake. grpc-go answers any codec error with Internal, which
//     pages an operator through the error-ratio alert, and it decodes before
//     any interceptor runs. So the codec never fails a request message:
//     it leaves the message empty and notes why, and the chain's decoding
//     slot answers InvalidArgument naming the field at fault.
//
// It serves the server only (grpc.ForceServerCodecV2): clients in the same
// process keep grpc-go's codec, for which a response that does not decode
// is a real fault.
type requestCodec struct {
	// malformed maps a request message (by its pointer) to the error its
	// decoding found, until the decoding slot takes it.
	malformed sync.Map
	// pending counts the entries of malformed, so that the slot costs one
	// atomic load on the path of every well-formed call.
	pending atomic.Int64
}

// protoCodec marshals responses exactly as grpc-go's default codec does.
var protoCodec = encoding.GetCodecV2(protoenc.Name)

// decodeOptions discard unknown fields; see requestCodec.
var decodeOptions = proto.UnmarshalOptions{DiscardUnknown: true}

func (c *requestCodec) Name() string { return protoenc.Name }

func (c *requestCodec) Marshal(v any) (mem.BufferSlice, error) { return protoCodec.Marshal(v) }

func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("decode %T: not a protobuf message", v)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	b := buf.ReadOnlyData()
	err := decodeOptions.Unmarshal(b, m)
	if err == nil {
		return nil
	}
	proto.Reset(m)
	c.malformed.Store(v, undecodable(m.ProtoReflect().Descriptor(), b, err))
	c.pending.Add(1)
	return nil
}

// take returns, and forgets, the decoding error of req, if it had one.
func (c *requestCodec) take(req any) error {
	if c.pending.Load() == 0 {
		return nil
	}
	err, ok := c.malformed.LoadAndDelete(req)
	if !ok {
		return nil
	}
	c.pending.Add(-1)
	return err.(error)
}

// undecodable explains why b does not decode as md: the first field at
// fault, by its path as protovalidate names fields, or the whole message
// when no one field is.
func undecodable(md protoreflect.MessageDescriptor, b []byte, err error) error {
	if field, why := locate(md, b, ""); field != "" {
		return apierror.Invalid(field, why)
	}
	return apierror.Invalid("", fmt.Sprintf("the request is not a valid %s message: %v", md.FullName(), err))
}

// locate walks the wire encoding of a message and returns the path of the
// first field whose bytes cannot be read: a string that is not UTF-8, a
// value cut short, a tag that is not one. An empty path means no single
// field is at fault (the error lies between fields or is about depth).
func locate(md protoreflect.MessageDescriptor, b []byte, prefix string) (field, why string) {
	seen := map[protowire.Number]int{}
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return prefix, "not a valid field tag: " + protowire.ParseError(n).Error()
		}
		b = b[n:]
		fd := md.Fields().ByNumber(num)
		path := prefix
		if fd != nil {
			path = join(prefix, fd, seen)
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			if path == "" {
				return "", ""
			}
			return path, "the value is cut short or malformed: " + protowire.ParseError(n).Error()
		}
		if fd != nil && typ == protowire.BytesType {
			v, _ := protowire.ConsumeBytes(b)
			switch fd.Kind() {
			case protoreflect.StringKind:
				if !utf8.Valid(v) {
					return path, "not valid UTF-8"
				}
			case protoreflect.MessageKind:
				if f, w := locate(fd.Message(), v, path); f != "" {
					return f, w
				}
			}
		}
		b = b[n:]
	}
	return "", ""
}

// join names fd below prefix, with the element's index for a repeated
// field (counted in seen) as protovalidate's field paths do.
func join(prefix string, fd protoreflect.FieldDescriptor, seen map[protowire.Number]int) string {
	name := string(fd.Name())
	if prefix != "" {
		name = prefix + "." + name
	}
	if fd.IsList() {
		i := seen[fd.Number()]
		seen[fd.Number()] = i + 1
		name += "[" + strconv.Itoa(i) + "]"
	}
	return name
}
