package subscriber

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// maxOutcomeBatch bounds the outcomes published in one message.
const maxOutcomeBatch = 500

// outcomesInFlight is how many of a subject's outcome messages may await
// their acknowledgement at once. Every message the stream stores is an
// fsync under its lock, which also holds up deliveries; four in flight
// made more, smaller messages and no measurable gain (BenchmarkErasures,
// docs/benchmarks.md).
const outcomesInFlight = 1

// outcomePublisher publishes a system's outcomes with group commit: the
// first outcome of a subject is published at once, alone; outcomes that
// arrive while it is being stored are published together, as one
// OutcomeBatch, as soon as it is. Lethe's stream syncs every message it
// stores, so under load a batch costs one sync instead of one per outcome;
// a lone outcome never waits.
//
// Publishing does not hold up the worker that answered the event: the
// worker hands its outcome over (enqueue) and takes the next event, and
// the publisher calls back once the outcome is stored, or failed to be,
// which is when the event is acknowledged, or given back. So a system's
// throughput is not its workers divided by a publish round trip, and its
// batches grow with the load rather than with the number of workers.
type outcomePublisher struct {
	js     jetstream.JetStream
	system string

	mu     sync.Mutex
	queues map[string]*outcomeQueue // by subject
	// flying counts the publishes under way, their callers not yet told;
	// landed is signalled when it falls to zero (wait). Not a WaitGroup:
	// Answer may hand an outcome over while Run waits.
	flying int
	landed *sync.Cond
}

type outcomeQueue struct {
	pending []*pendingOutcome
	flying  int // messages awaiting their acknowledgement
}

type pendingOutcome struct {
	outcome *eventsv1.Outcome
	msg     *nats.Msg // the outcome alone, with its own headers
	// done learns whether the outcome was stored; it runs on the
	// publisher's goroutine and must not block.
	done func(error)
}

// enqueue queues o (msg is o alone, ready to publish) and returns at
// once; done is called with whether o was stored, alone or in a batch.
func (p *outcomePublisher) enqueue(o *eventsv1.Outcome, msg *nats.Msg, done func(error)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.queues == nil {
		p.queues = map[string]*outcomeQueue{}
	}
	q := p.queues[msg.Subject]
	if q == nil {
		q = &outcomeQueue{}
		p.queues[msg.Subject] = q
	}
	q.pending = append(q.pending, &pendingOutcome{outcome: o, msg: msg, done: done})
	p.launchLocked(msg.Subject, q)
}

// publish stores msg (o, alone) or a batch holding o, and returns whether
// it was stored, or ctx's error if it ends first.
func (p *outcomePublisher) publish(ctx context.Context, o *eventsv1.Outcome, msg *nats.Msg) error {
	stored := make(chan error, 1)
	p.enqueue(o, msg, func(err error) { stored <- err })
	select {
	case err := <-stored:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// wait returns once every outcome handed over has been stored or failed
// and its caller told.
func (p *outcomePublisher) wait() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.flying > 0 {
		p.landedLocked().Wait()
	}
}

// landedLocked returns the condition wait waits on. p.mu is held.
func (p *outcomePublisher) landedLocked() *sync.Cond {
	if p.landed == nil {
		p.landed = sync.NewCond(&p.mu)
	}
	return p.landed
}

// launchLocked starts publishing the subject's queued outcomes while
// fewer than outcomesInFlight messages await their acknowledgement, and
// forgets the subject once nothing is queued or under way. p.mu is held.
func (p *outcomePublisher) launchLocked(subject string, q *outcomeQueue) {
	for q.flying < outcomesInFlight && len(q.pending) > 0 {
		n := min(len(q.pending), maxOutcomeBatch)
		batch := append([]*pendingOutcome(nil), q.pending[:n]...)
		q.pending = append(q.pending[:0], q.pending[n:]...)
		q.flying++
		p.flying++
		go p.fly(subject, q, batch)
	}
	if q.flying == 0 && len(q.pending) == 0 {
		delete(p.queues, subject)
	}
}

// fly publishes one batch, starts the next (the outcomes queued
// meanwhile), then tells the batch's callers.
func (p *outcomePublisher) fly(subject string, q *outcomeQueue, batch []*pendingOutcome) {
	err := p.store(subject, batch)
	p.mu.Lock()
	q.flying--
	p.launchLocked(subject, q)
	p.mu.Unlock()
	for _, po := range batch {
		po.done(err)
	}
	p.mu.Lock()
	if p.flying--; p.flying == 0 {
		p.landedLocked().Broadcast()
	}
	p.mu.Unlock()
}

// store publishes one outcome as it is, or several as one OutcomeBatch.
func (p *outcomePublisher) store(subject string, batch []*pendingOutcome) error {
	msg := batch[0].msg
	if len(batch) > 1 {
		outcomes := make([]*eventsv1.Outcome, 0, len(batch))
		for _, po := range batch {
			outcomes = append(outcomes, po.outcome)
		}
		payload, err := contract.Marshal(&eventsv1.OutcomeBatch{Outcomes: outcomes})
		if err != nil {
			return fmt.Errorf("encode outcome batch: %w", err)
		}
		msg = &nats.Msg{Subject: subject, Header: contract.OutcomeBatchHeaders(p.system, outcomes), Data: payload}
	}
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	_, err := p.js.PublishMsg(ctx, msg)
	return err
}
