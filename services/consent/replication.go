package consent

// Replication: the writer's side.
//
// Every change the writer commits already has a per-tenant revision
// (changeTx). In the same transaction it stages, through the outbox, a
// ReplicationEntry carrying what a decision needs of the change (the
// consent record without its evidence, the objection, the restriction
// applied or lifted, the purpose, the tenant's country): state and entry
// commit together, and the relay publishes the entry on the replication
// stream (broker.ConsentStateStreamName), NATS subject
// lethe-replication.consent.<shard>.<tenant>, with Nats-Msg-Id
// "<shard>.<epoch>.<tenant>.<revision>" so that a re-publication is
// dropped. The writer applies its own entries to its index with the same
// function as a replica (applyEntry): one meaning of an entry, not two.
//
// Every entry and snapshot carries the writer's epoch. A store restored
// from a backup restarts each tenant's revisions from the backup's, and
// the numbers replicas already applied would name other changes; at start
// the writer compares its store with what it published (settleEpoch) and,
// finding it behind, starts the next epoch before it stages anything.
// Replicas drop the state of an older epoch and restore the new one's
// first snapshot (replica.go).
//
// Periodically (Options.SnapshotEvery, or after SnapshotAfter changes) the
// writer writes a snapshot of its decision state to the object store
// bucket broker.ConsentSnapshotBucket and keeps the last SnapshotsKept.
// The snapshot is an exact cut of the live index (decision.Cut) and
// records the stream sequence a replica resumes after; see Snapshot for
// why reading that sequence first loses no change and why a replica skips
// entries at or below a tenant's snapshot revision.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// DefaultShard is the shard of a writer that is not told its own.
const DefaultShard = shardrouter.DefaultShard

// heartbeatToken stands in the tenant's place in the NATS subject of a
// heartbeat; a tenant id never starts with "_".
const heartbeatToken = "_heartbeat"

// Defaults of the replication options.
const (
	DefaultSnapshotEvery  = 5 * time.Minute
	DefaultSnapshotAfter  = 100_000
	DefaultSnapshotsKept  = 3
	DefaultHeartbeatEvery = time.Second
	// DefaultRevisionWait bounds how long a Check with min_revision waits
	// for the revision: far beyond a healthy replica's lag, and short
	// enough that a caller retrying on the writer still answers its user.
	DefaultRevisionWait = 250 * time.Millisecond
)

// replicatedRecord is a consent record as a replica needs it: without the
// evidence (a fingerprint of what the subject saw) and the actor.
func replicatedRecord(r *consentv1.ConsentRecord) *consentv1.ConsentRecord {
	return &consentv1.ConsentRecord{
		RecordId: r.RecordId, TenantId: r.TenantId, SubjectId: r.SubjectId, PurposeId: r.PurposeId, Action: r.Action,
		NoticeVersion: r.NoticeVersion, RecordedAt: r.RecordedAt, GivenAt: r.GivenAt, ExpiresAt: r.ExpiresAt,
	}
}

// consentEntry, objectionEntry, ... build the entries of the changes.
func consentEntry(r *consentv1.ConsentRecord) *consentv1.ReplicationEntry {
	return &consentv1.ReplicationEntry{Body: &consentv1.ReplicationEntry_Consent{Consent: replicatedRecord(r)}}
}

func objectionEntry(o storage.Objection) *consentv1.ReplicationEntry {
	return &consentv1.ReplicationEntry{Body: &consentv1.ReplicationEntry_Objection{Objection: &consentv1.ReplicatedObjection{
		SubjectId: o.Subject, ObjectionId: o.ID, Scope: o.Scope, PurposeIds: o.Purposes}}}
}

func restrictionEntry(r storage.Restriction) *consentv1.ReplicationEntry {
	rr := &consentv1.ReplicatedRestriction{SubjectId: r.Subject, RestrictionId: r.ID, PurposeIds: r.Purposes}
	if r.LiftedAt.IsZero() {
		return &consentv1.ReplicationEntry{Body: &consentv1.ReplicationEntry_RestrictionApplied{RestrictionApplied: rr}}
	}
	return &consentv1.ReplicationEntry{Body: &consentv1.ReplicationEntry_RestrictionLifted{RestrictionLifted: rr}}
}

func purposeEntry(p *consentv1.Purpose) *consentv1.ReplicationEntry {
	return &consentv1.ReplicationEntry{Body: &consentv1.ReplicationEntry_Purpose{Purpose: p}}
}

