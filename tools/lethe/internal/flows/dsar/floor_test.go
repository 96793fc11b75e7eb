package dsar_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// The JetStream floor of a run: the time the broker alone needs to store
// and deliver what the run made it store and deliver. A run is measured
// against it on the same server, in the same process, minutes apart, so
// that the machine's load (shared, noisy) weighs on both alike.
//
// What the floor replays is read back from the run itself, not modelled:
// every message the run stored in the platform stream (its subject, its
// headers and payload, hence its size), the erasure ledger copying the
// erasure directives, and every durable consumer the run advanced, with
// its configuration. The floor stores them in a stream of the platform
// stream's configuration under another subject prefix and consumes them
// through copies of those consumers, acknowledging each message as
// Lethe's consumers do (a plain Ack). The publishers follow the run's
// pattern: the services' events as one outbox relay publishes them (an
// asynchronous window of outbox.RelayConfig's default, 1024), each
// system's outcome messages one after another, waiting for each
// acknowledgement, as sdk/subscriber's outcome publisher does. What the
// floor leaves out is everything that is not the broker: the services'
// bbolt commits, gRPC, the systems' ledgers, the task tracking.

// relayWindow is the outbox relay's default window
// (outbox.RelayConfig.Window).
const relayWindow = 1024

// floorPrefix replaces broker.SubjectPrefix in the floor's subjects.
const floorPrefix = "floor"

// streamMark is where a run starts: the platform stream's last sequence
// and the delivered count of each of its consumers.
type streamMark struct {
	lastSeq   uint64
	delivered map[string]uint64
}

// markStream records where the platform stream stands.
func markStream(t testing.TB, js jetstream.JetStream) streamMark {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, contract.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	m := streamMark{lastSeq: info.State.LastSeq, delivered: map[string]uint64{}}
	for ci := range stream.ListConsumers(ctx).Info() {
		m.delivered[ci.Name] = ci.Delivered.Consumer
	}
	return m
}

// floorRun is what a run stored and delivered, ready to replay.
type floorRun struct {
	events    []*nats.Msg            // published by the services' outbox relays
	outcomes  map[string][]*nats.Msg // by outcome subject: each system's outcomes, in order
	consumers []jetstream.ConsumerConfig
	bytes     int
}

// messages is how many messages the run stored.
func (r *floorRun) messages() int {
	n := len(r.events)
	for _, o := range r.outcomes {
		n += len(o)
	}
	return n
}

// readRun reads back what the platform stream stored after from, and the
// consumers that advanced since, with their subjects moved under
// floorPrefix.
func readRun(t testing.TB, js jetstream.JetStream, from streamMark) *floorRun {
	t.Helper()
	ctx := context.Background()
	stream, err := js.Stream(ctx, contract.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	run := &floorRun{outcomes: map[string][]*nats.Msg{}}
	// The consumers first, before this function's own reader joins them.
	for ci := range stream.ListConsumers(ctx).Info() {
		if ci.Delivered.Consumer == from.delivered[ci.Name] {
			continue // not part of the run
		}
		cfg := ci.Config
		cfg.Durable, cfg.Name = "floor-"+ci.Name, ""
		cfg.FilterSubject = floorSubject(cfg.FilterSubject)
		for i, f := range cfg.FilterSubjects {
			cfg.FilterSubjects[i] = floorSubject(f)
		}
		// A consumer that started before the run delivers the run only.
		cfg.DeliverPolicy, cfg.OptStartSeq, cfg.OptStartTime = jetstream.DeliverAllPolicy, 0, nil
		run.consumers = append(run.consumers, cfg)
	}
	if info.State.LastSeq > from.lastSeq {
		cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
			DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from.lastSeq + 1})
		if err != nil {
			t.Fatal(err)
		}
		for seq := from.lastSeq; seq < info.State.LastSeq; {
			msg, err := cons.Next(jetstream.FetchMaxWait(10 * time.Second))
			if err != nil {
				t.Fatalf("read back message %d of the run: %v", seq+1, err)
			}
			meta, err := msg.Metadata()
			if err != nil {
				t.Fatal(err)
			}
			seq = meta.Sequence.Stream
			out := &nats.Msg{Subject: floorSubject(msg.Subject()), Header: nats.Header{}, Data: msg.Data()}
			for k, v := range msg.Headers() {
				if !strings.HasPrefix(k, "Nats-") || k == nats.MsgIdHdr {
					out.Header[k] = v
				}
			}
			run.bytes += len(out.Data)
			if _, _, ok := contract.ParseOutcomeSubject(msg.Subject()); ok {
				run.outcomes[out.Subject] = append(run.outcomes[out.Subject], out)
			} else {
				run.events = append(run.events, out)
			}
		}
	}
	if testing.Verbose() {
		kinds := map[string]int{}
		for _, m := range run.events {
			kinds[m.Subject]++
		}
		for s, o := range run.outcomes {
			kinds[s] += len(o)
		}
		t.Logf("the run stored %d messages (%d bytes): %v; consumers: %d", run.messages(), run.bytes, kinds, len(run.consumers))
		for _, c := range run.consumers {
			t.Logf("consumer %s %s %v", c.Durable, c.FilterSubject, c.FilterSubjects)
		}
	}
	return run
}

