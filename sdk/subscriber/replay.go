package subscriber

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
)

// replayInactive is how long the server keeps a replay's consumer after
// its last pull: a replay that crashed leaves its name taken no longer.
const replayInactive = time.Minute

// ErrReplayUncovered is wrapped by the error of [Subscriber.ReplayErasures]
// when the erasure ledger cannot vouch for every erasure since the time
// given: it was created later, or has aged out erasures made since. A
// replay would then bring back data erased in the gap without anyone
// knowing; restore a newer backup instead.
var ErrReplayUncovered = errors.New("subscriber: the erasure ledger does not reach back to the time given")

// ReplayResult counts what [Subscriber.ReplayErasures] did.
type ReplayResult struct {
	// Read is how many erasure directives for the system's tenant the
	// erasure ledger handed over.
	Read int
	// Applied is how many the erasure handler answered during the replay:
	// data erased again, or found absent.
	Applied int
	// AlreadyApplied is how many the handler found recorded in the
	// system's ledger (Event.Record returned [ledger.ErrRecorded]): the
	// erasure was made and recorded before the backup was taken, so the
	// restored data no longer holds it.
	AlreadyApplied int
}

// ReplayErasures applies again, after a restore from a backup, the erasures
// Lethe directed since since: it reads the erasure ledger
// ([contract.ErasureLedgerStream]), which keeps every erasure directive
// far longer than the LETHE stream does, and hands each directive for the
// system's tenant to the erasure handler, as Run would. Call it after the
// restore and before Run, with since the time the backup was taken minus a
// margin for clocks and commits in flight (minutes).
//
// A restored system's data holds what was erased after the backup, and its
// durable consumer has already moved past those erasures: without a
// replay they would stay undone. The replay differs from Run in three
// ways:
//
//   - It publishes no outcome. Lethe closed those tasks when the system
//     answered the first time, and the answer still stands.
//   - It does not ask the system's ledger first. The handler runs for every
//     directive, so a system whose ledger was not restored with its data
//     (a ledger in its own file, data elsewhere) erases again what the
//     restore brought back. A system whose data shares the ledger's file
//     and records with [Event.Record] gets [ledger.ErrRecorded] for an
//     erasure its restored ledger holds: that erasure was made before the
//     backup, the handler rolls back, and the replay counts it as
//     AlreadyApplied. A subject who came back after an erasure and before
//     the backup therefore keeps the new data. A handler that does not
//     record in its own transaction erases the subject again if the
//     erasure falls inside the margin: keep the margin small.
//   - It records each outcome in the system's ledger (the first recorded
//     wins), so that if the durable consumer still owes the directive, Run
//     answers it from the ledger with what the replay did.
//
// A handler that finds the subject's rows through [Event.Identifiers]
// cannot do so during a replay: the claim check closed with the task, and
// Lethe destroyed the identifiers with the request. The replay reports
// such erasures as not applied. A system that must survive restores keeps
// the tenant's subject id beside its rows, so that the directive alone
// finds them.
//
// The ledger's time is when it stored a directive, moments after Lethe
// published it; directives it copied when it was first provisioned carry
// that time, so a replay may hand the handler erasures older than since,
// never fewer than those since. Directives are handled one at a time, in
// the order Lethe published them. One that cannot be decoded, whose
// handler fails, or that the handler answers FAILED does not stop the
// others; each is named in the returned error, and running the replay
// again is safe. Only one replay of a system and tenant runs at a time.
//
// It refuses a time the ledger does not reach back to (wrapping
// [ErrReplayUncovered]), and a subscriber without an erasure handler. In
// production the system's NATS user needs, beyond Run's permissions, to
// read the ledger's info and create, read, pull from and delete its replay
// consumer ([contract.ReplayConsumerName]), created on the subject that
// names its filter; deploy/nats/auth.conf grants them.
func (s *Subscriber) ReplayErasures(ctx context.Context, since time.Time) (ReplayResult, error) {
	var res ReplayResult
	if _, ok := s.cfg.Handlers[contract.KindErasureRequested]; !ok {
		return res, fmt.Errorf("subscriber: no handler for %s: the system has no erasures to replay", contract.KindErasureRequested)
	}
	now := time.Now()
	switch {
	case since.IsZero():
		return res, errors.New("subscriber: replay erasures since when? The time is zero")
	case since.After(now):
		return res, fmt.Errorf("subscriber: replay erasures since %s, which is in the future", since.Format(time.RFC3339))
	}
	if err := s.checkCoverage(ctx, since, now); err != nil {
		return res, err
	}
	name, err := contract.ReplayConsumerName(s.cfg.SystemID, s.cfg.Tenant)
	if err != nil {
		return res, fmt.Errorf("subscriber: %w", err)
	}
	filter, err := contract.KindSubject(s.cfg.Tenant, contract.KindErasureRequested)
	if err != nil {
		return res, fmt.Errorf("subscriber: %w", err)
	}
	cons, err := s.cfg.JetStream.CreateConsumer(ctx, contract.ErasureLedgerStream, jetstream.ConsumerConfig{
		Name: name,
		// The start time makes every replay's configuration differ, so
		// that a second replay running at the same time is refused
		// (ErrConsumerExists) instead of sharing, and splitting, the
		// directives.
		Description: fmt.Sprintf("replay of %s's erasures for tenant %s since %s, started %s",
			s.cfg.SystemID, s.cfg.Tenant, since.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339Nano)),
		DeliverPolicy:     jetstream.DeliverByStartTimePolicy,
		OptStartTime:      &since,
		FilterSubject:     filter,
		AckPolicy:         jetstream.AckNonePolicy, // a replay cut short is run again whole
		InactiveThreshold: replayInactive,
	})
	if errors.Is(err, jetstream.ErrConsumerExists) {
		return res, fmt.Errorf("subscriber: another replay of %s's erasures is running, or one stopped less than %s ago: %w", s.cfg.SystemID, replayInactive, err)
	}
	if err != nil {
		return res, fmt.Errorf("subscriber: replay consumer on %s: %w", contract.ErasureLedgerStream, err)
	}
	defer func() {
		// Left behind, it would go after replayInactive anyway.
		delCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = s.cfg.JetStream.DeleteConsumer(delCtx, contract.ErasureLedgerStream, name)
	}()
	if cons.CachedInfo().NumPending == 0 {
		s.log.Info("no erasures to replay", "since", since)
		return res, nil
	}
	msgs, err := cons.Messages(jetstream.PullMaxMessages(16))
	if err != nil {
		return res, fmt.Errorf("subscriber: replay: %w", err)
	}
	defer msgs.Stop()
	var failed []error
	for {
		msg, err := msgs.Next(jetstream.NextContext(ctx))
		if err != nil {
			return res, errors.Join(append(failed, fmt.Errorf("subscriber: replay stopped after %d erasures: %w", res.Read, err))...)
		}
		res.Read++
		if err := s.replay(ctx, msg, &res); err != nil {
			failed = append(failed, err)
		}
		md, err := msg.Metadata()
		if err != nil || md.NumPending == 0 {
			// Directives stored after the replay began come through the
			// durable consumer.
			break
		}
	}
	s.log.Info("replayed erasures", "since", since, "read", res.Read, "applied", res.Applied,
		"already_applied", res.AlreadyApplied, "failed", len(failed))
	if len(failed) > 0 {
		return res, fmt.Errorf("subscriber: %d of %d erasures were not applied again: %w", len(failed), res.Read, errors.Join(failed...))
	}
	return res, nil
}

