package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
)

// BenchmarkChain measures what the kit's interceptor chain (and the otelgrpc
// stats handler in front of it) costs a call: the same no-op method served
// by a bare grpc.Server and by the kit's server, over the same in-memory
// transport, in one run. The difference of the two ns/op is the chain's
// cost per call.
func BenchmarkChain(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc := kittest.New(nil, nil) // Noop touches no state

	bare := func(b *testing.B) kittestv1.KitTestServiceClient {
		lis := bufconn.Listen(1 << 20)
		srv := grpc.NewServer()
		kittestv1.RegisterKitTestServiceServer(srv, svc)
		go func() { _ = srv.Serve(lis) }()
		b.Cleanup(srv.Stop)
		conn, err := grpc.NewClient("passthrough:///bufconn",
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
			grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = conn.Close() })
		return kittestv1.NewKitTestServiceClient(conn)
	}
	chained := func(b *testing.B) kittestv1.KitTestServiceClient {
		conn := servertest.Start(b, server.Config{Logger: quiet}, func(s *server.Server) {
			s.Register(&kittestv1.KitTestService_ServiceDesc, svc)
		})
		return kittestv1.NewKitTestServiceClient(conn)
	}

	for _, tc := range []struct {
		name   string
		client func(*testing.B) kittestv1.KitTestServiceClient
	}{{"bare", bare}, {"chain", chained}} {
		b.Run(tc.name+"/sequential", func(b *testing.B) {
			client := tc.client(b)
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.Noop(ctx, &kittestv1.NoopRequest{}); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(tc.name+"/parallel", func(b *testing.B) {
			client := tc.client(b)
			ctx := context.Background()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := client.Noop(ctx, &kittestv1.NoopRequest{}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
