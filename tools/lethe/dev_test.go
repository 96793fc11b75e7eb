package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/consent"
)

// buildBinaries builds commands of this workspace and returns their paths
// by package, with the race detector when the tests run with it (so the
// build reuses the test build's cache). A command is built once per test
// binary, into a folder TestMain removes: linking is the slow part, and
// several tests run the same deployables.
func buildBinaries(t testing.TB, pkgs ...string) map[string]string {
	t.Helper()
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "lethe-bin-")
		if err != nil {
			t.Fatal(err)
		}
		built.dir, built.bins = dir, map[string]string{}
	}
	var missing []string
	for _, pkg := range pkgs {
		if _, ok := built.bins[pkg]; !ok {
			missing = append(missing, pkg)
		}
	}
	if len(missing) > 0 {
		args := []string{"build", "-o", built.dir + string(filepath.Separator)}
		if raceEnabled {
			args = append(args, "-race")
		}
		cmd := exec.Command("go", append(args, missing...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", missing, err, out)
		}
		for _, pkg := range missing {
			name := filepath.Base(pkg)
			if pkg == "." {
				name = "lethe"
			}
			built.bins[pkg] = filepath.Join(built.dir, name)
		}
	}
	bins := map[string]string{}
	for _, pkg := range pkgs {
		bins[pkg] = built.bins[pkg]
	}
	return bins
}

// built are the commands buildBinaries built, in dir.
var built struct {
	mu   sync.Mutex
	dir  string
	bins map[string]string
}

// process is a running Lethe binary.
type process struct {
	cmd    *exec.Cmd
	output *logbuf.Buffer
	done   chan error
}

func startProcess(t testing.TB, bin string, args ...string) *process {
	t.Helper()
	p := &process{cmd: exec.Command(bin, args...), output: &logbuf.Buffer{}, done: make(chan error, 1)}
	p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// stop sends SIGTERM and expects a clean exit.
func (p *process) stop(t testing.TB) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, p.output)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no exit 15s after SIGTERM\n%s", p.output)
	}
}

// waitServing polls health until every name is SERVING.
func waitServing(t testing.TB, addr string, names []string, p *process) *grpc.ClientConn {
	t.Helper()
	conn, err := dialRetryingFast(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	health := healthpb.NewHealthClient(conn)
	for _, name := range names {
		eventually.Poll{Timeout: 60 * time.Second, Interval: 20 * time.Millisecond}.Succeeds(t, name+" is SERVING", func() error {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := health.Check(ctx, &healthpb.HealthCheckRequest{Service: name})
			cancel()
			if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
				return nil
			}
			select {
			case exitErr := <-p.done:
				t.Fatalf("process exited (%v) before %s was SERVING\n%s", exitErr, name, p.output)
			default:
			}
			return fmt.Errorf("%v, %v\n%s", resp, err, p.output)
		})
	}
	return conn
}

// dialRetryingFast connects in plaintext to a process that may not listen
// yet, retrying the connection every few milliseconds instead of grpc's
// default backoff of a second, so that start-up benchmarks measure Lethe
// rather than the probe.
func dialRetryingFast(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 5 * time.Millisecond, Multiplier: 1, MaxDelay: 5 * time.Millisecond},
			MinConnectTimeout: time.Second,
		}))
}