// checkCoverage refuses since when the erasure ledger cannot hold every
// erasure directive stored from then to now.
func (s *Subscriber) checkCoverage(ctx context.Context, since, now time.Time) error {
	ledgerStream, err := s.cfg.JetStream.Stream(ctx, contract.ErasureLedgerStream)
	if err != nil {
		return fmt.Errorf("subscriber: erasure ledger %s: %w", contract.ErasureLedgerStream, err)
	}
	platform, err := s.cfg.JetStream.Stream(ctx, contract.StreamName)
	if err != nil {
		return fmt.Errorf("subscriber: stream %s: %w", contract.StreamName, err)
	}
	li, pi := ledgerStream.CachedInfo(), platform.CachedInfo()
	if maxAge := li.Config.MaxAge; maxAge > 0 && since.Before(now.Add(-maxAge)) {
		return fmt.Errorf("%w: it keeps erasures %s, and %s is older; the erasures made between then and %s may be gone",
			ErrReplayUncovered, maxAge, since.Format(time.RFC3339), now.Add(-maxAge).Format(time.RFC3339))
	}
	// When the ledger was provisioned it copied what the platform stream
	// held then: every erasure since the platform stream's age limit
	// before, or since the platform stream began. A size cap on the
	// platform stream may have dropped some earlier, so then the ledger
	// vouches only for its own lifetime.
	from := li.Created
	if pi.Config.MaxBytes <= 0 && pi.Config.MaxAge > 0 {
		from = li.Created.Add(-pi.Config.MaxAge)
		if pi.Created.After(from) {
			from = pi.Created
		}
	}
	if since.Before(from) {
		return fmt.Errorf("%w: it holds every erasure only since %s (it was provisioned at %s), and %s is earlier",
			ErrReplayUncovered, from.Format(time.RFC3339), li.Created.Format(time.RFC3339), since.Format(time.RFC3339))
	}
	return nil
}

