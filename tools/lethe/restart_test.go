package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/dsar"
	"github.com/lethe-privacy/lethe/services/registry"
	"github.com/lethe-privacy/lethe/services/retention"
	"github.com/lethe-privacy/lethe/tools/lethe/internal/tenantfile"
)

// Restart-to-serving: how long each deployable takes from the exec of its
// binary, as a pod restart does, until the kubelet's readiness probe would
// see it SERVING (grpc.health.v1 on --health-addr, under the service's
// name, as deploy/base/*.yaml probe it), and until the first real call
// answers with the data it answered before the restart. The four services
// run as separate processes of their own binaries, in the development
// profile, against a NATS server in this process; the stores are filled
// through the services' gRPC APIs first (docs/operations.md, "What fails
// when a pod dies", says why each size). Run the full measurement with
//
//	make bench-restart
//
// and a small one, which the test command runs so the tool does not rot,
// with TestRestartToServing.

var (
	restartConsentRecords = flag.Int("restart.consent-records", 1_000_000, "consent records to load (banner decisions over the example tenants' consent purposes)")
	restartDSARs          = flag.Int("restart.dsars", 100_000, "data-subject requests to load")
	restartSubjects       = flag.Int("restart.retention-subjects", 1_000_000, "subjects the retention service tracks")
	restartSystems        = flag.Int("restart.systems", 1_000, "systems registered beside the example tenants' own")
	restartRuns           = flag.Int("restart.runs", 5, "restarts of each kind per service")
	restartReportFile     = flag.String("restart.report", "", "also write the results table (Markdown) to this file")
)

// restartSizes is what a measurement loads and how often it restarts.
type restartSizes struct {
	consentRecords, dsars, subjects, systems, runs int
}

// BenchmarkRestartToServing loads realistic stores once, then restarts each
// service runs times in each of three ways and reports the median and the
// maximum. It ignores b.N: run it with -benchtime 1x, without -race.
func BenchmarkRestartToServing(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector inflates start-up time; run without -race")
	}
	restartToServing(b, restartSizes{consentRecords: *restartConsentRecords, dsars: *restartDSARs,
		subjects: *restartSubjects, systems: *restartSystems, runs: *restartRuns})
}

// TestRestartToServing is the measurement on tiny stores: every service
// comes back SERVING after a clean stop, after its file pages were dropped
// from the page cache and after kill -9, and answers the first real call as
// it did before.
func TestRestartToServing(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the four deployables")
	}
	restartToServing(t, restartSizes{consentRecords: 300, dsars: 200, subjects: 2_000, systems: 10, runs: 1})
}

// deployable is one service's binary, its flags and what it answers.
type deployable struct {
	name, health string
	bin          string
	data         string
	addr, hAddr  string
	args         []string
	proc         *process
	// probe makes the service's first real call and summarises the
	// answer; the answer after a restart must equal the one before.
	probe    func(ctx context.Context, conn *grpc.ClientConn) (string, error)
	baseline string
	// write is one mutation, for the load kill -9 interrupts.
	write func(ctx context.Context, conn *grpc.ClientConn, i int) error
}

// restartKinds are the ways a service is restarted.
var restartKinds = []struct{ name, what string }{
	{"clean", "SIGTERM, then exec on the same files (their pages in the page cache)"},
	{"cold", "SIGTERM, the files' pages dropped from the page cache (posix_fadvise DONTNEED), then exec"},
	{"kill9", "SIGKILL while 16 callers write, then exec"},
}

// startMeasure is one start.
type startMeasure struct {
	serving, firstCall time.Duration
	peakRSS            int64 // KiB, VmHWM once the first call answered
	// anonRSS is RssAnon then (KiB): the heap and stacks, which the
	// kernel cannot reclaim; the rest of the RSS is the bbolt files'
	// memory-mapped pages, page cache that is.
	anonRSS int64
}

