package consent

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// compile turns a stored purpose into the decision engine's form, as of
// now: notice versions that take effect later are brought in by
// ApplyDueNotices when they do.
func compile(p *consentv1.Purpose, now time.Time) decision.Purpose {
	d := decision.Purpose{
		ID: p.PurposeId, Basis: p.LegalBasis, Necessary: p.Necessary, DirectMarketing: p.DirectMarketing,
		GPCOptOut: p.GpcOptOut, Lifetime: p.DefaultLifetime.AsDuration(),
		ExcludedRoles: p.GetEligibility().GetExcludedRoles(), MinimumAge: p.GetEligibility().GetMinimumAge(),
		DigitalConsentAge: p.GetEligibility().GetDigitalConsentAge(), StorageOnly: p.StorageOnly,
	}
	for _, v := range p.NoticeVersions {
		at := v.EffectiveAt.AsTime()
		if at.After(now) {
			continue
		}
		d.CurrentNotice = v.Version
		if v.Material {
			d.MaterialSince = at
		}
	}
	return d
}

func consentOf(r *consentv1.ConsentRecord) decision.Consent {
	c := decision.Consent{Action: r.Action, RecordID: r.RecordId, RecordedAt: r.RecordedAt.AsTime()}
	if r.GivenAt != nil {
		c.GivenAt = r.GivenAt.AsTime()
	}
	if r.ExpiresAt != nil {
		c.ExpiresAt = r.ExpiresAt.AsTime()
	}
	return c
}

// snapshotFile is the snapshot of the decision index in the data folder
// (decision.Index.WriteSnapshot): the state as of a revision per tenant,
// from which a start replays only the changes committed after it instead
// of reading every record in history. It is derived from consent.db and
// never backed up: a missing or unusable one costs a full read, never a
// wrong answer.
const snapshotFile = "consent.index"

// replayPage bounds the changes read from the log per round of a replay.
const replayPage = 4096

// load builds the in-memory state: from the index snapshot and the
// changes committed after it when there is a usable snapshot, otherwise
// by reading every record in the store. Either way purposes and tenants'
// countries are read from the store, which owns them.
func (s *Service) load() error {
	started := time.Now()
	ix, covered := s.readSnapshot()
	var replayed int
	err := s.DB.View(func(tx *bolt.Tx) error {
		stored, err := storage.RevisionsTx(tx)
		if err != nil {
			return err
		}
		if ix != nil {
			if why := snapshotAhead(covered, stored); why != "" {
				s.Logger.Warn("consent: the index snapshot is ahead of the store (restored from a backup?); reading every record", "reason", why)
				ix = nil
				// The replicas may hold those changes too: a new
				// replication epoch (settleEpoch).
				s.indexAhead = why
				// Removed before anything new commits: the store's
				// revisions will pass the snapshot's with other changes,
				// and a later start must not mistake it for their state.
				if err := os.Remove(filepath.Join(s.deps.DataDir, snapshotFile)); err != nil {
					return fmt.Errorf("consent: remove the stale index snapshot: %w", err)
				}
			}
		}
		if ix != nil {
			replayed, err = s.loadTx(tx, ix, covered, stored)
			if errors.Is(err, errReplay) {
				s.Logger.Warn("consent: cannot replay the changes after the index snapshot; reading every record", "err", err)
				ix = nil
			}
		}
		if ix == nil {
			ix, covered = decision.NewIndex(), nil
			_, err = s.loadTx(tx, ix, nil, stored)
		}
		return err
	})
	if err != nil {
		return err
	}
	s.index = ix
	s.fullLoad = covered == nil
	if covered != nil {
		s.snapshotCovers.Store(&covered)
	}
	st := ix.Stats()
	s.Logger.Info("consent: decision index loaded", "from_snapshot", !s.fullLoad, "changes_replayed", replayed,
		"tenants", st.Tenants, "subjects", st.Subjects, "state_bytes", st.StateBytes, "took", time.Since(started))
	return nil
}

// errReplay marks a change log the replay cannot map back to state.
var errReplay = errors.New("replay")

// snapshotAhead says why a snapshot covers changes the store does not
// have, or "" when it does not: then it was written from a later state
// of a file since restored, and its subjects cannot be trusted.
func snapshotAhead(covered, stored map[string]uint64) string {
	for tenant, rev := range covered {
		if last := stored[tenant]; rev > last {
			return fmt.Sprintf("tenant %q: snapshot at revision %d, store at %d", tenant, rev, last)
		}
	}
	return ""
}

