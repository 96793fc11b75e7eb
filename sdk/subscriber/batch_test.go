package subscriber_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/internal/eventually"
	"github.com/lethe-privacy/lethe/sdk/internal/sdktest"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// Outcomes that gather while one is being stored are stored together, as
// one OutcomeBatch message: the stream syncs once for them. Every outcome is
// stored, once.
func TestConcurrentOutcomesAreStoredInBatches(t *testing.T) {
	outcomesStoredInBatches(t, 32)
}

// TestOneWorkerStillBatchesOutcomes: a worker hands its outcome to the
// publisher and takes the next event without waiting for the store, so
// outcomes gather while one is stored even with a single worker. Were the
// worker held until its outcome was stored, every outcome would be a
// message of its own.
func TestOneWorkerStillBatchesOutcomes(t *testing.T) {
	outcomesStoredInBatches(t, 1)
}

// outcomesStoredInBatches answers 300 erasures with the given number of
// workers and checks that every outcome is stored once, in fewer
// messages than outcomes.
func outcomesStoredInBatches(t *testing.T, workers int) {
	_, _, js := sdktest.Stream(t)
	cfg := config(t, js, sdktest.OpenLedger(t, "newsletter.db"), map[contract.Kind]subscriber.Handler{
		contract.KindErasureRequested: func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
			return subscriber.Erased(), nil
		},
	})
	cfg.Workers = workers
	sdktest.Run(t, cfg)
	const n = 300
	for i := range n {
		// Events about one subject are handled one at a time; these are
		// about 300 subjects.
		ev := newEvent(fmt.Sprint("ev-", i), contract.KindErasureRequested, uint64(i+1))
		ev.SubjectId = fmt.Sprint("subject-", i)
		publish(t, js, ev, "")
	}

	outcomes, messages := map[string]int{}, 0
	eventually.True(t, fmt.Sprintf("%d events have an outcome stored", n), func() bool {
		outcomes, messages = map[string]int{}, 0
		cons, err := js.OrderedConsumer(context.Background(), contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{outcomeSubject}})
		if err != nil {
			t.Fatal(err)
		}
		for {
			batch, err := cons.FetchNoWait(1000)
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			for msg := range batch.Messages() {
				got++
				messages++
				all, err := contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
				if err != nil {
					t.Fatal(err)
				}
				for _, o := range all {
					outcomes[o.EventId]++
				}
			}
			if got == 0 {
				break
			}
		}
		return len(outcomes) >= n
	})
	if len(outcomes) != n {
		t.Fatalf("%d of %d events have an outcome stored", len(outcomes), n)
	}
	for id, times := range outcomes {
		if times != 1 {
			t.Errorf("the outcome of %s is stored %d times", id, times)
		}
	}
	if messages >= n {
		t.Fatalf("%d outcomes took %d messages: none was stored in a batch", n, messages)
	}
	t.Logf("%d workers: %d outcomes in %d messages", workers, n, messages)
}
