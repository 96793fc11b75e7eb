package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"runtime/debug"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
)

// reasonSuperseded is logged for a restriction event older than one
// already answered.
const reasonSuperseded = "superseded by a newer event"

// publishTimeout bounds the wait for the stream to acknowledge an outcome.
const publishTimeout = 10 * time.Second

// process answers one delivery: decode, answer a duplicate from the
// ledger, otherwise skip a superseded event or call the handler, record
// the outcome, publish it, and only then acknowledge the delivery. Every
// step before the acknowledgement can be repeated: a crash anywhere leads
// to a redelivery that the ledger answers. process returns once the
// handler has returned: the outcome is recorded (record) and published
// off the worker, and the delivery is acknowledged (or given back) when
// the publisher has stored it (or failed to), kept in progress until
// then.
func (s *Subscriber) process(ctx context.Context, msg jetstream.Msg) {
	ctx = s.cfg.Propagator.Extract(ctx, headerCarrier(msg.Headers()))
	var consumer string
	if md, err := msg.Metadata(); err == nil {
		consumer = md.Consumer
	}
	ctx, span := s.tracer.Start(ctx, "process "+msg.Subject(),
		trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(
			attribute.String("messaging.system", "nats"),
			attribute.String("messaging.operation.type", "process"),
			attribute.String("messaging.destination.name", msg.Subject()),
			attribute.String("messaging.consumer.group.name", consumer),
		))

	ev, err := s.decode(msg)
	if err != nil {
		// No delivery will make it decodable, and without an id and a
		// cause there is no task to answer: terminate it, which the
		// server reports in a MSG_TERMINATED advisory.
		s.log.Error("terminating an invalid event", "nats_subject", msg.Subject(), "error", err)
		span.SetStatus(codes.Error, err.Error())
		if err := msg.TermWithReason("invalid event: " + err.Error()); err != nil {
			s.log.Warn("terminate failed", "nats_subject", msg.Subject(), "error", err)
		}
		span.End()
		return
	}
	d := &delivery{msg: msg, ev: ev, span: span,
		log: s.log.With("event_id", ev.ID(), "kind", ev.Kind(), "delivery", ev.Delivered())}
	span.SetAttributes(attribute.String("messaging.message.id", ev.ID()), attribute.Int("messaging.delivery_count", ev.Delivered()))

	// Keep the event from being redelivered while it waits for its
	// subject, while it is handled and while its outcome is published.
	d.stop = keepInProgress(msg, max(s.cfg.AckWait/2, time.Millisecond))
	if !s.handle(ctx, d) {
		d.end()
	}
}

// delivery is one event being answered, and what must happen once it is
// acknowledged or given back, on whichever goroutine that happens.
type delivery struct {
	msg  jetstream.Msg
	ev   *Event
	log  *slog.Logger
	span trace.Span
	stop func() // ends keepInProgress
}

// end stops keeping the delivery in progress and ends its span.
func (d *delivery) end() {
	d.stop()
	d.span.End()
}

// handle answers a decoded delivery under its subject's lock. It reports
// whether it handed the delivery on (to record, or to the publisher),
// which then finishes it; otherwise the delivery is finished
// (acknowledged, given back or left to its AckWait) when handle returns.
func (s *Subscriber) handle(ctx context.Context, d *delivery) bool {
	msg, ev, log, span := d.msg, d.ev, d.log, d.span
	unlock, err := s.locks.lock(ctx, subjectKey(ev))
	if err != nil {
		_ = msg.Nak() // Run is stopping: another instance may take it now
		return false
	}
	recording := false
	defer func() {
		if !recording {
			unlock()
		}
	}()

	if o, found, err := s.cfg.Ledger.Lookup(ev.ID()); err != nil {
		s.retry(msg, ev, log, span, err)
		return false
	} else if found {
		log.Debug("answering a duplicate with the recorded outcome")
		return s.report(ctx, d, o)
	}
	if _, ok := s.cfg.Handlers[ev.Kind()]; !ok {
		// Each consumer delivers one kind, which has a handler; only a
		// consumer changed behind the subscriber's back gets here. Leave
		// the event to an instance that answers it.
		s.retry(msg, ev, log, span, fmt.Errorf("no handler for %s", ev.Kind()))
		return false
	}

	o, err := s.answer(ctx, ev, log)
	if until, ok := laterDeadline(err); ok {
		s.wait(msg, ev, until, log, span)
		return false
	}
	if err != nil {
		if ev.Delivered() < s.cfg.MaxDeliver {
			s.retry(msg, ev, log, span, err)
			return false
		}
		// The last delivery: report the failure, so that the task fails
		// where operators see it rather than vanish with the message.
		log.Error("giving up on the event", "error", err)
		o = s.outcomeOf(ev, Failed(fmt.Sprintf("gave up after %d deliveries: %v", ev.Delivered(), err)))
	}
	recording = true
	s.record(ctx, d, o, unlock)
	return true
}

