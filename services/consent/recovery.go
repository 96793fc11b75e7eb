package consent

// Catch-up after a restore.
//
// A consent store restored from a backup has lost every change made after
// the backup was taken. Lost grants fail closed (Check denies what it has
// no grant for), but lost withdrawals, objections, restrictions and lifts
// would not: Check would allow processing the subject stopped. Every one of
// those changes committed, in its own transaction, a limit event through
// the outbox, and the platform stream keeps the events (MaxAge, 30 days by
// default) on a replicated volume that outlives the service's own. So at
// every start, before it serves, the service reads its own limit events
// back from the stream and re-applies each one whose effect its store does
// not hold.
//
// Where to start reading: the service records in its file, after each
// start's catch-up and every tick (ExpirySweepEvery), the time at which the
// file held every limit it had published (alive_at). Every event committed before that record is in the
// file; every event committed after it was published after it. The replay
// therefore starts at alive_at minus RecoveryMargin (for the skew between
// the service's clock and the NATS server's, which stamps the stream) and
// reads only the four limit subjects. A restore of an hour-old backup
// replays about an hour of limit events; a normal restart a minute or two.
// A high-water mark of stream sequences was the alternative; it would have
// had to be written by the outbox relay after each acknowledgement, and a
// sequence says nothing about age, which is what the stream's bound is
// about.
//
// Whether an event's effect is held is decided by the ids it carries: the
// withdrawing consent record (the event's cause), the objection id, the
// restriction id (and, for a lift, whether the restriction is lifted), or a
// record already recovered from the same event id. A held event writes
// nothing; a normal restart recovers nothing. A recovered change is stored
// with its provenance (event id, stream sequence) and enters the change log
// that Watch replays, but is not published again: the systems have the
// event already. The subject's event sequence is raised to the event's, so
// that the next event about the subject is not numbered like an old one.
//
// The stream's reach is bounded. When it no longer holds every event
// published since alive_at (its first message is younger, and it has
// dropped some), limits may be lost beyond recovery. The service then
// recovers what the stream holds, records the gap in its file, logs an
// ERROR, reports lethe.consent.recovery.incomplete = 1, and refuses Check
// and CheckBatch with FAILED_PRECONDITION (RECOVERY_INCOMPLETE): a consent
// service that cannot prove it holds every withdrawal must not answer
// "allowed". The gap stands across restarts until the store is restored
// from a newer backup (which has none) or an operator accepts the loss
// with AcceptRecoveryGap.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// DefaultRecoveryMargin is how far before the file's last alive_at the
// replay starts: far beyond the clock skew between a service and NATS that
// NTP leaves.
const DefaultRecoveryMargin = 5 * time.Minute

// recoveryBatch is how many events one fetch and one transaction take.
const recoveryBatch = 256

// source is what the outbox stamps on the service's events.
const source = "lethe/consent"

// streamEvent is a limit event read back from the stream.
type streamEvent struct {
	ev  *eventsv1.Event
	seq uint64
}

