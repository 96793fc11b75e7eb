package subscriber_test

import (
	"context"
	"errors"
	"testing"
	"time"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// A handler that returns RetryAfter gets the event back after the delay it
// asked for (an HTTP endpoint's Retry-After), not after the back-off: with
// an hour's back-off, the second delivery still comes within the test.
func TestRetryAfterReplacesTheBackOff(t *testing.T) {
	_, _, js := sdktest.Stream(t)
	var calls counter
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
			calls.add(ev.ID())
			if ev.Delivered() == 1 {
				return subscriber.Outcome{}, subscriber.RetryAfter(50*time.Millisecond, errors.New("429 Too Many Requests"))
			}
			return subscriber.Erased(), nil
		},
	})
	cfg.BackOff = []time.Duration{time.Hour}
	sub := sdktest.Run(t, cfg)

	publish(t, js, newEvent("ev-1", contract.KindErasureRequested, 1), "")
	o := sdktest.WaitOutcomes(t, js, outcomeSubject, 1)[0].Outcome
	waitSettled(t, js, sub.ConsumerName(contract.KindErasureRequested))
	if o.GetKind() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED || calls.get("ev-1") != 2 {
		t.Fatalf("outcome %s after %d calls, want ERASED after 2", o.GetKind(), calls.get("ev-1"))
	}
	if err := subscriber.RetryAfter(48*time.Hour, errors.New("x")); err.Error() != "x" {
		t.Fatalf("RetryAfter changes the error's text: %q", err)
	}
}
