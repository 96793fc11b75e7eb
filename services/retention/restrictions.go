package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/retention/internal/rules"
)

// A restriction under GDPR Art. 18(1)(b) (the processing is unlawful and
// the subject asks for restriction instead of erasure) or 18(1)(c) (the
// controller no longer needs the data, the subject needs it for legal
// claims) exists so that the data is kept: a retention purge in the
// meantime would defeat it, and Art. 18(2) leaves storage as the only
// processing allowed. The retention service therefore follows the consent
// service's restriction events and holds the subject's data, every
// category, while such a restriction is in force, as a hold named after
// the restriction. Grounds (a) and (d) (accuracy contested, objection
// pending) restrict processing while something is verified; the subject
// asked nothing to be kept, and no hold is placed.

// restrictionHoldID names the hold that stands for a restriction.
func restrictionHoldID(restrictionID string) string { return "restriction-" + restrictionID }

// restrictionReasons are the holds' reasons, by ground, citing the law.
var restrictionReasons = map[eventsv1.RestrictionGround]string{
	eventsv1.RestrictionGround_RESTRICTION_GROUND_UNLAWFUL_PROCESSING: "GDPR Art. 18(1)(b): the processing is unlawful and the subject asked for restriction instead of erasure; " +
		"restricted data is only stored (Art. 18(2)) until the restriction is lifted",
	eventsv1.RestrictionGround_RESTRICTION_GROUND_LEGAL_CLAIMS: "GDPR Art. 18(1)(c): the subject needs the data for the establishment, exercise or defence of legal claims; " +
		"restricted data is only stored (Art. 18(2)) until the restriction is lifted",
}

// followRestrictions places and releases the holds of restrictions.
func (s *Service) followRestrictions(ctx context.Context, js jetstream.JetStream) error {
	var subjects []string
	for _, k := range []contract.Kind{contract.KindRestrictionApplied, contract.KindRestrictionLifted} {
		natsSubject, err := contract.KindSubject(contract.AllTenants, k)
		if err != nil {
			return err
		}
		subjects = append(subjects, natsSubject)
	}
	return s.follow(ctx, js, "lethe-retention-restrictions",
		"restrictions the subject wants the data kept under (GDPR Art. 18(1)(b)-(c)), held from retention purges", s.handleRestriction, subjects...)
}

// handleRestriction places the hold of an applied restriction, or releases
// that of a lifted one, once: the hold record is the memory. A lift that
// arrives before its restriction (a redelivery overtaken) leaves a
// released hold, so the late restriction finds it and places nothing.
func (s *Service) handleRestriction(msg jetstream.Msg) {
	ev, hold, ok := restrictionHold(msg.Data())
	if !ok {
		s.Logger.Warn("retention: ignoring an undecodable restriction event", "nats_subject", msg.Subject())
		_ = msg.Term()
		return
	}
	applied := ev.GetRestrictionApplied()
	if applied != nil && restrictionReasons[applied.Ground] == "" {
		_ = msg.Ack() // a ground that asks nothing to be kept
		return
	}
	err := s.DB.Batch(func(tx *bolt.Tx) error {
		return s.restrictionTx(tx, ev, applied != nil, hold)
	})
	if err != nil {
		s.Logger.Error("retention: recording a restriction failed; it will be redelivered", "event_id", ev.Id, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}

// restrictionHold decodes a restriction event and the hold it places or
// releases; false when the event or its hold is not valid.
func restrictionHold(data []byte) (*eventsv1.Event, *retentionv1.Hold, bool) {
	ev := &eventsv1.Event{}
	err := proto.Unmarshal(data, ev)
	applied, lifted := ev.GetRestrictionApplied(), ev.GetRestrictionLifted()
	var id string
	switch {
	case applied != nil:
		id = applied.RestrictionId
	case lifted != nil:
		id = lifted.RestrictionId
	}
	hold := &retentionv1.Hold{HoldId: restrictionHoldID(id), SubjectId: ev.SubjectId, Reason: restrictionReasons[applied.GetGround()]}
	if hold.Reason == "" {
		hold.Reason = fmt.Sprintf("Restriction %s (GDPR Art. 18) was lifted", id)
	}
	ok := err == nil && id != "" && contract.ValidToken(ev.TenantId) && validSubject(ev.SubjectId) &&
		len(rules.ValidateHold(holdFromProto(hold))) == 0 && ev.GetOccurredAt() != nil
	return ev, hold, ok
}

// restrictionTx places hold for an applied restriction, or releases it
// for a lifted one, unless its record says that was done: a lift before
// its restriction leaves a released hold that the restriction then finds.
func (s *Service) restrictionTx(tx *bolt.Tx, ev *eventsv1.Event, applied bool, hold *retentionv1.Hold) error {
	k := store.Key(ev.TenantId, hold.HoldId)
	old := store.BucketTx(tx, bucketHolds).Get(k)
	switch {
	case applied && old != nil:
		return nil // placed already, or lifted before it arrived
	case applied:
		hold.StartTime = ev.OccurredAt
	case old == nil:
		hold.ReleasedAt = ev.OccurredAt
	default:
		if err := proto.Unmarshal(old, hold); err != nil {
			return err
		}
		if hold.ReleasedAt != nil {
			return nil // released already
		}
		hold.ReleasedAt = ev.OccurredAt
	}
	if err := putProtoTx(tx, bucketHolds, k, hold); err != nil {
		return err
	}
	tx.OnCommit(s.wakeSweeper)
	return s.holdChangedTx(tx, ev.TenantId, hold)
}
