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

// outcomePublisher publishes a system's outcomes with group commit: the
// first outcome of a subject is published at once, alone; outcomes that
// arrive while it is being stored are published together, as one
// OutcomeBatch, as soon as it is. Lethe's stream syncs every message it
// stores, so under load a batch costs one sync instead of one per outcome;
// a lone outcome never waits. Each caller learns whether its own outcome
// was stored, and acknowledges its event only then.
type outcomePublisher struct {
	js     jetstream.JetStream
	system string

	mu     sync.Mutex
	queues map[string]*outcomeQueue // by subject
}

type outcomeQueue struct {
	pending []*pendingOutcome
	running bool
}

type pendingOutcome struct {
	outcome *eventsv1.Outcome
	msg     *nats.Msg // the outcome alone, with its own headers
	done    chan error
}

// publish stores msg (o, alone) or a batch holding o, and returns whether
// it was stored, or ctx's error if it ends first.
func (p *outcomePublisher) publish(ctx context.Context, o *eventsv1.Outcome, msg *nats.Msg) error {
	po := &pendingOutcome{outcome: o, msg: msg, done: make(chan error, 1)}
	p.mu.Lock()
	if p.queues == nil {
		p.queues = map[string]*outcomeQueue{}
	}
	q := p.queues[msg.Subject]
	if q == nil {
		q = &outcomeQueue{}
		p.queues[msg.Subject] = q
	}
	q.pending = append(q.pending, po)
	if !q.running {
		q.running = true
		go p.run(msg.Subject, q)
	}
	p.mu.Unlock()
	select {
	case err := <-po.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run publishes a subject's queued outcomes until none is left.
func (p *outcomePublisher) run(subject string, q *outcomeQueue) {
	for {
		p.mu.Lock()
		n := min(len(q.pending), maxOutcomeBatch)
		if n == 0 {
			q.running = false
			delete(p.queues, subject)
			p.mu.Unlock()
			return
		}
		batch := append([]*pendingOutcome(nil), q.pending[:n]...)
		q.pending = append(q.pending[:0], q.pending[n:]...)
		p.mu.Unlock()

		err := p.store(subject, batch)
		for _, po := range batch {
			po.done <- err
		}
	}
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
