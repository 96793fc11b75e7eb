package subscriber

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/trace"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// DefaultWaitCheck is how often Run looks for events whose answer is
// overdue (see [AnswerLater]) when Config.WaitCheck is zero.
const DefaultWaitCheck = time.Minute

// overdueBatch bounds the overdue events failed in one check.
const overdueBatch = 100

var (
	// ErrNotWaiting is returned by [Subscriber.Answer] for an event that
	// was never handed to the system or was not answered later: nothing
	// is waiting for an answer under that id.
	ErrNotWaiting = errors.New("subscriber: no event with that id is waiting for an answer")
	// ErrInvalidOutcome is returned by [Subscriber.Answer] for an outcome
	// that does not answer the event's kind.
	ErrInvalidOutcome = errors.New("subscriber: the outcome does not answer the event")
)

// AnswerLater is what a handler returns, as its error, when the system
// took the event and will answer it later through [Subscriber.Answer]:
// a webhook receiver that answered 202 Accepted. The event is
// acknowledged, so it is not delivered again, and kept in the ledger
// until the answer comes; if none has come by until, the subscriber
// reports it FAILED. reason says what the system is doing, for the logs.
func AnswerLater(until time.Time, reason string) error {
	return &laterError{until: until, reason: reason}
}

type laterError struct {
	until  time.Time
	reason string
}

func (e *laterError) Error() string {
	return fmt.Sprintf("answered later, by %s: %s", e.until.UTC().Format(time.RFC3339), e.reason)
}

// laterDeadline returns the deadline err carries when a handler returned
// AnswerLater.
func laterDeadline(err error) (time.Time, bool) {
	var le *laterError
	if errors.As(err, &le) {
		return le.until, true
	}
	return time.Time{}, false
}

// wait records ev as waiting for its answer and acknowledges it. If the
// record fails the event is retried like any failure; if the ack is lost
// the event comes back, is handed to the handler again and keeps its
// first deadline.
func (s *Subscriber) wait(msg jetstream.Msg, ev *Event, until time.Time, log *slog.Logger, span trace.Span) {
	if err := s.cfg.Ledger.Wait(ev.pb, until); err != nil {
		s.retry(msg, ev, log, span, err)
		return
	}
	if err := msg.Ack(); err != nil {
		log.Warn("ack failed; the event will be redelivered", "error", err)
		return
	}
	log.Info("the system will answer later", "deadline", until)
}

// Answer reports out as the system's answer to the event eventID, which
// its handler took with [AnswerLater]: it records the outcome in the
// ledger, publishes it, and returns it. Answering again returns the
// outcome recorded first and publishes nothing, so a caller may repeat
// an answer it is unsure arrived. Answer returns [ErrNotWaiting] for an
// event that is neither waiting nor answered, and [ErrInvalidOutcome]
// (wrapped) for an outcome that does not answer the event's kind.
func (s *Subscriber) Answer(ctx context.Context, eventID string, out Outcome) (*eventsv1.Outcome, error) {
	pb, _, waiting, err := s.cfg.Ledger.Waiting(eventID)
	if err != nil {
		return nil, err
	}
	if !waiting {
		return s.answered(eventID)
	}
	kind, err := contract.KindOf(pb)
	if err != nil {
		return nil, err
	}
	ev := &Event{pb: pb, kind: kind, sub: s}
	// One answer at a time per subject, as for deliveries: a second
	// answer to the same event then finds it answered.
	unlock, err := s.locks.lock(ctx, subjectKey(ev))
	if err != nil {
		return nil, err
	}
	defer unlock()
	if _, _, waiting, err = s.cfg.Ledger.Waiting(eventID); err != nil {
		return nil, err
	} else if !waiting {
		return s.answered(eventID)
	}
	o := s.outcomeOf(ev, out)
	if err := validateOutcome(o, kind); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidOutcome, err)
	}
	if o, err = s.cfg.Ledger.Record(pb, o); err != nil {
		return nil, err
	}
	// Recorded but not yet published, the event stays waiting: a repeated
	// answer or the deadline check publishes the recorded outcome.
	if err := s.publishOutcome(ctx, o); err != nil {
		return nil, err
	}
	if err := s.cfg.Ledger.Done(eventID); err != nil {
		return nil, err
	}
	s.log.Info("reported the later answer", "event_id", eventID, "outcome", o.GetKind())
	return o, nil
}

// answered returns the outcome recorded for an event that is not waiting,
// or ErrNotWaiting.
func (s *Subscriber) answered(eventID string) (*eventsv1.Outcome, error) {
	o, found, err := s.cfg.Ledger.Lookup(eventID)
	switch {
	case err != nil:
		return nil, err
	case !found:
		return nil, ErrNotWaiting
	}
	return o, nil
}

// expireWaiting reports FAILED, every Config.WaitCheck until ctx ends,
// each event whose later answer is overdue.
func (s *Subscriber) expireWaiting(ctx context.Context) {
	t := time.NewTicker(s.cfg.WaitCheck)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		overdue, err := s.cfg.Ledger.Overdue(time.Now(), overdueBatch)
		if err != nil {
			s.log.Warn("listing the overdue answers failed", "error", err)
			continue
		}
		for _, ev := range overdue {
			// One that fails is tried again at the next check; the
			// others still end.
			if _, err := s.Answer(ctx, ev.GetId(), Failed("the system accepted the event but did not answer by its deadline")); err != nil && ctx.Err() == nil {
				s.log.Warn("failing an overdue answer failed", "event_id", ev.GetId(), "error", err)
			}
		}
	}
}
