package webhook_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// callbackFixture is a receiver that answers every delivery 202 and the
// runner's callback listener, in front of a running subscriber.
type callbackFixture struct {
	js       jetstream.JetStream
	rc       *receiver
	sub      *subscriber.Subscriber
	ledger   *ledger.Ledger
	key      []byte
	callback *httptest.Server
}

func newCallbackFixture(t *testing.T, deadline time.Duration) *callbackFixture {
	t.Helper()
	f := &callbackFixture{js: stream(t)}
	dir := t.TempDir()
	f.key = newSecret(t, dir, webhook.SecretFile)
	f.callback = httptest.NewServer(webhook.CallbackHandler(dir, func(tn, sys string) webhook.Answerer {
		if tn == tenant && sys == system && f.sub != nil {
			return f.sub
		}
		return nil
	}, nil))
	t.Cleanup(f.callback.Close)
	f.rc = newReceiver(t, func(int, *http.Request, []byte) (int, http.Header, string) { return http.StatusAccepted, nil, "" })
	h := f.rc.handlerWith(t, dir, func(c *webhook.Config) { c.CallbackBaseURL, c.CallbackDeadline = f.callback.URL, deadline })
	f.sub, f.ledger = runSubscriberConfig(t, f.js, h, func(c *subscriber.Config) { c.WaitCheck = 20 * time.Millisecond })
	return f
}

// accepted publishes an erasure and waits until the receiver's 202 has
// left it waiting for the callback.
func (f *callbackFixture) accepted(t *testing.T, id string) {
	t.Helper()
	erasure(t, f.js, id)
	eventually.True(t, id+" waiting for its callback", func() bool {
		_, _, ok, err := f.ledger.Waiting(id)
		return err == nil && ok
	})
}

// post sends a callback for eventID, with webhook-id id, signed with key
// at ts, and returns the status and body.
func (f *callbackFixture) post(t *testing.T, eventID, id string, key []byte, ts time.Time, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.callback.URL+webhook.CallbackPath(tenant, system, eventID), strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(webhook.HeaderID, id)
	req.Header.Set(webhook.HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	req.Header.Set(webhook.HeaderSignature, webhook.Sign([][]byte{key}, id, ts, []byte(body)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(bytes.TrimSpace(got))
}

// A receiver that answered 202 answers later by the signed callback: the
// event was acknowledged, not delivered again, and the callback's outcome
// completes the task, once. Forged, replayed, moved and unknown callbacks
// are refused.
func TestSignedCallbackCompletesAnAcceptedEvent(t *testing.T) {
	f := newCallbackFixture(t, time.Hour)
	f.accepted(t, "ev-1")

	var ce map[string]any
	if err := json.Unmarshal(f.rc.body[0], &ce); err != nil {
		t.Fatal(err)
	}
	if want := f.callback.URL + "/v1/webhooks/clio/crm/ev-1/outcome"; ce["lethecallbackurl"] != want {
		t.Errorf("lethecallbackurl %v, want %s", ce["lethecallbackurl"], want)
	}

	now := time.Now()
	forged := make([]byte, 32)
	_, _ = rand.Read(forged)
	for name, c := range map[string]struct {
		event, id string
		key       []byte
		ts        time.Time
		want      int
	}{
		"another key's signature": {"ev-1", "ev-1", forged, now, http.StatusUnauthorized},
		"a timestamp 6 min old":   {"ev-1", "ev-1", f.key, now.Add(-6 * time.Minute), http.StatusUnauthorized},
		"a timestamp 6 min ahead": {"ev-1", "ev-1", f.key, now.Add(6 * time.Minute), http.StatusUnauthorized},
		"another event's id":      {"ev-1", "ev-other", f.key, now, http.StatusUnauthorized},
		"an unknown event":        {"ev-nope", "ev-nope", f.key, now, http.StatusNotFound},
	} {
		if code, body := f.post(t, c.event, c.id, c.key, c.ts, `{"outcome": "ERASED"}`); code != c.want {
			t.Errorf("%s: %d %s, want %d", name, code, body, c.want)
		}
	}
	if code, body := f.post(t, "ev-1", "ev-1", f.key, now, `{"outcome": "APPLIED"}`); code != http.StatusBadRequest {
		t.Errorf("APPLIED to an erasure: %d %s, want 400", code, body)
	}

	if code, body := f.post(t, "ev-1", "ev-1", f.key, now, `{"outcome": "ERASED"}`); code != http.StatusOK || body != `{"outcome":"ERASED"}` {
		t.Fatalf("callback: %d %s, want 200 ERASED", code, body)
	}
	if o := outcome(t, f.js, "ev-1"); o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Fatalf("outcome %s, want ERASED", o.GetKind())
	}
	if _, _, waiting, err := f.ledger.Waiting("ev-1"); err != nil || waiting {
		t.Errorf("ev-1 still waiting (%v) after its outcome was reported", err)
	}
	// A repeated callback, even with another answer, gets the first one
	// and reports nothing: Answer publishes before it responds, so the
	// stream holds every outcome there will be once the 200 is read.
	if code, body := f.post(t, "ev-1", "ev-1", f.key, time.Now(), `{"outcome": "NOT_FOUND"}`); code != http.StatusOK || body != `{"outcome":"ERASED"}` {
		t.Errorf("second callback: %d %s, want 200 with the first answer, ERASED", code, body)
	}
	if n := len(outcomesOf(t, f.js, "ev-1")); n != 1 {
		t.Errorf("%d outcomes of ev-1, want 1", n)
	}
	// The 202 acknowledged the event: nothing is pending or redelivered.
	cons, err := f.js.Consumer(context.Background(), contract.StreamName, f.sub.ConsumerName(contract.KindErasureRequested))
	if err != nil {
		t.Fatal(err)
	}
	info, err := cons.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.NumAckPending != 0 || info.NumRedelivered != 0 || info.NumPending != 0 || f.rc.count() != 1 {
		t.Errorf("after the 202: %d pending acks, %d redelivered, %d pending, %d deliveries; want 0, 0, 0, 1",
			info.NumAckPending, info.NumRedelivered, info.NumPending, f.rc.count())
	}
}

// An accepted event whose callback does not come by its deadline ends
// FAILED, visibly; a callback after that gets the FAILED answer.
func TestAnAcceptedEventWithoutCallbackFailsAtItsDeadline(t *testing.T) {
	f := newCallbackFixture(t, 100*time.Millisecond)
	f.accepted(t, "ev-1")
	o := outcome(t, f.js, "ev-1")
	if o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_FAILED || !strings.Contains(o.GetReason(), "deadline") {
		t.Fatalf("outcome %s %q, want FAILED at the deadline", o.GetKind(), o.GetReason())
	}
	if code, body := f.post(t, "ev-1", "ev-1", f.key, time.Now(), `{"outcome": "ERASED"}`); code != http.StatusOK || !strings.HasPrefix(body, `{"outcome":"FAILED"`) {
		t.Errorf("late callback: %d %s, want 200 with the recorded FAILED", code, body)
	}
}
