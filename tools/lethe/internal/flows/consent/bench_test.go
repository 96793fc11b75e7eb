package consent_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/emptypb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/services/consent"
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
	noopRate, noopP99 := servertest.Load(b, b.N, func(int) error {
		return f.conn.Invoke(ctx, "/lethe.bench.v1.NoopService/Noop", &emptypb.Empty{}, &emptypb.Empty{})
	})
	checkRate, checkP99 := servertest.Load(b, b.N, func(i int) error {
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
// purposes each (one record per optional purpose, one transaction per
// decision) from 50 concurrent clients, in one run on one service: over
// gRPC (RecordBannerDecision, as a backend records them) and through the
// public endpoint for browsers (POST /v1/tenants/clio/decisions over
// HTTP/1.1 keep-alive, as the banner script sends them: CORS, the visitor
// header, JSON, the rate limiters, the answer's choices). Run with
// -benchtime=5000x.
func BenchmarkBannerDecisions(b *testing.B) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	// Limits far above the load: the benchmark measures recording, and
	// all its clients share one address.
	public := consent.PublicOptions{Listener: lis, DecisionsPerMinute: 1 << 30, RequestsPerMinute: 1 << 30}
	f := startOn(b, servicetest.Options{Clock: clock.NewFake(servicetest.Epoch), Logger: quiet}, nil, func(f *fixture) { f.public = public })
	clio(b, f)
	shown := []string{"cookies.necessary", "cookies.statistics", "marketing", "courses.signup", "newsletter"}
	f.purpose(b, "clio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	ctx := context.Background()
	texts := &consentv1.BannerTexts{Title: "Cookies", Body: "…", AcceptAll: "Accept all", RejectAll: "Reject all", SaveSelection: "Save",
		Customise: "Customise", NecessaryLabel: "Always on", PolicyUrl: "https://www.clio.com/privacy-policy", Purposes: map[string]*consentv1.PurposeText{}}
	for _, id := range shown {
		texts.Purposes[id] = &consentv1.PurposeText{Name: id}
	}
	if _, err := f.consent.PutWebSettings(ctx, &consentv1.PutWebSettingsRequest{RequestId: f.id(), TenantId: "clio", Settings: &consentv1.WebSettings{
		AllowedOrigins: []string{"https://www.clio.com"}, Texts: map[string]*consentv1.BannerTexts{"en": texts}, DefaultLanguage: "en", ShownPurposeIds: shown}}); err != nil {
		b.Fatal(err)
	}
	// The body the script sends: every shown purpose with its notice
	// version (none for the purposes without versions).
	versions := map[string]string{"cookies.statistics": "2024-01", "marketing": "2024-01"}
	var body strings.Builder
	for i, id := range shown {
		if i > 0 {
			body.WriteString(",")
		}
		fmt.Fprintf(&body, `{"id":%q,"noticeVersion":%q}`, id, versions[id])
	}
	shownJSON := body.String()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	url := "http://" + lis.Addr().String() + "/v1/tenants/clio/decisions"
	b.ResetTimer()

	grpcRate, grpcP99 := servertest.Load(b, b.N, func(i int) error {
		_, err := f.consent.RecordBannerDecision(ctx, &consentv1.RecordBannerDecisionRequest{RequestId: fmt.Sprint("banner-", i),
			TenantId: "clio", SubjectId: fmt.Sprint("visitor-", i), Choice: consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL,
			ShownPurposeIds: shown, Evidence: &consentv1.EvidenceInput{IpAddress: "198.51.100.7", UserAgent: "Mozilla/5.0"}})
		return err
	})
	publicRate, publicP99 := servertest.Load(b, b.N, func(i int) error {
		req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(fmt.Sprintf(
			`{"requestId":"public-%08d","choice":"accept_all","selected":[],"shown":[%s]}`, i, shownJSON)))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Origin", "https://www.clio.com")
		req.Header.Set("User-Agent", "Mozilla/5.0")
		req.Header.Set("Lethe-Visitor", fmt.Sprintf("bench-visitor-%016d", i))
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("POST decisions: %s", resp.Status)
		}
		return nil
	})
	b.StopTimer()
	b.ReportMetric(grpcRate, "decisions/s")
	b.ReportMetric(float64(grpcP99.Milliseconds()), "p99-ms")
	b.ReportMetric(publicRate, "public-decisions/s")
	b.ReportMetric(float64(publicP99.Milliseconds()), "public-p99-ms")
	b.ReportMetric(publicRate/grpcRate, "public/grpc")
}

// benchPolicy is a production policy file: the newsletter system may call
// Check and CheckBatch for clio, behind fifty rules for other callers, as
// a deployment with many systems would have.
func benchPolicy(checker string, methods ...string) string {
	var rules []string
	for i := range 50 {
		rules = append(rules, fmt.Sprintf(`{"identities": [%q], "methods": ["/lethe.consent.v1.ConsentService/Check"], "tenants": ["tenant-%d"]}`,
			servertest.Identity(fmt.Sprint("system-", i)), i))
	}
	quoted, _ := json.Marshal(methods)
	rules = append(rules, fmt.Sprintf(`{"identities": [%q], "methods": %s, "tenants": ["clio"]}`, checker, quoted))
	return `{"rules": [` + strings.Join(rules, ",\n") + `]}`
}

