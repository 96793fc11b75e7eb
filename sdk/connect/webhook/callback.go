package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// Answerer takes a system's later answer to one of its events:
// *subscriber.Subscriber.
type Answerer interface {
	Answer(ctx context.Context, eventID string, out subscriber.Outcome) (*eventsv1.Outcome, error)
}

// CallbackPath is the path of an event's signed callback on the runner's
// listener.
func CallbackPath(tenant, system, eventID string) string {
	return "/v1/webhooks/" + tenant + "/" + system + "/" + eventID + "/outcome"
}

// CallbackHandler serves the signed callback of webhook receivers that
// answered 202 Accepted: POST /v1/webhooks/<tenant>/<system>/<event
// id>/outcome with the outcome as a delivery's response would carry it
// ({"outcome": ..., "reason": ...}), signed as Standard Webhooks says with
// the system's signing secret (read from
// secretsDir/<tenant>/<system>/, the previous one too during a rotation).
// webhook-id must be the event id, so that a signature cannot be moved to
// another event; webhook-timestamp must be within Tolerance of now.
//
// It answers 200 with the outcome recorded (the first one: a repeated
// callback gets the same answer and reports nothing again), 401 for a
// missing or wrong signature or an old timestamp, 404 for a system
// systems does not know or an event that is not waiting for its answer,
// 400 for a body that is not an outcome of the event's kind. systems
// returns the Answerer of a WEBHOOK system, nil for any other; now is the
// clock (time.Now when nil).
func CallbackHandler(secretsDir string, systems func(tenant, system string) Answerer, now func() time.Time) http.Handler {
	if now == nil {
		now = time.Now
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		if r.Method != http.MethodPost {
			http.Error(w, "POST only", http.StatusMethodNotAllowed)
			return
		}
		tenant, system, eventID, ok := callbackTarget(r.URL.Path)
		if !ok {
			http.Error(w, "want /v1/webhooks/<tenant>/<system>/<event id>/outcome", http.StatusNotFound)
			return
		}
		raw, err := io.ReadAll(io.LimitReader(r.Body, maxResponse+1))
		if err != nil || len(raw) > maxResponse {
			http.Error(w, "the body is unreadable or larger than 64 KiB", http.StatusRequestEntityTooLarge)
			return
		}
		// Authenticate before saying anything about the system or the
		// event, so that a caller without the secret learns nothing.
		keys, err := (&secrets{dir: filepath.Join(secretsDir, tenant, system)}).current()
		if err != nil {
			http.Error(w, "the system has no signing secret here", http.StatusUnauthorized)
			return
		}
		if r.Header.Get(HeaderID) != eventID {
			http.Error(w, "webhook-id must be the event id of the path", http.StatusUnauthorized)
			return
		}
		if err := Verify(keys, eventID, r.Header.Get(HeaderTimestamp), r.Header.Get(HeaderSignature), raw, now()); err != nil {
			http.Error(w, err.Error(), http.StatusUnauthorized)
			return
		}
		a := systems(tenant, system)
		if a == nil {
			http.Error(w, "the system is not a webhook system answered here", http.StatusNotFound)
			return
		}
		out, err := parseAnswer(raw)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		o, err := a.Answer(r.Context(), eventID, out)
		switch {
		case errors.Is(err, subscriber.ErrNotWaiting):
			http.Error(w, "no event "+eventID+" is waiting for this system's answer", http.StatusNotFound)
			return
		case errors.Is(err, subscriber.ErrInvalidOutcome):
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		case err != nil:
			http.Error(w, "recording the answer failed; send it again", http.StatusServiceUnavailable)
			return
		}
		writeOutcome(w, o)
	})
}

// callbackTarget reads the tenant, system and event id of a callback's
// path.
func callbackTarget(path string) (tenant, system, eventID string, ok bool) {
	rest, ok := strings.CutPrefix(path, "/v1/webhooks/")
	parts := strings.Split(rest, "/")
	if !ok || len(parts) != 4 || parts[3] != "outcome" || !contract.ValidToken(parts[0]) || !contract.ValidToken(parts[1]) || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// writeOutcome answers the recorded outcome in the callback's own shape.
func writeOutcome(w http.ResponseWriter, o *eventsv1.Outcome) {
	retained := make([]json.RawMessage, len(o.GetRetained()))
	for i, r := range o.GetRetained() {
		retained[i], _ = protojson.Marshal(r) // a recorded outcome marshals
	}
	data, _ := json.Marshal(struct {
		Outcome  string            `json:"outcome"`
		Reason   string            `json:"reason,omitempty"`
		Retained []json.RawMessage `json:"retained,omitempty"`
	}{strings.TrimPrefix(o.GetKind().String(), "OUTCOME_KIND_"), o.GetReason(), retained})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}
