package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
)

// BenchmarkChain measures what the kit's interceptor chain (and the telemetry
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

// BenchmarkHTTPJSON measures what the HTTP/JSON listener costs a call
// beside the gRPC listener: the same no-op method through the same kit
// server over loopback TCP, once as a gRPC call and once as a Connect
// JSON POST, which the transcoder turns into the same gRPC call. The
// difference of the two ns/op is the transcoding's cost per call.
func BenchmarkHTTPJSON(b *testing.B) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, &slog.HandlerOptions{Level: slog.LevelWarn}))
	svc := kittest.New(nil, nil) // Noop touches no state
	grpcAddr, base := servertest.StartHTTP(b, server.Config{Logger: quiet}, func(s *server.Server) {
		s.Register(&kittestv1.KitTestService_ServiceDesc, svc)
	})
	grpcClient := kittestv1.NewKitTestServiceClient(servertest.Dial(b, grpcAddr, nil))
	tr := &http.Transport{MaxIdleConnsPerHost: 64}
	b.Cleanup(tr.CloseIdleConnections)
	httpClient := &http.Client{Transport: tr}
	calls := map[string]func() error{
		"grpc": func() error {
			_, err := grpcClient.Noop(context.Background(), &kittestv1.NoopRequest{})
			return err
		},
		"http-json": func() error {
			resp, err := httpClient.Post(base+"/lethe.kittest.v1.KitTestService/Noop", "application/json", strings.NewReader(`{}`))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				return fmt.Errorf("status %s", resp.Status)
			}
			return nil
		},
	}
	for _, name := range []string{"grpc", "http-json"} {
		call := calls[name]
		b.Run(name+"/sequential", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if err := call(); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/parallel", func(b *testing.B) {
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := call(); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
