package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// receiver is a local HTTPS endpoint that records what it was sent and
// answers with reply.
type receiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	calls []*http.Request
	body  [][]byte
	reply func(n int, r *http.Request, body []byte) (status int, header http.Header, answer string)
}

func newReceiver(t testing.TB, reply func(n int, r *http.Request, body []byte) (int, http.Header, string)) *receiver {
	rc := &receiver{reply: reply}
	rc.srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.calls = append(rc.calls, r)
		rc.body = append(rc.body, body)
		n := len(rc.calls)
		rc.mu.Unlock()
		status, h, answer := rc.reply(n, r, body)
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *receiver) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.calls)
}

// handler builds the webhook handler for rc, trusting its certificate.
func (rc *receiver) handler(t testing.TB, secrets string) subscriber.Handler {
	t.Helper()
	return rc.handlerWith(t, secrets, func(*webhook.Config) {})
}

// handlerWith is handler with the configuration adjusted by adjust.
func (rc *receiver) handlerWith(t testing.TB, secrets string, adjust func(*webhook.Config)) subscriber.Handler {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(rc.srv.Certificate())
	cfg := webhook.Config{URL: rc.srv.URL + "/lethe", Tenant: tenant, SystemID: system, SecretsDir: secrets,
		AllowPrivate: true, TLS: &tls.Config{RootCAs: roots}, Logger: quiet()}
	adjust(&cfg)
	h, err := webhook.Handler(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// verify checks a Standard Webhooks signature header as a receiver
// would, written from the specification rather than from Sign: which of
// keys signed id.timestamp.body, in the header's order.
func verify(header http.Header, body []byte, keys ...[]byte) []int {
	id, ts := header.Get("webhook-id"), header.Get("webhook-timestamp")
	var signedBy []int
	for _, sig := range strings.Fields(header.Get("webhook-signature")) {
		version, b64, ok := strings.Cut(sig, ",")
		got, err := base64.StdEncoding.DecodeString(b64)
		if !ok || version != "v1" || err != nil {
			continue
		}
		for i, k := range keys {
			mac := hmac.New(sha256.New, k)
			fmt.Fprintf(mac, "%s.%s.%s", id, ts, body)
			if hmac.Equal(mac.Sum(nil), got) {
				signedBy = append(signedBy, i)
			}
		}
	}
	return signedBy
}

// An event reaches the endpoint as a signed CloudEvent without contact
// data, and the receiver's answer is the system's outcome. After a
// rotation every request is signed with the new and the previous secret,
// read from the files without a restart.
func TestDeliversASignedCloudEventAndReportsTheAnswer(t *testing.T) {
	js := stream(t)
	dir := t.TempDir()
	first := newSecret(t, dir, webhook.SecretFile)
	rc := newReceiver(t, func(n int, r *http.Request, _ []byte) (int, http.Header, string) {
		if n == 1 {
			return http.StatusOK, nil, `{"outcome": "ERASED"}`
		}
		return http.StatusOK, nil, `{"outcome": "NOT_FOUND"}`
	})
	runSubscriber(t, js, rc.handler(t, dir), 3)

	ev := erasure(t, js, "ev-1")
	if o := outcome(t, js, "ev-1"); o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Fatalf("outcome %s, want ERASED", o.GetKind())
	}
	r, body := rc.calls[0], rc.body[0]
	if r.Method != http.MethodPost || r.URL.Path != "/lethe" || r.Header.Get("Content-Type") != "application/cloudevents+json" {
		t.Errorf("request %s %s %s", r.Method, r.URL.Path, r.Header.Get("Content-Type"))
	}
	if r.Header.Get("webhook-id") != "ev-1" {
		t.Errorf("webhook-id %q, want the event id", r.Header.Get("webhook-id"))
	}
	if got := verify(r.Header, body, first); len(got) != 1 {
		t.Errorf("signature %q does not verify with the secret", r.Header.Get("webhook-signature"))
	}
	var ce map[string]any
	if err := json.Unmarshal(body, &ce); err != nil {
		t.Fatal(err)
	}
	data, _ := ce["data"].(map[string]any)
	if ce["specversion"] != "1.0" || ce["id"] != "ev-1" || ce["type"] != "lethe.events.v1.ErasureRequested" || ce["source"] != "lethe/dsar" ||
		ce["subject"] != ev.GetCause().GetId() || ce["lethesystem"] != system || data["subjectId"] != "subject-42" || data["erasureRequested"] == nil {
		t.Errorf("CloudEvent %s", body)
	}

	// Rotate: the current secret becomes the previous one.
	if err := os.Rename(filepath.Join(dir, tenant, system, webhook.SecretFile), filepath.Join(dir, tenant, system, webhook.PreviousSecretFile)); err != nil {
		t.Fatal(err)
	}
	second := newSecret(t, dir, webhook.SecretFile)
	erasure(t, js, "ev-2")
	if o := outcome(t, js, "ev-2"); o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_NOT_FOUND {
		t.Fatalf("outcome %s, want NOT_FOUND", o.GetKind())
	}
	if got := verify(rc.calls[1].Header, rc.body[1], second, first); fmt.Sprint(got) != "[0 1]" {
		t.Errorf("during a rotation: signatures by keys %v, want the new one then the previous one [0 1]", got)
	}
}

// A 429 with Retry-After is retried after that delay, not the back-off (an
// hour here); a 202 leaves the task open until a later delivery of the
// same webhook-id gets an outcome.
func TestRetryAfterAndAcceptedAreRetried(t *testing.T) {
	js := stream(t)
	dir := t.TempDir()
	newSecret(t, dir, webhook.SecretFile)
	rc := newReceiver(t, func(n int, r *http.Request, _ []byte) (int, http.Header, string) {
		switch n {
		case 1:
			return http.StatusTooManyRequests, http.Header{"Retry-After": {"1"}}, ""
		case 2:
			return http.StatusAccepted, http.Header{"Retry-After": {"1"}}, ""
		}
		return http.StatusOK, nil, `{"outcome": "ERASED"}`
	})
	runSubscriber(t, js, rc.handler(t, dir), 5, time.Hour)
	start := time.Now()
	erasure(t, js, "ev-1")
	if o := outcome(t, js, "ev-1"); o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Fatalf("outcome %s, want ERASED", o.GetKind())
	}
	if n := rc.count(); n != 3 {
		t.Fatalf("%d deliveries, want 3", n)
	}
	if elapsed := time.Since(start); elapsed < 2*time.Second {
		t.Errorf("three deliveries in %s: Retry-After (1 s, twice) was not honoured", elapsed)
	}
	for _, r := range rc.calls {
		if r.Header.Get("webhook-id") != "ev-1" {
			t.Errorf("webhook-id %q on a retry, want ev-1 on every one", r.Header.Get("webhook-id"))
		}
	}
}

