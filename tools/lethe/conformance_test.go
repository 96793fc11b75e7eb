package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
)

// The conformance suite: one test per company of SEEDS.md, each driving a
// running `lethe dev` only through public surfaces — the lethe CLI, gRPC
// and NATS — and checking what SEEDS.md lists for the company. The five
// share one platform (one binary build, one process), each on its own
// tenant, so the suite stays within seconds once built.

// examplesDir holds the five example tenants.
const examplesDir = "../../examples/tenants"

type platform struct {
	dir        string // temporary folder: data, config
	lethe      string // the lethe binary
	newsletter string // sdk/examples/newsletter
	addr, nats string
	public     publicAddr // the public consent endpoint
	config     string     // a context file naming addr and nats
	cmd        *exec.Cmd
	output     *logbuf.Buffer
	conn       *grpc.ClientConn
}

var shared struct {
	once sync.Once
	p    *platform
	err  error
}

func TestMain(m *testing.M) {
	code := m.Run()
	if p := shared.p; p != nil {
		if p.conn != nil {
			_ = p.conn.Close()
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
		}
		_ = os.RemoveAll(p.dir)
	}
	if built.dir != "" {
		_ = os.RemoveAll(built.dir)
	}
	os.Exit(code)
}

// newsletterPkg is the SDK's example system, Clio's newsletter.
const newsletterPkg = "github.com/lethe-privacy/lethe/sdk/examples/newsletter"

// sharedPlatform starts one lethe dev for the whole test run, on the
// binaries buildBinaries builds once per test binary.
func sharedPlatform(t *testing.T) *platform {
	t.Helper()
	bins := buildBinaries(t, ".", newsletterPkg)
	shared.once.Do(func() {
		p := &platform{output: &logbuf.Buffer{}}
		shared.p = p
		var err error
		if p.dir, err = os.MkdirTemp("", "lethe-conformance-"); err != nil {
			shared.err = err
			return
		}
		p.lethe, p.newsletter = bins["."], bins[newsletterPkg]
		p.addr, p.nats, p.public = freeAddr(t), freeAddr(t), publicAddr(freeAddr(t))
		p.config = filepath.Join(p.dir, "config")
		config := fmt.Sprintf("currentContext: conformance\ncontexts:\n  - name: conformance\n    address: %s\n    nats: nats://%s\n", p.addr, p.nats)
		if shared.err = os.WriteFile(p.config, []byte(config), 0o600); shared.err != nil {
			return
		}
		p.cmd = exec.Command(p.lethe, "dev", "--data", filepath.Join(p.dir, "data"), "--addr", p.addr, "--nats-addr", p.nats, "--metrics-addr", "", "--http-addr", "", "--public-addr", string(p.public), "--replica-addr", "off")
		p.cmd.Stdout, p.cmd.Stderr = p.output, p.output
		shared.err = p.cmd.Start()
	})
	if shared.err != nil {
		t.Fatal(shared.err)
	}
	p := shared.p
	if p.conn == nil {
		proc := &process{cmd: p.cmd, output: p.output, done: make(chan error, 1)}
		p.conn = waitServingShared(t, p.addr, proc)
	}
	return p
}