func restartToServing(tb testing.TB, sizes restartSizes) {
	names := []string{"registry", "consent", "retention", "dsar"}
	pkgs := make([]string, len(names))
	for i, name := range names {
		pkgs[i] = fmt.Sprintf("github.com/lethe-privacy/lethe/services/%[1]s/cmd/lethe-%[1]s", name)
	}
	bins := buildBinaries(tb, pkgs...)
	nats := brokertest.Start(tb)
	root := tb.TempDir()

	deps := map[string]*deployable{}
	for i, name := range names {
		d := &deployable{name: name, bin: bins[pkgs[i]], data: filepath.Join(root, name), addr: freeAddr(tb), hAddr: freeAddr(tb)}
		deps[name] = d
	}
	deps["consent"].health, deps["dsar"].health = consent.ServiceName, dsar.ServiceName
	deps["retention"].health, deps["registry"].health = retention.ServiceName, registry.ServiceName
	for _, d := range deps {
		d.args = []string{"--addr", d.addr, "--health-addr", d.hAddr, "--data", d.data, "--nats-url", nats.ClientURL(),
			"--registry-addr", deps["registry"].addr, "--metrics-addr", "", "--drain-delay", "0s"}
		if d.name == "dsar" {
			d.args = append(d.args, "--consent-addr", deps["consent"].addr, "--retention-addr", deps["retention"].addr)
		}
	}
	for _, name := range names {
		d := deps[name]
		d.proc = startProcess(tb, d.bin, d.args...)
		waitServing(tb, d.hAddr, []string{d.health}, d.proc)
	}
	conns := map[string]*grpc.ClientConn{}
	for name, d := range deps {
		conn, err := dialTest(d.addr)
		if err != nil {
			tb.Fatal(err)
		}
		tb.Cleanup(func() { _ = conn.Close() })
		conns[name] = conn
	}

	files := applyExamples(tb, deps)
	started := time.Now()
	l := &loader{tb: tb, files: files, conns: conns}
	l.consent(deps["consent"], sizes.consentRecords)
	l.retention(deps["retention"], sizes.subjects)
	l.dsar(deps["dsar"], sizes.dsars)
	l.registry(deps["registry"], sizes.systems)
	tb.Logf("stores loaded in %s", time.Since(started).Round(time.Second))

	for _, name := range names {
		d := deps[name]
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		var err error
		d.baseline, err = d.probe(ctx, conns[name])
		cancel()
		if err != nil {
			tb.Fatalf("%s: first call before any restart: %v", name, err)
		}
		tb.Logf("%s: %s; files %s", name, d.baseline, fileSizes(d.data))
	}

	results := map[string]map[string][]startMeasure{}
	for _, name := range names {
		d := deps[name]
		results[name] = map[string][]startMeasure{}
		for _, kind := range restartKinds {
			for range sizes.runs {
				switch kind.name {
				case "clean":
					d.proc.stop(tb)
				case "cold":
					d.proc.stop(tb)
					dropPageCache(tb, d.data)
				case "kill9":
					killWhileWriting(tb, d, conns[name])
				}
				m := measureStart(tb, d)
				results[name][kind.name] = append(results[name][kind.name], m)
			}
		}
	}
	for _, d := range deps {
		d.proc.stop(tb)
	}
	opens := map[string][2]time.Duration{}
	for _, name := range names {
		opens[name] = openTimes(tb, deps[name].data)
	}

	// The same binaries on empty stores, against a NATS server of their
	// own (the loaded services' durable consumers are not theirs to read):
	// what the data costs.
	empty := brokertest.Start(tb)
	for _, name := range names {
		d := *deps[name]
		d.data = filepath.Join(root, "empty", name)
		d.args = slices.Clone(d.args)
		for i := range d.args {
			switch d.args[i] {
			case deps[name].data:
				d.args[i] = d.data
			case nats.ClientURL():
				d.args[i] = empty.ClientURL()
			}
		}
		d.probe, d.baseline = nil, ""
		for range sizes.runs {
			m := measureStart(tb, &d)
			results[name]["empty"] = append(results[name]["empty"], m)
			d.proc.stop(tb)
		}
	}

	report := restartReport(sizes, names, results, opens, deps)
	tb.Log("\n" + report)
	if *restartReportFile != "" {
		if err := os.WriteFile(*restartReportFile, []byte(report), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
}

// applyExamples applies the five example tenants with the lethe CLI, in
// this process, against the four services, and returns the files.
func applyExamples(tb testing.TB, deps map[string]*deployable) []*tenantfile.File {
	paths, err := filepath.Glob(filepath.Join(examplesDir, "*.yaml"))
	if err != nil || len(paths) != 5 {
		tb.Fatalf("example tenants: %v %v", paths, err)
	}
	// A config file of no contexts: the flags name every address.
	config := filepath.Join(tb.TempDir(), "config")
	if err := os.WriteFile(config, []byte("contexts: []\n"), 0o600); err != nil {
		tb.Fatal(err)
	}
	var files []*tenantfile.File
	for _, path := range paths {
		args := []string{"apply", "-f", path, "--registry-addr", deps["registry"].addr, "--consent-addr", deps["consent"].addr,
			"--dsar-addr", deps["dsar"].addr, "--retention-addr", deps["retention"].addr, "--config", config}
		var out, errOut bytes.Buffer
		// The consent, DSAR and retention services learn a new tenant from
		// the stream; apply refuses what they do not know yet, and is
		// idempotent, so it is run again until it succeeds.
		eventually.Poll{Timeout: time.Minute, Interval: 200 * time.Millisecond}.Succeeds(tb, "lethe apply -f "+path, func() error {
			out.Reset()
			errOut.Reset()
			code := run(args, &out, &errOut)
			if code == exitUsage {
				tb.Fatalf("lethe apply -f %s: exit %d\n%s%s", path, code, out.String(), errOut.String())
			}
			if code != exitOK {
				return fmt.Errorf("exit %d\n%s%s", code, out.String(), errOut.String())
			}
			return nil
		})
		f, err := tenantfile.Read(path)
		if err != nil {
			tb.Fatal(err)
		}
		files = append(files, f)
	}
	return files
}

// loader fills the stores through the services' gRPC APIs.
type loader struct {
	tb    testing.TB
	files []*tenantfile.File
	conns map[string]*grpc.ClientConn
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and fails the
// benchmark on the first error; it logs progress every 15 seconds.
func (l *loader) parallel(what string, n, workers int, fn func(ctx context.Context, i int) error) {
	l.tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var next, done atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	started := time.Now()
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				callCtx, stop := context.WithTimeout(ctx, time.Minute)
				err := fn(callCtx, i)
				stop()
				if err != nil {
					once.Do(func() { firstErr = fmt.Errorf("%s %d: %w", what, i, err); cancel() })
					return
				}
				done.Add(1)
			}
		})
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	for waiting := true; waiting; {
		select {
		case <-finished:
			waiting = false
		case <-tick.C:
			l.tb.Logf("%s: %d of %d after %s", what, done.Load(), n, time.Since(started).Round(time.Second))
		}
	}
	if firstErr != nil {
		l.tb.Fatal(firstErr)
	}
	elapsed := time.Since(started)
	l.tb.Logf("%s: %d in %s (%.0f/s)", what, n, elapsed.Round(time.Millisecond), float64(n)/elapsed.Seconds())
}