func countryEntry(tenant, country string) *consentv1.ReplicationEntry {
	return &consentv1.ReplicationEntry{TenantId: tenant,
		Body: &consentv1.ReplicationEntry_Country{Country: &consentv1.TenantCountry{Country: country}}}
}

// applyEntry applies an entry to a decision index, at now (which notice
// versions are in effect). The writer applies its own committed changes
// with it, a replica the entries of snapshots and of the stream. An entry
// without a body (an expiry, a heartbeat) changes nothing: Check judges an
// expiry from the record's expires_at.
func applyEntry(ix *decision.Index, n *notices, e *consentv1.ReplicationEntry, now time.Time) {
	tenant := e.TenantId
	switch b := e.Body.(type) {
	case *consentv1.ReplicationEntry_Consent:
		r := b.Consent
		ix.Update(tenant, r.SubjectId, func(sub *decision.Subject) { sub.SetConsent(r.PurposeId, consentOf(r)) })
	case *consentv1.ReplicationEntry_Objection:
		o := b.Objection
		ix.Update(tenant, o.SubjectId, func(sub *decision.Subject) {
			sub.AddObjection(decision.Objection{ID: o.ObjectionId, Scope: o.Scope, Purposes: o.PurposeIds})
		})
	case *consentv1.ReplicationEntry_RestrictionApplied:
		r := b.RestrictionApplied
		ix.Update(tenant, r.SubjectId, func(sub *decision.Subject) {
			sub.AddRestriction(decision.Restriction{ID: r.RestrictionId, Purposes: r.PurposeIds})
		})
	case *consentv1.ReplicationEntry_RestrictionLifted:
		r := b.RestrictionLifted
		ix.Update(tenant, r.SubjectId, func(sub *decision.Subject) { sub.LiftRestriction(r.RestrictionId) })
	case *consentv1.ReplicationEntry_Purpose:
		ix.PutPurpose(tenant, compile(b.Purpose, now))
		n.schedule(tenant, b.Purpose, now)
	case *consentv1.ReplicationEntry_Country:
		ix.SetCountry(tenant, b.Country.GetCountry())
	}
}

// replicateTx stages an entry on the replication stream in the caller's
// transaction, in the writer's epoch. A writer without NATS (a test of
// the store alone) has no replicas and stages nothing.
func (s *Service) replicateTx(tx *bolt.Tx, e *consentv1.ReplicationEntry, msgID string) error {
	if s.deps.NATS == nil {
		return nil
	}
	e.Epoch = s.epoch
	payload, err := proto.Marshal(e)
	if err != nil {
		return err
	}
	token := e.TenantId
	if token == "" {
		token = heartbeatToken
	}
	return s.Outbox.AddMessageTx(tx, broker.ConsentStateSubject(s.opts.Shard, token), msgID, payload)
}

// changeMsgID is the Nats-Msg-Id of a change's entry. The epoch is in it
// because a restored writer reuses revisions: JetStream's duplicate window
// would drop a new change as a re-publication of the old one it replaces.
func (s *Service) changeMsgID(tenant string, rev uint64) string {
	return fmt.Sprintf("%s.%d.%s.%d", s.opts.Shard, s.epoch, tenant, rev)
}

// heartbeat commits a heartbeat entry: a replica that applied it has
// applied every change committed before it, and measures its lag from it.
func (s *Service) heartbeat() error {
	now := s.Clock.Now()
	e := &consentv1.ReplicationEntry{Body: &consentv1.ReplicationEntry_Heartbeat{Heartbeat: timestamppb.New(now)}}
	return s.DB.Update(func(tx *bolt.Tx) error {
		// A fresh id: heartbeats are never re-published, and two taken at
		// one clock reading (a stopped test clock) are two heartbeats.
		return s.replicateTx(tx, e, s.opts.Shard+"."+heartbeatToken+"."+outbox.NewEventID())
	})
}