// recoverLimits re-applies the limit events the stream holds and the store
// lacks, and finds a gap the stream can no longer fill. It runs in New,
// before the service serves or publishes anything.
func (s *Service) recoverLimits(ctx context.Context) error {
	var aliveAt time.Time
	var known bool
	var gap *storage.Gap
	if err := s.DB.View(func(tx *bolt.Tx) (err error) {
		aliveAt, known = storage.AliveAtTx(tx)
		gap, err = storage.GapTx(tx)
		return err
	}); err != nil {
		return err
	}
	if gap != nil {
		// An earlier start recovered what the stream held and found the
		// rest gone; nothing since can bring it back.
		s.gap.Store(gap)
		s.logGap(gap)
		return nil
	}
	js := s.deps.JetStream
	if js == nil {
		return nil // no stream: nothing was ever published to recover
	}
	var from time.Time
	if known {
		from = aliveAt.Add(-s.opts.RecoveryMargin)
	}
	stream, err := js.Stream(ctx, s.opts.Stream)
	if err != nil {
		return fmt.Errorf("consent: recovery: stream %q: %w", s.opts.Stream, err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("consent: recovery: stream %q: %w", s.opts.Stream, err)
	}
	if until, ok := reaches(info, from, s.opts.RecoveryMargin, time.Now()); !ok {
		gap = &storage.Gap{From: from, Until: until, FirstSequence: info.State.FirstSeq, StreamMaxAge: info.Config.MaxAge, DetectedAt: s.Clock.Now()}
	}
	started := time.Now()
	n, err := s.replay(ctx, stream, from)
	if err != nil {
		return fmt.Errorf("consent: recovery: %w", err)
	}
	if n > 0 {
		s.Logger.Warn("consent: recovered limits that the store lacked from the event stream (restored from a backup?)",
			"recovered", n, "since", from, "took", time.Since(started))
	}
	if gap == nil {
		// The file holds every limit now: the next start replays from
		// here, not from the backup's time again.
		return s.markAlive()
	}
	if err := s.DB.Update(func(tx *bolt.Tx) error { return storage.PutGapTx(tx, gap) }); err != nil {
		return err
	}
	s.gap.Store(gap)
	s.logGap(gap)
	return nil
}

// reaches reports whether the stream still holds every message stamped
// after from, and otherwise returns the time before which it may have
// dropped some. The stream drops its oldest messages first (limits
// retention, discard old), so a dropped message is no younger than the
// first one kept, or, when it keeps none, than the last one it had. When
// age is the stream's only limit, a dropped message is also older than
// MaxAge (less margin, for the clocks' skew): a replay starting later than
// that needs nothing dropped, however young the first message kept is (a
// stream quiet for longer than MaxAge). A MaxAge shortened and lengthened
// again, or messages deleted by hand, defeat that inference, as they
// defeat every system that reads the stream.
func reaches(info *jetstream.StreamInfo, from time.Time, margin time.Duration, now time.Time) (time.Time, bool) {
	st, cfg := info.State, info.Config
	if st.FirstSeq <= 1 {
		return time.Time{}, true // nothing dropped yet
	}
	boundary := st.FirstTime
	if st.Msgs == 0 {
		boundary = st.LastTime
	}
	if from.IsZero() {
		return boundary, false
	}
	ageOnly := cfg.MaxAge > 0 && cfg.MaxBytes <= 0 && cfg.MaxMsgs <= 0 && cfg.MaxMsgsPerSubject <= 0 && cfg.Discard == jetstream.DiscardOld
	if ageOnly && !from.Before(now.Add(margin-cfg.MaxAge)) {
		return boundary, true
	}
	return boundary, !boundary.After(from)
}

// logGap says, loudly, what the gap means and what to do.
func (s *Service) logGap(g *storage.Gap) {
	s.Logger.Error("consent: the store was restored from a backup older than the event stream reaches: limits (withdrawals, objections, restrictions) recorded in the gap may be lost, and Check refuses to answer",
		"gap_from", g.From, "gap_until", g.Until, "stream_first_sequence", g.FirstSequence, "stream_max_age", g.StreamMaxAge,
		"remedy", "restore a backup taken within the stream's max age, or accept the loss with AcceptRecoveryGap")
}

// recoveryRefusal is the error Check answers while a gap stands.
func (s *Service) recoveryRefusal() error {
	g := s.gap.Load()
	if g == nil {
		return nil
	}
	since := "the store's beginning"
	if !g.From.IsZero() {
		since = g.From.Format(time.RFC3339)
	}
	return apierror.FailedPrecondition(apierror.ReasonRecoveryIncomplete, fmt.Sprintf(
		"the consent store was restored from a backup older than the event stream reaches: limits recorded between %s and %s may be lost, so no decision can be proven; restore a backup taken within the stream's max age (%s), or have an operator accept the loss with AcceptRecoveryGap",
		since, g.Until.Format(time.RFC3339), g.StreamMaxAge))
}

// markAlive records that the file holds every limit the service has
// published, for the next start to replay from. The time is the wall
// clock's, not the service's clock: it is compared with the NATS server's
// stamps on the stream. While a gap stands the mark stays where it was.
func (s *Service) markAlive() error {
	if s.gap.Load() != nil || s.deps.JetStream == nil {
		return nil
	}
	return s.DB.Update(func(tx *bolt.Tx) error { return storage.PutAliveAtTx(tx, time.Now()) })
}

// replay reads the service's limit events stamped from from on (all when
// from is zero) and recovers those the store lacks. It returns how many it
// recovered.
func (s *Service) replay(ctx context.Context, stream jetstream.Stream, from time.Time) (int, error) {
	var filters []string
	for _, k := range contract.Limits {
		natsSubject, err := contract.KindSubject(contract.AllTenants, k)
		if err != nil {
			return 0, err
		}
		filters = append(filters, natsSubject)
	}
	cfg := jetstream.ConsumerConfig{
		// A name of its own per start: no durable state, and the server
		// removes it a minute after the replay stops reading.
		Name:              "lethe-consent-recovery-" + outbox.NewEventID(),
		Description:       "the consent service's catch-up after a restore",
		FilterSubjects:    filters,
		AckPolicy:         jetstream.AckNonePolicy,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		InactiveThreshold: time.Minute,
		MemoryStorage:     true,
		Replicas:          1,
	}
	if !from.IsZero() {
		cfg.DeliverPolicy, cfg.OptStartTime = jetstream.DeliverByStartTimePolicy, &from
	}
	cons, err := stream.CreateConsumer(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("replay consumer: %w", err)
	}
	// Nothing publishes limits while the replay runs (the service is not
	// serving yet), so what is pending now is all there is.
	pending := cons.CachedInfo().NumPending
	recovered := 0
	for read := uint64(0); read < pending; {
		batch, err := cons.Fetch(int(min(recoveryBatch, pending-read)), jetstream.FetchMaxWait(10*time.Second))
		if err != nil {
			return recovered, err
		}
		var events []streamEvent
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return recovered, err
			}
			ev := &eventsv1.Event{}
			if err := proto.Unmarshal(msg.Data(), ev); err != nil {
				// The outbox publishes only validated events: this is not
				// one of the service's.
				s.Logger.Warn("consent: recovery: ignoring an undecodable message on a limit NATS subject", "nats_subject", msg.Subject(), "stream_sequence", meta.Sequence.Stream)
				continue
			}
			if ev.Source == source {
				events = append(events, streamEvent{ev: ev, seq: meta.Sequence.Stream})
			}
		}
		if err := batch.Error(); err != nil {
			return recovered, err
		}
		if got == 0 {
			return recovered, fmt.Errorf("the stream delivered %d of the %d limit events pending", read, pending)
		}
		read += uint64(got)
		n, err := s.recoverBatch(ctx, events)
		recovered += n
		if err != nil {
			return recovered, err
		}
	}
	return recovered, nil
}

