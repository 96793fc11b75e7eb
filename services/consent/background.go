package consent

import (
	"context"
	"errors"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// tick expires consents, brings notice versions into effect and asks the
// registry again for the countries of tenants still without one.
func (s *Service) tick(ctx context.Context) {
	if err := s.markAlive(); err != nil {
		s.Logger.Error("consent: recording the recovery mark failed", "error", err)
	}
	if err := s.wantCountries(true); err != nil {
		s.Logger.Error("consent: listing tenants without a country failed", "error", err)
	}
	if _, err := s.ExpireDue(ctx); err != nil {
		s.Logger.Error("consent: expiry sweep failed", "error", err)
	}
	if _, err := s.ApplyDueNotices(ctx); err != nil {
		s.Logger.Error("consent: bringing notice versions into effect failed", "error", err)
	}
	if _, err := s.TrimChanges(ctx); err != nil {
		s.Logger.Error("consent: trimming the change logs failed", "error", err)
	}
}

// trimBatch bounds the changes one transaction of TrimChanges deletes, so
// that a first trim of a long log does not hold the writer for long.
const trimBatch = 10_000

// TrimChanges deletes from each tenant's change log the changes older than
// Options.ChangesKeptFor, but none the index snapshot in the data folder
// does not cover, which the next start would replay (with snapshots off,
// a start reads every record, and age alone decides). A tenant whose log
// cannot be read is named in the error, and the others are trimmed. Run
// calls it every ExpirySweepEvery; it returns how many it deleted.
func (s *Service) TrimChanges(ctx context.Context) (int, error) {
	if s.opts.ChangesKeptFor < 0 {
		return 0, nil
	}
	before := s.Clock.Now().Add(-s.opts.ChangesKeptFor)
	var covers map[string]uint64
	if s.opts.SnapshotEvery > 0 {
		p := s.snapshotCovers.Load()
		if p == nil {
			return 0, nil
		}
		covers = *p
	}
	// Which tenants have anything to trim, read first: a write
	// transaction that deletes nothing still syncs the file. A tenant
	// whose log cannot be read is reported and the others trimmed.
	var errs []error
	through := map[string]uint64{}
	if err := s.DB.View(func(tx *bolt.Tx) error {
		revisions, err := storage.RevisionsTx(tx)
		if err != nil {
			return err
		}
		for tenant, last := range revisions {
			if covers != nil {
				last = covers[tenant]
			}
			switch ok, err := storage.CanTrimTx(tx, tenant, last, before); {
			case err != nil:
				errs = append(errs, fmt.Errorf("tenant %q: %w", tenant, err))
			case ok:
				through[tenant] = last
			}
		}
		return nil
	}); err != nil {
		return 0, err
	}
	total := 0
	for tenant, last := range through {
		for ctx.Err() == nil {
			n := 0
			if err := s.DB.Update(func(tx *bolt.Tx) (err error) {
				n, err = storage.TrimChangesTx(tx, tenant, last, before, trimBatch)
				return err
			}); err != nil {
				errs = append(errs, fmt.Errorf("tenant %q: %w", tenant, err))
				break
			}
			total += n
			s.changesTrimmed.Add(ctx, int64(n))
			if n < trimBatch {
				break
			}
		}
	}
	if total > 0 {
		s.Logger.Info("consent: change logs trimmed", "changes", total, "before", before)
	}
	// A stop is no failure: the next start's tick trims the rest.
	return total, errors.Join(errs...)
}

// ExpireDue ends the grants whose lifetime has run out: each becomes a
// CONSENT_EXPIRED change for watchers and a consent.withdrawn event for the
// systems processing for the purpose, unless a later record superseded it.
// Run calls it every ExpirySweepEvery; it returns how many it expired.
func (s *Service) ExpireDue(ctx context.Context) (int, error) {
	total := 0
	for {
		var due []storage.Expiry
		now := s.Clock.Now()
		if err := s.DB.View(func(tx *bolt.Tx) (err error) {
			due, err = storage.DueExpiriesTx(tx, now, expiryBatch)
			return err
		}); err != nil || len(due) == 0 {
			return total, err
		}
		// Route before the write transaction: it calls the registry.
		expect := map[[2]string][]tasks.Expect{}
		for _, e := range due {
			k := [2]string{e.Tenant, e.Purpose}
			if _, ok := expect[k]; !ok {
				systems, err := s.expect(ctx, e.Tenant, []string{e.Purpose})
				if err != nil {
					return total, err
				}
				expect[k] = systems
			}
		}
		n := 0
		err := s.DB.Update(func(tx *bolt.Tx) error {
			n = 0
			for _, e := range due {
				if err := store.BucketTx(tx, storage.BucketExpiries).Delete(e.Key); err != nil {
					return err
				}
				c, ok := s.index.Consent(e.Tenant, e.Subject, e.Purpose)
				if !ok || c.RecordID != e.RecordID {
					continue // renewed, withdrawn or denied since
				}
				if err := s.changeTx(tx, e.Tenant, &consentv1.Change{Kind: consentv1.ChangeKind_CHANGE_KIND_CONSENT_EXPIRED,
					SubjectId: e.Subject, PurposeIds: []string{e.Purpose}, BasisId: e.RecordID, At: timestamppb.New(e.At)}, nil); err != nil {
					return err
				}
				cause := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: e.RecordID}
				if err := s.publishLimitTx(ctx, tx, e.Tenant, e.Subject, cause, expect[[2]string{e.Tenant, e.Purpose}], &eventsv1.Event{
					Body: &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: []string{e.Purpose}}},
				}); err != nil {
					return err
				}
				n++
			}
			return nil
		})
		if err != nil {
			return total, err
		}
		total += n
		if len(due) < expiryBatch {
			return total, nil
		}
	}
}

// snapshots writes the decision index to the data folder every
// Options.SnapshotEvery, and at once after a start that read every
// record. A failed write is logged and tried again at the next tick: the
// previous snapshot stays whole, and only the next start's replay grows.
func (s *Service) snapshots(ctx context.Context) error {
	if s.opts.SnapshotEvery < 0 {
		return nil
	}
	if s.fullLoad {
		if err := s.saveSnapshot(); err != nil {
			s.Logger.Warn("consent: index snapshot failed", "err", err)
		}
	}
	t := time.NewTicker(s.opts.SnapshotEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := s.saveSnapshot(); err != nil {
				s.Logger.Warn("consent: index snapshot failed", "err", err)
			}
		}
	}
}