// runReplication sends heartbeats and takes snapshots until ctx ends: one
// at start (a replica needs one to start from), then every SnapshotEvery
// or once SnapshotAfter changes were committed since the last, whichever
// comes first.
func (s *Service) runReplication(ctx context.Context) error {
	if s.deps.JetStream == nil {
		return nil
	}
	beat := time.NewTicker(s.opts.HeartbeatEvery)
	defer beat.Stop()
	// A snapshot taken in New (a new epoch's first) is this start's.
	last := s.epochSnapshotAt
	for {
		if due := s.changesSinceSnapshot.Load() >= int64(s.opts.ReplicaSnapshotAfter) || last.IsZero() ||
			s.Clock.Now().Sub(last) >= s.opts.ReplicaSnapshotEvery; due {
			if _, err := s.Snapshot(ctx); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				s.Logger.Error("consent: taking a replication snapshot failed", "error", err)
			}
			last = s.Clock.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-beat.C:
			if err := s.heartbeat(); err != nil {
				s.Logger.Warn("consent: committing a replication heartbeat failed", "error", err)
			}
		}
	}
}

// SnapshotInfo describes a snapshot taken.
type SnapshotInfo struct {
	// Name is the object's name in the bucket: "<shard>.<sequence>".
	Name string
	// StreamSequence is the stream's last sequence before the snapshot.
	StreamSequence uint64
	// Bytes is the snapshot's size.
	Bytes uint64
}

// snapshotName names a shard's snapshot taken after stream sequence seq;
// names sort by sequence.
func snapshotName(shard string, seq uint64) string { return fmt.Sprintf("%s.%020d", shard, seq) }

// Snapshot takes a snapshot of the writer's decision state now, writes it
// to the bucket and drops the shard's snapshots beyond SnapshotsKept. Run
// takes them on schedule; an operator or a test may take one at any time.
//
// Why a replica that restores it misses no change and applies none twice:
// the stream's last sequence S is read first, then the store's committed
// revision R of every tenant. An entry at a sequence <= S was published
// before S was read, and the relay publishes an entry only after its
// transaction committed, so its revision is at most its tenant's R. The
// snapshot is a cut of the live index taken between two changes
// (cutCommitted) once the index has applied every tenant's R: it holds
// each tenant's changes up to some revision C >= R and none after, and
// records C. A replica therefore needs nothing at or below S and consumes
// from S+1; of what follows, it skips the entries at or below C, which
// the snapshot holds, and applies the others in revision order: every
// change exactly once, in the order the writer committed them.
func (s *Service) Snapshot(ctx context.Context) (SnapshotInfo, error) {
	s.snapshotMu.Lock()
	defer s.snapshotMu.Unlock()
	js := s.deps.JetStream
	stream, err := js.Stream(ctx, broker.ConsentStateStreamName)
	if err != nil {
		return SnapshotInfo{}, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return SnapshotInfo{}, err
	}
	seq := info.State.LastSeq
	changes := s.changesSinceSnapshot.Load()
	f, err := os.CreateTemp(s.deps.DataDir, "consent-snapshot-*")
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer func() { _ = os.Remove(f.Name()) }()
	defer func() { _ = f.Close() }()
	cut, err := s.cutCommitted(ctx)
	if err != nil {
		return SnapshotInfo{}, err
	}
	defer cut.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	h := &consentv1.ReplicationSnapshot{Shard: s.opts.Shard, StreamSequence: seq, TakenAt: timestamppb.New(s.Clock.Now()), Epoch: s.epoch}
	if _, err := protodelim.MarshalTo(w, h); err != nil {
		return SnapshotInfo{}, err
	}
	if err := cut.WriteSnapshot(w); err != nil {
		return SnapshotInfo{}, err
	}
	if err := w.Flush(); err != nil {
		return SnapshotInfo{}, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return SnapshotInfo{}, err
	}
	obs, err := js.ObjectStore(ctx, broker.ConsentSnapshotBucket)
	if err != nil {
		return SnapshotInfo{}, err
	}
	name := snapshotName(s.opts.Shard, seq)
	put, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name, Description: "consent decision state of shard " + s.opts.Shard}, f)
	if err != nil {
		return SnapshotInfo{}, err
	}
	s.changesSinceSnapshot.Add(-changes)
	if err := pruneSnapshots(ctx, obs, s.opts.Shard, s.opts.ReplicaSnapshotsKept); err != nil {
		s.Logger.Warn("consent: dropping old replication snapshots failed", "error", err)
	}
	kept, keptBytes := cut.Kept()
	s.Logger.Info("consent: replication snapshot taken", "name", name, "bytes", put.Size,
		"changed_while_written", kept, "kept_bytes", keptBytes)
	return SnapshotInfo{Name: name, StreamSequence: seq, Bytes: put.Size}, nil
}

