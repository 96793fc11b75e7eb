package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// follow consumes subjects with a durable consumer of the service's own,
// from the first message the stream holds, so that nothing is missed while
// the service is down, until ctx ends. A stop during start-up is a stop,
// not a failure.
func (s *Service) follow(ctx context.Context, js jetstream.JetStream, durable, description string, handle func(jetstream.Msg), subjects ...string) error {
	cfg := jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   description,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	}
	// One subject stays a FilterSubject, as the consumers created before
	// there were several were configured.
	if len(subjects) == 1 {
		cfg.FilterSubject = subjects[0]
	} else {
		cfg.FilterSubjects = subjects
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, contract.StreamName, cfg)
	if err == nil {
		var cc jetstream.ConsumeContext
		if cc, err = broker.Consume(cons, handle); err == nil {
			defer cc.Stop()
			<-ctx.Done()
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return fmt.Errorf("retention: %s: %w", durable, err)
}

// followWithdrawals turns the consent service's consent.withdrawn events
// into signals: "delete the newsletter data when consent is withdrawn" is a
// rule with a SINCE_CONSENT_WITHDRAWAL trigger.
func (s *Service) followWithdrawals(ctx context.Context, js jetstream.JetStream) error {
	natsSubject, err := contract.KindSubject(contract.AllTenants, contract.KindConsentWithdrawn)
	if err != nil {
		return err
	}
	return s.follow(ctx, js, "lethe-retention-withdrawals",
		"consent withdrawals, which start the retention service's SINCE_CONSENT_WITHDRAWAL clocks", s.handleWithdrawal, natsSubject)
}

// followRetained schedules what systems kept when they answered other
// services' erasures (see handleRetained).
func (s *Service) followRetained(ctx context.Context, js jetstream.JetStream) error {
	return s.follow(ctx, js, "lethe-retention-retained",
		"retained-until answers, whose data the retention service erases at the until-date", s.handleRetained, contract.AllOutcomes)
}

// handleWithdrawal records a withdrawal in the subject's facts. Facts merge
// (the first withdrawal counts), so a redelivered event changes nothing.
func (s *Service) handleWithdrawal(msg jetstream.Msg) {
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(msg.Data(), ev); err != nil || ev.GetConsentWithdrawn() == nil || ev.SubjectId == "" {
		s.Logger.Warn("retention: ignoring an undecodable consent.withdrawn event", "nats_subject", msg.Subject())
		_ = msg.Term()
		return
	}
	at, err := factTime(ev.GetOccurredAt())
	if err != nil {
		s.Logger.Warn("retention: ignoring a consent.withdrawn event dated outside any sane time", "event_id", ev.Id, "error", err)
		_ = msg.Term()
		return
	}
	err = s.DB.Batch(func(tx *bolt.Tx) error {
		p, err := s.policyTx(tx, ev.TenantId)
		if err != nil {
			return err
		}
		_, err = s.updateSubjectTx(tx, ev.TenantId, ev.SubjectId, p, func(st *subjectState) {
			for _, purpose := range ev.GetConsentWithdrawn().PurposeIds {
				setEarliest(&st.Withdrawn, purpose, at)
			}
		})
		return err
	})
	if err != nil {
		s.Logger.Error("retention: recording a withdrawal failed; it will be redelivered", "event_id", ev.Id, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}