// BenchmarkChecksByChain measures Check and CheckBatch (100 questions)
// over three paths to the same service, in one run: the development
// profile over the in-memory connection (as BenchmarkCheckOverGRPC), the
// development profile over loopback TCP, and the production chain —
// mutual TLS over loopback TCP, the caller's SPIFFE identity from its
// certificate, authorization by a policy file, audit of mutations and
// denials. 50 concurrent callers on one connection. Run with
// -benchtime=20000x.
func BenchmarkChecksByChain(b *testing.B) {
	f := start(b)
	clio(b, f)
	const subjects = 1000
	for i := range subjects {
		f.record(b, "clio", fmt.Sprint("subject-", i), "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	}
	inmem := servertest.Start(b, server.Config{Logger: quiet}, f.svc.Register)
	devTCP := servertest.Dial(b, servertest.StartTCP(b, server.Config{Logger: quiet}, f.svc.Register), nil)
	pki := servertest.NewPKI(b)
	prodCfg := pki.Production(b, benchPolicy(servertest.Identity("newsletter"),
		"/lethe.consent.v1.ConsentService/Check", "/lethe.consent.v1.ConsentService/CheckBatch"))
	prodCfg.Logger = quiet
	prod := servertest.Dial(b, servertest.StartTCP(b, prodCfg, f.svc.Register), pki.Client(b, "newsletter"))

	ctx := context.Background()
	attrs := &consentv1.SubjectAttributes{Role: "teacher"}
	batch := &consentv1.CheckBatchRequest{TenantId: "clio"}
	for i := range 100 {
		batch.Items = append(batch.Items, &consentv1.CheckBatchItem{SubjectId: fmt.Sprint("subject-", i*7%subjects), PurposeId: "marketing", Attributes: attrs})
	}
	paths := []struct {
		name string
		conn grpc.ClientConnInterface
	}{{"dev-inmem", inmem}, {"dev-tcp", devTCP}, {"prod-mtls", prod}}
	// A first call on each path, outside the timing: the TLS handshake
	// and the policy's first evaluation.
	for _, p := range paths {
		if _, err := consentv1.NewConsentServiceClient(p.conn).Check(ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "subject-0", PurposeId: "marketing"}); err != nil {
			b.Fatalf("%s: %v", p.name, err)
		}
	}
	// The production chain refuses a tenant the caller is not allowed.
	if _, err := consentv1.NewConsentServiceClient(prod).Check(ctx, &consentv1.CheckRequest{TenantId: "tenant-3", SubjectId: "subject-0", PurposeId: "marketing"}); status.Code(err) != codes.PermissionDenied {
		b.Fatalf("Check for another tenant over the production chain: %v, want PermissionDenied", err)
	}
	b.ResetTimer()
	for _, p := range paths {
		client := consentv1.NewConsentServiceClient(p.conn)
		rate, p99 := servertest.Load(b, b.N, func(i int) error {
			_, err := client.Check(ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: fmt.Sprint("subject-", i%subjects), PurposeId: "marketing", Attributes: attrs})
			return err
		})
		batches := max(b.N/20, 100)
		batchRate, batchP99 := servertest.Load(b, batches, func(int) error {
			resp, err := client.CheckBatch(ctx, batch)
			if err == nil && len(resp.GetDecisions()) != len(batch.Items) {
				err = fmt.Errorf("%d decisions for %d questions", len(resp.GetDecisions()), len(batch.Items))
			}
			return err
		})
		b.ReportMetric(rate, p.name+"-checks/s")
		b.ReportMetric(float64(p99.Microseconds()), p.name+"-check-p99-us")
		b.ReportMetric(batchRate*float64(len(batch.Items)), p.name+"-batched-checks/s")
		b.ReportMetric(float64(batchP99.Microseconds()), p.name+"-batch-p99-us")
	}
}

var replicaLagRate = flag.Int("replica-lag-rate", 0, "BenchmarkReplicaLag: writes per second (0: as fast as the writer takes them)")

// BenchmarkReplicaLag measures how long a change takes from the writer's
// commit to a read replica's Watch, beside the writer's own commit rate in
// the same run: 50 concurrent clients record consents (one record, one
// change, one replication entry each) as fast as the writer takes them,
// on the real clock, with NATS syncing every write (as lethe dev does).
// The lag of a change is the time its Watch message arrives minus the
// change's time (set in the writer's transaction): the writer's commit,
// the outbox relay's publish, JetStream's fsync, the replica's apply and
// the Watch delivery. Run with -benchtime=20000x.
func BenchmarkReplicaLag(b *testing.B) {
	f := startOn(b, servicetest.Options{Clock: clock.Real{}, Logger: quiet, SyncAlways: true}, nil)
	clio(b, f)
	r := f.startReplica(b, consent.ReplicaOptions{})
	from := f.revision(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	stream, err := r.client.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio", AfterRevision: from})
	if err != nil {
		b.Fatal(err)
	}
	lags := make([]time.Duration, 0, b.N)
	received := make(chan error, 1)
	go func() {
		for len(lags) < b.N {
			resp, err := stream.Recv()
			if err != nil {
				received <- err
				return
			}
			now := time.Now()
			for _, c := range resp.Changes {
				lags = append(lags, now.Sub(c.At.AsTime()))
			}
		}
		received <- nil
	}()
	b.ResetTimer()
	began := time.Now()
	rate, p99 := servertest.Load(b, b.N, func(i int) error {
		if *replicaLagRate > 0 {
			time.Sleep(time.Until(began.Add(time.Duration(i) * time.Second / time.Duration(*replicaLagRate))))
		}
		_, err := f.consent.RecordConsent(ctx, &consentv1.RecordConsentRequest{RequestId: fmt.Sprint("lag-", i), TenantId: "clio",
			SubjectId: fmt.Sprint("visitor-", i), PurposeId: "marketing", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT,
			Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
		return err
	})
	if err := <-received; err != nil {
		b.Fatalf("watching the replica: %v", err)
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(rate, "writes/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "write-p99-ms")
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds())/1000, "lag-p50-ms")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds())/1000, "lag-p99-ms")
	b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "lag-max-ms")
}