// bannerTenant is a tenant whose banner shows its consent purposes.
type bannerTenant struct {
	id    string
	shown []string
}

// consent loads at least records consent records as banner decisions of
// visitors of the example tenants that ask for consent: seven in ten accept
// all, two reject all, one accepts the first half. A decision makes one
// record per purpose shown, in one transaction, as a site's banner does.
func (l *loader) consent(d *deployable, records int) {
	var tenants []bannerTenant
	for _, f := range l.files {
		t := bannerTenant{id: f.Tenant.TenantId}
		for _, p := range f.Purposes {
			if p.LegalBasis == commonv1.LegalBasis_LEGAL_BASIS_CONSENT && !p.Necessary {
				t.shown = append(t.shown, p.PurposeId)
			}
		}
		if len(t.shown) > 0 {
			tenants = append(tenants, t)
		}
	}
	if len(tenants) == 0 {
		l.tb.Fatal("no example tenant asks for consent")
	}
	// Decision i goes to tenant i mod len(tenants); count how many
	// decisions make the records asked for.
	decisions, made := 0, 0
	for made < records {
		made += len(tenants[decisions%len(tenants)].shown)
		decisions++
	}
	client := consentv1.NewConsentServiceClient(l.conns["consent"])
	choice := func(i int) consentv1.BannerChoice {
		switch i % 10 {
		case 7, 8:
			return consentv1.BannerChoice_BANNER_CHOICE_REJECT_ALL
		case 9:
			return consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED
		}
		return consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL
	}
	l.parallel(fmt.Sprintf("consent: banner decisions (%d records)", made), decisions, 32, func(ctx context.Context, i int) error {
		t := tenants[i%len(tenants)]
		req := &consentv1.RecordBannerDecisionRequest{RequestId: fmt.Sprintf("load-banner-%08d", i), TenantId: t.id,
			SubjectId: fmt.Sprintf("visitor-%08d", i), Choice: choice(i), ShownPurposeIds: t.shown,
			Evidence: &consentv1.EvidenceInput{IpAddress: "198.51.100.7", UserAgent: "Mozilla/5.0"}}
		if req.Choice == consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED {
			req.SelectedPurposeIds = t.shown[:(len(t.shown)+1)/2]
		}
		_, err := client.RecordBannerDecision(ctx, req)
		return err
	})
	t0 := tenants[0]
	d.probe = func(ctx context.Context, conn *grpc.ClientConn) (string, error) {
		resp, err := consentv1.NewConsentServiceClient(conn).Check(ctx, &consentv1.CheckRequest{TenantId: t0.id, SubjectId: "visitor-00000000", PurposeId: t0.shown[0]})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Check %s visitor-00000000 %s: allowed=%v %s", t0.id, t0.shown[0], resp.Decision.GetAllowed(), resp.Decision.GetReason()), nil
	}
	// kill -9 interrupts withdrawals of accepted consents: each commits an
	// event to the outbox and opens tasks for the tenant's systems.
	d.write = func(ctx context.Context, conn *grpc.ClientConn, i int) error {
		visitor := 10*(i/7) + i%7 // decisions 0–6 of every ten accepted all
		t := tenants[visitor%len(tenants)]
		_, err := consentv1.NewConsentServiceClient(conn).RecordConsent(ctx, &consentv1.RecordConsentRequest{
			RequestId: fmt.Sprintf("kill-withdraw-%08d", i), TenantId: t.id, SubjectId: fmt.Sprintf("visitor-%08d", visitor),
			PurposeId: t.shown[len(t.shown)-1], Action: consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW,
			Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
		return err
	}
}

// retention tracks subjects over the example tenants: COLLECTED signals
// for a category each tenant's rules govern, dated within the last hour
// (so that no subject falls due while the services restart), in batches
// of 1,000 through RecordSignals.
func (l *loader) retention(d *deployable, subjects int) {
	type tracked struct{ tenant, category string }
	var tenants []tracked
	for _, f := range l.files {
		for _, r := range f.Rules {
			if id := r.GetCategory().GetId(); id != "" {
				tenants = append(tenants, tracked{f.Tenant.TenantId, id})
				break
			}
		}
	}
	if len(tenants) == 0 {
		l.tb.Fatal("no example tenant has a retention rule with a category")
	}
	const batch = 1000
	client := retentionv1.NewRetentionServiceClient(l.conns["retention"])
	now := time.Now()
	signals := func(tenant tracked, lo, hi int, kind retentionv1.SignalKind) []*retentionv1.Signal {
		out := make([]*retentionv1.Signal, 0, hi-lo)
		for s := lo; s < hi; s++ {
			out = append(out, &retentionv1.Signal{SubjectId: fmt.Sprintf("subject-%08d", s), Kind: kind,
				Categories: []*commonv1.DataCategory{{Id: tenant.category}}, OccurredAt: timestamppb.New(now.Add(-time.Duration(s%3600) * time.Second))})
		}
		return out
	}
	batches := (subjects + batch - 1) / batch
	l.parallel(fmt.Sprintf("retention: COLLECTED signals in batches of %d (%d subjects)", batch, subjects), batches, 4, func(ctx context.Context, i int) error {
		// Batch i holds subjects [i*batch, ...) of tenant i mod len.
		t := tenants[i%len(tenants)]
		_, err := client.RecordSignals(ctx, &retentionv1.RecordSignalsRequest{RequestId: fmt.Sprintf("load-signals-%06d", i), TenantId: t.tenant,
			Signals: signals(t, i*batch, min((i+1)*batch, subjects), retentionv1.SignalKind_SIGNAL_KIND_COLLECTED)})
		return err
	})
	t0 := tenants[0]
	d.probe = func(ctx context.Context, conn *grpc.ClientConn) (string, error) {
		resp, err := retentionv1.NewRetentionServiceClient(conn).ExplainSubject(ctx, &retentionv1.ExplainSubjectRequest{TenantId: t0.tenant, SubjectId: "subject-00000000"})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("ExplainSubject %s subject-00000000: %d verdicts", t0.tenant, len(resp.Verdicts)), nil
	}
	// The journal's applier, which runs after the service serves, folds
	// signals into subjects; wait for the last batch to be applied so the
	// restarts start from a settled store.
	last := batches - 1
	lt := tenants[last%len(tenants)]
	l.eventually("retention: the last batch applied", func(ctx context.Context) error {
		resp, err := client.ExplainSubject(ctx, &retentionv1.ExplainSubjectRequest{TenantId: lt.tenant, SubjectId: fmt.Sprintf("subject-%08d", subjects-1)})
		if err == nil && len(resp.Verdicts) == 0 {
			err = errors.New("no verdict yet")
		}
		return err
	})
	// kill -9 interrupts further activity signals: journaled, not yet
	// applied.
	d.write = func(ctx context.Context, conn *grpc.ClientConn, i int) error {
		t := tenants[i%len(tenants)]
		lo := (i * 100) % max(subjects-100, 1)
		_, err := retentionv1.NewRetentionServiceClient(conn).RecordSignals(ctx, &retentionv1.RecordSignalsRequest{
			RequestId: fmt.Sprintf("kill-signals-%06d", i), TenantId: t.tenant, Signals: signals(t, lo, min(lo+100, subjects), retentionv1.SignalKind_SIGNAL_KIND_ACTIVE)})
		return err
	}
}

// dsar files requests over the example tenants: erasures, each attested
// and then, for 98 in 100, cancelled (closed: its key destroyed, its
// receipt chained, as a finished request leaves it); one in 100 stays
// RECEIVED and one in 100 is verified and fanned out, its systems' tasks
// open (no system answers here).
func (l *loader) dsar(d *deployable, requests int) {
	client := dsarv1.NewDsarServiceClient(l.conns["dsar"])
	tenantOf := func(i int) string { return l.files[i%len(l.files)].Tenant.TenantId }
	var probeID atomic.Value
	l.parallel(fmt.Sprintf("dsar: requests (%d)", requests), requests, 32, func(ctx context.Context, i int) error {
		tenant := tenantOf(i)
		resp, err := client.CreateRequest(ctx, &dsarv1.CreateRequestRequest{RequestId: fmt.Sprintf("load-dsar-%08d", i), TenantId: tenant,
			SubjectId: fmt.Sprintf("subject-%08d", i), Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
			Identifiers: []*commonv1.Identifier{{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: fmt.Sprintf("subject-%08d@example.org", i)}},
			Erasure:     &dsarv1.ErasureDetails{}})
		if err != nil {
			return err
		}
		id := resp.Request.DsarId
		switch i % 100 {
		case 0:
			if i == 0 {
				probeID.Store(id)
			}
			_, err = client.AttestIdentity(ctx, &dsarv1.AttestIdentityRequest{RequestId: fmt.Sprintf("load-attest-%08d", i), TenantId: tenant, DsarId: id,
				Method: commonv1.VerificationMethod_VERIFICATION_METHOD_LOGIN_ATTESTATION, EvidenceReference: "session-1"})
		case 1:
		default:
			_, err = client.CancelRequest(ctx, &dsarv1.CancelRequestRequest{RequestId: fmt.Sprintf("load-cancel-%08d", i), TenantId: tenant, DsarId: id})
		}
		return err
	})
	id, tenant := probeID.Load().(string), tenantOf(0)
	d.probe = func(ctx context.Context, conn *grpc.ClientConn) (string, error) {
		resp, err := dsarv1.NewDsarServiceClient(conn).GetRequest(ctx, &dsarv1.GetRequestRequest{TenantId: tenant, DsarId: id})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("GetRequest %s %s: %s, %d systems", tenant, id, resp.Request.State, len(resp.Request.GetResult().GetTasks())), nil
	}
	d.write = func(ctx context.Context, conn *grpc.ClientConn, i int) error {
		_, err := dsarv1.NewDsarServiceClient(conn).CreateRequest(ctx, &dsarv1.CreateRequestRequest{RequestId: fmt.Sprintf("kill-dsar-%08d", i),
			TenantId: tenantOf(i), SubjectId: fmt.Sprintf("kill-subject-%08d", i), Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
			Identifiers: []*commonv1.Identifier{{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: fmt.Sprintf("kill-%08d@example.org", i)}},
			Erasure:     &dsarv1.ErasureDetails{}})
		return err
	}
}

// registry registers systems beside the example tenants' own, each a copy
// of one of its tenant's systems under a new id, spread over the tenants.
func (l *loader) registry(d *deployable, systems int) {
	client := registryv1.NewRegistryServiceClient(l.conns["registry"])
	l.parallel(fmt.Sprintf("registry: systems (%d)", systems), systems, 8, func(ctx context.Context, i int) error {
		f := l.files[i%len(l.files)]
		sys := proto.CloneOf(f.Systems[(i/len(l.files))%len(f.Systems)])
		sys.SystemId = fmt.Sprintf("bulk-%05d", i)
		_, err := client.RegisterSystem(ctx, &registryv1.RegisterSystemRequest{RequestId: fmt.Sprintf("load-system-%05d", i), TenantId: f.Tenant.TenantId, System: sys})
		return err
	})
	tenant := l.files[0].Tenant.TenantId
	d.probe = func(ctx context.Context, conn *grpc.ClientConn) (string, error) {
		resp, err := registryv1.NewRegistryServiceClient(conn).Route(ctx, &registryv1.RouteRequest{TenantId: tenant, AllCategories: true})
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("Route %s all categories: %d systems", tenant, len(resp.Systems)), nil
	}
	// kill -9 interrupts new categories of the first tenant: audited
	// mutations that leave routing as it was.
	d.write = func(ctx context.Context, conn *grpc.ClientConn, i int) error {
		_, err := registryv1.NewRegistryServiceClient(conn).DefineCategory(ctx, &registryv1.DefineCategoryRequest{RequestId: fmt.Sprintf("kill-category-%06d", i),
			TenantId: tenant, Category: &registryv1.Category{Id: fmt.Sprintf("user.professional.kill_%06d", i), Name: "Restart benchmark"}})
		return err
	}
}

// eventually retries fn, each call bounded by ten seconds, for up to five
// minutes.
func (l *loader) eventually(what string, fn func(ctx context.Context) error) {
	l.tb.Helper()
	eventually.Poll{Timeout: 5 * time.Minute, Interval: 200 * time.Millisecond}.Succeeds(l.tb, what, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return fn(ctx)
	})
}

// killWhileWriting runs 16 callers of d.write against the service and
// kills it with SIGKILL while they write.
func killWhileWriting(tb testing.TB, d *deployable, conn *grpc.ClientConn) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var next, ok atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				i := int(next.Add(1))
				callCtx, stop := context.WithTimeout(ctx, 5*time.Second)
				if d.write(callCtx, conn, int(time.Now().UnixNano()%1_000_000_000)+i) == nil {
					ok.Add(1)
				}
				stop()
			}
		})
	}
	// Kill once writes are landing, so that some are in flight.
	deadline := time.Now().Add(30 * time.Second)
	for ok.Load() < 50 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if ok.Load() == 0 {
		tb.Fatalf("%s: no write succeeded before kill -9\n%s", d.name, tail(d.proc.output.String(), 3000))
	}
	if err := d.proc.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		tb.Fatal(err)
	}
	<-d.proc.done
	cancel()
	wg.Wait()
}

