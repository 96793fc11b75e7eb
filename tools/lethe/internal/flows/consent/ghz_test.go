package consent_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	collectortracev1 "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
)

// BenchmarkCheckAgainstBareGRPC measures Check through the full production
// chain against a bare gRPC server, with the same external client (ghz,
// its own process), the same 50 concurrent callers on one connection and
// the same requests, in one run:
//
//   - bare: a plain grpc.Server with the production listener's mutual TLS
//     and nothing else (no interceptors, no stats handler), serving
//     ConsentService with a Check that answers a constant;
//   - chain: the consent service on the production profile — mutual TLS,
//     the caller's SPIFFE identity from its certificate, a policy file of
//     51 rules, validation, audit of mutations — with telemetry on as a
//     deployment configures it: traces exported over OTLP/gRPC to a
//     collector (here an in-process one that counts what it receives),
//     RPC metrics in the Prometheus registry.
//
// The two alternate, bare-chain-chain-bare…, for five pairs (ten ghz runs
// of b.N calls each), so that the machine's other load falls on both
// alike; check/bare is the ratio of the summed rates, with the median and
// lowest of the pairs' ratios beside it. CheckBatch (100 questions a
// call) is measured the same way with b.N/20 calls a run. ghz is found at
// $LETHE_GHZ or in the repository's .bin (make ghz); without it the
// benchmark is skipped. Run it with tools/load/check.sh.
func BenchmarkCheckAgainstBareGRPC(b *testing.B) {
	if b.N == 1 {
		// The testing package's first probe, before the -benchtime Nx
		// run: the ghz runs need enough calls to fill 50 callers.
		return
	}
	ghz := findGHZ(b)
	f := start(b)
	clio(b, f)
	const subjects = 1000
	for i := range subjects {
		f.record(b, "clio", fmt.Sprint("subject-", i), "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	}

	collector := startCollector(b)
	pki := servertest.NewPKI(b)
	prodCfg := pki.Production(b, benchPolicy(servertest.Identity("newsletter"),
		"/lethe.consent.v1.ConsentService/Check", "/lethe.consent.v1.ConsentService/CheckBatch"))
	prodCfg.Logger = quiet
	prodCfg.OTLPEndpoint, prodCfg.OTLPInsecure = collector.addr, true
	chainAddr := servertest.StartTCP(b, prodCfg, f.svc.Register)
	bareAddr := startBare(b, pki)

	dir := b.TempDir()
	certFile, keyFile := pki.ClientFiles(b, "newsletter")
	common := []string{"--protoset", writeProtoset(b, dir, consentv1.File_lethe_consent_v1_consent_proto),
		"--cacert", pki.CAFile(), "--cert", certFile, "--key", keyFile, "--cname", "localhost",
		"-c", "50", "--connections", "1", "-O", "json"}
	checks, batch := ghzData(b, dir, subjects)

	// The production chain answers, and refuses a tenant the caller is
	// not allowed, before anything is timed.
	prod := consentv1.NewConsentServiceClient(servertest.Dial(b, chainAddr, pki.Client(b, "newsletter")))
	if _, err := prod.Check(context.Background(), &consentv1.CheckRequest{TenantId: "clio", SubjectId: "subject-0", PurposeId: "marketing"}); err != nil {
		b.Fatal(err)
	}
	if _, err := prod.Check(context.Background(), &consentv1.CheckRequest{TenantId: "tenant-3", SubjectId: "subject-0", PurposeId: "marketing"}); status.Code(err) != codes.PermissionDenied {
		b.Fatalf("Check for another tenant over the production chain: %v, want PermissionDenied", err)
	}

	b.Logf("load average at start: %s", loadAverage())
	spansBefore := collector.spans.Load()
	b.ResetTimer()
	check := comparePair(b, ghz, common, "lethe.consent.v1.ConsentService.Check", checks, b.N, bareAddr, chainAddr)
	batched := comparePair(b, ghz, common, "lethe.consent.v1.ConsentService.CheckBatch", batch, max(b.N/20, 100), bareAddr, chainAddr)
	b.StopTimer()
	b.Logf("load average at end: %s; spans the collector received during the runs so far: %d (exports are batched, the last batch may still be on its way)",
		loadAverage(), collector.spans.Load()-spansBefore)

	b.ReportMetric(check.bare.rate, "bare-checks/s")
	b.ReportMetric(check.chain.rate, "chain-checks/s")
	b.ReportMetric(check.chain.rate/check.bare.rate, "check/bare")
	b.ReportMetric(check.ratios[len(check.ratios)/2], "check/bare-median-pair")
	b.ReportMetric(check.ratios[0], "check/bare-lowest-pair")
	b.ReportMetric(check.bare.p99.Seconds()*1e6, "bare-check-p99-us")
	b.ReportMetric(check.chain.p99.Seconds()*1e6, "chain-check-p99-us")
	b.ReportMetric(check.bare.serverCPU.Seconds()*1e6, "bare-server-cpu-us/check")
	b.ReportMetric(check.chain.serverCPU.Seconds()*1e6, "chain-server-cpu-us/check")
	b.ReportMetric(check.bare.clientCPU.Seconds()*1e6, "bare-ghz-cpu-us/check")
	b.ReportMetric(check.chain.clientCPU.Seconds()*1e6, "chain-ghz-cpu-us/check")
	b.ReportMetric(check.cpuRatio(), "check/bare-by-cpu")
	b.ReportMetric(batched.bare.rate, "bare-batches/s")
	b.ReportMetric(batched.chain.rate, "chain-batches/s")
	b.ReportMetric(batched.chain.rate/batched.bare.rate, "batch/bare")
	b.ReportMetric(batched.ratios[len(batched.ratios)/2], "batch/bare-median-pair")
	b.ReportMetric(batched.chain.p99.Seconds()*1e6, "chain-batch-p99-us")
	b.ReportMetric(batched.cpuRatio(), "batch/bare-by-cpu")
}

// findGHZ returns the ghz binary: $LETHE_GHZ, or .bin/ghz at the
// repository's root, which `make ghz` installs at the pinned version.
func findGHZ(b *testing.B) string {
	if p := os.Getenv("LETHE_GHZ"); p != "" {
		return p
	}
	p, err := filepath.Abs("../../../../../.bin/ghz")
	if err != nil {
		b.Fatal(err)
	}
	if _, err := os.Stat(p); err != nil {
		b.Skipf("ghz not found (%v): run `make ghz` at the repository's root or set LETHE_GHZ", err)
	}
	return p
}

// bareConsent is ConsentService reduced to answers fixed in advance: the
// baseline's handler costs nothing, so the difference to the chain is the
// chain, the service's own work included.
type bareConsent struct {
	consentv1.UnimplementedConsentServiceServer
	check *consentv1.CheckResponse
	batch *consentv1.CheckBatchResponse
}

func (s *bareConsent) Check(context.Context, *consentv1.CheckRequest) (*consentv1.CheckResponse, error) {
	return s.check, nil
}

func (s *bareConsent) CheckBatch(context.Context, *consentv1.CheckBatchRequest) (*consentv1.CheckBatchResponse, error) {
	return s.batch, nil
}

// startBare serves bareConsent on a plain grpc.Server with the production
// listener's mutual TLS, on loopback TCP, and returns its address.
func startBare(b *testing.B, pki *servertest.PKI) string {
	d := &consentv1.Decision{PurposeId: "marketing", SubjectId: "subject-0", Allowed: true,
		Reason: consentv1.Reason_REASON_GRANTED, BasisId: "record-0"}
	svc := &bareConsent{check: &consentv1.CheckResponse{Decision: d}, batch: &consentv1.CheckBatchResponse{}}
	for range 100 {
		svc.batch.Decisions = append(svc.batch.Decisions, d)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLS(b))))
	consentv1.RegisterConsentServiceServer(srv, svc)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// collector is an OTLP/gRPC trace collector that counts the spans it
// receives and keeps nothing: the far end of a deployment's exporter.
type collector struct {
	collectortracev1.UnimplementedTraceServiceServer
	addr  string
	spans atomic.Int64
}

func (c *collector) Export(_ context.Context, req *collectortracev1.ExportTraceServiceRequest) (*collectortracev1.ExportTraceServiceResponse, error) {
	var n int64
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += int64(len(ss.GetSpans()))
		}
	}
	c.spans.Add(n)
	return &collectortracev1.ExportTraceServiceResponse{}, nil
}