// shardSnapshots lists a shard's snapshots in the bucket, oldest first.
func shardSnapshots(ctx context.Context, obs jetstream.ObjectStore, shard string) ([]string, error) {
	all, err := obs.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var names []string
	for _, o := range all {
		if !o.Deleted && strings.HasPrefix(o.Name, shard+".") {
			names = append(names, o.Name)
		}
	}
	slices.Sort(names)
	return names, nil
}

// pruneSnapshots keeps the shard's last kept snapshots.
func pruneSnapshots(ctx context.Context, obs jetstream.ObjectStore, shard string, kept int) error {
	names, err := shardSnapshots(ctx, obs, shard)
	if err != nil || len(names) <= kept {
		return err
	}
	for _, name := range names[:len(names)-kept] {
		if err := obs.Delete(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

// cutWait bounds how long a snapshot waits for the changes the store has
// committed to be applied to the index; they are applied as each commits,
// so a longer wait means the writer is failing, and the snapshot is taken
// at the next turn.
const cutWait = 10 * time.Second

// cutCommitted returns an exact cut of the live index (decision.Cut) that
// holds at least every change the store had committed when it was called,
// for Snapshot. Tenants' countries are no changes of their logs: they are
// taken from the store in the same transaction as the revisions, and a
// change of country after it is on the stream after Snapshot's sequence.
func (s *Service) cutCommitted(ctx context.Context) (*decision.Cut, error) {
	var committed map[string]uint64
	countries := map[string]string{}
	err := s.DB.View(func(tx *bolt.Tx) (err error) {
		if committed, err = storage.RevisionsTx(tx); err != nil {
			return err
		}
		return storage.Each(tx, storage.BucketTenantCountries, nil, func(k, v []byte) error {
			countries[string(k)] = string(v)
			return nil
		})
	})
	if err != nil {
		return nil, err
	}
	for tenant, rev := range committed {
		if _, err := s.applied.revisions.await(ctx, tenant, rev, cutWait); err != nil {
			return nil, fmt.Errorf("consent: snapshot: committed changes not applied to the index: %w", err)
		}
	}
	cut := s.applied.cut(s.index)
	for tenant, country := range countries {
		cut.SetCountry(tenant, country)
	}
	return cut, nil
}

// appliedRevisions is, per tenant, the last revision applied in memory,
// and wakes the calls waiting for one (min_revision). Check reads it on
// every call, so a read takes no lock.
type appliedRevisions struct {
	last sync.Map // tenant → *atomic.Uint64
	// waiting counts the calls waiting; set takes mu only when one does.
	waiting atomic.Int64
	mu      sync.Mutex
	// wake is closed at the next set after a waiter asked for it.
	wake chan struct{}
}

func newAppliedRevisions() *appliedRevisions { return &appliedRevisions{} }

// set records that the tenant's revisions up to rev are applied.
func (a *appliedRevisions) set(tenant string, rev uint64) {
	v, ok := a.last.Load(tenant)
	if !ok {
		v, _ = a.last.LoadOrStore(tenant, new(atomic.Uint64))
	}
	v.(*atomic.Uint64).Store(rev)
	if a.waiting.Load() > 0 {
		a.mu.Lock()
		if a.wake != nil {
			close(a.wake)
			a.wake = nil
		}
		a.mu.Unlock()
	}
}

// get returns the tenant's last applied revision.
func (a *appliedRevisions) get(tenant string) uint64 {
	if v, ok := a.last.Load(tenant); ok {
		return v.(*atomic.Uint64).Load()
	}
	return 0
}

// changed returns a channel closed at the next set.
func (a *appliedRevisions) changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.wake == nil {
		a.wake = make(chan struct{})
	}
	return a.wake
}

// await returns the tenant's applied revision once it is at least min,
// waiting up to bound (and never past ctx's deadline); past them it
// refuses with REPLICA_BEHIND, naming the revision it holds.
func (a *appliedRevisions) await(ctx context.Context, tenant string, min uint64, bound time.Duration) (uint64, error) {
	if rev := a.get(tenant); rev >= min {
		return rev, nil
	}
	a.waiting.Add(1)
	defer a.waiting.Add(-1)
	timer := time.NewTimer(bound)
	defer timer.Stop()
	for {
		wake := a.changed()
		rev := a.get(tenant)
		if rev >= min {
			return rev, nil
		}
		select {
		case <-wake:
		case <-timer.C:
			return 0, behind(tenant, rev, min)
		case <-ctx.Done():
			return 0, behind(tenant, rev, min)
		}
	}
}

// behind is the refusal of an answer older than the caller's token.
func behind(tenant string, have, want uint64) error {
	return apierror.FailedPrecondition(apierror.ReasonReplicaBehind, fmt.Sprintf(
		"tenant %q is at revision %d here, not yet at %d: retry, or ask the writer", tenant, have, want)).
		WithMetadata(map[string]string{"revision": fmt.Sprint(have)})
}

// revisionTx returns the tenant's revision as the transaction sees it: a
// write's consistency token.
func revisionTx(tx *bolt.Tx, tenant string) uint64 {
	if v := store.BucketTx(tx, storage.BucketRevisions).Get([]byte(tenant)); len(v) == 8 {
		return store.KeyUint64(v)
	}
	return 0
}

// answerAt checks a Check's consistency token and returns the revision the
// answer reflects at least, waiting for min up to bound.
func answerAt(ctx context.Context, revs *appliedRevisions, tenant string, min uint64, past bool, bound time.Duration) (uint64, error) {
	if past {
		if min != 0 {
			return 0, apierror.Invalid("min_revision", "not with at: a decision at a past time reads the history, which holds every revision")
		}
		return 0, nil
	}
	return revs.await(ctx, tenant, min, bound)
}

// snapshotPath is where a replica keeps its local copy of the last
// snapshot it restored.
func snapshotPath(dataDir, shard string) string {
	return filepath.Join(dataDir, "consent-replica-"+shard+".snapshot")
}

// Epochs.
//
// A consent store restored from a backup restarts each tenant's revisions
// from the backup's, and the catch-up (recovery.go) and new changes reuse
// numbers that replicas applied already, for other changes: a replica
// would skip them as re-publications (rev <= applied) and answer from
// changes the writer no longer holds. So the writer checks at every start,
// before it stages anything, whether its store's history went back behind
// what the shard published, and if it did starts a new epoch: the highest
// epoch it knows plus one, recorded in the store. Entries, snapshots and
// the entries' Nats-Msg-Id carry the epoch; the new epoch's first
// snapshot is taken before anything of it is published (openEpoch), and a
// replica that sees a later epoch than its state's restores it
// (replica.go). A counter rather than a random id: a replica then knows
// which of two epochs is the later, and skips the entries of an earlier
// one (staged in a restored outbox and published after the restore)
// instead of resetting on them. A second restore of the same backup reads
// the first restore's epoch from the stream or the bucket and starts the
// one after it.

// published is what a shard's writer published, as a starting writer reads
// it back from the replication stream and the snapshot bucket.
type published struct {
	// any is set when the stream or the bucket holds anything of the
	// shard.
	any bool
	// epoch is the latest epoch of the shard's newest snapshot and of the
	// newest message on each of the shard's NATS subjects.
	epoch uint64
	// snapshotEpoch is the epoch of the shard's newest snapshot; 0 when
	// there is none.
	snapshotEpoch uint64
	// revisions is, per tenant, the highest revision of epoch in the
	// newest message on the tenant's NATS subject.
	revisions map[string]uint64
	// highest is, per tenant, the highest revision of any epoch in the
	// newest message on the tenant's NATS subject: the highest a replica
	// may have applied, as far as the stream still shows.
	highest map[string]uint64
	// unreached says why the stream cannot show every entry published
	// since the store was last known complete; "" when it can.
	unreached string
}

// settleEpoch decides the epoch the writer publishes in. The store's epoch
// goes on unless its history is behind what the shard published:
//   - the index snapshot in the data folder covers changes the store lacks
//     (load found it ahead);
//   - the shard published a later epoch than the store's (the same backup
//     restored a second time);
//   - a tenant's newest entry of the store's epoch on the stream has a
//     revision the store has not reached;
//   - or the stream no longer holds every entry published since the store
//     was last known complete (alive_at, recovery.go), so that the check
//     before cannot be made: the writer cannot vouch for its history, and
//     a needless epoch costs the replicas a restore, never an answer.
func (s *Service) settleEpoch(ctx context.Context) error {
	var stored map[string]uint64
	var aliveAt time.Time
	var known bool
	err := s.DB.View(func(tx *bolt.Tx) error {
		s.epoch = storage.EpochTx(tx)
		aliveAt, known = storage.AliveAtTx(tx)
		var err error
		stored, err = storage.RevisionsTx(tx)
		return err
	})
	if err != nil || s.deps.JetStream == nil {
		return err
	}
	var from time.Time
	if known {
		from = aliveAt.Add(-s.opts.RecoveryMargin)
	}
	started := time.Now()
	pub, err := s.readPublished(ctx, from)
	if err != nil {
		return fmt.Errorf("consent: reading back what shard %s published: %w", s.opts.Shard, err)
	}
	why := s.indexAhead
	if why == "" && pub.any {
		why = behindPublished(s.epoch, stored, pub)
	}
	s.epochSnapshotDue = s.epoch != pub.snapshotEpoch
	if why == "" {
		s.Logger.Info("consent: the store's history continues what the shard published; same replication epoch",
			"epoch", s.epoch, "tenants_published", len(pub.revisions), "took", time.Since(started))
		return nil
	}
	old, next := s.epoch, max(s.epoch, pub.epoch)+1
	skips := skipsPast(stored, pub.highest)
	if err := s.DB.Update(func(tx *bolt.Tx) error {
		for tenant, rev := range skips {
			if err := storage.SkipRevisionsTx(tx, tenant, rev); err != nil {
				return err
			}
			if err := storage.AddUndoneTx(tx, tenant, storage.Undone{After: stored[tenant], Through: rev - 1}); err != nil {
				return err
			}
		}
		return storage.PutEpochTx(tx, next)
	}); err != nil {
		return err
	}
	for tenant, rev := range skips {
		s.applied.start(tenant, rev)
		s.index.SetRevision(tenant, rev)
	}
	s.epoch, s.epochSnapshotDue = next, true
	s.epochsStarted.Add(ctx, 1)
	s.Logger.Warn("consent: the store's history is behind what the shard already published (restored from a backup?): starting a new replication epoch; replicas answer REPLICA_BEHIND until they restored its first snapshot",
		"reason", why, "epoch", old, "new_epoch", next, "tenants_skipping_revisions", len(skips), "took", time.Since(started))
	return nil
}

// skipsPast returns, for each tenant whose store is behind the highest
// revision published, the revision its new epoch starts from: one past
// it. A restored store would otherwise number its next changes with
// revisions that replicas and callers already hold for the undone ones,
// and a consistency token would name two states: a replica still on the
// old epoch, asked at least at a revision of the new, would answer from
// the undone history. Past them, such a token is above anything the old
// epoch reached, and the replica waits or refuses (REPLICA_BEHIND) until
// it has the new epoch; a token of the old epoch is below the new one's
// revisions and is answered from the restored state, the writer's.
// Revisions the stream no longer shows (older than its retention) are
// not skipped.
func skipsPast(stored, highest map[string]uint64) map[string]uint64 {
	skips := map[string]uint64{}
	for tenant, h := range highest {
		if h > stored[tenant] {
			skips[tenant] = h + 1
		}
	}
	return skips
}

// behindPublished says why a store of the given epoch and revisions is
// behind what was published, or "" when it is not.
func behindPublished(epoch uint64, stored map[string]uint64, pub published) string {
	switch {
	case pub.epoch > epoch:
		return fmt.Sprintf("the shard published epoch %d, the store's history is of epoch %d", pub.epoch, epoch)
	case pub.epoch < epoch:
		// The store started an epoch whose first snapshot a failed start
		// never took: nothing of it was published, and it goes on.
		return ""
	case pub.unreached != "":
		return pub.unreached
	}
	for _, tenant := range slices.Sorted(maps.Keys(pub.revisions)) {
		if rev := pub.revisions[tenant]; stored[tenant] < rev {
			return fmt.Sprintf("tenant %q: the store is at revision %d, revision %d was published", tenant, stored[tenant], rev)
		}
	}
	return ""
}

// readPublished reads back the epoch of the shard's newest snapshot, and
// the newest message on each of the shard's NATS subjects (a tenant's, or
// the heartbeats'): one request per tenant of the shard, at start. A
// tenant quiet for longer than the stream keeps entries has none; from is
// when the store was last known complete (zero: never), and unreached is
// set when the stream may have dropped entries published since.
func (s *Service) readPublished(ctx context.Context, from time.Time) (published, error) {
	js := s.deps.JetStream
	pub := published{revisions: map[string]uint64{}, highest: map[string]uint64{}}
	obs, err := js.ObjectStore(ctx, broker.ConsentSnapshotBucket)
	if err != nil {
		return pub, err
	}
	names, err := shardSnapshots(ctx, obs, s.opts.Shard)
	if err != nil {
		return pub, err
	}
	if len(names) > 0 {
		h, err := snapshotHeader(ctx, obs, names[len(names)-1])
		if err != nil {
			return pub, err
		}
		pub.any, pub.epoch, pub.snapshotEpoch = true, h.Epoch, h.Epoch
	}
	stream, err := js.Stream(ctx, broker.ConsentStateStreamName)
	if err != nil {
		return pub, err
	}
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(broker.ConsentStateFilter(s.opts.Shard)))
	if err != nil {
		return pub, err
	}
	var newest []*consentv1.ReplicationEntry
	for natsSubject := range info.State.Subjects {
		msg, err := stream.GetLastMsgForSubject(ctx, natsSubject)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // dropped since (its age)
		}
		if err != nil {
			return pub, err
		}
		entries, err := decodeEntries(msg.Header, msg.Data)
		if err != nil {
			// An undecodable message tells nothing; replicas isolate it.
			s.Logger.Warn("consent: an undecodable message on the replication stream", "nats_subject", natsSubject, "stream_sequence", msg.Sequence, "error", err)
			continue
		}
		pub.any = true
		for _, e := range entries {
			pub.epoch = max(pub.epoch, e.Epoch)
		}
		newest = append(newest, entries...)
	}
	for _, e := range newest {
		if e.TenantId == "" {
			continue
		}
		rev := max(e.GetChange().GetRevision(), e.GetCountry().GetRevision())
		pub.highest[e.TenantId] = max(pub.highest[e.TenantId], rev)
		if e.Epoch == pub.epoch {
			pub.revisions[e.TenantId] = max(pub.revisions[e.TenantId], rev)
		}
	}
	if until, ok := reaches(info, from, s.opts.RecoveryMargin, time.Now()); !ok {
		pub.unreached = fmt.Sprintf("the replication stream no longer holds every entry published since the store was last known complete (%s): it dropped entries up to %s",
			describeTime(from), until.Format(time.RFC3339))
	}
	return pub, nil
}

