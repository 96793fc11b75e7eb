package retention

// The functions in this file reach into the service for tests and
// benchmarks that run it beside the registry, which live outside the
// service (tools/lethe/internal/flows/retention) because no service imports
// another, in tests either. Nothing else calls them: they write state
// without the API's checks, audit or events.

import (
	"context"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/services/retention/internal/schedule"
)

// AfterSweepTx makes s call fn after each committed sweep transaction, so
// that a test can stop a sweep part-way, as a crash would.
func AfterSweepTx(s *Service, fn func()) {
	s.sweepMu.Lock()
	defer s.sweepMu.Unlock()
	s.afterSweepTx = fn
}

// Track records in bulk, as COLLECTED signals would, that each subject's
// data of category was collected at the matching time, in transactions of
// 20,000: how benchmarks build a million tracked subjects quickly.
func Track(s *Service, tenant, category string, subjects []string, at []time.Time) error {
	const perTx = 20_000
	for lo := 0; lo < len(subjects); lo += perTx {
		err := s.DB.Update(func(tx *bolt.Tx) error {
			p, err := s.policyTx(tx, tenant)
			if err != nil {
				return err
			}
			for i := lo; i < min(lo+perTx, len(subjects)); i++ {
				sig := &retentionv1.Signal{SubjectId: subjects[i], Kind: retentionv1.SignalKind_SIGNAL_KIND_COLLECTED,
					Categories: []*commonv1.DataCategory{{Id: category}}, OccurredAt: timestamppb.New(at[i])}
				if _, err := s.updateSubjectTx(tx, tenant, subjects[i], p, func(st *subjectState) { st.apply(sig) }); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// Rearm forgets that the subjects were purged, so that a benchmark can
// sweep the same due subjects again.
func Rearm(s *Service, tenant string, subjects []string) error {
	return s.DB.Update(func(tx *bolt.Tx) error {
		p, err := s.policyTx(tx, tenant)
		if err != nil {
			return err
		}
		for _, subject := range subjects {
			if _, err := s.updateSubjectTx(tx, tenant, subject, p, func(st *subjectState) { st.Purged = nil }); err != nil {
				return err
			}
		}
		return nil
	})
}

// Rescan re-evaluates the tenants whose policy changed, as the first sweep
// after a rule change does: benchmarks do it before they time sweeps.
func Rescan(s *Service) error { return s.rescan(context.Background()) }

// ApplyJournal applies the journaled signals now.
func ApplyJournal(s *Service) (int, error) { return s.applyJournal() }

// ScheduleTx writes a subject's schedule record raw, payload as it is and
// due at due, in tx of the service's file opened while the service is
// stopped: how a test puts a record in place that an older version could
// have written and this one cannot read.
func ScheduleTx(tx *bolt.Tx, key []byte, due time.Time, payload []byte) error {
	return schedule.New(nil).SetTx(tx, key, due, payload)
}