// TestDevServesAllFourAndKeepsItsData runs the README's command as a
// process: every service and the consent read replica answer health,
// reflection lists them, NATS takes events into the platform stream, and
// a restart on the same data folder finds the stream's events, the
// services' files and the replica's snapshot again.
func TestDevServesAllFourAndKeepsItsData(t *testing.T) {
	bin := buildBinaries(t, ".")["."]
	data := t.TempDir()
	grpcAddr, natsAddr, replicaAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	args := []string{"dev", "--data", data, "--addr", grpcAddr, "--nats-addr", natsAddr, "--metrics-addr", "", "--http-addr", "", "--public-addr", "",
		"--replica-addr", replicaAddr, "--replica-http-addr", "off"}

	p := startProcess(t, bin, args...)
	conn := waitServing(t, grpcAddr, healthNames, p)
	waitServing(t, replicaAddr, []string{consent.ServiceName}, p)
	if out := p.output.String(); !strings.Contains(out, "Lethe is running") || !strings.Contains(out, grpcAddr) {
		t.Errorf("startup output does not print the endpoints:\n%s", out)
	}
	assertReflectionLists(t, conn, "grpc.health.v1.Health")

	// An event published into the platform stream must survive a restart.
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := js.Publish(ctx, "lethe.clio.erasure.requested", []byte("probe"), jetstream.WithMsgID("probe-1")); err != nil {
		t.Fatalf("publish into the platform stream: %v", err)
	}
	nc.Close()
	p.stop(t)

	// The replica's local copy of the snapshot it restored, which the
	// next start resumes from.
	for _, name := range []string{"consent.db", "dsar.db", "retention.db", "registry.db", "consent-replica-s0.snapshot"} {
		if _, err := os.Stat(filepath.Join(data, name)); err != nil {
			t.Errorf("bbolt file %s: %v", name, err)
		}
	}

	p = startProcess(t, bin, args...)
	waitServing(t, grpcAddr, healthNames, p)
	waitServing(t, replicaAddr, []string{consent.ServiceName}, p)
	nc, err = nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err = jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(ctx, contract.StreamName)
	if err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
	msg, err := stream.GetLastMsgForSubject(ctx, "lethe.clio.erasure.requested")
	if err != nil || string(msg.Data) != "probe" {
		t.Fatalf("event after restart = %v, %v; want the probe published before", msg, err)
	}
	p.stop(t)
}

func assertReflectionLists(t *testing.T, conn *grpc.ClientConn, want string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		names = append(names, s.Name)
	}
	if !strings.Contains(strings.Join(names, " "), want) {
		t.Fatalf("reflection lists %v, want %s among them", names, want)
	}
}

// TestServiceDeployablesUseExternalNATS runs each service's own binary
// against a NATS server that lethe dev provides, as a production
// deployment runs them against a cluster.
func TestServiceDeployablesUseExternalNATS(t *testing.T) {
	names := []string{"consent", "dsar", "retention", "registry"}
	pkgs := []string{"."}
	for _, name := range names {
		pkgs = append(pkgs, fmt.Sprintf("github.com/lethe-privacy/lethe/services/%[1]s/cmd/lethe-%[1]s", name))
	}
	bins := buildBinaries(t, pkgs...)

	natsAddr, devAddr := freeAddr(t), freeAddr(t)
	dev := startProcess(t, bins["."], "dev", "--data", t.TempDir(), "--addr", devAddr, "--nats-addr", natsAddr, "--metrics-addr", "", "--http-addr", "", "--public-addr", "", "--replica-addr", "off")
	waitServing(t, devAddr, healthNames, dev)

	for i, name := range names {
		t.Run(name, func(t *testing.T) {
			addr := freeAddr(t)
			p := startProcess(t, bins[pkgs[i+1]], "--addr", addr, "--data", t.TempDir(), "--nats-url", "nats://"+natsAddr,
				"--metrics-addr", "", "--drain-delay", "0s")
			waitServing(t, addr, []string{"lethe." + name + ".v1." + serviceNames[name]}, p)
			p.stop(t)
		})
	}
	dev.stop(t)
}

var serviceNames = map[string]string{
	"consent": "ConsentService", "dsar": "DsarService", "retention": "RetentionService", "registry": "RegistryService",
}

// freeAddr returns a loopback address with a port nothing listens on.
func freeAddr(t testing.TB) string {
	return fmt.Sprintf("127.0.0.1:%d", brokertest.FreePort(t))
}

func TestDevRefusesTheProductionProfile(t *testing.T) {
	for _, args := range [][]string{
		{"--profile", "production"},
		{"--tls-cert", "server.crt", "--tls-key", "server.key"},
	} {
		if _, err := parseDevFlags(args, io.Discard); err == nil || !strings.Contains(err.Error(), "development profile only") {
			t.Errorf("lethe dev %v: %v, want a refusal naming the development profile", args, err)
		}
	}
	if _, err := parseDevFlags(nil, io.Discard); err != nil {
		t.Fatalf("lethe dev with its defaults: %v", err)
	}
}

