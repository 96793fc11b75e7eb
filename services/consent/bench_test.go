package consent_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/server"
)

// noopDesc is a no-op unary method, served behind the same interceptor
// chain as Check, to measure Check against the cost of a call that does
// nothing.
var noopDesc = grpc.ServiceDesc{
	ServiceName: "lethe.bench.v1.NoopService",
	HandlerType: (*any)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Noop",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(emptypb.Empty)
			if err := dec(in); err != nil {
				return nil, err
			}
			handler := func(context.Context, any) (any, error) { return &emptypb.Empty{}, nil }
			if interceptor == nil {
				return handler(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: "/lethe.bench.v1.NoopService/Noop"}, handler)
		},
	}},
}

// load calls call from 50 goroutines on one connection, n calls in all,
// and returns the rate and the 99th percentile latency.
func load(b *testing.B, n int, call func(i int) error) (perSecond float64, p99 time.Duration) {
	const clients = 50
	latencies := make([]time.Duration, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range clients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				t := time.Now()
				if err := call(i); err != nil {
					b.Error(err)
					return
				}
				latencies[i] = time.Since(t)
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	slices.Sort(latencies)
	return float64(n) / elapsed.Seconds(), latencies[n*99/100]
}

// BenchmarkCheckOverGRPC compares Check with a no-op method behind the
// same interceptor chain on the same server, in one run: 50 concurrent
// callers on one connection, loopback in-memory transport. Run with
// -benchtime=20000x.
func BenchmarkCheckOverGRPC(b *testing.B) {
	f := startWith(b, func(s *server.Server) { s.Register(&noopDesc, struct{}{}) })
	clio(b, f)
	for i := range 1000 {
		f.record(b, "clio", fmt.Sprint("subject-", i), "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	}
	ctx := context.Background()
	attrs := &consentv1.SubjectAttributes{Role: "teacher"}
	b.ResetTimer()
	noopRate, noopP99 := load(b, b.N, func(int) error {
		return f.conn.Invoke(ctx, "/lethe.bench.v1.NoopService/Noop", &emptypb.Empty{}, &emptypb.Empty{})
	})
	checkRate, checkP99 := load(b, b.N, func(i int) error {
		_, err := f.consent.Check(ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: fmt.Sprint("subject-", i%1000), PurposeId: "marketing", Attributes: attrs})
		return err
	})
	b.StopTimer()
	b.ReportMetric(noopRate, "noop-calls/s")
	b.ReportMetric(checkRate, "checks/s")
	b.ReportMetric(checkRate/noopRate, "check/noop")
	b.ReportMetric(float64(noopP99.Microseconds()), "noop-p99-us")
	b.ReportMetric(float64(checkP99.Microseconds()), "check-p99-us")
}

// BenchmarkBannerDecisions records durable banner decisions with five
// purposes each (one record per purpose, one transaction per decision)
// from 50 concurrent clients. Run with -benchtime=5000x.
func BenchmarkBannerDecisions(b *testing.B) {
	f := start(b)
	clio(b, f)
	shown := []string{"cookies.necessary", "cookies.statistics", "marketing", "courses.signup", "newsletter"}
	f.purpose(b, "clio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	ctx := context.Background()
	b.ResetTimer()
	rate, p99 := load(b, b.N, func(i int) error {
		_, err := f.consent.RecordBannerDecision(ctx, &consentv1.RecordBannerDecisionRequest{RequestId: fmt.Sprint("banner-", i),
			TenantId: "clio", SubjectId: fmt.Sprint("visitor-", i), Choice: consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL,
			ShownPurposeIds: shown, Evidence: &consentv1.EvidenceInput{IpAddress: "198.51.100.7", UserAgent: "Mozilla/5.0"}})
		return err
	})
	b.StopTimer()
	b.ReportMetric(rate, "decisions/s")
	b.ReportMetric(float64(p99.Milliseconds()), "p99-ms")
}