// floorSubject moves a platform subject (or filter) under floorPrefix.
func floorSubject(s string) string {
	if s == "" {
		return ""
	}
	return floorPrefix + strings.TrimPrefix(s, broker.SubjectPrefix)
}

// measureFloor replays run on fresh streams of the platform stream's and
// the erasure ledger's configuration and returns the time from the first
// publish until every message is stored, copied to the floor's ledger
// and acknowledged by every consumer that would receive it.
func measureFloor(t testing.TB, js jetstream.JetStream, run *floorRun) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	platform, err := js.Stream(ctx, contract.StreamName)
	if err != nil {
		t.Fatal(err)
	}
	cfg := platform.CachedInfo().Config
	cfg.Name, cfg.Subjects = "FLOOR", []string{floorPrefix + ".>"}
	floor, err := js.CreateStream(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ledger, err := js.Stream(ctx, contract.ErasureLedgerStream)
	if err != nil {
		t.Fatal(err)
	}
	lcfg := ledger.CachedInfo().Config
	lcfg.Name = "FLOOR_ERASURES"
	lcfg.Sources = []*jetstream.StreamSource{{Name: "FLOOR", FilterSubject: floorSubject(broker.ErasureLedgerFilter)}}
	floorLedger, err := js.CreateStream(ctx, lcfg)
	if err != nil {
		t.Fatal(err)
	}
	all := append([]*nats.Msg(nil), run.events...)
	erasures := 0
	for _, m := range run.events {
		if server.SubjectMatchesFilter(m.Subject, floorSubject(broker.ErasureLedgerFilter)) {
			erasures++
		}
	}
	for _, o := range run.outcomes {
		all = append(all, o...)
	}
	type consumer struct {
		cons jetstream.Consumer
		want int
	}
	var consumers []consumer
	for _, cc := range run.consumers {
		c, err := floor.CreateConsumer(ctx, cc)
		if err != nil {
			t.Fatalf("floor consumer %s: %v", cc.Durable, err)
		}
		want := 0
		for _, m := range all {
			if matchesAny(m.Subject, cc) {
				want++
			}
		}
		consumers = append(consumers, consumer{c, want})
	}

	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, len(consumers)+len(run.outcomes)+2)
	got := make([]atomic.Int64, len(consumers))
	for i, c := range consumers {
		wg.Go(func() {
			got := &got[i]
			for int(got.Load()) < c.want {
				batch, err := c.cons.Fetch(min(c.want-int(got.Load()), 256), jetstream.FetchMaxWait(time.Second))
				if err != nil {
					errs <- err
					return
				}
				for msg := range batch.Messages() {
					if err := msg.Ack(); err != nil {
						errs <- err
						return
					}
					got.Add(1)
				}
				if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
					errs <- err
					return
				}
				if ctx.Err() != nil {
					errs <- ctx.Err()
					return
				}
			}
		})
	}
	wg.Go(func() {
		// As the outbox relay does (platform/outbox, Relay.flush): one
		// window of asynchronous publishes at a time, then their
		// acknowledgements.
		relay, err := jetstream.New(js.Conn(), jetstream.WithPublishAsyncMaxPending(relayWindow))
		if err != nil {
			errs <- err
			return
		}
		for from := 0; from < len(run.events); from += relayWindow {
			for _, m := range run.events[from:min(from+relayWindow, len(run.events))] {
				if _, err := relay.PublishMsgAsync(m); err != nil {
					errs <- err
					return
				}
			}
			select {
			case <-relay.PublishAsyncComplete():
			case <-ctx.Done():
				errs <- ctx.Err()
				return
			}
		}
	})
	for _, msgs := range run.outcomes {
		wg.Go(func() {
			for _, m := range msgs {
				if _, err := js.PublishMsg(ctx, m); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var ledgered atomic.Uint64
	wg.Go(func() {
		for ctx.Err() == nil {
			info, err := floorLedger.Info(ctx)
			if err == nil {
				ledgered.Store(info.State.Msgs)
				if info.State.Msgs >= uint64(erasures) {
					return
				}
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
	wg.Wait()
	if ctx.Err() != nil {
		var progress []string
		for i, c := range consumers {
			progress = append(progress, fmt.Sprintf("%s %d/%d", run.consumers[i].Durable, got[i].Load(), c.want))
		}
		t.Fatalf("the floor did not finish: consumers %v; ledger %d/%d", progress, ledgered.Load(), erasures)
	}
	elapsed := time.Since(start)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, name := range []string{"FLOOR", "FLOOR_ERASURES"} {
		if err := js.DeleteStream(context.Background(), name); err != nil {
			t.Fatal(err)
		}
	}
	return elapsed
}

// matchesAny reports whether a consumer configured as cc receives subject.
func matchesAny(subject string, cc jetstream.ConsumerConfig) bool {
	filters := cc.FilterSubjects
	if cc.FilterSubject != "" {
		filters = append(filters, cc.FilterSubject)
	}
	if len(filters) == 0 {
		return true
	}
	for _, f := range filters {
		if server.SubjectMatchesFilter(subject, f) {
			return true
		}
	}
	return false
}