// With --dsar-dev-codes, lethe dev sends DSAR verification codes to its
// own log, so a developer can play the subject end to end.
func TestDevIssuesVerificationCodesToItsLog(t *testing.T) {
	bin := buildBinaries(t, ".")["."]
	grpcAddr, natsAddr := freeAddr(t), freeAddr(t)
	p := startProcess(t, bin, "dev", "--data", t.TempDir(), "--addr", grpcAddr, "--nats-addr", natsAddr, "--metrics-addr", "", "--http-addr", "", "--public-addr", "", "--replica-addr", "off", "--dsar-dev-codes")
	defer p.stop(t)
	conn := waitServing(t, grpcAddr, healthNames, p)
	if _, err := registryv1.NewRegistryServiceClient(conn).CreateTenant(context.Background(), &registryv1.CreateTenantRequest{
		RequestId: "t1", Tenant: &registryv1.Tenant{TenantId: "cleura", DisplayName: "Cleura"}}); err != nil {
		t.Fatal(err)
	}
	lethe := func(args ...string) (map[string]any, error) {
		out, err := exec.Command(bin, append(args, "--addr", grpcAddr, "-o", "json")...).CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("%v: %w\n%s", args, err, out)
		}
		var resp map[string]any
		if err := json.Unmarshal(out, &resp); err != nil {
			return nil, fmt.Errorf("%v: %w\n%s", args, err, out)
		}
		req, _ := resp["request"].(map[string]any)
		return req, nil
	}
	var req map[string]any
	// The DSAR service learns tenants from the registry's events.
	eventually.Poll{Interval: 50 * time.Millisecond}.Succeeds(t, "dsar create for the new tenant", func() error {
		var err error
		req, err = lethe("dsar", "create", "--tenant", "cleura", "--subject", "cust-7", "--type", "erasure", "--email", "ada@example.com")
		return err
	})
	id, _ := req["dsarId"].(string)
	if _, err := lethe("dsar", "verify", "--tenant", "cleura", "--id", id, "--start"); err != nil {
		t.Fatal(err)
	}
	code := regexp.MustCompile(`request=` + regexp.QuoteMeta(id) + `.*code=(\d{6})`).FindStringSubmatch(p.output.String())
	if code == nil {
		t.Fatalf("no code for %s in the log:\n%s", id, p.output.String())
	}
	verified, err := lethe("dsar", "verify", "--tenant", "cleura", "--id", id, "--code", code[1])
	if err != nil {
		t.Fatal(err)
	}
	if verified["state"] != "REQUEST_STATE_IN_PROGRESS" && verified["state"] != "REQUEST_STATE_COMPLETED" {
		t.Fatalf("after the logged code the request is %v", verified["state"])
	}
}