// startCollector serves a collector on loopback until the benchmark ends,
// after the servers that export to it have stopped and flushed.
func startCollector(b *testing.B) *collector {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	c := &collector{addr: lis.Addr().String()}
	srv := grpc.NewServer()
	collectortracev1.RegisterTraceServiceServer(srv, c)
	go func() { _ = srv.Serve(lis) }()
	b.Cleanup(srv.Stop)
	return c
}

// writeProtoset writes fd and every file it imports as a FileDescriptorSet,
// dependencies first, which ghz reads instead of parsing .proto files.
func writeProtoset(b *testing.B, dir string, fd protoreflect.FileDescriptor) string {
	set := &descriptorpb.FileDescriptorSet{}
	seen := map[string]bool{}
	var add func(protoreflect.FileDescriptor)
	add = func(f protoreflect.FileDescriptor) {
		if seen[f.Path()] {
			return
		}
		seen[f.Path()] = true
		imports := f.Imports()
		for i := range imports.Len() {
			add(imports.Get(i).FileDescriptor)
		}
		set.File = append(set.File, protodesc.ToFileDescriptorProto(f))
	}
	add(fd)
	data, err := proto.Marshal(set)
	if err != nil {
		b.Fatal(err)
	}
	path := filepath.Join(dir, "consent.protoset")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// ghzData writes the requests ghz sends, as JSON arrays that it sends in
// turn: Checks of each of the subjects, and one CheckBatch of 100 of them.
func ghzData(b *testing.B, dir string, subjects int) (checks, batch string) {
	type item struct {
		TenantID   string            `json:"tenant_id,omitempty"`
		SubjectID  string            `json:"subject_id"`
		PurposeID  string            `json:"purpose_id"`
		Attributes map[string]string `json:"attributes"`
	}
	attrs := map[string]string{"role": "teacher"}
	var all []item
	for i := range subjects {
		all = append(all, item{TenantID: "clio", SubjectID: fmt.Sprint("subject-", i), PurposeID: "marketing", Attributes: attrs})
	}
	var items []item
	for i := range 100 {
		it := all[i*7%subjects]
		it.TenantID = ""
		items = append(items, it)
	}
	write := func(name string, v any) string {
		data, err := json.Marshal(v)
		if err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			b.Fatal(err)
		}
		return path
	}
	return write("checks.json", all), write("batch.json", map[string]any{"tenant_id": "clio", "items": items})
}