// recoverBatch recovers the events the store lacks in one transaction.
func (s *Service) recoverBatch(ctx context.Context, events []streamEvent) (int, error) {
	var kinds []contract.Kind
	err := s.DB.Update(func(tx *bolt.Tx) error {
		kinds = kinds[:0]
		for _, e := range events {
			ok, err := s.recoverTx(tx, e)
			if err != nil {
				return fmt.Errorf("event %s (stream sequence %d): %w", e.ev.Id, e.seq, err)
			}
			if ok {
				kind, _ := contract.KindOf(e.ev)
				kinds = append(kinds, kind)
			}
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for _, k := range kinds {
		s.recoveredEvents.Add(ctx, 1, metric.WithAttributes(attribute.String("kind", string(k))))
	}
	return len(kinds), nil
}

// recoverTx applies one event's effect unless the store holds it, and
// reports whether it wrote one.
func (s *Service) recoverTx(tx *bolt.Tx, e streamEvent) (bool, error) {
	ev := e.ev
	if !contract.ValidToken(ev.TenantId) || ev.SubjectId == "" {
		s.Logger.Warn("consent: recovery: ignoring a limit event without a tenant or subject", "event_id", ev.Id, "stream_sequence", e.seq)
		return false, nil
	}
	if apierror.ReasonOf(s.tenants.RequireTx(tx, ev.TenantId)) == apierror.ReasonWrongShard {
		// Every writer's limit events share the stream; another shard's
		// tenant is that shard's writer's to recover.
		return false, nil
	}
	if _, err := outbox.RaiseSubjectSequenceTx(tx, ev.TenantId, ev.SubjectId, ev.Sequence); err != nil {
		return false, err
	}
	prov := &storage.Recovered{EventID: ev.Id, StreamSequence: e.seq, At: s.Clock.Now()}
	switch b := ev.Body.(type) {
	case *eventsv1.Event_ConsentWithdrawn:
		return s.recoverWithdrawalTx(tx, ev, b.ConsentWithdrawn.GetPurposeIds(), prov)
	case *eventsv1.Event_ObjectionRecorded:
		return s.recoverObjectionTx(tx, ev, b.ObjectionRecorded, prov)
	case *eventsv1.Event_RestrictionApplied:
		return s.recoverRestrictionTx(tx, ev, b.RestrictionApplied, prov)
	case *eventsv1.Event_RestrictionLifted:
		return s.recoverLiftTx(tx, ev, b.RestrictionLifted.GetRestrictionId(), prov)
	}
	return false, nil
}

// recoverWithdrawalTx recovers a consent.withdrawn event. Its cause is the
// consent record that ended the grant (a withdrawal or a refusal), or, for
// an expiry, the grant that ran out. Either held in the store means the
// withdrawal is; a lost one comes back as one WITHDRAW record per purpose.
func (s *Service) recoverWithdrawalTx(tx *bolt.Tx, ev *eventsv1.Event, purposes []string, prov *storage.Recovered) (bool, error) {
	var causeRecord string
	if ev.GetCause().GetKind() == commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD {
		causeRecord = ev.GetCause().GetId()
	}
	r, held, err := storage.SubjectRecordTx(tx, ev.TenantId, ev.SubjectId, causeRecord, ev.Id)
	if err != nil {
		return false, err
	}
	if held {
		return s.recoverExpiryTx(tx, r)
	}
	at := ev.GetOccurredAt()
	for _, p := range purposes {
		rec := &consentv1.ConsentRecord{
			RecordId: outbox.NewEventID(), TenantId: ev.TenantId, SubjectId: ev.SubjectId, PurposeId: p,
			Action: consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW, RecordedAt: at, GivenAt: at, RecoveredFrom: prov.Proto(),
		}
		if err := storage.AddRecordTx(tx, rec); err != nil {
			return false, err
		}
		if err := s.changeTx(tx, ev.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_CONSENT_RECORDED,
			SubjectId: ev.SubjectId, PurposeIds: []string{p}, BasisId: rec.RecordId, At: at}, consentEntry(rec)); err != nil {
			return false, err
		}
	}
	return len(purposes) > 0, nil
}

// recoverExpiryTx finishes, without publishing again, the expiry of a
// grant whose consent.withdrawn the stream holds while the restored store
// still has the expiry scheduled: the sweep would otherwise publish the
// expiry a second time, under a new event id. Check denies an expired
// grant either way.
func (s *Service) recoverExpiryTx(tx *bolt.Tx, r *consentv1.ConsentRecord) (bool, error) {
	grant := r.Action == consentv1.ConsentAction_CONSENT_ACTION_GRANT || r.Action == consentv1.ConsentAction_CONSENT_ACTION_RENEW
	if !grant || r.ExpiresAt == nil {
		return false, nil
	}
	expiries := store.BucketTx(tx, storage.BucketExpiries)
	key := storage.ExpiryKey(r)
	if expiries.Get(key) == nil {
		return false, nil
	}
	if err := expiries.Delete(key); err != nil {
		return false, err
	}
	return true, s.changeTx(tx, r.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_CONSENT_EXPIRED,
		SubjectId: r.SubjectId, PurposeIds: []string{r.PurposeId}, BasisId: r.RecordId, At: r.ExpiresAt}, nil)
}

// recoverObjectionTx recovers an objection.recorded event under the
// objection's own id. The event carries the purposes the objection covered
// when it was recorded; an objection to a scope (rather than to named
// purposes) is kept as its scope, as RecordObjection keeps it.
func (s *Service) recoverObjectionTx(tx *bolt.Tx, ev *eventsv1.Event, o *eventsv1.ObjectionRecorded, prov *storage.Recovered) (bool, error) {
	if o.GetObjectionId() == "" {
		return false, errors.New("objection.recorded without an objection id")
	}
	if storage.ObjectionExistsTx(tx, ev.TenantId, ev.SubjectId, o.ObjectionId) {
		return false, nil
	}
	obj := storage.Objection{ID: o.ObjectionId, Subject: ev.SubjectId, Scope: o.Scope, CauseKind: ev.GetCause().GetKind(),
		CauseID: ev.GetCause().GetId(), RecordedAt: ev.GetOccurredAt().AsTime(), Recovered: prov}
	if o.Scope == eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES {
		obj.Purposes = o.PurposeIds
	}
	if err := storage.PutObjectionTx(tx, ev.TenantId, obj); err != nil {
		return false, err
	}
	return true, s.changeTx(tx, ev.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_OBJECTION_RECORDED,
		SubjectId: ev.SubjectId, PurposeIds: o.PurposeIds, BasisId: obj.ID, At: ev.GetOccurredAt()}, objectionEntry(obj))
}