// An endpoint that keeps failing ends the task FAILED, with the reason,
// once the deliveries run out; 410 Gone ends it at once.
func TestAFailingEndpointEndsFailed(t *testing.T) {
	js := stream(t)
	dir := t.TempDir()
	newSecret(t, dir, webhook.SecretFile)
	rc := newReceiver(t, func(_ int, r *http.Request, _ []byte) (int, http.Header, string) {
		if r.Header.Get("webhook-id") == "ev-gone" {
			return http.StatusGone, nil, ""
		}
		return http.StatusInternalServerError, nil, "database down"
	})
	runSubscriber(t, js, rc.handler(t, dir), 3)
	erasure(t, js, "ev-1")
	o := outcome(t, js, "ev-1")
	if o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(o.GetReason(), "gave up after 3 deliveries: the endpoint answered 500") {
		t.Fatalf("outcome %s %q, want FAILED after 3 deliveries of 500", o.GetKind(), o.GetReason())
	}
	erasure(t, js, "ev-gone")
	if o := outcome(t, js, "ev-gone"); o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(o.GetReason(), "410") {
		t.Fatalf("outcome %s %q, want FAILED naming 410", o.GetKind(), o.GetReason())
	}
	if n := rc.count(); n != 4 {
		t.Errorf("%d deliveries, want 3 for the failing event and 1 for the gone one", n)
	}
}

// Without a signing secret nothing is sent: the delivery fails and is
// retried, and ends FAILED naming the missing file.
func TestNothingIsSentUnsigned(t *testing.T) {
	js := stream(t)
	rc := newReceiver(t, func(int, *http.Request, []byte) (int, http.Header, string) {
		return http.StatusOK, nil, `{"outcome": "ERASED"}`
	})
	runSubscriber(t, js, rc.handler(t, t.TempDir()), 2)
	erasure(t, js, "ev-1")
	if o := outcome(t, js, "ev-1"); o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(o.GetReason(), "signing-secret") {
		t.Fatalf("outcome %s %q, want FAILED naming the secret file", o.GetKind(), o.GetReason())
	}
	if n := rc.count(); n != 0 {
		t.Fatalf("%d requests sent without a secret", n)
	}
}
