package subscriber_test

import (
	"context"
	"testing"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestStopDuringSetUpIsNotAFailure: a process told to stop while its
// subscriber is still creating its consumer exits cleanly, not with an
// error its supervisor would count as a crash.
func TestStopDuringSetUpIsNotAFailure(t *testing.T) {
	_, _, js := sdktest.Stream(t)
	sub, err := subscriber.New(config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.Erased(), nil
		},
	}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := sub.Run(ctx); err != nil {
		t.Fatalf("Run with a stopped context = %v, want nil", err)
	}
}