// recoverRestrictionTx recovers a restriction.applied event under the
// restriction's own id, so that LiftRestriction finds it by the id the
// systems know.
func (s *Service) recoverRestrictionTx(tx *bolt.Tx, ev *eventsv1.Event, ra *eventsv1.RestrictionApplied, prov *storage.Recovered) (bool, error) {
	if ra.GetRestrictionId() == "" {
		return false, errors.New("restriction.applied without a restriction id")
	}
	if _, ok, err := storage.RestrictionTx(tx, ev.TenantId, ra.RestrictionId); err != nil || ok {
		return false, err
	}
	r := storage.Restriction{ID: ra.RestrictionId, Subject: ev.SubjectId, Ground: ra.Ground, Purposes: ra.PurposeIds,
		CauseKind: ev.GetCause().GetKind(), CauseID: ev.GetCause().GetId(), AppliedAt: ev.GetOccurredAt().AsTime(), Recovered: prov}
	if err := storage.PutRestrictionTx(tx, ev.TenantId, r); err != nil {
		return false, err
	}
	return true, s.changeTx(tx, ev.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_APPLIED,
		SubjectId: ev.SubjectId, PurposeIds: r.Purposes, BasisId: r.ID, At: ev.GetOccurredAt()}, restrictionEntry(r))
}