// replay hands one directive from the erasure ledger to the erasure
// handler and records its outcome in the system's ledger, without
// publishing it.
func (s *Subscriber) replay(ctx context.Context, msg jetstream.Msg, res *ReplayResult) error {
	ctx = s.cfg.Propagator.Extract(ctx, headerCarrier(msg.Headers()))
	ctx, span := s.tracer.Start(ctx, "replay "+msg.Subject(), trace.WithAttributes(
		attribute.String("messaging.system", "nats"),
		attribute.String("messaging.destination.name", msg.Subject()),
	))
	defer span.End()
	fail := func(err error) error {
		span.SetStatus(codes.Error, err.Error())
		return err
	}
	ev, err := s.decode(msg)
	if err != nil {
		s.log.Error("skipping an invalid erasure in the replay", "nats_subject", msg.Subject(), "error", err)
		return fail(fmt.Errorf("an invalid erasure on %s: %w", msg.Subject(), err))
	}
	log := s.log.With("event_id", ev.ID(), "kind", ev.Kind(), "replay", true)
	span.SetAttributes(attribute.String("messaging.message.id", ev.ID()))
	unlock, err := s.locks.lock(ctx, subjectKey(ev))
	if err != nil {
		return fail(fmt.Errorf("event %s: %w", ev.ID(), err))
	}
	defer unlock()

	out, err := s.call(ctx, ev, log)
	switch {
	case errors.Is(err, ledger.ErrRecorded):
		log.Info("the erasure was applied before the backup")
		res.AlreadyApplied++
		return nil
	case err != nil:
		log.Error("the erasure was not applied again", "error", err)
		return fail(fmt.Errorf("event %s: %w", ev.ID(), err))
	}
	o := s.outcomeOf(ev, out)
	if err := validateOutcome(o, ev.kind); err != nil {
		return fail(fmt.Errorf("event %s: the handler returned an invalid outcome: %w", ev.ID(), err))
	}
	if o.GetKind() == eventsv1.OutcomeKind_OUTCOME_KIND_FAILED {
		// Not recorded: a replay run again once the cause is fixed
		// should find the erasure still to do.
		log.Error("the handler could not apply the erasure again", "reason", o.GetReason())
		return fail(fmt.Errorf("event %s: the handler answered FAILED: %s", ev.ID(), o.GetReason()))
	}
	if _, err := s.cfg.Ledger.Record(ev.pb, o); err != nil {
		return fail(fmt.Errorf("event %s: %w", ev.ID(), err))
	}
	log.Info("applied the erasure again", "outcome", o.GetKind())
	res.Applied++
	return nil
}
