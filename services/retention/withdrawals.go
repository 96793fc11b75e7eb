package retention

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// followWithdrawals turns the consent service's consent.withdrawn events
// into signals: "delete the newsletter data when consent is withdrawn" is a
// rule with a SINCE_CONSENT_WITHDRAWAL trigger. A durable consumer of its
// own reads every tenant's withdrawals from the first the stream holds, so
// none is missed while the service is down. A stop during start-up is a
// stop, not a failure.
func (s *Service) followWithdrawals(ctx context.Context, js jetstream.JetStream) error {
	err := s.consumeWithdrawals(ctx, js)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Service) consumeWithdrawals(ctx context.Context, js jetstream.JetStream) error {
	subject, err := contract.KindSubject(contract.AllTenants, contract.KindConsentWithdrawn)
	if err != nil {
		return err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, contract.StreamName, jetstream.ConsumerConfig{
		Durable:       "lethe-retention-withdrawals",
		Description:   "consent withdrawals, which start the retention service's SINCE_CONSENT_WITHDRAWAL clocks",
		FilterSubject: subject,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("retention: withdrawals consumer: %w", err)
	}
	cc, err := cons.Consume(s.handleWithdrawal)
	if err != nil {
		return err
	}
	defer cc.Stop()
	<-ctx.Done()
	return nil
}

// handleWithdrawal records a withdrawal in the subject's facts. Facts merge
// (the first withdrawal counts), so a redelivered event changes nothing.
func (s *Service) handleWithdrawal(msg jetstream.Msg) {
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(msg.Data(), ev); err != nil || ev.GetConsentWithdrawn() == nil || ev.SubjectId == "" {
		s.Logger.Warn("retention: ignoring an undecodable consent.withdrawn event", "subject", msg.Subject())
		_ = msg.Term()
		return
	}
	at := ev.GetOccurredAt().AsTime()
	err := s.DB.Batch(func(tx *bolt.Tx) error {
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
