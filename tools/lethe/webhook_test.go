package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
)

// receiverScript is the example Python receiver, a system that is not Go.
var receiverScript = filepath.Join("..", "..", "examples", "webhook-receiver", "receiver.py")

// pyReceiver is a running receiver.py.
type pyReceiver struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

// startReceiver runs receiver.py on port with its SQLite file and secret,
// and waits until it listens.
func startReceiver(t *testing.T, db, secret string, port int, extra ...string) *pyReceiver {
	t.Helper()
	if _, err := exec.LookPath("python3"); err != nil {
		t.Fatal("python3 is required: the webhook receiver example runs in the tests (.ci/run installs it)")
	}
	args := append([]string{receiverScript, "--db", db, "--secret-file", secret, "--port", fmt.Sprint(port)}, extra...)
	r := &pyReceiver{cmd: exec.Command("python3", args...), done: make(chan struct{})}
	stdout, err := r.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	r.cmd.Stderr = io.Discard
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	listening := make(chan struct{})
	go func() {
		defer close(r.done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			if strings.HasPrefix(sc.Text(), "listening on") {
				close(listening)
			}
		}
	}()
	t.Cleanup(func() { r.stop() })
	select {
	case <-listening:
	case <-r.done:
		t.Fatalf("receiver.py exited before listening")
	case <-time.After(30 * time.Second):
		t.Fatalf("receiver.py did not listen in 30 s")
	}
	return r
}

// stop kills the receiver and waits for it.
func (r *pyReceiver) stop() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = r.cmd.Process.Kill()
	<-r.done
	_ = r.cmd.Wait()
}

// answered counts the receiver's answers to webhook-id id.
func (r *pyReceiver) answered(id string) int { return r.count("answered " + id + " ") }

// count counts the lines of the receiver's output that hold line.
func (r *pyReceiver) count(line string) int {
	return strings.Count(r.output(), line)
}