// waitServingShared waits for health like waitServing, without tying the
// connection to one test's cleanup.
func waitServingShared(t *testing.T, addr string, proc *process) *grpc.ClientConn {
	t.Helper()
	var conn *grpc.ClientConn
	t.Run("platform up", func(t *testing.T) {
		conn = waitServing(t, addr, healthNames, proc)
	})
	if conn == nil {
		t.Fatalf("platform not serving\n%s", proc.output)
	}
	// waitServing closes its connection with the subtest; dial anew.
	c, err := dialTest(addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// result is one run of the CLI.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// cli runs the lethe binary against the shared platform, through the
// context file (LETHE_CONFIG), as an operator would.
func (p *platform) cli(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(p.lethe, args...)
	cmd.Env = append(os.Environ(), "LETHE_CONFIG="+p.config)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("lethe %v: %v", args, err)
	}
	return r
}

// must runs the CLI and wants the exit code.
func (p *platform) must(t *testing.T, code int, args ...string) result {
	t.Helper()
	r := p.cli(t, args...)
	if r.code != code {
		t.Fatalf("lethe %s: want exit %d\n%s", strings.Join(args, " "), code, r)
	}
	return r
}

// applyExample applies one example on its fresh tenant and checks what
// issue #8 asks of every example: apply succeeds, diff right after shows
// nothing, and export then diff shows nothing.
func (p *platform) applyExample(t *testing.T, name string) string {
	t.Helper()
	file := filepath.Join(examplesDir, name+".yaml")
	r := p.must(t, exitOK, "apply", "-f", file)
	if !strings.Contains(r.stdout, "tenant "+name+" created") {
		t.Fatalf("apply on a fresh platform should create the tenant:\n%s", r)
	}
	p.must(t, exitOK, "diff", "-f", file)
	if r := p.must(t, exitOK, "apply", "-f", file); !strings.Contains(r.stdout, "tenant "+name+" unchanged") {
		t.Fatalf("a second apply should change nothing:\n%s", r)
	}
	exported := filepath.Join(t.TempDir(), name+".yaml")
	p.must(t, exitOK, "export", "--tenant", name, "-out", exported)
	if r := p.must(t, exitOK, "diff", "-f", exported); strings.Contains(r.stdout, "~") || strings.Contains(r.stdout, "+ ") {
		t.Fatalf("diff of the export shows changes:\n%s", r)
	}
	return file
}

func (p *platform) registry() registryv1.RegistryServiceClient {
	return registryv1.NewRegistryServiceClient(p.conn)
}
func (p *platform) retention() retentionv1.RetentionServiceClient {
	return retentionv1.NewRetentionServiceClient(p.conn)
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// check asks `lethe consent check` and returns its table row and exit code.
func (p *platform) check(t *testing.T, tenant, subject, purpose string, attrs ...string) (string, int) {
	t.Helper()
	r := p.cli(t, append([]string{"consent", "check", "--tenant", tenant, "--subject", subject, "--purpose", purpose}, attrs...)...)
	if r.code != exitOK && r.code != exitNo {
		t.Fatalf("consent check: %s", r)
	}
	return r.stdout, r.code
}

// wantDecision checks a decision's exit code and reason.
func (p *platform) wantDecision(t *testing.T, tenant, subject, purpose string, allowed bool, reason string, attrs ...string) {
	t.Helper()
	out, code := p.check(t, tenant, subject, purpose, attrs...)
	if (code == exitOK) != allowed || !regexp.MustCompile(`\b`+reason+`\b`).MatchString(out) {
		t.Fatalf("check %s %s %v: want allowed=%v reason %s, got exit %d\n%s", subject, purpose, attrs, allowed, reason, code, out)
	}
	// A script reads the answer from -o json, "allowed": false included.
	out, _ = p.check(t, tenant, subject, purpose, append(attrs, "-o", "json")...)
	var resp struct {
		Decision struct {
			Allowed *bool `json:"allowed"`
		} `json:"decision"`
	}
	if err := json.Unmarshal([]byte(out), &resp); err != nil || resp.Decision.Allowed == nil || *resp.Decision.Allowed != allowed {
		t.Fatalf("check %s %s %v -o json: want \"allowed\": %v, got %s (%v)", subject, purpose, attrs, allowed, out, err)
	}
}

// dsarJSON runs a dsar command with -o json and decodes the request.
func (p *platform) dsarJSON(t *testing.T, args ...string) map[string]any {
	t.Helper()
	r := p.must(t, exitOK, append(args, "-o", "json")...)
	var resp map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &resp); err != nil {
		t.Fatalf("%v\n%s", err, r)
	}
	req, _ := resp["request"].(map[string]any)
	return req
}

// cliPoll is how the tests wait on the lethe CLI and the services behind
// it: a poll runs a command or a call, so it runs less often than the
// default.
var cliPoll = eventually.Poll{Interval: 100 * time.Millisecond}

// unless is a poll's answer: nil when ok, otherwise what was seen.
func unless(ok bool, detail string) error {
	if ok {
		return nil
	}
	return errors.New(detail)
}

// TestConformanceClio: cookie banner categories with role eligibility
// (marketing never for students), consent lifetimes of 730 days, notice
// versions where a material change requires consent again, the newsletter
// withdrawal reaching the SDK newsletter and its processor, and the US
// processors' transfers flagged.
func TestConformanceClio(t *testing.T) {
	p := sharedPlatform(t)
	file := p.applyExample(t, "clio")

	// Marketing is never allowed for a student, even after "Accept all".
	p.must(t, exitOK, "consent", "grant", "--tenant", "clio", "--subject", "stud-1", "--purpose", "cookies.marketing", "--method", "banner")
	p.wantDecision(t, "clio", "stud-1", "cookies.marketing", false, "ineligible_role", "--role", "student")
	p.must(t, exitOK, "consent", "grant", "--tenant", "clio", "--subject", "teach-1", "--purpose", "cookies.marketing", "--method", "banner")
	p.wantDecision(t, "clio", "teach-1", "cookies.marketing", true, "granted", "--role", "teacher")
	p.wantDecision(t, "clio", "teach-1", "cookies.necessary", true, "necessary")

	// Consent to a cookie category lasts 730 days.
	r := p.must(t, exitOK, "consent", "history", "--tenant", "clio", "--subject", "teach-1", "-o", "json")
	var hist struct {
		Records []struct{ RecordedAt, ExpiresAt time.Time }
	}
	if err := json.Unmarshal([]byte(r.stdout), &hist); err != nil || len(hist.Records) != 1 {
		t.Fatalf("history: %v\n%s", err, r)
	}
	if got := hist.Records[0].ExpiresAt.Sub(hist.Records[0].RecordedAt); got != 730*24*time.Hour {
		t.Fatalf("marketing cookie consent lasts %v, want 730 days", got)
	}

	// The banner from the tenant file's web: section, through the public
	// endpoint lethe dev serves (docs/web-consent.md): Danish by default,
	// and a visitor's selection on the demo page is what Check says.
	if !strings.Contains(p.output.String(), "public   http://"+string(p.public)) {
		t.Errorf("lethe dev does not print the public endpoint:\n%s", p.output)
	}
	banner := p.public.get(t, "/v1/tenants/clio/banner")
	if !strings.Contains(banner, `"language":"da"`) || !strings.Contains(banner, `"title":"Cookies på Clio"`) ||
		!strings.Contains(banner, `"id":"cookies.marketing","name":"Marketingcookies"`) {
		t.Fatalf("banner:\n%s", banner)
	}
	visitor := "conformance-visitor-0001"
	p.public.post(t, "/v1/tenants/clio/decisions", visitor, `{"requestId":"conformance-1","choice":"accept_selected",`+
		`"selected":["cookies.statistical"],"shown":[{"id":"cookies.statistical","noticeVersion":"2020-04-14"},`+
		`{"id":"cookies.marketing","noticeVersion":"2020-04-14"}]}`)
	p.wantDecision(t, "clio", "visitor:"+visitor, "cookies.statistical", true, "granted")
	p.wantDecision(t, "clio", "visitor:"+visitor, "cookies.marketing", false, "denied")

	// Both US processors' transfers are unlawful today: exit 1, named.
	r = p.must(t, exitNo, "registry", "findings", "--tenant", "clio")
	for _, want := range []string{"newsletter-sender", "TRANSFER_MECHANISM_INVALIDATED", "survey-tool", "SCC_VERSION_SUPERSEDED"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("findings lack %s:\n%s", want, r.stdout)
		}
	}

	// The newsletter (the SDK example) and its processor hear of an
	// unsubscribe made from another channel; the newsletter answers.
	data := t.TempDir()
	if out, err := exec.Command(p.newsletter, "--data", data, "--seed", "sub-42=ada@example.com").CombinedOutput(); err != nil {
		t.Fatalf("seed the newsletter: %v\n%s", err, out)
	}
	nl := startProcess(t, p.newsletter, "--data", data, "--nats-url", "nats://"+p.nats, "--tenant", "clio")
	defer nl.stop(t)
	p.must(t, exitOK, "consent", "grant", "--tenant", "clio", "--subject", "sub-42", "--purpose", "newsletter", "--method", "form")
	r = p.must(t, exitOK, "consent", "withdraw", "--tenant", "clio", "--subject", "sub-42", "--purpose", "newsletter", "--method", "email_link", "-o", "json")
	var rec struct{ Record struct{ RecordID string } }
	if err := json.Unmarshal([]byte(r.stdout), &rec); err != nil || rec.Record.RecordID == "" {
		t.Fatalf("withdraw: %v\n%s", err, r)
	}
	p.wantDecision(t, "clio", "sub-42", "newsletter", false, "withdrawn")
	cliPoll.Succeeds(t, "the newsletter applies the withdrawal", func() error {
		r := p.must(t, exitOK, "consent", "fanout", "--tenant", "clio", "--record", rec.Record.RecordID)
		ok := regexp.MustCompile(`newsletter\s+final\s+applied`).MatchString(r.stdout) &&
			strings.Contains(r.stdout, "newsletter-sender")
		return unless(ok, r.stdout+nl.output.String())
	})
	// newsletter-sender answers by hand: its operator records it, and the
	// withdrawal has then reached every system.
	p.must(t, exitOK, "consent", "complete-task", "--tenant", "clio", "--record", rec.Record.RecordID,
		"--system", "newsletter-sender", "--outcome", "applied")
	r = p.must(t, exitOK, "consent", "fanout", "--tenant", "clio", "--record", rec.Record.RecordID)
	if !regexp.MustCompile(`newsletter-sender\s+final\s+applied`).MatchString(r.stdout) || !strings.Contains(r.stdout, "complete: yes") {
		t.Fatalf("after the operator's answer:\n%s", r.stdout)
	}

	// A substantial change of the notice requires consent again: declare
	// a material version in the file; diff shows it, apply makes it so.
	changed := filepath.Join(t.TempDir(), "clio.yaml")
	src, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	// The change takes effect now: after the consents given above.
	now := time.Now().UTC().Format(time.RFC3339Nano)
	material := strings.Replace(string(src), "    directMarketing: true\n    eligibility:\n      excludedRoles: [student]\n    noticeVersions:\n      - {version: \"2020-04-14\", effectiveAt: 2020-04-14}\n",
		"    directMarketing: true\n    eligibility:\n      excludedRoles: [student]\n    noticeVersions:\n      - {version: \"2020-04-14\", effectiveAt: 2020-04-14}\n      - {version: \"2\", effectiveAt: \""+now+"\", material: true}\n", 1)
	if material == string(src) {
		t.Fatal("the test's edit of clio.yaml no longer applies")
	}
	if err := os.WriteFile(changed, []byte(material), 0o600); err != nil {
		t.Fatal(err)
	}
	r = p.must(t, exitNo, "diff", "-f", changed)
	if !strings.Contains(r.stdout, "~ purpose clio/cookies.marketing update") || !strings.Contains(r.stdout, `+   - version: "2"`) {
		t.Fatalf("diff should show the new notice version:\n%s", r)
	}
	p.must(t, exitOK, "apply", "-f", changed)
	p.wantDecision(t, "clio", "teach-1", "cookies.marketing", false, "reconsent_required", "--role", "teacher")

	// A withdrawal of a purpose clio does not have is refused at intake,
	// naming it: the consent service would refuse its fan-out at every
	// attempt (how dsar show and list tell a failing fan-out is
	// TestDsarShowsAFailingFanout's).
	r = p.must(t, exitRefused, "dsar", "create", "--tenant", "clio", "--subject", "sub-43", "--type", "consent_withdrawal",
		"--purposes", "cookies.marketing,no-such-purpose")
	if !strings.Contains(r.stderr, "withdrawal.purpose_ids[1]") || !strings.Contains(r.stderr, "no purpose") || !strings.Contains(r.stderr, "no-such-purpose") {
		t.Fatalf("dsar create of a withdrawal of an unknown purpose should name it:\n%s", r)
	}
}