// record records o in the ledger, then releases the subject's lock and
// reports the outcome recorded, on a goroutine of its own: the worker
// takes its next event meanwhile, and the ledger's records of many events
// share one commit (bbolt's Batch) instead of holding one worker each
// for a commit's latency. The goroutines are bounded by the events
// unacknowledged, which the server caps per consumer (MaxAckPending, 1,000
// by default). The first outcome recorded wins: if the handler recorded
// one in its own transaction, that one is reported.
func (s *Subscriber) record(ctx context.Context, d *delivery, o *eventsv1.Outcome, unlock func()) {
	s.recording.Go(func() {
		stored, err := s.cfg.Ledger.Record(d.ev.pb, o)
		unlock()
		if err != nil {
			s.retry(d.msg, d.ev, d.log, d.span, err)
			d.end()
			return
		}
		if !s.report(ctx, d, stored) {
			d.end()
		}
	})
}

// answer returns the outcome of an event the ledger has no outcome for: a
// superseded restriction event is not applicable, any other goes to its
// handler.
func (s *Subscriber) answer(ctx context.Context, ev *Event, log *slog.Logger) (*eventsv1.Outcome, error) {
	superseded, err := s.cfg.Ledger.Superseded(ev.pb)
	if err != nil {
		return nil, err
	}
	if superseded {
		log.Info("not applying the event", "reason", reasonSuperseded)
		return s.outcomeOf(ev, NotApplicable(reasonSuperseded)), nil
	}

	out, err := s.call(ctx, ev, log)
	switch {
	case errors.Is(err, ledger.ErrRecorded):
		// Another process answered the event while the handler ran, and
		// the handler rolled its change back. The recorded outcome
		// stands.
		o, found, lerr := s.cfg.Ledger.Lookup(ev.ID())
		if lerr != nil || !found {
			return nil, errors.Join(err, lerr)
		}
		return o, nil
	case errors.Is(err, ledger.ErrSuperseded):
		log.Info("not applying the event", "reason", reasonSuperseded)
		return s.outcomeOf(ev, NotApplicable(reasonSuperseded)), nil
	case err != nil:
		return nil, err
	}
	if out.kind == eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE && out.reason != "" {
		log.Info("the event does not apply", "reason", out.reason)
	}
	o := s.outcomeOf(ev, out)
	if err := validateOutcome(o, ev.kind); err != nil {
		// A bug in the handler; a new version may fix it before the
		// deliveries run out.
		return nil, fmt.Errorf("the handler returned an invalid outcome: %w", err)
	}
	return o, nil
}

// call runs the event's handler. A panic becomes an error, retried like
// one, so that a poison event ends as a FAILED outcome rather than crash
// the system at every delivery.
func (s *Subscriber) call(ctx context.Context, ev *Event, log *slog.Logger) (out Outcome, err error) {
	defer func() {
		if r := recover(); r != nil {
			log.Error("the handler panicked", "panic", r, "stack", string(debug.Stack()))
			err = fmt.Errorf("the handler panicked: %v", r)
		}
	}()
	return s.cfg.Handlers[ev.kind](ctx, ev)
}

// report hands o to the publisher for the system's outcome subject and
// reports whether it did; once the stream has acknowledged the outcome,
// the publisher acknowledges the event and ends the delivery. Acked
// earlier, the event would be gone before its outcome was safe; this way
// a lost publish is retried from the ledger. The subject's lock is not
// held meanwhile: the outcome is recorded, and a later event about the
// subject may be handled while it is published.
func (s *Subscriber) report(ctx context.Context, d *delivery, o *eventsv1.Outcome) bool {
	log := d.log.With("outcome", o.GetKind())
	d.span.SetAttributes(attribute.String("lethe.outcome", o.GetKind().String()))
	msg, err := s.outcomeMsg(ctx, o)
	if err != nil {
		s.retry(d.msg, d.ev, log, d.span, err)
		return false
	}
	s.outcomes.enqueue(o, msg, func(err error) {
		defer d.end()
		if err != nil {
			s.retry(d.msg, d.ev, log, d.span, fmt.Errorf("publish outcome: %w", err))
			return
		}
		// A plain Ack, not DoubleAck: if the ack is lost the event is
		// redelivered and answered from the ledger without calling the
		// handler, so waiting for the server to confirm the ack would
		// cost a round trip per event and change nothing.
		if err := d.msg.Ack(); err != nil {
			log.Warn("ack failed; the event will be redelivered and answered from the ledger", "error", err)
			return
		}
		log.Info("reported outcome")
	})
	return true
}