// dropPageCache asks the kernel to drop the cached pages of the service's
// files. Only clean pages go, which after a clean stop is all of them; the
// binary's pages and the host's own cache (the disk is virtual) stay.
func dropPageCache(tb testing.TB, dir string) {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*"))
	if err != nil {
		tb.Fatal(err)
	}
	for _, path := range paths {
		f, err := os.Open(path)
		if err != nil {
			tb.Fatal(err)
		}
		err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		_ = f.Close()
		if err != nil {
			tb.Fatalf("fadvise %s: %v", path, err)
		}
	}
}

// openTimes opens the bbolt files in dir as platform/store.Open does (its
// options: the free list is not stored but rebuilt from the page tree at
// open), first with their pages in the page cache, then with them dropped,
// and returns the two total times.
func openTimes(tb testing.TB, dir string) (times [2]time.Duration) {
	tb.Helper()
	paths, err := filepath.Glob(filepath.Join(dir, "*.db"))
	if err != nil || len(paths) == 0 {
		tb.Fatalf("bbolt files in %s: %v %v", dir, paths, err)
	}
	for i := range times {
		if i == 1 {
			dropPageCache(tb, dir)
		}
		for _, path := range paths {
			start := time.Now()
			db, err := bolt.Open(path, 0o600, &bolt.Options{NoFreelistSync: true, FreelistType: bolt.FreelistMapType})
			if err != nil {
				tb.Fatal(err)
			}
			times[i] += time.Since(start)
			if err := db.Close(); err != nil {
				tb.Fatal(err)
			}
		}
	}
	return times
}