// loadTx fills ix from the store: purposes and countries always; subjects
// by replaying the changes after covered when covered is set (ix then
// holds the snapshot), otherwise by reading every record. It returns the
// changes replayed.
func (s *Service) loadTx(tx *bolt.Tx, ix *decision.Index, covered, stored map[string]uint64) (int, error) {
	now := s.Clock.Now()
	err := storage.Each(tx, storage.BucketPurposes, nil, func(k, v []byte) error {
		p := &consentv1.Purpose{}
		if err := proto.Unmarshal(v, p); err != nil {
			return err
		}
		ix.PutPurpose(tenantOfKey(k), compile(p, now))
		s.notices.schedule(tenantOfKey(k), p, now)
		return nil
	})
	if err != nil {
		return 0, err
	}
	if err := storage.Each(tx, storage.BucketTenantCountries, nil, func(k, v []byte) error {
		ix.SetCountry(string(k), string(v))
		return nil
	}); err != nil {
		return 0, err
	}
	replayed := 0
	if covered != nil {
		for tenant, last := range stored {
			n, err := replayTx(tx, ix, tenant, covered[tenant], last)
			if err != nil {
				return 0, err
			}
			replayed += n
		}
	} else if err := scanTx(tx, ix); err != nil {
		return 0, err
	}
	for tenant, rev := range stored {
		s.applied.start(tenant, rev)
		ix.SetRevision(tenant, rev)
	}
	return replayed, nil
}

// scanTx reads every subject's state from the store: each subject's
// records in the order committed (they are stored under tenant, subject
// and sequence, so a subject's are together), its objections and active
// restrictions.
func scanTx(tx *bolt.Tx, ix *decision.Index) error {
	var tenant, subject string
	var batch []*consentv1.ConsentRecord
	flush := func() {
		if len(batch) > 0 {
			ix.Update(tenant, subject, func(sub *decision.Subject) {
				for _, r := range batch {
					sub.SetConsent(r.PurposeId, consentOf(r))
				}
			})
		}
		batch = batch[:0]
	}
	err := storage.Each(tx, storage.BucketRecords, nil, func(_, v []byte) error {
		r := &consentv1.ConsentRecord{}
		if err := proto.Unmarshal(v, r); err != nil {
			return err
		}
		if r.TenantId != tenant || r.SubjectId != subject {
			flush()
			tenant, subject = r.TenantId, r.SubjectId
		}
		batch = append(batch, r)
		return nil
	})
	if err != nil {
		return err
	}
	flush()
	err = storage.Each(tx, storage.BucketObjections, nil, func(k, v []byte) error {
		var o storage.Objection
		if err := json.Unmarshal(v, &o); err != nil {
			return err
		}
		ix.Update(tenantOfKey(k), o.Subject, func(sub *decision.Subject) { sub.AddObjection(decisionObjection(o)) })
		return nil
	})
	if err != nil {
		return err
	}
	return storage.Each(tx, storage.BucketRestrictions, nil, func(k, v []byte) error {
		var r storage.Restriction
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if r.LiftedAt.IsZero() {
			ix.Update(tenantOfKey(k), r.Subject, func(sub *decision.Subject) { sub.AddRestriction(decisionRestriction(r)) })
		}
		return nil
	})
}

