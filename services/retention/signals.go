package retention

import (
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"

	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
)

// RecordSignal records one lifecycle signal. It is durable when the call
// returns; its subject's dates move when the applier folds it in, which
// every reader of dates waits for (see journal.go). A signal is a fact that
// merges, so the call keeps no idempotency record (mutation.ApplyFact): a
// retry records the fact again, which changes nothing.
func (s *Service) RecordSignal(ctx context.Context, req *retentionv1.RecordSignalRequest) (*retentionv1.RecordSignalResponse, error) {
	if err := s.checkSignal("signal", req.Signal); err != nil {
		return nil, err
	}
	// The tenant is checked in retention.db, before the journal file's
	// transaction; the journal holds no tenant state of its own.
	if err := s.tenants.Require(req.TenantId); err != nil {
		return nil, err
	}
	return mutation.ApplyFact(ctx, s.journalMutator, req, func(tx *bolt.Tx) (*retentionv1.RecordSignalResponse, error) {
		return &retentionv1.RecordSignalResponse{}, s.journalTx(tx, req.TenantId, req.Signal)
	})
}

// RecordSignals records a batch of signals of one tenant, all or none, and,
// as RecordSignal, keeps no idempotency record.
func (s *Service) RecordSignals(ctx context.Context, req *retentionv1.RecordSignalsRequest) (*retentionv1.RecordSignalsResponse, error) {
	for i, sig := range req.Signals {
		if err := s.checkSignal(fmt.Sprintf("signals[%d]", i), sig); err != nil {
			return nil, err
		}
	}
	if err := s.tenants.Require(req.TenantId); err != nil {
		return nil, err
	}
	return mutation.ApplyFact(ctx, s.journalMutator, req, func(tx *bolt.Tx) (*retentionv1.RecordSignalsResponse, error) {
		for _, sig := range req.Signals {
			if err := s.journalTx(tx, req.TenantId, sig); err != nil {
				return nil, err
			}
		}
		return &retentionv1.RecordSignalsResponse{Recorded: int32(len(req.Signals))}, nil
	})
}

// checkSignal refuses what the proto's field rules cannot say: a signal
// dated outside the times a fact may hold (factTime) or in the future, a COLLECTED signal without categories, and a signal
// of a named kind without its name. (As CEL in the proto, the last two cost
// about 8% of a signal's CPU.)
func (s *Service) checkSignal(field string, sig *retentionv1.Signal) error {
	at, err := factTime(sig.OccurredAt)
	if err != nil {
		return apierror.Invalid(field+".occurred_at", err.Error())
	}
	if at.After(s.Clock.Now().Add(maxClockSkew)) {
		return apierror.Invalid(field+".occurred_at", fmt.Sprintf("%s is in the future: a signal reports what happened", at.Format(time.RFC3339)))
	}
	switch sig.Kind {
	case retentionv1.SignalKind_SIGNAL_KIND_COLLECTED:
		if len(sig.Categories) == 0 {
			return apierror.Invalid(field+".categories", "a COLLECTED signal lists the categories collected")
		}
	case retentionv1.SignalKind_SIGNAL_KIND_RELATIONSHIP_ENDED, retentionv1.SignalKind_SIGNAL_KIND_RELATIONSHIP_RESUMED,
		retentionv1.SignalKind_SIGNAL_KIND_EVENT:
		if sig.Name == "" {
			return apierror.Invalid(field+".name", fmt.Sprintf("a %s signal names the relationship or event", sig.Kind))
		}
	}
	return nil
}

// maxClockSkew is how far in the future a signal may be dated: a reporter's
// clock may run a little ahead, but a fact from the future would keep data
// longer than the rules say.
const maxClockSkew = 5 * time.Minute