// measureStart execs d's binary and times, from the exec, health SERVING
// under d.health on its health address and, when d has a probe, the first
// answer of the probe's call, which must equal the baseline.
func measureStart(tb testing.TB, d *deployable) startMeasure {
	tb.Helper()
	health, err := dialRetryingFast(d.hAddr)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = health.Close() }()
	api, err := dialRetryingFast(d.addr)
	if err != nil {
		tb.Fatal(err)
	}
	defer func() { _ = api.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	servingCh, callCh := make(chan polled, 1), make(chan polled, 1)
	start := time.Now()
	d.proc = startProcess(tb, d.bin, d.args...)
	go func() {
		hc := healthpb.NewHealthClient(health)
		servingCh <- poll(ctx, start, func(ctx context.Context) (string, error) {
			resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: d.health})
			if err == nil && resp.Status != healthpb.HealthCheckResponse_SERVING {
				err = fmt.Errorf("health %s", resp.Status)
			}
			return "", err
		})
	}()
	if d.probe != nil {
		go func() {
			callCh <- poll(ctx, start, func(ctx context.Context) (string, error) { return d.probe(ctx, api) })
		}()
	} else {
		callCh <- polled{}
	}
	var serving, call polled
	for got := 0; got < 2; got++ {
		select {
		case serving = <-servingCh:
		case call = <-callCh:
		case err := <-d.proc.done:
			tb.Fatalf("%s exited (%v) during start\n%s", d.name, err, tail(d.proc.output.String(), 3000))
		}
	}
	if serving.err != nil || call.err != nil {
		tb.Fatalf("%s: serving %v, first call %v\n%s", d.name, serving.err, call.err, tail(d.proc.output.String(), 3000))
	}
	if call.answer != d.baseline {
		tb.Fatalf("%s answers after the restart\n  %s\nbut before it\n  %s", d.name, call.answer, d.baseline)
	}
	pid := d.proc.cmd.Process.Pid
	return startMeasure{serving: serving.at, firstCall: call.at, peakRSS: statusKiB(tb, pid, "VmHWM"), anonRSS: statusKiB(tb, pid, "RssAnon")}
}