// replayTx brings a tenant's subjects from the snapshot's revision after
// to the store's last: every subject a change after it names is rebuilt
// whole from the store, as scanTx would read it. Rebuilding rather than
// applying each change makes the replay right whether or not the
// snapshot already holds a change's effect (saveSnapshot writes an exact
// cut, but a snapshot written by an older build may not be one), and in
// any order. An expiry changes no
// state (a decision compares the record's expiry with the time), and
// purposes are read whole. A change it cannot decode or of a kind it does
// not know, or a log trimmed past after, fails with errReplay, and the
// start reads every record instead.
func replayTx(tx *bolt.Tx, ix *decision.Index, tenant string, after, last uint64) (int, error) {
	if trimmed := storage.TrimmedTx(tx, tenant); after < trimmed {
		// Only a snapshot older than the one the trim waited for (one
		// put back by hand, or of a start with snapshots off) lacks them.
		return 0, fmt.Errorf("%w: tenant %q: the snapshot covers revision %d, and the changes up to %d are trimmed", errReplay, tenant, after, trimmed)
	}
	subjects := map[string]struct{}{}
	n := 0
	for after < last {
		page, err := storage.ChangesTx(tx, tenant, after, replayPage)
		if err != nil {
			// The records are whole; only the log that points at them
			// cannot be read.
			return 0, fmt.Errorf("%w: tenant %q: %w", errReplay, tenant, err)
		}
		if len(page) == 0 {
			// The rest were skipped when an epoch started
			// (storage.SkipRevisionsTx): no change has them.
			break
		}
		for _, c := range page {
			switch c.Kind {
			case consentv1.ChangeKind_CHANGE_KIND_CONSENT_RECORDED, consentv1.ChangeKind_CHANGE_KIND_OBJECTION_RECORDED,
				consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_APPLIED, consentv1.ChangeKind_CHANGE_KIND_RESTRICTION_LIFTED:
				if c.SubjectId == "" {
					return 0, fmt.Errorf("%w: tenant %q: change %d (%v) names no subject", errReplay, tenant, c.Revision, c.Kind)
				}
				subjects[c.SubjectId] = struct{}{}
			case consentv1.ChangeKind_CHANGE_KIND_CONSENT_EXPIRED, consentv1.ChangeKind_CHANGE_KIND_PURPOSE_CHANGED:
			default:
				return 0, fmt.Errorf("%w: tenant %q: change %d of unknown kind %v", errReplay, tenant, c.Revision, c.Kind)
			}
			after = c.Revision
			n++
		}
	}
	if len(subjects) == 0 {
		return n, nil
	}
	active := map[string][]storage.Restriction{}
	if err := storage.Each(tx, storage.BucketRestrictions, store.Key(tenant), func(_, v []byte) error {
		var r storage.Restriction
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		if _, named := subjects[r.Subject]; named && r.LiftedAt.IsZero() {
			active[r.Subject] = append(active[r.Subject], r)
		}
		return nil
	}); err != nil {
		return 0, err
	}
	for subject := range subjects {
		if err := rebuildTx(tx, ix, tenant, subject, active[subject]); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// rebuildTx replaces a subject's state with what the store holds: its
// records in the order committed, its objections and the given active
// restrictions.
func rebuildTx(tx *bolt.Tx, ix *decision.Index, tenant, subject string, restrictions []storage.Restriction) error {
	var records []*consentv1.ConsentRecord
	var objections []storage.Objection
	if err := storage.Each(tx, storage.BucketRecords, store.Key(tenant, subject), func(_, v []byte) error {
		r := &consentv1.ConsentRecord{}
		records = append(records, r)
		return proto.Unmarshal(v, r)
	}); err != nil {
		return err
	}
	if err := storage.Each(tx, storage.BucketObjections, store.Key(tenant, subject), func(_, v []byte) error {
		var o storage.Objection
		objections = append(objections, o)
		return json.Unmarshal(v, &objections[len(objections)-1])
	}); err != nil {
		return err
	}
	ix.Update(tenant, subject, func(sub *decision.Subject) {
		sub.Reset()
		for _, r := range records {
			sub.SetConsent(r.PurposeId, consentOf(r))
		}
		for _, o := range objections {
			sub.AddObjection(decisionObjection(o))
		}
		for _, r := range restrictions {
			sub.AddRestriction(decisionRestriction(r))
		}
	})
	return nil
}

// decisionObjection and decisionRestriction give the engine's view of
// stored limits.
func decisionObjection(o storage.Objection) decision.Objection {
	return decision.Objection{ID: o.ID, Scope: o.Scope, Purposes: o.Purposes}
}

func decisionRestriction(r storage.Restriction) decision.Restriction {
	return decision.Restriction{ID: r.ID, Purposes: r.Purposes}
}

// readSnapshot reads the index snapshot from the data folder into a new
// index, and returns it with the revision it covers per tenant; nil when
// there is none or it is unusable, which it logs.
func (s *Service) readSnapshot() (*decision.Index, map[string]uint64) {
	path := filepath.Join(s.deps.DataDir, snapshotFile)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		s.Logger.Info("consent: no index snapshot; reading every record", "path", path)
		return nil, nil
	}
	if err != nil {
		s.Logger.Warn("consent: cannot open the index snapshot; reading every record", "path", path, "err", err)
		return nil, nil
	}
	defer f.Close()
	ix := decision.NewIndex()
	var covered map[string]uint64
	fi, err := f.Stat()
	if err == nil {
		covered, err = ix.ReadSnapshot(f, fi.Size())
	}
	if err != nil {
		s.Logger.Warn("consent: the index snapshot is unusable; reading every record", "path", path, "err", err)
		return nil, nil
	}
	return ix, covered
}

// saveSnapshot writes the index snapshot to the data folder, replacing
// the last one only once the new one is whole and synced.
func (s *Service) saveSnapshot() error {
	started := time.Now()
	path := filepath.Join(s.deps.DataDir, snapshotFile)
	cut := s.applied.cut(s.index)
	defer cut.Close()
	if err := store.WriteFileAtomic(path, cut.WriteSnapshot); err != nil {
		return fmt.Errorf("consent: index snapshot: %w", err)
	}
	covers := cut.Revisions()
	s.snapshotCovers.Store(&covers)
	s.Logger.Debug("consent: index snapshot written", "path", path, "took", time.Since(started))
	return nil
}

// tenantOfKey returns the tenant id a storage key starts with.
func tenantOfKey(k []byte) string {
	for i, b := range k {
		if b == 0 {
			return string(k[:i])
		}
	}
	return string(k)
}
