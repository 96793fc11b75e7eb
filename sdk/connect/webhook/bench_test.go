package webhook_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// BenchmarkDeliveries measures how many erasures a system answers per
// second with 50 in flight (the subscriber's workers): "sdk" is a Go
// handler that answers at once, "webhook" the same answer from a local
// HTTPS receiver, signed and delivered by webhook.Handler. The events are
// published first; the clock runs from the subscriber's start until every
// event is acknowledged, its outcome published and recorded in the ledger.
//
//	cd sdk && go test -run '^$' -bench Deliveries -benchtime 5000x ./connect/webhook/
func BenchmarkDeliveries(b *testing.B) {
	for _, name := range []string{"sdk", "webhook"} {
		b.Run(name, func(b *testing.B) {
			js := stream(b)
			var h subscriber.Handler = func(context.Context, *subscriber.Event) (subscriber.Outcome, error) { return subscriber.Erased(), nil }
			if name == "webhook" {
				dir := b.TempDir()
				newSecret(b, dir, webhook.SecretFile)
				rc := newReceiver(b, func(int, *http.Request, []byte) (int, http.Header, string) {
					return http.StatusOK, nil, `{"outcome": "ERASED"}`
				})
				h = rc.handler(b, dir)
			}
			ctx := context.Background()
			for i := range b.N {
				_, msg := erasureMsg(b, fmt.Sprintf("ev-%d", i), fmt.Sprintf("subject-%d", i))
				if _, err := js.PublishMsgAsync(msg); err != nil {
					b.Fatal(err)
				}
			}
			select {
			case <-js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publishing did not complete")
			}
			consumer, err := contract.KindConsumerName(system, tenant, contract.KindErasureRequested)
			if err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			start := time.Now()
			runSubscriberWorkers(b, js, h, 3, 50)
			eventually.Poll{Timeout: 10 * time.Minute, Interval: 10 * time.Millisecond}.True(b, "every event answered", func() bool {
				c, err := js.Consumer(ctx, contract.StreamName, consumer)
				if err != nil {
					return false
				}
				info, err := c.Info(ctx)
				return err == nil && info.Delivered.Stream >= uint64(b.N) && info.NumAckPending == 0 && info.NumPending == 0
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}