// output is what the receiver wrote so far.
func (r *pyReceiver) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// writeSecret writes a fresh whsec_ secret for tenant/system under dir.
func writeSecret(t *testing.T, dir, tenant, system string) (path string, key []byte) {
	t.Helper()
	key = make([]byte, 32)
	_, _ = rand.Read(key)
	path = filepath.Join(dir, tenant, system, webhook.SecretFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(webhook.SecretPrefix+base64.StdEncoding.EncodeToString(key)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path, key
}

// devWebhooks is lethe dev hosting lethe-connect, with clients.
type devWebhooks struct {
	registry registryv1.RegistryServiceClient
	dsar     dsarv1.DsarServiceClient
	n        int
}

func (d *devWebhooks) id(what string) string {
	d.n++
	return fmt.Sprintf("%s-%d", what, d.n)
}

// erase files an erasure of subject for tenant, attests the subject's
// identity, and returns the request's id.
func (d *devWebhooks) erase(t *testing.T, tenant, subject string) string {
	t.Helper()
	ctx := context.Background()
	var id string
	// The DSAR service learns of the tenant from the registry's event.
	eventually.Succeeds(t, "the DSAR service to accept a request for "+tenant, func() error {
		resp, err := d.dsar.CreateRequest(ctx, &dsarv1.CreateRequestRequest{RequestId: d.id("create"), TenantId: tenant, SubjectId: subject,
			Requester:   &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT},
			Identifiers: []*commonv1.Identifier{{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: subject + "@example.org"}},
			Erasure:     &dsarv1.ErasureDetails{}})
		if err == nil {
			id = resp.Request.DsarId
		}
		return err
	})
	if _, err := d.dsar.AttestIdentity(ctx, &dsarv1.AttestIdentityRequest{RequestId: d.id("attest"), TenantId: tenant, DsarId: id,
		Method: commonv1.VerificationMethod_VERIFICATION_METHOD_LOGIN_ATTESTATION, EvidenceReference: "session-1"}); err != nil {
		t.Fatal(err)
	}
	return id
}

// result waits until the request reaches a final state and returns it.
func (d *devWebhooks) result(t *testing.T, tenant, id string) *dsarv1.Request {
	t.Helper()
	var req *dsarv1.Request
	eventually.Poll{Timeout: 90 * time.Second, Interval: 50 * time.Millisecond}.Succeeds(t, "request "+id+" to end", func() error {
		resp, err := d.dsar.GetRequest(context.Background(), &dsarv1.GetRequestRequest{TenantId: tenant, DsarId: id})
		if err != nil {
			return err
		}
		req = resp.Request
		switch req.State {
		case dsarv1.RequestState_REQUEST_STATE_COMPLETED, dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED:
			return nil
		}
		return fmt.Errorf("state %s, tasks %v", req.State, req.GetResult().GetTasks())
	})
	return req
}

// systemResult returns the system's share of req.
func taskOf(t *testing.T, req *dsarv1.Request, system string) *dsarv1.Task {
	t.Helper()
	for _, s := range req.GetResult().GetTasks() {
		if s.SystemId == system {
			return s
		}
	}
	t.Fatalf("request %s has no task for %s: %v", req.DsarId, system, req.GetResult().GetTasks())
	return nil
}

func (d *devWebhooks) tenant(t *testing.T, id string, allowPrivate bool) {
	t.Helper()
	if _, err := d.registry.CreateTenant(context.Background(), &registryv1.CreateTenantRequest{RequestId: d.id("tenant"), Tenant: &registryv1.Tenant{
		TenantId: id, DisplayName: id, Settings: &registryv1.TenantSettings{Country: "DK", WebhookPrivateNetworks: allowPrivate},
	}}); err != nil {
		t.Fatal(err)
	}
}

func (d *devWebhooks) registerWebhook(tenant, system, url string) error {
	_, err := d.registry.RegisterSystem(context.Background(), &registryv1.RegisterSystemRequest{RequestId: d.id("system"), TenantId: tenant,
		System: &registryv1.System{SystemId: system, Name: "In-house " + system, Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "DK",
			TenantRole: registryv1.TenantRole_TENANT_ROLE_CONTROLLER, Categories: []*commonv1.DataCategory{{Id: "user.contact.email"}},
			AnswerMode: commonv1.AnswerMode_ANSWER_MODE_WEBHOOK, Webhook: &registryv1.Webhook{Url: url}}})
	return err
}

// TestWebhookSystemInPython runs lethe dev hosting lethe-connect and the
// example Python receiver, a system in another language with its own
// implementation of the Standard Webhooks signature, and files erasures
// through the DSAR service. lethe dev is the development profile, so the
// receiver listens in plain HTTP on loopback (the production profile
// refuses http; the TLS path is covered in sdk/connect/webhook).
func TestWebhookSystemInPython(t *testing.T) {
	bin := buildBinaries(t, ".")["."]
	data, secrets := t.TempDir(), t.TempDir()
	grpcAddr, natsAddr, connectAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	// Three deliveries two seconds apart: a receiver that is down is
	// retried for about four seconds before its task fails.
	p := startProcess(t, bin, "dev", "--data", data, "--addr", grpcAddr, "--nats-addr", natsAddr, "--metrics-addr", "",
		"--public-addr", "", "--replica-addr", "off", "--connect-secrets", secrets, "--connect-max-deliver", "3", "--connect-backoff", "2s", "--connect-addr", connectAddr)
	conn := waitServing(t, grpcAddr, healthNames, p)
	d := &devWebhooks{registry: registryv1.NewRegistryServiceClient(conn), dsar: dsarv1.NewDsarServiceClient(conn)}
	d.tenant(t, "acme", true)

	// A URL on a private address is refused unless the tenant allows
	// private networks.
	d.tenant(t, "strict", false)
	err := d.registerWebhook("strict", "crm", "http://127.0.0.1:8088/lethe")
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "system.webhook.url") {
		t.Fatalf("a loopback URL for a tenant without webhook_private_networks: %v, want InvalidArgument naming system.webhook.url", err)
	}

	// A system the runner cannot answer (a connector without the
	// parameters and secrets it needs) is reported once and does not keep
	// the others from being answered.
	if _, err := d.registry.RegisterSystem(context.Background(), &registryv1.RegisterSystemRequest{RequestId: d.id("system"), TenantId: "strict",
		System: &registryv1.System{SystemId: "ga", Name: "Google Analytics", Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, Country: "US",
			TenantRole: registryv1.TenantRole_TENANT_ROLE_CONTROLLER, Categories: []*commonv1.DataCategory{{Id: "user.behavior"}},
			AnswerMode: commonv1.AnswerMode_ANSWER_MODE_CONNECTOR, Connector: &registryv1.ConnectorRef{Name: "google-analytics"}}}); err != nil {
		t.Fatal(err)
	}
	refusals := func() int { return strings.Count(p.output.String(), "cannot answer the system") }
	eventually.True(t, "the runner to report the connector system it cannot answer", func() bool { return refusals() > 0 })

	secretFile, key := writeSecret(t, secrets, "acme", "crm")
	db := filepath.Join(t.TempDir(), "customers.db")
	add := exec.Command("python3", receiverScript, "--db", db, "--add", "subject-1=ada@example.org", "--add", "subject-2=bo@example.org", "--add", "subject-3=cy@example.org")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("seeding the receiver: %v\n%s", err, out)
	}
	port := freePort(t)
	rc := startReceiver(t, db, secretFile, port)
	url := fmt.Sprintf("http://127.0.0.1:%d/lethe", port)
	if err := d.registerWebhook("acme", "crm", url); err != nil {
		t.Fatal(err)
	}

	outer := t
	t.Run("erasure answered by the receiver", func(t *testing.T) {
		req := d.result(t, "acme", d.erase(t, "acme", "subject-1"))
		crm := taskOf(t, req, "crm")
		if req.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || crm.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
			t.Fatalf("request %s, crm %s %s %q; want COMPLETED with crm ERASED", req.State, crm.State, crm.Outcome, crm.Reason)
		}
		if n := rc.answered(crm.EventId); n != 1 {
			t.Errorf("the receiver answered event %s %d times, want once", crm.EventId, n)
		}
		// Erasing again finds nothing: the receiver really deleted the row.
		req = d.result(t, "acme", d.erase(t, "acme", "subject-1"))
		if crm := taskOf(t, req, "crm"); crm.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND {
			t.Fatalf("second erasure: crm %s, want NOT_FOUND", crm.Outcome)
		}
	})

	t.Run("replayed and forged requests refused by the receiver", func(t *testing.T) {
		body := []byte(`{"specversion":"1.0","id":"probe-1","lethekind":"consent.withdrawn","data":{"subjectId":"subject-9"}}`)
		post := func(id string, ts time.Time, sig string) (int, string) {
			req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set(webhook.HeaderID, id)
			req.Header.Set(webhook.HeaderTimestamp, fmt.Sprint(ts.Unix()))
			req.Header.Set(webhook.HeaderSignature, sig)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, string(b)
		}
		old := time.Now().Add(-6 * time.Minute)
		if code, msg := post("probe-1", old, webhook.Sign([][]byte{key}, "probe-1", old, body)); code != http.StatusUnauthorized || !strings.Contains(msg, "replay") {
			t.Errorf("a correctly signed request six minutes old: %d %s, want 401 refused as a replay", code, msg)
		}
		now := time.Now()
		if code, msg := post("probe-2", now, webhook.Sign([][]byte{[]byte("not the secret, not the secret!!")}, "probe-2", now, body)); code != http.StatusUnauthorized {
			t.Errorf("a request signed with another key: %d %s, want 401", code, msg)
		}
		if code, msg := post("probe-3", now, webhook.Sign([][]byte{key}, "probe-3", now, body)); code != http.StatusOK || !strings.Contains(msg, "NOT_APPLICABLE") {
			t.Errorf("the same request, fresh and signed: %d %s, want 200 NOT_APPLICABLE", code, msg)
		}
	})

	t.Run("the claim check gives the receiver the e-mail address", func(t *testing.T) {
		// The receiver filed this customer under its own id, not Lethe's
		// subject id: only the e-mail address finds the row.
		add := exec.Command("python3", receiverScript, "--db", db, "--add", "crm-row-7=zoe@example.org")
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("seeding the receiver: %v\n%s", err, out)
		}
		req := d.result(t, "acme", d.erase(t, "acme", "zoe"))
		crm := taskOf(t, req, "crm")
		if crm.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
			t.Fatalf("crm %s %q, want ERASED through the e-mail address from the claim check", crm.Outcome, crm.Reason)
		}
		// A token is needed, and a made-up one is refused.
		claim := "http://" + connectAddr + webhook.ClaimPath("acme", "crm", crm.EventId, req.DsarId)
		for _, auth := range []string{"", "Bearer v1.9999999999.AAAA"} {
			r, err := http.NewRequest(http.MethodGet, claim, nil)
			if err != nil {
				t.Fatal(err)
			}
			if auth != "" {
				r.Header.Set("Authorization", auth)
			}
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("claim check with %q: %d, want 401", auth, resp.StatusCode)
			}
		}
	})

	t.Run("a receiver down for the whole window gets every event once", func(t *testing.T) {
		rc.stop()
		ids := []string{d.erase(t, "acme", "subject-2"), d.erase(t, "acme", "subject-3")}
		// Wait until both were delivered and failed at least once: the
		// requests are in progress with nothing answered.
		eventually.Succeeds(t, "both erasures to be delivered to the stopped receiver", func() error {
			for _, id := range ids {
				resp, err := d.dsar.GetRequest(context.Background(), &dsarv1.GetRequestRequest{TenantId: "acme", DsarId: id})
				if err != nil {
					return err
				}
				if resp.Request.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
					return fmt.Errorf("request %s is %s", id, resp.Request.State)
				}
			}
			if n := strings.Count(p.output.String(), "webhook delivery did not give an outcome"); n < len(ids) {
				return fmt.Errorf("%d failed deliveries logged, want one for each erasure", n)
			}
			return nil
		})
		// Started for the rest of the test, not only this part.
		rc = startReceiver(outer, db, secretFile, port)
		for _, id := range ids {
			req := d.result(t, "acme", id)
			crm := taskOf(t, req, "crm")
			if crm.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
				t.Errorf("request %s: crm %s %q, want ERASED", id, crm.Outcome, crm.Reason)
			}
			if n := rc.answered(crm.EventId); n != 1 {
				t.Errorf("the receiver answered event %s %d times, want once", crm.EventId, n)
			}
		}
	})

	t.Run("a receiver that always fails ends the task failed, visibly", func(t *testing.T) {
		failSecret, _ := writeSecret(t, secrets, "acme", "billing")
		failPort := freePort(t)
		startReceiver(t, filepath.Join(t.TempDir(), "billing.db"), failSecret, failPort, "--fail")
		if err := d.registerWebhook("acme", "billing", fmt.Sprintf("http://127.0.0.1:%d/lethe", failPort)); err != nil {
			t.Fatal(err)
		}
		req := d.result(t, "acme", d.erase(t, "acme", "subject-4"))
		billing := taskOf(t, req, "billing")
		if req.State != dsarv1.RequestState_REQUEST_STATE_PARTIALLY_COMPLETED || billing.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED ||
			!strings.Contains(billing.Reason, "gave up after 3 deliveries") || !strings.Contains(billing.Reason, "500") {
			t.Fatalf("request %s, billing %s %q; want PARTIALLY_COMPLETED with billing FAILED after 3 deliveries of 500", req.State, billing.Outcome, billing.Reason)
		}
	})

	t.Run("a changed URL is followed", func(t *testing.T) {
		// billing moves to the working receiver, which knows crm's secret.
		secret, err := os.ReadFile(secretFile)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(secrets, "acme", "billing", webhook.SecretFile), secret, 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := d.registry.GetSystem(context.Background(), &registryv1.GetSystemRequest{TenantId: "acme", SystemId: "billing"})
		if err != nil {
			t.Fatal(err)
		}
		sys := got.System
		sys.Webhook.Url, sys.EffectiveAt = url, nil
		if _, err := d.registry.UpdateSystem(context.Background(), &registryv1.UpdateSystemRequest{RequestId: d.id("update"), TenantId: "acme", System: sys}); err != nil {
			t.Fatal(err)
		}
		// The runner notices at its next listing (every 2 s in lethe dev)
		// and starts billing's subscriber again, with the new URL.
		eventually.Succeeds(t, "the runner to restart billing's subscriber", func() error {
			n := 0
			for _, line := range strings.Split(p.output.String(), "\n") {
				if strings.Contains(line, "answering the system") && strings.Contains(line, "system=billing") {
					n++
				}
			}
			if n < 2 {
				return fmt.Errorf("started %d times", n)
			}
			return nil
		})
		req := d.result(t, "acme", d.erase(t, "acme", "subject-5"))
		if billing := taskOf(t, req, "billing"); req.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || billing.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND {
			t.Fatalf("request %s, billing %s %q; want COMPLETED with billing NOT_FOUND from the new URL\n%s", req.State, billing.Outcome, billing.Reason, p.output)
		}
	})
	t.Run("a receiver that answers 202 completes the task by the signed callback", func(t *testing.T) {
		d.tenant(t, "later", true)
		laterSecret, _ := writeSecret(t, secrets, "later", "crm")
		laterDB := filepath.Join(t.TempDir(), "later.db")
		if out, err := exec.Command("python3", receiverScript, "--db", laterDB, "--add", "subject-1=ada@example.org").CombinedOutput(); err != nil {
			t.Fatalf("seeding the receiver: %v\n%s", err, out)
		}
		laterPort := freePort(t)
		lr := startReceiver(t, laterDB, laterSecret, laterPort, "--callback")
		if err := d.registerWebhook("later", "crm", fmt.Sprintf("http://127.0.0.1:%d/lethe", laterPort)); err != nil {
			t.Fatal(err)
		}
		req := d.result(t, "later", d.erase(t, "later", "subject-1"))
		crm := taskOf(t, req, "crm")
		if req.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || crm.Outcome != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
			t.Fatalf("request %s, crm %s %s %q; want COMPLETED with crm ERASED by the callback", req.State, crm.State, crm.Outcome, crm.Reason)
		}
		if n := lr.count("called back " + crm.EventId + " 200 "); n != 1 {
			t.Errorf("the receiver called back %d times with 200, want once:\n%s", n, lr.output())
		}
	})
	// Many listings later (every 2 s), still reported once.
	if n := refusals(); n != 1 {
		t.Errorf("the connector system was reported %d times, want once", n)
	}
	p.stop(t)
}

// freePort is a free TCP port on loopback, for a receiver.
func freePort(t *testing.T) int {
	t.Helper()
	var port int
	if _, err := fmt.Sscanf(freeAddr(t), "127.0.0.1:%d", &port); err != nil {
		t.Fatal(err)
	}
	return port
}
