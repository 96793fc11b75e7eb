package dsar_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/sdk/contract"
)

// monitor logs, every period until stop is called, how many requests
// were filed, the DSAR outbox's depth and, for each consumer of the
// platform stream with work, its pending (p) and unacknowledged (a)
// messages: where a run's requests wait (BenchmarkErasures with -v).
func monitor(t testing.TB, js jetstream.JetStream, filed *atomic.Int64, outbox func() int, period time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	start := time.Now()
	go func() {
		defer close(done)
		tk := time.NewTicker(period)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
			}
			stream, err := js.Stream(ctx, contract.StreamName)
			if err != nil {
				continue
			}
			var parts []string
			for ci := range stream.ListConsumers(ctx).Info() {
				if ci.NumPending == 0 && ci.NumAckPending == 0 {
					continue
				}
				parts = append(parts, fmt.Sprintf("%s p%d a%d", ci.Name, ci.NumPending, ci.NumAckPending))
			}
			t.Logf("%5.1fs filed %d outbox %d | %s", time.Since(start).Seconds(), filed.Load(), outbox(), strings.Join(parts, "; "))
		}
	}()
	return func() { cancel(); <-done }
}
