package outbox_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// shippedNATS starts the embedded server as lethe dev ships it: SyncAlways.
func shippedNATS(b *testing.B) (*nats.Conn, jetstream.JetStream) {
	ns := brokertest.StartAt(b, b.TempDir(), true)
	nc, js := brokertest.Connect(b, ns)
	if _, err := broker.EnsureStream(context.Background(), js, broker.DefaultStreamConfig()); err != nil {
		b.Fatal(err)
	}
	return nc, js
}

func openBench(b *testing.B) (*store.DB, *outbox.Outbox) {
	db, err := store.Open(store.Options{Path: b.TempDir() + "/bench.db", Schema: schema})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/bench"})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = ob.Close() })
	return db, ob
}

// BenchmarkOutboxCommit is a burst of b.N durable commits — a state change
// and its event in one bbolt transaction, acknowledged only after fsync —
// from 50 concurrent writers while the relay publishes to JetStream with
// SyncAlways. Run with -benchtime=20000x.
func BenchmarkOutboxCommit(b *testing.B) {
	nc, _ := shippedNATS(b)
	db, ob := openBench(b)
	relay, err := outbox.NewRelay(ob, nc, outbox.RelayConfig{})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	relayDone := make(chan error, 1)
	go func() { relayDone <- relay.Run(ctx) }()
	defer func() { cancel(); <-relayDone }()

	const writers = 50
	var next atomic.Int64
	var maxBacklog atomic.Int64
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				n := next.Add(1)
				if n > int64(b.N) {
					return
				}
				id := fmt.Sprint("w", n)
				if err := commit(context.Background(), db, ob, id, erasure("subject-"+id, id)); err != nil {
					b.Error(err)
					return
				}
				if d := int64(ob.Depth()); d > maxBacklog.Load() {
					maxBacklog.Store(d)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "commits/s")
	b.ReportMetric(float64(maxBacklog.Load()), "max-backlog")
}

// BenchmarkRelay compares the relay's drain rate of b.N staged events with
// JetStream's own asynchronous publish rate of b.N messages of the same
// size to the same server (SyncAlways), in one run. Run with
// -benchtime=10000x.
func BenchmarkRelay(b *testing.B) {
	nc, _ := shippedNATS(b)
	db, ob := openBench(b)

	// Stage b.N events, untimed.
	ctx := context.Background()
	const per = 500
	for i := 0; i < b.N; i += per {
		events := min(per, b.N-i)
		err := db.Update(func(tx *bolt.Tx) error {
			for j := range events {
				if err := ob.AddTx(ctx, tx, erasure(fmt.Sprint("subject-", i+j), fmt.Sprint("req-", i+j))); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	sample := erasure("subject-0", "req-0")
	payload, _ := contract.Marshal(sample)

	// JetStream's asynchronous publish rate on the same server.
	raw, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(1024))
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if _, err := raw.PublishAsync("lethe.bench.erasure.requested", payload, jetstream.WithMsgID(fmt.Sprint("raw-", i)), jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-raw.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("raw publishes not acknowledged")
	}
	rawRate := float64(b.N) / time.Since(start).Seconds()

	relay, err := outbox.NewRelay(ob, nc, outbox.RelayConfig{})
	if err != nil {
		b.Fatal(err)
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	start = time.Now()
	go func() { done <- relay.Run(runCtx) }()
	for ob.Depth() > 0 {
		time.Sleep(time.Millisecond)
	}
	relayRate := float64(b.N) / time.Since(start).Seconds()
	b.StopTimer()
	cancel()
	<-done

	b.ReportMetric(rawRate, "raw-async-msgs/s")
	b.ReportMetric(relayRate, "relay-events/s")
	b.ReportMetric(relayRate/rawRate, "relay/raw")
}
