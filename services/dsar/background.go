package dsar

import (
	"bytes"
	"context"
	"errors"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
)

// Sweep retries fan-outs that failed, completes requests whose consent
// fan-out completed, and destroys packages whose delivery was never
// confirmed in time. Run calls it every SweepEvery.
func (s *Service) Sweep(ctx context.Context) {
	if err := s.fanoutPending(ctx); err != nil && ctx.Err() == nil {
		s.Logger.Warn("dsar: fan-out sweep", "error", err)
	}
	if err := s.followConsent(ctx); err != nil && ctx.Err() == nil {
		s.Logger.Warn("dsar: following consent fan-out", "error", err)
	}
	if err := s.expirePackages(); err != nil {
		s.Logger.Warn("dsar: destroying expired packages", "error", err)
	}
}

// followConsent completes the requests whose objection, restriction or
// withdrawal every system has honoured, as the consent service reports.
func (s *Service) followConsent(ctx context.Context) error {
	following := map[string]string{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, bucketFollowing).ForEach(func(k, v []byte) error {
			following[string(k)] = string(v)
			return nil
		})
	})
	if err != nil || s.consent == nil {
		return err
	}
	for id, tenant := range following {
		err = errors.Join(err, s.follow(ctx, tenant, id))
	}
	return err
}

func (s *Service) follow(ctx context.Context, tenant, id string) error {
	var r *dsarv1.Request
	err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		r, err = requestTx(tx, tenant, id)
		return err
	})
	if err != nil {
		return err
	}
	var ts []tasks.Task
	for _, c := range r.ConsentCauses {
		p, err := s.consent.GetFanout(ctx, &consentv1.GetFanoutRequest{TenantId: tenant, Cause: c})
		if err != nil {
			return err
		}
		if !p.Complete {
			return nil
		}
		for _, t := range p.Tasks {
			ts = append(ts, consentTask(c, t))
		}
	}
	return s.DB.Update(func(tx *bolt.Tx) error {
		if store.BucketTx(tx, bucketFollowing).Get([]byte(id)) == nil {
			return nil
		}
		r, err := requestTx(tx, tenant, id)
		if err != nil || r.State != dsarv1.RequestState_REQUEST_STATE_IN_PROGRESS {
			return err
		}
		return s.finishTx(tx, r, ts)
	})
}

// consentTask turns a consent task into the tracker's form, so that limits
// and directives share one result shape.
func consentTask(c *commonv1.Cause, t *consentv1.Task) tasks.Task {
	task := tasks.Task{SystemID: t.SystemId, CauseKind: c.Kind, CauseID: c.Id, State: tasks.StateFinal}
	o := &eventsv1.Outcome{SystemId: t.SystemId, Kind: t.Outcome, Reason: t.Reason}
	task.Outcome, _ = proto.Marshal(o)
	return task
}

// expirePackages destroys the keys of packages whose delivery was never
// confirmed within PackageTTL. It looks first and writes only when a
// package is due: the sweep runs every few seconds, and a commit with
// nothing in it still costs an fsync and moves the file's transaction id.
func (s *Service) expirePackages() error {
	now := store.TimeKey(s.Clock.Now())
	var due [][]byte
	duePackagesTx := func(tx *bolt.Tx) error {
		due = due[:0]
		c := store.BucketTx(tx, bucketPackageExpiry).Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k[:8], now) <= 0; k, _ = c.Next() {
			due = append(due, append([]byte(nil), k...))
		}
		return nil
	}
	if err := s.DB.View(duePackagesTx); err != nil || len(due) == 0 {
		return err
	}
	return s.DB.Update(func(tx *bolt.Tx) error {
		if err := duePackagesTx(tx); err != nil {
			return err
		}
		for _, k := range due {
			tenant := string(store.BucketTx(tx, bucketPackageExpiry).Get(k))
			if err := store.BucketTx(tx, bucketPackageExpiry).Delete(k); err != nil {
				return err
			}
			r, err := requestTx(tx, tenant, string(k[8:]))
			if err != nil {
				return err
			}
			if r.KeyDestroyed {
				continue
			}
			if err := s.destroyKeyTx(tx, r); err != nil {
				return err
			}
			if err := s.putRequestTx(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
}

// ResendDue re-sends directives whose systems have not answered within
// ResendAfter and flags their tasks stalled; the tracker does it on its
// own every minute. It returns how many it re-sent.
func (s *Service) ResendDue(ctx context.Context) (int, error) { return s.tracker.Resend(ctx) }