// outcomeMsg is the message that publishes o alone on the system's
// outcome subject, carrying ctx's trace.
func (s *Subscriber) outcomeMsg(ctx context.Context, o *eventsv1.Outcome) (*nats.Msg, error) {
	natsSubject, err := contract.OutcomeSubject(o.GetTenantId(), o.GetSystemId())
	if err != nil {
		return nil, err
	}
	payload, err := contract.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode outcome: %w", err)
	}
	header := contract.OutcomeHeaders(o)
	s.cfg.Propagator.Inject(ctx, headerCarrier(header))
	return &nats.Msg{Subject: natsSubject, Header: header, Data: payload}, nil
}

// publishOutcome publishes o on the system's outcome subject and waits
// for the stream's acknowledgement.
func (s *Subscriber) publishOutcome(ctx context.Context, o *eventsv1.Outcome) error {
	msg, err := s.outcomeMsg(ctx, o)
	if err != nil {
		return err
	}
	// The work is done: finish reporting it even if the caller is
	// stopping, rather than leave it to a redelivery.
	pubCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), publishTimeout)
	defer cancel()
	if err := s.outcomes.publish(pubCtx, o, msg); err != nil {
		return fmt.Errorf("publish outcome: %w", err)
	}
	return nil
}

// retry negatively acknowledges the delivery so that the event comes back
// after the back-off for its delivery count.
func (s *Subscriber) retry(msg jetstream.Msg, ev *Event, log *slog.Logger, span trace.Span, err error) {
	span.RecordError(err)
	span.SetStatus(codes.Error, err.Error())
	delay := s.backOff(ev.Delivered())
	if d, ok := retryDelay(err); ok {
		delay = d
	}
	if ev.Delivered() >= s.cfg.MaxDeliver {
		// The server will not deliver it again. It publishes a
		// MAX_DELIVERIES advisory naming the consumer, from which Lethe's
		// task tracker marks the task failed.
		log.Error("the event exhausted its deliveries without an outcome", "error", err)
	} else {
		log.Warn("will retry the event", "error", err, "retry_in", delay)
	}
	if err := msg.NakWithDelay(delay); err != nil {
		log.Warn("nak failed; the event will be redelivered after AckWait", "error", err)
	}
}

// backOff returns the delay before the delivery after the n-th: the
// configured delay with equal jitter (see jitter).
func (s *Subscriber) backOff(n int) time.Duration {
	return jitter(s.cfg.BackOff[min(max(n, 1), len(s.cfg.BackOff))-1], rand.Int64N)
}

// jitter returns a delay drawn evenly from [d/2, d] ("equal jitter"):
// events that failed together, because a dependency went down, come back
// spread over half the delay instead of all at once when it returns, and
// none comes back sooner than half the configured delay. randN returns a
// number in [0, n) (rand.Int64N; a seeded source in tests).
func jitter(d time.Duration, randN func(n int64) int64) time.Duration {
	half := d / 2
	if half <= 0 {
		return d
	}
	return d - half + time.Duration(randN(int64(half)+1))
}

// decode reads the event in msg and checks what answering it needs.
func (s *Subscriber) decode(msg jetstream.Msg) (*Event, error) {
	md, err := msg.Metadata()
	if err != nil {
		return nil, err
	}
	pb := &eventsv1.Event{}
	if err := proto.Unmarshal(msg.Data(), pb); err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	kind, err := contract.KindOf(pb)
	if err != nil {
		return nil, err
	}
	// The subject is what NATS permissions and the consumer's filter
	// checked; an event whose payload names another tenant or kind must
	// not be answered as if it were the one routed here.
	natsSubject, err := contract.EventSubject(pb)
	if err != nil {
		return nil, err
	}
	switch {
	case natsSubject != msg.Subject():
		return nil, fmt.Errorf("the event belongs on %s", natsSubject)
	case pb.GetId() == "":
		return nil, errors.New("the event has no id")
	case pb.GetCause() == nil:
		return nil, errors.New("the event has no cause")
	}
	return &Event{pb: pb, kind: kind, delivered: int(md.NumDelivered), sub: s}, nil
}

// keepInProgress tells the server every period that msg is still being
// worked on, until stop is called, so that a slow handler's event is not
// redelivered to another worker meanwhile.
func keepInProgress(msg jetstream.Msg, period time.Duration) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				_ = msg.InProgress() // a lost one costs at most a redelivery
			}
		}
	})
	return func() {
		close(done)
		wg.Wait()
	}
}

// headerCarrier lets OpenTelemetry propagators read and write NATS headers.
// Unlike HTTP's, NATS header names are case-sensitive, so the names the
// propagator uses ("traceparent") are kept exactly.
type headerCarrier nats.Header

// Get returns the first value of key.
func (c headerCarrier) Get(key string) string { return nats.Header(c).Get(key) }

// Set sets key to value.
func (c headerCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }

// Keys lists the header names.
func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}
