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
// "<shard>.<tenant>.<revision>" so that a re-publication is dropped. The
// writer applies its own entries to its index with the same function as
// a replica (applyEntry): one meaning of an entry, not two.
//
// Periodically (Options.SnapshotEvery, or after SnapshotAfter changes) the
// writer writes a snapshot of its decision state to the object store
// bucket broker.ConsentSnapshotBucket and keeps the last SnapshotsKept.
// The snapshot records the stream sequence a replica resumes after; see
// takeSnapshot for why reading it before the snapshot's read transaction
// loses no change and why a replica skips entries at or below a tenant's
// snapshot revision.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

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
// transaction. A writer without NATS (a test of the store alone) has no
// replicas and stages nothing.
func (s *Service) replicateTx(tx *bolt.Tx, e *consentv1.ReplicationEntry, msgID string) error {
	if s.deps.NATS == nil {
		return nil
	}
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

// changeMsgID is the Nats-Msg-Id of a change's entry.
func (s *Service) changeMsgID(tenant string, rev uint64) string {
	return fmt.Sprintf("%s.%s.%d", s.opts.Shard, tenant, rev)
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
	var last time.Time
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
	h := &consentv1.ReplicationSnapshot{Shard: s.opts.Shard, StreamSequence: seq, TakenAt: timestamppb.New(s.Clock.Now())}
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
	committed, countries := map[string]uint64{}, map[string]string{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := storage.Each(tx, storage.BucketRevisions, nil, func(k, v []byte) error {
			committed[string(k)] = store.KeyUint64(v)
			return nil
		}); err != nil {
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