// recoverLiftTx recovers a restriction.lifted event. When the subject was
// informed (Art. 18(3)) and how the ground ended are not on the event and
// stay unknown.
func (s *Service) recoverLiftTx(tx *bolt.Tx, ev *eventsv1.Event, id string, prov *storage.Recovered) (bool, error) {
	r, ok, err := storage.RestrictionTx(tx, ev.TenantId, id)
	switch {
	case err != nil:
		return false, err
	case !ok:
		// Its restriction.applied is older than the replay and was
		// therefore held, or the stream no longer has it (a gap, reported
		// apart): there is nothing in force to lift.
		s.Logger.Warn("consent: recovery: a lift names a restriction the store does not hold", "restriction_id", id, "event_id", ev.Id)
		return false, nil
	case !r.LiftedAt.IsZero():
		return false, nil
	}
	r.LiftedAt, r.LiftCauseKind, r.LiftCauseID, r.LiftRecovered = ev.GetOccurredAt().AsTime(), ev.GetCause().GetKind(), ev.GetCause().GetId(), prov
	if err := storage.PutRestrictionTx(tx, ev.TenantId, r); err != nil {
		return false, err
	}
	return true, s.changeTx(tx, ev.TenantId, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_LIFTED,
		SubjectId: r.Subject, PurposeIds: r.Purposes, BasisId: r.ID, At: timestamppb.New(r.LiftedAt)}, restrictionEntry(r))
}

// AcceptRecoveryGap implements ConsentService: an operator accepts that
// the limits recorded in a recovery gap may be lost, and Check answers
// again. The acceptance is kept in the file with the gap, who accepted it
// and why, and the call is audited like every mutation.
func (s *Service) AcceptRecoveryGap(ctx context.Context, req *consentv1.AcceptRecoveryGapRequest) (*consentv1.AcceptRecoveryGapResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.AcceptRecoveryGapResponse, error) {
		gap, err := storage.GapTx(tx)
		if err != nil {
			return nil, err
		}
		if gap == nil {
			return nil, apierror.FailedPrecondition(apierror.ReasonNoRecoveryGap, "no recovery gap stands: the store holds every limit the stream has published")
		}
		actor, _ := auth.FromContext(ctx)
		if err := storage.AcceptGapTx(tx, storage.AcceptedGap{Gap: *gap, AcceptedAt: s.Clock.Now(), By: actor.Name, Reason: req.Reason}); err != nil {
			return nil, err
		}
		// From now on the file holds every limit the service publishes:
		// the next start replays from here.
		if err := storage.PutAliveAtTx(tx, time.Now()); err != nil {
			return nil, err
		}
		tx.OnCommit(func() {
			s.gap.Store(nil)
			s.Logger.Warn("consent: an operator accepted the loss of limits in the recovery gap; Check answers again",
				"gap_from", gap.From, "gap_until", gap.Until, "by", actor.Name, "reason", req.Reason)
		})
		resp := &consentv1.AcceptRecoveryGapResponse{GapUntil: timestamppb.New(gap.Until)}
		if !gap.From.IsZero() {
			resp.GapFrom = timestamppb.New(gap.From)
		}
		return resp, nil
	})
}