// describeTime is t in RFC 3339, or "never" for the zero time.
func describeTime(t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	return t.Format(time.RFC3339)
}

// snapshotHeader reads the header of a snapshot in the bucket, and no
// more of it.
func snapshotHeader(ctx context.Context, obs jetstream.ObjectStore, name string) (*consentv1.ReplicationSnapshot, error) {
	res, err := obs.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer func() { _ = res.Close() }()
	h := &consentv1.ReplicationSnapshot{}
	if err := protodelim.UnmarshalFrom(bufio.NewReader(res), h); err != nil {
		return nil, fmt.Errorf("snapshot %s: header: %w", name, err)
	}
	return h, nil
}

// decodeEntries decodes the entries of one message of the replication
// stream: the writer's outbox relay sends the entries that follow one
// another on one tenant's NATS subject as one batch (outbox.HeaderBatch).
func decodeEntries(h nats.Header, data []byte) ([]*consentv1.ReplicationEntry, error) {
	parts := [][]byte{data}
	if h.Get(outbox.HeaderBatch) != "" {
		var err error
		if parts, err = outbox.SplitBatch(data); err != nil {
			return nil, err
		}
	}
	out := make([]*consentv1.ReplicationEntry, len(parts))
	for i, p := range parts {
		out[i] = &consentv1.ReplicationEntry{}
		if err := proto.Unmarshal(p, out[i]); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// openEpoch takes the first snapshot of an epoch the shard has none of,
// before Run's relay publishes anything of it, so that a replica that sees
// the epoch finds a cut of it to restore; and commits a heartbeat, so that
// replicas see the epoch without waiting for a change.
func (s *Service) openEpoch(ctx context.Context) error {
	if !s.epochSnapshotDue || s.deps.JetStream == nil {
		return nil
	}
	if _, err := s.Snapshot(ctx); err != nil {
		return fmt.Errorf("consent: the first snapshot of replication epoch %d: %w", s.epoch, err)
	}
	s.epochSnapshotAt = s.Clock.Now()
	return s.heartbeat()
}