// TestConformanceClickLearn: legal bases per processing in the records of
// processing, marketing only after opt-in, carriers as recipients, Google
// Analytics under the invalidated Privacy Shield, and four retention rules
// with different triggers that decide purge dates.
func TestConformanceClickLearn(t *testing.T) {
	p := sharedPlatform(t)
	p.applyExample(t, "clicklearn")

	r := p.must(t, exitOK, "registry", "ropa", "--tenant", "clicklearn")
	// §2.2.2 also cites Art. 6(1)(c) for content statistics but names no
	// law that obliges it (Art. 6(3)); the file records (f), which §4.7.2
	// confirms, so the records show (a), (b) and (f).
	for _, want := range []string{"Art. 6(1)(b)", "Art. 6(1)(f)", "Art. 6(1)(a)"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("records of processing lack %s", want)
		}
	}
	// Electronic marketing only after explicit opt-in.
	p.wantDecision(t, "clicklearn", "author-1", "newsletter", false, "not_granted")
	p.wantDecision(t, "clicklearn", "author-1", "application-usage", true, "legitimate_interest")

	r = p.must(t, exitNo, "registry", "findings", "--tenant", "clicklearn")
	if !regexp.MustCompile(`google-analytics\s+critical\s+TRANSFER_MECHANISM_INVALIDATED`).MatchString(r.stdout) {
		t.Fatalf("Google Analytics under the Privacy Shield should be critical:\n%s", r)
	}
	r = p.must(t, exitOK, "registry", "disclosures", "--tenant", "clicklearn", "--since", "P1D")
	for _, carrier := range []string{"postnord", "dhl", "ups", "gls"} {
		if !regexp.MustCompile(carrier + `\s.*recipient.*user.commercial.order`).MatchString(r.stdout) {
			t.Errorf("carrier %s is not a recipient of order data:\n%s", carrier, r.stdout)
		}
	}

	// Usage collected two years ago and never used since: due a year after.
	ctx := ctxT(t)
	collected := time.Now().AddDate(-2, 0, 0).UTC().Truncate(time.Second)
	_, err := p.retention().RecordSignal(ctx, &retentionv1.RecordSignalRequest{RequestId: "cl-usage-1", TenantId: "clicklearn",
		Signal: &retentionv1.Signal{SubjectId: "user-1", Kind: retentionv1.SignalKind_SIGNAL_KIND_COLLECTED,
			Categories: []*commonv1.DataCategory{{Id: "user.behavior.usage"}, {Id: "user.community.membership"}}, OccurredAt: timestamppb.New(collected)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.retention().RecordSignal(ctx, &retentionv1.RecordSignalRequest{RequestId: "cl-revoke-1", TenantId: "clicklearn",
		Signal: &retentionv1.Signal{SubjectId: "member-2", Kind: retentionv1.SignalKind_SIGNAL_KIND_COLLECTED,
			Categories: []*commonv1.DataCategory{{Id: "user.community.membership"}}, OccurredAt: timestamppb.New(time.Now().Add(-time.Hour))}})
	if err != nil {
		t.Fatal(err)
	}
	r = p.must(t, exitOK, "retention", "explain", "--tenant", "clicklearn", "--subject", "user-1", "-o", "json")
	var explain struct {
		Verdicts []struct {
			Category struct{ ID string }
			PurgeAt  time.Time
			RuleID   string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &explain); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, v := range explain.Verdicts {
		if v.Category.ID == "user.behavior.usage" {
			found = true
			if v.RuleID != "usage.after-a-year-unused" || !v.PurgeAt.Equal(collected.AddDate(1, 0, 0)) {
				t.Errorf("usage verdict: rule %s at %s, want usage.after-a-year-unused at %s", v.RuleID, v.PurgeAt, collected.AddDate(1, 0, 0))
			}
		}
	}
	if !found {
		t.Fatalf("no verdict for user.behavior.usage:\n%s", r.stdout)
	}
	// Revoking a membership purges community data at once (§5.4 c).
	_, err = p.retention().RecordSignal(ctx, &retentionv1.RecordSignalRequest{RequestId: "cl-revoke-2", TenantId: "clicklearn",
		Signal: &retentionv1.Signal{SubjectId: "member-2", Kind: retentionv1.SignalKind_SIGNAL_KIND_EVENT, Name: "membership_revoked", OccurredAt: timestamppb.Now()}})
	if err != nil {
		t.Fatal(err)
	}
	r = p.must(t, exitOK, "retention", "preview", "--tenant", "clicklearn", "--within", "P1D", "--sample", "5")
	if !regexp.MustCompile(`community.membership\s+erase\s+1\b`).MatchString(r.stdout) && !strings.Contains(r.stdout, "member-2") {
		// The sweep may already have purged it; the report then counts it.
		rep := p.must(t, exitOK, "retention", "report", "--tenant", "clicklearn", "--rule", "community.membership")
		if !regexp.MustCompile(`community.membership\s+[1-9]`).MatchString(rep.stdout) {
			t.Fatalf("a revoked membership is neither due nor purged:\n%s\n%s", r.stdout, rep.stdout)
		}
	}
}

// TestConformanceClevenio: requests answered within 2 weeks with identity
// verified first, an erasure reaching the US advertising platforms, roles
// as controller and processor, categories with sensitivity and provenance.
func TestConformanceClevenio(t *testing.T) {
	p := sharedPlatform(t)
	p.applyExample(t, "clevenio")

	req := p.dsarJSON(t, "dsar", "create", "--tenant", "clevenio", "--subject", "prospect-9", "--type", "erasure", "--email", "ville@example.fi")
	id, _ := req["dsarId"].(string)
	if req["state"] != "REQUEST_STATE_RECEIVED" || id == "" {
		t.Fatalf("a new request waits for verification: %v", req)
	}
	dl, _ := req["deadline"].(map[string]any)
	received, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(dl["receivedAt"]))
	slaDue, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(dl["slaDueAt"]))
	// Clevenio is Finnish: the SLA's 14 days end with the 14th day after
	// the day of receipt, at midnight in Helsinki (Reg. 1182/71 Art. 3).
	helsinki, err := time.LoadLocation("Europe/Helsinki")
	if err != nil {
		t.Fatal(err)
	}
	y, m, d := received.In(helsinki).Date()
	if want := time.Date(y, m, d+14, 23, 59, 59, 999_999_999, helsinki); !slaDue.Equal(want) || dl["slaDueDate"] != want.Format(time.DateOnly) {
		t.Fatalf("SLA deadline %v, want the end of the 14th day after receipt in Helsinki (%v): %v", slaDue, want, dl)
	}
	// A letter received two days before it is entered counts from its
	// receipt (Art. 12(3)); as of a time before it arrived it was not
	// there; a receipt in the future is refused.
	letterAt := time.Now().Add(-48 * time.Hour).UTC().Truncate(time.Second)
	letter := p.dsarJSON(t, "dsar", "create", "--tenant", "clevenio", "--subject", "prospect-10", "--type", "access",
		"--received", letterAt.Format(time.RFC3339))
	if dl, _ := letter["deadline"].(map[string]any); dl["receivedAt"] != letterAt.Format(time.RFC3339) {
		t.Fatalf("a letter's receipt: %v, want %s", dl, letterAt.Format(time.RFC3339))
	}
	before := p.must(t, exitOK, "dsar", "list", "--tenant", "clevenio", "--as-of", letterAt.Add(-time.Minute).Format(time.RFC3339))
	if strings.Contains(before.stdout, fmt.Sprint(letter["dsarId"])) {
		t.Fatalf("listed as of before its receipt:\n%s", before.stdout)
	}
	after := p.must(t, exitOK, "dsar", "list", "--tenant", "clevenio", "--as-of", letterAt.Add(time.Minute).Format(time.RFC3339))
	if !strings.Contains(after.stdout, fmt.Sprint(letter["dsarId"])) {
		t.Fatalf("not listed as of a minute after its receipt, though entered later:\n%s", after.stdout)
	}
	p.must(t, exitRefused, "dsar", "create", "--tenant", "clevenio", "--subject", "prospect-11", "--type", "access",
		"--received", time.Now().Add(time.Hour).Format(time.RFC3339))

	// Nothing fans out before identity is verified.
	show := p.must(t, exitOK, "dsar", "show", "--tenant", "clevenio", "--id", id)
	if strings.Contains(show.stdout, "ad-platform-us") {
		t.Fatalf("systems were told before identity was verified:\n%s", show.stdout)
	}
	p.must(t, exitOK, "dsar", "verify", "--tenant", "clevenio", "--id", id, "--attest", "manual", "--evidence", "email-reply-1")
	show = p.must(t, exitOK, "dsar", "show", "--tenant", "clevenio", "--id", id)
	for _, sys := range []string{"ad-platform-us", "ad-tracking-us", "clevenio-db", "support-vendor"} {
		if !strings.Contains(show.stdout, sys) {
			t.Errorf("the erasure does not reach %s:\n%s", sys, show.stdout)
		}
	}

	// Controller and processor roles, and sensitivity, as declared.
	ctx := ctxT(t)
	sys, err := p.registry().GetSystem(ctx, &registryv1.GetSystemRequest{TenantId: "clevenio", SystemId: "customer-workspaces"})
	if err != nil || sys.System.TenantRole != registryv1.TenantRole_TENANT_ROLE_PROCESSOR {
		t.Fatalf("customer-workspaces: %v %v, want the tenant as processor", sys, err)
	}
	cats, err := p.registry().ListCategories(ctx, &registryv1.ListCategoriesRequest{TenantId: "clevenio", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	sensitive := map[string]bool{}
	for _, c := range cats.Categories {
		sensitive[c.Id] = c.Sensitive
	}
	if !sensitive["user.health_and_medical.employment"] || sensitive["user.professional.public_role"] {
		t.Fatalf("sensitivity: employment health %v, public role %v", sensitive["user.health_and_medical.employment"], sensitive["user.professional.public_role"])
	}
	p.must(t, exitOK, "registry", "findings", "--tenant", "clevenio") // SCC 2021/914: lawful
}

// TestConformanceClevio: the age of digital consent of the subject's
// country, marketing only with consent, an objection to marketing that
// leaves transactional messages, a 30-day SLA and the disclosures of the
// past 12 months.
func TestConformanceClevio(t *testing.T) {
	p := sharedPlatform(t)
	p.applyExample(t, "clevio")

	p.must(t, exitOK, "consent", "grant", "--tenant", "clevio", "--subject", "teen-1", "--purpose", "marketing.email")
	p.wantDecision(t, "clevio", "teen-1", "marketing.email", true, "granted", "--age", "14", "--country", "FI")    // FI: 13
	p.wantDecision(t, "clevio", "teen-1", "marketing.email", false, "under_age", "--age", "14", "--country", "DE") // DE: 16
	p.wantDecision(t, "clevio", "teen-1", "service", false, "under_age", "--age", "12", "--country", "DK")         // under 13: never
	p.wantDecision(t, "clevio", "adult-1", "marketing.sms", false, "not_granted", "--age", "30")

	// An objection to direct marketing stops marketing, not the messages
	// about courses and purchases.
	p.must(t, exitOK, "consent", "grant", "--tenant", "clevio", "--subject", "adult-2", "--purpose", "marketing.email")
	req := p.dsarJSON(t, "dsar", "create", "--tenant", "clevio", "--subject", "adult-2", "--type", "objection", "--scope", "direct_marketing")
	id, _ := req["dsarId"].(string)
	dl, _ := req["deadline"].(map[string]any)
	if dl["sla"] != "2592000s" {
		t.Fatalf("Clevio answers within 30 days: deadline %v", dl)
	}
	p.must(t, exitOK, "dsar", "verify", "--tenant", "clevio", "--id", id, "--attest", "login", "--evidence", "session-77")
	cliPoll.Succeeds(t, "the objection stops marketing", func() error {
		out, code := p.check(t, "clevio", "adult-2", "marketing.email", "--age", "30")
		return unless(code == exitNo && strings.Contains(out, "objected"), out)
	})
	p.wantDecision(t, "clevio", "adult-2", "transactional", true, "contract", "--age", "30")

	// An access request too complex for a month is extended once, by two
	// months, with the reason the subject is told; a second extension is
	// refused. A request the subject withdrew is cancelled, and an
	// excessive one refused with its reason.
	access := p.dsarJSON(t, "dsar", "create", "--tenant", "clevio", "--subject", "adult-3", "--type", "access")
	accessID, _ := access["dsarId"].(string)
	extended := p.dsarJSON(t, "dsar", "extend", "--tenant", "clevio", "--id", accessID, "--months", "2", "--reason", "fourteen systems to search")
	before, _ := access["deadline"].(map[string]any)
	after, _ := extended["deadline"].(map[string]any)
	if after["extension"] == nil || after["statutoryDueAt"] == before["statutoryDueAt"] || after["slaDueAt"] != before["slaDueAt"] {
		t.Fatalf("extension: deadline before %v, after %v; want the statutory date moved and the SLA kept", before, after)
	}
	p.must(t, exitRefused, "dsar", "extend", "--tenant", "clevio", "--id", accessID, "--months", "1", "--reason", "again")
	if got := p.dsarJSON(t, "dsar", "cancel", "--tenant", "clevio", "--id", accessID); got["state"] != "REQUEST_STATE_CANCELLED" {
		t.Fatalf("cancelled request = %v", got["state"])
	}
	again := p.dsarJSON(t, "dsar", "create", "--tenant", "clevio", "--subject", "adult-3", "--type", "access")
	againID, _ := again["dsarId"].(string)
	if got := p.dsarJSON(t, "dsar", "reject", "--tenant", "clevio", "--id", againID, "--reason", "excessive", "--detail", "third identical request this month (Art. 12(5))"); got["state"] != "REQUEST_STATE_REJECTED" {
		t.Fatalf("rejected request = %v", got["state"])
	}

	r := p.must(t, exitOK, "registry", "disclosures", "--tenant", "clevio", "--since", "P12M")
	for _, rcpt := range []string{"facebook-ads", "google-marketing-platform", "google-tags", "hotjar"} {
		if !strings.Contains(r.stdout, rcpt) {
			t.Errorf("disclosures of the past 12 months lack %s:\n%s", rcpt, r.stdout)
		}
	}
	if regexp.MustCompile(`(?m)^platform\s`).MatchString(r.stdout) {
		t.Errorf("the internal platform is not a recipient:\n%s", r.stdout)
	}
}

// TestConformanceCleura: separate newsletter and event consents, an
// erasure that ends partially completed because billing data is kept for
// Swedish accounting law (with the basis stated), DPO and IMY in the
// tenant, the minimum-retention rules, and the event stream.
func TestConformanceCleura(t *testing.T) {
	p := sharedPlatform(t)
	p.applyExample(t, "cleura")

	p.must(t, exitOK, "consent", "grant", "--tenant", "cleura", "--subject", "cust-1", "--purpose", "newsletter")
	p.wantDecision(t, "cleura", "cust-1", "newsletter", true, "granted")
	p.wantDecision(t, "cleura", "cust-1", "event-notifications", false, "not_granted")

	req := p.dsarJSON(t, "dsar", "create", "--tenant", "cleura", "--subject", "cust-1", "--type", "erasure", "--email", "ops@example.se")
	id, _ := req["dsarId"].(string)
	p.must(t, exitOK, "dsar", "verify", "--tenant", "cleura", "--id", id, "--attest", "manual", "--evidence", "ticket-311")
	for _, s := range []string{"portal", "newsletter-provider", "linkedin"} {
		p.must(t, exitOK, "dsar", "complete-task", "--tenant", "cleura", "--id", id, "--system", s, "--outcome", "erased")
	}
	p.must(t, exitOK, "dsar", "complete-task", "--tenant", "cleura", "--id", id, "--system", "billing", "--outcome", "retained",
		"--retain-categories", "user.financial", "--basis", "legal_obligation",
		"--basis-detail", "Swedish Accounting Act (1999:1078) ch. 7 § 2", "--until", "2033-12-31",
		"--exemption", "legal_obligation", "--law", "Bokföringslagen (1999:1078) 7 kap. 2 §")
	r := p.must(t, exitOK, "dsar", "show", "--tenant", "cleura", "--id", id)
	if !strings.Contains(r.stdout, "partially_completed") ||
		!strings.Contains(r.stdout, "kept: user.financial on legal_obligation (Swedish Accounting Act (1999:1078) ch. 7 § 2) until 2033-12-31") {
		t.Fatalf("the erasure should end partially completed with the accounting basis:\n%s", r.stdout)
	}
	p.must(t, exitOK, "dsar", "receipt", "--tenant", "cleura", "--id", id)
	// What the operator said billing keeps is a promise the retention
	// service keeps: it erases the data at the until-date.
	cliPoll.Succeeds(t, "billing's retained data is scheduled for erasure", func() error {
		resp, err := p.retention().ExplainSubject(ctxT(t), &retentionv1.ExplainSubjectRequest{TenantId: "cleura", SubjectId: "cust-1"})
		if err != nil {
			return err
		}
		for _, v := range resp.Verdicts {
			if v.RetainedBy == "billing" && v.Category.Id == "user.financial" && v.PurgeAt.AsTime().Format(time.DateOnly) == "2033-12-31" {
				return nil
			}
		}
		return fmt.Errorf("verdicts %v", resp.Verdicts)
	})

	exported := p.must(t, exitOK, "export", "--tenant", "cleura").stdout
	for _, want := range []string{"email: dpo@cleura.com", "Integritetsskyddsmyndigheten (IMY)", "minimum: true", "ruleId: billing.accounting-minimum",
		"anchor: end_of_calendar_year_of_financial_year_end", "financialYearEnd:"} {
		if !strings.Contains(exported, want) {
			t.Errorf("export lacks %q", want)
		}
	}

	// The stream carries Cleura's configuration and erasure, decoded.
	r = p.must(t, exitOK, "events", "tail", "--tenant", "cleura", "--all", "--count", "3", "-o", "json")
	if !strings.Contains(r.stdout, `"natsSubject":"lethe.cleura.tenant.registered"`) || !strings.Contains(r.stdout, `"tenantRegistered"`) {
		t.Fatalf("events tail:\n%s", r)
	}
}

// TestApplyRefusesAndAppliesNothing: a file with mistakes is reported with
// file, line and field, and nothing of it is applied — whether the
// mistake is caught by the CLI or by a service's validate_only.
func TestApplyRefusesAndAppliesNothing(t *testing.T) {
	p := sharedPlatform(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	base := "apiVersion: lethe.dev/v1\nkind: Tenant\ntenant:\n  tenantId: acme\n  displayName: Acme\n  settings: {country: DK}\n"
	sys := "systems:\n  - systemId: crm\n    name: CRM\n    kind: internal\n    country: DK\n    answerMode: manual\n    categories: [user.contact]\n"

	// Caught before anything is sent: the tenant is not created.
	bad := write("bad.yaml", base+sys+"purposes:\n  - purposeId: news\n    name: News\n    legalBasis: consnt\n")
	r := p.must(t, exitRefused, "apply", "-f", bad)
	if !strings.Contains(r.stderr, bad+":17:17: purposes[0].legalBasis:") || !strings.Contains(r.stderr, "nothing was changed") {
		t.Fatalf("want file, line and field:\n%s", r)
	}
	if _, err := p.registry().GetTenant(ctxT(t), &registryv1.GetTenantRequest{TenantId: "acme"}); notFoundKind(err) != "tenant" {
		t.Fatalf("the tenant of a refused file exists: %v", err)
	}

	// Caught by the consent service with validate_only (a necessary
	// purpose cannot rest on consent): the new system is not registered.
	good := write("good.yaml", base)
	p.must(t, exitOK, "apply", "-f", good)
	refused := write("refused.yaml", base+sys+"purposes:\n  - purposeId: news\n    name: News\n    legalBasis: consent\n    necessary: true\n")
	r = p.must(t, exitRefused, "apply", "-f", refused)
	if !strings.Contains(r.stderr, refused+":18:5: purposes[0].necessary:") {
		t.Fatalf("the service's refusal should name the field in the file:\n%s", r)
	}
	if _, err := p.registry().GetSystem(ctxT(t), &registryv1.GetSystemRequest{TenantId: "acme", SystemId: "crm"}); notFoundKind(err) != "system" {
		t.Fatalf("a system of a refused file was registered: %v", err)
	}
	if r := p.must(t, exitNo, "diff", "-f", write("fixed.yaml", base+sys)); !strings.Contains(r.stdout, "+ system acme/crm create") {
		t.Fatalf("diff of the fixed file:\n%s", r)
	}
}

func dialTest(addr string) (*grpc.ClientConn, error) {
	return grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
}
