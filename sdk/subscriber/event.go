package subscriber

import (
	"context"
	"errors"
	"fmt"

	"go.etcd.io/bbolt"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Event is one delivery of a Lethe event to a handler.
type Event struct {
	pb        *eventsv1.Event
	kind      contract.Kind
	delivered int
	sub       *Subscriber
}

// Proto returns the decoded event, with its body (for example
// Proto().GetErasureRequested()). Do not modify it.
func (e *Event) Proto() *eventsv1.Event { return e.pb }

// ID returns the event's id. Re-sends of the same event keep it.
func (e *Event) ID() string { return e.pb.GetId() }

// Kind returns the kind of the event's body, "erasure.requested".
func (e *Event) Kind() contract.Kind { return e.kind }

// Tenant returns the tenant the event belongs to.
func (e *Event) Tenant() string { return e.pb.GetTenantId() }

// SubjectID returns the tenant's pseudonymous id of the data subject. It is
// personal data: keep it out of logs.
func (e *Event) SubjectID() string { return e.pb.GetSubjectId() }

// Sequence returns the event's position among the events its source
// published about the subject. The subscriber uses it to ignore superseded
// restriction events; handlers rarely need it.
func (e *Event) Sequence() uint64 { return e.pb.GetSequence() }

// Cause returns what caused the event: a request, consent record or
// retention rule.
func (e *Event) Cause() *commonv1.Cause { return e.pb.GetCause() }

// Delivered returns how many times the event has been delivered to this
// system's consumer, this delivery included.
func (e *Event) Delivered() int { return e.delivered }

// ErrNoIdentifierFetcher is returned by [Event.Identifiers] when the
// subscriber has no [IdentifierFetcher].
var ErrNoIdentifierFetcher = errors.New("subscriber: no IdentifierFetcher configured")

// IdentifierFetcher fetches the identifiers (an e-mail address, an account
// id) of an event's data subject from the Lethe service that owns the
// event's cause, authorised as the subscribing system. Events never carry
// contact data; a system that finds its rows by e-mail asks for it while
// its task is open (the claim check).
//
// [DSARIdentifiers] implements it for data-subject requests. A
// system whose rows are keyed by the tenant's subject id needs none.
type IdentifierFetcher interface {
	FetchIdentifiers(ctx context.Context, ev *Event) ([]*commonv1.Identifier, error)
}

// Identifiers fetches the data subject's identifiers with the configured
// [IdentifierFetcher]: one call per invocation, nothing cached, since the
// identifiers are personal data the system should hold no longer than its
// task. It returns [ErrNoIdentifierFetcher] if there is none.
func (e *Event) Identifiers(ctx context.Context) ([]*commonv1.Identifier, error) {
	if e.sub.cfg.Identifiers == nil {
		return nil, ErrNoIdentifierFetcher
	}
	return e.sub.cfg.Identifiers.FetchIdentifiers(ctx, e)
}

// Record records out as the event's outcome in tx, a writable transaction
// on the ledger's database in which the handler also makes the change that
// out reports. The change and the record commit together, so the change is
// made exactly once: if the subscriber stops before it reports the
// outcome, the redelivered event is answered from the ledger without
// calling the handler again. The recorded outcome is the one reported;
// return the same from the handler.
//
// Record returns an error wrapping [ledger.ErrRecorded] if another delivery
// of the event was answered first, and [ledger.ErrSuperseded] if a newer
// event about the same restriction was; the handler must roll tx back and
// return the error, and the subscriber answers accordingly.
func (e *Event) Record(tx *bbolt.Tx, out Outcome) error {
	o := e.sub.outcomeOf(e, out)
	if err := validateOutcome(o, e.kind); err != nil {
		return fmt.Errorf("subscriber: invalid outcome: %w", err)
	}
	return e.sub.cfg.Ledger.RecordTx(tx, e.pb, o)
}