// TestDevServesAConsentReplica: lethe dev runs a consent read replica on a
// listener of its own, as production runs them beside the writer. A
// Check on the replica with the revision a grant on the writer returned
// answers allowed (never the denial before it), also over the replica's
// HTTP/JSON; a write sent to the replica is refused READ_ONLY_REPLICA.
func TestDevServesAConsentReplica(t *testing.T) {
	bin := buildBinaries(t, ".")["."]
	grpcAddr, replicaAddr, replicaHTTP := freeAddr(t), freeAddr(t), freeAddr(t)
	started := time.Now()
	p := startProcess(t, bin, "dev", "--data", t.TempDir(), "--addr", grpcAddr, "--nats-addr", freeAddr(t), "--metrics-addr", "",
		"--http-addr", "", "--public-addr", "", "--replica-addr", replicaAddr, "--replica-http-addr", replicaHTTP)
	defer p.stop(t)
	conn := waitServing(t, grpcAddr, healthNames, p)
	writersReady := time.Since(started)
	replicaConn := waitServing(t, replicaAddr, []string{consent.ServiceName}, p)
	t.Logf("the four services served %s after exec, the replica %s", writersReady.Round(time.Millisecond), time.Since(started).Round(time.Millisecond))
	if out := p.output.String(); !strings.Contains(out, "replica  "+replicaAddr) || !strings.Contains(out, "http://"+replicaHTTP) {
		t.Errorf("lethe dev does not print the replica's addresses:\n%s", out)
	}

	ctx := context.Background()
	writer, replica := consentv1.NewConsentServiceClient(conn), consentv1.NewConsentServiceClient(replicaConn)
	servertest.CreateTenant(t, registryv1.NewRegistryServiceClient(conn), &registryv1.CreateTenantRequest{RequestId: "t1",
		Tenant: &registryv1.Tenant{TenantId: "clio", DisplayName: "Clio"}}, func() error {
		_, err := writer.ListPurposes(ctx, &consentv1.ListPurposesRequest{TenantId: "clio"})
		return err
	})
	put, err := writer.PutPurpose(ctx, &consentv1.PutPurposeRequest{RequestId: "p1", TenantId: "clio",
		Purpose: &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT}})
	if err != nil {
		t.Fatal(err)
	}
	check := func(rev uint64) *consentv1.CheckResponse {
		t.Helper()
		var resp *consentv1.CheckResponse
		// A replica that has not applied rev yet refuses REPLICA_BEHIND
		// rather than answer from before it: a caller asks again.
		eventually.Succeeds(t, fmt.Sprintf("a Check on the replica at revision %d", rev), func() error {
			var err error
			resp, err = replica.Check(ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "s-1", PurposeId: "newsletter", MinRevision: rev})
			if err != nil && apierror.ReasonOf(err) != apierror.ReasonReplicaBehind {
				t.Fatalf("Check on the replica at revision %d: %v", rev, err)
			}
			return err
		})
		if resp.Revision < rev {
			t.Fatalf("the replica answered at revision %d, asked for at least %d", resp.Revision, rev)
		}
		return resp
	}
	if before := check(put.Revision); before.Decision.Allowed {
		t.Fatalf("before the grant the replica answers %v, want denied", before.Decision)
	}
	grant, err := writer.RecordConsent(ctx, &consentv1.RecordConsentRequest{RequestId: "c1", TenantId: "clio", SubjectId: "s-1",
		PurposeId: "newsletter", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM})
	if err != nil {
		t.Fatal(err)
	}
	if after := check(grant.Revision); !after.Decision.Allowed || after.Decision.BasisId != grant.Record.RecordId {
		t.Fatalf("with the grant's revision %d the replica answers %v, want allowed on record %s", grant.Revision, after.Decision, grant.Record.RecordId)
	}

	// The README's HTTP/JSON Check on the replica, with the revision as
	// JSON writes a uint64: a string.
	body := fmt.Sprintf(`{"tenantId":"clio","subjectId":"s-1","purposeId":"newsletter","minRevision":"%d"}`, grant.Revision)
	resp, err := http.Post("http://"+replicaHTTP+"/lethe.consent.v1.ConsentService/Check", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var answer struct {
		Decision struct {
			Allowed bool   `json:"allowed"`
			Reason  string `json:"reason"`
		} `json:"decision"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil || resp.StatusCode != http.StatusOK || !answer.Decision.Allowed {
		t.Fatalf("HTTP Check on the replica: %s, %+v, %v", resp.Status, answer, err)
	}

	// A write on the replica is refused; the writer is where it goes.
	_, err = replica.RecordConsent(ctx, &consentv1.RecordConsentRequest{RequestId: "c2", TenantId: "clio", SubjectId: "s-1",
		PurposeId: "newsletter", Action: consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM})
	if status.Code(err) != codes.FailedPrecondition || apierror.ReasonOf(err) != apierror.ReasonReadOnlyReplica {
		t.Fatalf("RecordConsent on the replica: %v, want FAILED_PRECONDITION %s", err, apierror.ReasonReadOnlyReplica)
	}
}
