package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/mem"

	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
)

// A malformed request that a slot refuses before the decoding slot (an
// unauthenticated caller sending garbage) must leave nothing behind in the
// codec, or such callers would grow the server's memory without bound.
func TestARefusedMalformedCallLeavesNothingInTheCodec(t *testing.T) {
	s := &Server{cfg: CompletedConfig{&completed{Config: Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}}}}
	req := &kittestv1.EchoRequest{}
	if err := s.codec.Unmarshal(mem.BufferSlice{mem.SliceBuffer([]byte{0xff, 0xff, 0xff})}, req); err != nil {
		t.Fatalf("the codec failed a request: %v", err)
	}
	if s.codec.pending.Load() != 1 {
		t.Fatal("the codec did not note the malformed request")
	}
	refused := errors.New("unauthenticated")
	authenticate := func(context.Context, any, *grpc.UnaryServerInfo, grpc.UnaryHandler) (any, error) { return nil, refused }
	info := &grpc.UnaryServerInfo{FullMethod: kittestv1.KitTestService_Echo_FullMethodName}
	_, err := s.logUnary(context.Background(), req, info, func(ctx context.Context, req any) (any, error) {
		return authenticate(ctx, req, info, nil)
	})
	if !errors.Is(err, refused) {
		t.Fatalf("call = %v, want the refusal", err)
	}
	if n := s.codec.pending.Load(); n != 0 {
		t.Fatalf("%d malformed requests left in the codec after their calls ended", n)
	}
}
