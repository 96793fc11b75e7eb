package wirefuzz

import (
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"
)

// rawCodec sends and receives the bytes of a message as they are: the
// fuzzer's inputs reach the server exactly as built, malformed or not.
// It calls itself "proto", so the server decodes with its own codec.
type rawCodec struct{}

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("wirefuzz: raw codec marshals *[]byte, not %T", v)
	}
	return mem.BufferSlice{mem.SliceBuffer(*b)}, nil
}

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("wirefuzz: raw codec unmarshals into *[]byte, not %T", v)
	}
	*b = data.Materialize()
	return nil
}

func (rawCodec) Name() string { return "proto" }

// Raw is the call option that sends *[]byte requests and receives *[]byte
// responses unchanged.
var Raw = grpc.ForceCodecV2(rawCodec{})