// ghzRun is what one ghz run measured.
type ghzRun struct {
	rate float64
	p99  time.Duration
	// serverCPU and clientCPU are the CPU time the benchmark's process
	// (the servers) and ghz spent, per call.
	serverCPU, clientCPU time.Duration
}

// pair is the bare and chained servers' figures over all rounds, and the
// ratios of the rounds' pairs (chain/bare), lowest first.
type pair struct {
	bare, chain ghzRun
	ratios      []float64
}

// cpuRatio is the ratio the two sides would reach on a machine of their
// own whose cores the servers and the client keep busy: the CPU time a
// bare call costs (server and ghz) over the CPU time a chained call costs.
// Unlike the rates it hardly depends on what else the machine runs.
func (p pair) cpuRatio() float64 {
	return float64(p.bare.serverCPU+p.bare.clientCPU) / float64(p.chain.serverCPU+p.chain.clientCPU)
}

// rounds is the order of the ghz runs: five pairs, each side first in
// turn, so that load that grows or fades during the run falls on both.
var rounds = []bool{false, true, true, false, false, true, true, false, false, true} // chain?

// comparePair runs ghz n calls at a time against the bare server and the
// chain in the order of rounds and returns each side's summed rate (calls
// over the sum of the runs' times) and median p99, and each pair's ratio.
func comparePair(b *testing.B, ghz string, common []string, call, data string, n int, bareAddr, chainAddr string) pair {
	var calls, secs [2]float64
	var serverCPU, clientCPU [2]time.Duration
	var p99s [2][]time.Duration
	var rates [2]float64
	var ratios []float64
	for round, chain := range rounds {
		addr, side := bareAddr, 0
		if chain {
			addr, side = chainAddr, 1
		}
		r := runGHZ(b, ghz, common, call, data, n, addr)
		calls[side] += float64(n)
		secs[side] += float64(n) / r.rate
		p99s[side] = append(p99s[side], r.p99)
		serverCPU[side] += r.serverCPU
		clientCPU[side] += r.clientCPU
		rates[side] = r.rate
		b.Logf("%s pair %d %s: %.0f calls/s, p99 %s, CPU per call %s server, %s ghz", call, round/2+1,
			map[bool]string{false: "bare", true: "chain"}[chain], r.rate, r.p99, r.serverCPU, r.clientCPU)
		if round%2 == 1 {
			ratios = append(ratios, rates[1]/rates[0])
		}
	}
	median := func(ds []time.Duration) time.Duration { slices.Sort(ds); return ds[len(ds)/2] }
	slices.Sort(ratios)
	per := time.Duration(len(rounds) / 2)
	return pair{
		bare:   ghzRun{rate: calls[0] / secs[0], p99: median(p99s[0]), serverCPU: serverCPU[0] / per, clientCPU: clientCPU[0] / per},
		chain:  ghzRun{rate: calls[1] / secs[1], p99: median(p99s[1]), serverCPU: serverCPU[1] / per, clientCPU: clientCPU[1] / per},
		ratios: ratios,
	}
}