// polled is when a polled call first succeeded, since the exec, and its
// answer; or the last error when it never did.
type polled struct {
	at     time.Duration
	answer string
	err    error
}

// poll calls fn every 2 ms until it succeeds.
func poll(ctx context.Context, start time.Time, fn func(ctx context.Context) (string, error)) (out polled) {
	for {
		callCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
		answer, err := fn(callCtx)
		cancel()
		if err == nil {
			out.at, out.answer = time.Since(start), answer
			return out
		}
		if ctx.Err() != nil {
			out.err = err
			return out
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// fileSizes lists the data folder's files and their sizes.
func fileSizes(dir string) string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, e := range entries {
		if info, err := e.Info(); err == nil && !e.IsDir() {
			parts = append(parts, fmt.Sprintf("%s %s", e.Name(), mib(info.Size())))
		}
	}
	return strings.Join(parts, ", ")
}

func mib(bytes int64) string {
	if m := float64(bytes) / (1 << 20); m < 10 {
		return fmt.Sprintf("%.1f MiB", m)
	}
	return fmt.Sprintf("%.0f MiB", float64(bytes)/(1<<20))
}

// restartReport is the results as a Markdown table: per service and kind of
// restart, the median and maximum of the time to SERVING and to the first
// answered call, and the largest peak RSS.
func restartReport(sizes restartSizes, names []string, results map[string]map[string][]startMeasure, opens map[string][2]time.Duration,
	deps map[string]*deployable) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Stores: %d consent records, %d DSARs, %d retention subjects, %d systems beside the examples'; %d starts of each kind.\n\n",
		sizes.consentRecords, sizes.dsars, sizes.subjects, sizes.systems, sizes.runs)
	b.WriteString("| service | restart | SERVING median | max | first call median | max | peak RSS | anon RSS |\n|---|---|---:|---:|---:|---:|---:|---:|\n")
	kinds := []string{"empty"}
	for _, k := range restartKinds {
		kinds = append(kinds, k.name)
	}
	for _, name := range names {
		for _, kind := range kinds {
			ms := results[name][kind]
			if len(ms) == 0 {
				continue
			}
			serving, call := make([]time.Duration, len(ms)), make([]time.Duration, len(ms))
			var rss, anon int64
			for i, m := range ms {
				serving[i], call[i] = m.serving, m.firstCall
				rss, anon = max(rss, m.peakRSS), max(anon, m.anonRSS)
			}
			first := "—"
			if kind != "empty" {
				first = fmt.Sprintf("%s | %s", ms2(median(call)), ms2(slices.Max(call)))
			} else {
				first = "— | —"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %.0f MiB | %.0f MiB |\n", name, kind, ms2(median(serving)), ms2(slices.Max(serving)), first,
				float64(rss)/1024, float64(anon)/1024)
		}
	}
	b.WriteString("\nOpening the bbolt files alone, as platform/store opens them (the free list rebuilt from the page tree), services stopped:\n\n")
	b.WriteString("| service | files | open, pages cached | open, pages dropped |\n|---|---|---:|---:|\n")
	for _, name := range names {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, fileSizes(deps[name].data), ms2(opens[name][0]), ms2(opens[name][1]))
	}
	b.WriteString("\nKinds: empty = a fresh data folder;")
	for _, k := range restartKinds {
		fmt.Fprintf(&b, " %s = %s;", k.name, k.what)
	}
	b.WriteString("\nFirst calls: ")
	var probes []string
	for _, name := range names {
		probes = append(probes, deps[name].baseline)
	}
	b.WriteString(strings.Join(probes, "; ") + ".\n")
	return b.String()
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ms2(d time.Duration) string {
	if d >= 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}