// runGHZ runs ghz once and fails the benchmark unless every call succeeded.
func runGHZ(b *testing.B, ghz string, common []string, call, data string, n int, addr string) ghzRun {
	args := append(slices.Clone(common), "--call", call, "-D", data, "-n", fmt.Sprint(n), addr)
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(ghz, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cpuBefore := processCPU(b)
	if err := cmd.Run(); err != nil {
		b.Fatalf("ghz %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	serverCPU := processCPU(b) - cpuBefore
	clientCPU := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	var report struct {
		Count                  int64            `json:"count"`
		RPS                    float64          `json:"rps"`
		StatusCodeDistribution map[string]int64 `json:"statusCodeDistribution"`
		ErrorDistribution      map[string]int64 `json:"errorDistribution"`
		LatencyDistribution    []struct {
			Percentage int           `json:"percentage"`
			Latency    time.Duration `json:"latency"`
		} `json:"latencyDistribution"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &report); err != nil {
		b.Fatalf("ghz report: %v\n%s", err, stdout.String())
	}
	if ok := report.StatusCodeDistribution["OK"]; ok != int64(n) || len(report.ErrorDistribution) > 0 {
		b.Fatalf("ghz %s against %s: %d of %d calls OK, codes %v, errors %v", call, addr, ok, n, report.StatusCodeDistribution, report.ErrorDistribution)
	}
	r := ghzRun{rate: report.RPS, serverCPU: serverCPU / time.Duration(n), clientCPU: clientCPU / time.Duration(n)}
	for _, l := range report.LatencyDistribution {
		if l.Percentage == 99 {
			r.p99 = l.Latency
		}
	}
	return r
}

// processCPU is the CPU time the process has spent, all its threads.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loadAverage is the machine's load average over 1, 5 and 15 minutes, as
// uptime shows it: the figures are only as quiet as the machine was.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(data))[:3], " ")
}
