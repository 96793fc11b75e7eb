package consent

// The read replica.
//
// A replica is the consent binary with --role=replica: it opens no bbolt
// file and writes nothing. It restores the latest snapshot of its writer's
// shard (its own local copy when the stream still holds every entry after
// it, else the bucket's newest), follows the replication stream from the
// snapshot's sequence + 1 with an ordered consumer, and serves Check,
// CheckBatch and Watch; every other call is refused with FAILED_PRECONDITION
// READ_ONLY_REPLICA.
//
// An ordered consumer rather than a durable one: it keeps no state on the
// server (a replica's place is the snapshot's sequence plus what it has
// applied, and it restarts from a snapshot anyway), so replicas that the
// autoscaler adds and removes leave no consumers behind, and it delivers
// in stream order, recreating itself from the last delivered sequence
// after a lost message or a reconnect.
//
// Each tenant's entries are applied strictly in revision order. An entry
// at or below the tenant's applied revision is skipped (the snapshot
// already holds it, or it is a re-publication); one beyond the next is
// held until the missing revisions arrive (the outbox relay publishes in
// commit order, but retries a failed publish after later ones). A tenant
// whose gap stays open longer than GapBound, or whose entry cannot be
// decoded (a poison entry, counted and logged), is unsure: its Checks
// answer REPLICA_BEHIND until a snapshot taken after the problem is
// restored, which the replica looks for every second. Other tenants are
// not affected. A replica never answers from a state it cannot vouch for.
//
// A newer snapshot is restored beside the state that serves, followed up
// to the stream's tail, and only then swapped in, so that no Check sees a
// revision go back within an epoch.
//
// Every entry carries its writer's epoch (replication.go), which a writer
// restored from a backup raises before it reuses revisions. A state
// applies only the entries of its snapshot's epoch. It skips those of an
// earlier epoch (staged in a restored writer's outbox, published after
// the restore). On an entry or heartbeat of a later epoch it stops
// answering for every tenant of the shard (REPLICA_BEHIND: what it holds
// may include changes the writer no longer has, under revision numbers the
// writer gives to others) and the same path as above restores the newest
// snapshot of that epoch, which the writer took before it published
// anything of it, follows it to the tail and swaps it in. Revisions then
// go back: a consistency token of the old epoch means nothing in the new.

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
)

// ReplicaOptions tune a read replica; zero values are production defaults.
type ReplicaOptions struct {
	// Shard is the writer's shard the replica follows. Default
	// DefaultShard.
	Shard string
	// RevisionWait bounds how long Check waits for a min_revision.
	// Default DefaultRevisionWait.
	RevisionWait time.Duration
	// GapBound is how long a missing revision is waited for before the
	// tenant answers REPLICA_BEHIND and a newer snapshot is looked for.
	// Default 5s.
	GapBound time.Duration
	// RecentChanges is how many of each tenant's latest changes the
	// replica keeps for Watch. Default 4096.
	RecentChanges int
	// StartTimeout bounds the restore and the catch-up to the stream's
	// tail at start. Default recoveryTimeout.
	StartTimeout time.Duration
}

func (o *ReplicaOptions) complete() {
	if o.Shard == "" {
		o.Shard = DefaultShard
	}
	if o.RevisionWait <= 0 {
		o.RevisionWait = DefaultRevisionWait
	}
	if o.GapBound <= 0 {
		o.GapBound = 5 * time.Second
	}
	if o.RecentChanges <= 0 {
		o.RecentChanges = 4096
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = recoveryTimeout
	}
}

// Replica is a read replica of a consent writer's shard.
type Replica struct {
	consentv1.UnimplementedConsentServiceServer
	opts     ReplicaOptions
	dataDir  string
	js       jetstream.JetStream
	clock    clock.Clock
	logger   *slog.Logger
	meter    metric.Meter
	watchers *hub

	// st is the state that serves; swapped whole for a newer snapshot's.
	st atomic.Pointer[replicaState]
	// ctx ends the followers when the replica closes.
	ctx    context.Context
	cancel context.CancelFunc

	// Counters, for metrics and tests.
	applied, skipped, poison, restores, failedRestores, epochChanges atomic.Int64
	// healNow asks Run to heal at once rather than at its next tick.
	healNow chan struct{}
	// lastAt is the writer's time (unix nanoseconds) of the newest entry
	// or heartbeat applied with nothing held before it.
	lastAt atomic.Int64
	// pending is the stream's messages after the last delivered one.
	pending     atomic.Int64
	metrics     metric.Registration
	poisonCount metric.Int64Counter
}

// replicaState is one restored snapshot and what was applied on it.
type replicaState struct {
	index   *decision.Index
	notices notices
	revs    *appliedRevisions
	// seq is the snapshot's stream sequence, epoch its writer's epoch.
	seq, epoch uint64
	// superseded is the latest later epoch seen on the stream; 0 while
	// none was. Once set the state serves no answer and applies nothing.
	superseded atomic.Uint64
	// unsure maps a tenant whose answers refuse to the stream sequence a
	// snapshot must reach to restore it (0: any newer snapshot).
	unsure sync.Map
	recent *recentChanges
	// stop ends the state's follower; done is closed when it returned.
	stop func()
	done chan struct{}

	mu sync.Mutex // guards held and heldSince: the follower writes, the checker reads
	// held are entries waiting for an earlier revision, by tenant.
	held      map[string]map[uint64]*consentv1.ReplicationEntry
	heldSince map[string]time.Time
	// caughtUp is closed once the follower delivered the stream's tail as
	// it stood when the state was restored.
	caughtUp chan struct{}
	tail     uint64
}

// ReplicaFactory returns the factory of a read replica, for hosts (and
// tests) that run one beside or instead of the writer.
func ReplicaFactory(opts ReplicaOptions) service.Factory {
	return service.Factory{Name: "consent-replica", New: func(d service.Deps) (service.Service, error) { return NewReplica(d, opts) }}
}

// NewReplica restores the latest snapshot of the shard and follows the
// stream until it has applied the stream's tail as it stood at start: the
// replica serves nothing before it can answer as of then, so its
// readiness probe fails until it has caught up.
func NewReplica(deps service.Deps, opts ReplicaOptions) (*Replica, error) {
	opts.complete()
	if deps.JetStream == nil {
		return nil, errors.New("consent replica: a NATS connection is required")
	}
	if !shardrouter.Valid(opts.Shard) {
		return nil, fmt.Errorf("consent replica: shard %q is not a shard name (s0, s1, ...)", opts.Shard)
	}
	if deps.DataDir == "" {
		return nil, errors.New("consent replica: a data folder is required for the local snapshot")
	}
	if err := os.MkdirAll(deps.DataDir, 0o700); err != nil {
		return nil, err
	}
	r := &Replica{opts: opts, dataDir: deps.DataDir, js: deps.JetStream, clock: deps.Clock, logger: deps.Logger, watchers: newHub(),
		healNow: make(chan struct{}, 1)}
	if r.clock == nil {
		r.clock = clock.Real{}
	}
	if r.logger == nil {
		r.logger = slog.Default()
	}
	r.logger = r.logger.With("service", "consent-replica", "shard", opts.Shard)
	r.meter = noop.NewMeterProvider().Meter("")
	if deps.Telemetry != nil {
		r.meter = deps.Telemetry.Meter.Meter("github.com/lethe-privacy/lethe/services/consent")
	}
	if err := r.registerMetrics(); err != nil {
		return nil, err
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	ctx, cancel := context.WithTimeout(r.ctx, opts.StartTimeout)
	defer cancel()
	st, err := r.restore(ctx, true, 0, 0)
	if err == nil {
		// Stored before the catch-up, so that it keeps the lag and tells
		// watchers: nothing is served before New returns.
		r.st.Store(st)
		err = r.start(ctx, st)
	}
	if err != nil {
		r.cancel()
		return nil, errors.Join(err, r.metrics.Unregister())
	}
	return r, nil
}

// Register serves Check, CheckBatch and Watch; every other method of the
// API is refused with READ_ONLY_REPLICA after the server's interceptors
// (authentication, validation, logging) ran as for any call.
func (r *Replica) Register(srv *server.Server) {
	srv.Register(readOnlyDesc(), r)
}

// readOnlyDesc is the consent API's description with the handler of every
// unary method but Check and CheckBatch refusing: a method added to the
// API later is refused too, until the replica serves it.
func readOnlyDesc() *grpc.ServiceDesc {
	d := consentv1.ConsentService_ServiceDesc
	d.Methods = make([]grpc.MethodDesc, len(consentv1.ConsentService_ServiceDesc.Methods))
	for i, m := range consentv1.ConsentService_ServiceDesc.Methods {
		if m.MethodName != "Check" && m.MethodName != "CheckBatch" {
			orig := m.Handler
			m.Handler = func(srv any, ctx context.Context, dec func(any) error, next grpc.UnaryServerInterceptor) (any, error) {
				return orig(srv, ctx, dec, func(ctx context.Context, req any, info *grpc.UnaryServerInfo, _ grpc.UnaryHandler) (any, error) {
					refuse := func(context.Context, any) (any, error) { return nil, readOnly(info.FullMethod) }
					if next == nil {
						return refuse(ctx, req)
					}
					return next(ctx, req, info, refuse)
				})
			}
		}
		d.Methods[i] = m
	}
	return &d
}

// readOnly is the refusal of a call the writer serves.
func readOnly(method string) error {
	return apierror.FailedPrecondition(apierror.ReasonReadOnlyReplica,
		fmt.Sprintf("%s: this is a read replica of consent, serving Check, CheckBatch and Watch; send it to the writer", method))
}

// Run checks every second, and at once when the follower saw a later
// epoch, whether the state waits for a newer snapshot, and restores it,
// until ctx ends.
func (r *Replica) Run(ctx context.Context) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	defer r.watchers.closeAll()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-r.healNow:
		}
		if err := r.heal(ctx); err != nil && ctx.Err() == nil {
			r.failedRestores.Add(1)
			r.logger.Warn("consent replica: restoring a newer snapshot failed", "error", err)
		}
	}
}

// Close stops the follower and the metrics.
func (r *Replica) Close() error {
	r.cancel()
	if st := r.st.Load(); st != nil {
		st.stop()
		<-st.done
	}
	return r.metrics.Unregister()
}

// ReplicaStats counts what a replica did since it started.
type ReplicaStats struct {
	// Applied and Skipped are the stream's entries applied, and skipped as
	// already held (by the snapshot, or a re-publication).
	Applied, Skipped int64
	// Poison is the entries it could not decode.
	Poison int64
	// Restores is the newer snapshots restored while running, and
	// FailedRestores the looks for one that found none fit (or failed).
	Restores, FailedRestores int64
	// EpochChanges is how often the state served saw a later epoch of
	// its writer (restored from a backup) and stopped answering.
	EpochChanges int64
	// Epoch is the writer's epoch of the state served.
	Epoch uint64
}

// Stats returns what the replica did since it started.
func (r *Replica) Stats() ReplicaStats {
	return ReplicaStats{Applied: r.applied.Load(), Skipped: r.skipped.Load(), Poison: r.poison.Load(), Restores: r.restores.Load(),
		FailedRestores: r.failedRestores.Load(), EpochChanges: r.epochChanges.Load(), Epoch: r.st.Load().epoch}
}

// Revision returns the tenant's revision the replica serves.
func (r *Replica) Revision(tenant string) uint64 { return r.st.Load().revs.get(tenant) }

// Lag is now minus the writer's time of the newest entry or heartbeat the
// replica applied with nothing held before it: about the heartbeat period
// for a healthy replica of a live writer, growing while the writer (or the
// stream) is down or the replica falls behind. Zero before the first.
func (r *Replica) Lag() time.Duration {
	at := r.lastAt.Load()
	if at == 0 {
		return 0
	}
	return max(r.clock.Now().Sub(time.Unix(0, at)), 0)
}

// registerMetrics creates the replica's instruments.
func (r *Replica) registerMetrics() error {
	var err error
	r.poisonCount, err = r.meter.Int64Counter("lethe.consent.replica.poison_entries",
		metric.WithDescription("Replication entries the consent replica could not decode; their tenant answers REPLICA_BEHIND until a newer snapshot is restored."))
	if err != nil {
		return err
	}
	lag, err := r.meter.Float64ObservableGauge("lethe.consent.replica.lag", metric.WithUnit("s"),
		metric.WithDescription("Now minus the writer's commit time of the newest entry or heartbeat the replica applied with nothing held before it; grows while the writer or the stream is down."))
	if err != nil {
		return err
	}
	behindGauge, err := r.meter.Int64ObservableGauge("lethe.consent.replica.revisions_behind",
		metric.WithDescription("Replication entries the replica has not applied yet: on the stream after the last delivered, and held for an earlier revision."))
	if err != nil {
		return err
	}
	applied, err := r.meter.Int64ObservableCounter("lethe.consent.replica.applied",
		metric.WithDescription("Replication entries the replica applied from the stream."))
	if err != nil {
		return err
	}
	epochs, err := r.meter.Int64ObservableCounter("lethe.consent.replica.epoch_changes",
		metric.WithDescription("Times the consent replica saw a later epoch of its writer (a writer restored from a backup) and answered REPLICA_BEHIND until it restored the new epoch's snapshot."))
	if err != nil {
		return err
	}
	r.metrics, err = r.meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		obs.ObserveFloat64(lag, r.Lag().Seconds())
		obs.ObserveInt64(behindGauge, r.behind())
		obs.ObserveInt64(applied, r.applied.Load())
		obs.ObserveInt64(epochs, r.epochChanges.Load())
		return nil
	}, lag, behindGauge, applied, epochs)
	return err
}

// behind is the revisions_behind gauge.
func (r *Replica) behind() int64 {
	n := r.pending.Load()
	if st := r.st.Load(); st != nil {
		st.mu.Lock()
		for _, h := range st.held {
			n += int64(len(h))
		}
		st.mu.Unlock()
	}
	return n
}

// restore builds a state from a snapshot: the local copy when preferLocal
// and the stream still holds every entry after it, else the bucket's
// newest, which must reach minSeq and be of minEpoch or later.
func (r *Replica) restore(ctx context.Context, preferLocal bool, minSeq, minEpoch uint64) (*replicaState, error) {
	stream, err := r.js.Stream(ctx, broker.ConsentStateStreamName)
	if err != nil {
		return nil, err
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return nil, err
	}
	local := snapshotPath(r.dataDir, r.opts.Shard)
	if preferLocal {
		st, err := r.load(local)
		switch {
		case err == nil && st.seq+1 >= info.State.FirstSeq:
			st.tail = info.State.LastSeq
			r.logger.Info("consent replica: restored the local snapshot", "stream_sequence", st.seq)
			return st, nil
		case err == nil:
			r.logger.Info("consent replica: the stream no longer holds the entries after the local snapshot", "stream_sequence", st.seq)
		case !errors.Is(err, os.ErrNotExist):
			r.logger.Warn("consent replica: the local snapshot is unreadable", "error", err)
		}
	}
	obs, err := r.js.ObjectStore(ctx, broker.ConsentSnapshotBucket)
	if err != nil {
		return nil, err
	}
	names, err := shardSnapshots(ctx, obs, r.opts.Shard)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("consent replica: no snapshot of shard %q yet: start its writer first", r.opts.Shard)
	}
	name := names[len(names)-1]
	if err := download(ctx, obs, name, local); err != nil {
		return nil, err
	}
	st, err := r.load(local)
	if err != nil {
		return nil, err
	}
	if minSeq > 0 && st.seq < minSeq {
		return nil, fmt.Errorf("consent replica: the newest snapshot %s does not reach stream sequence %d", name, minSeq)
	}
	if st.epoch < minEpoch {
		return nil, fmt.Errorf("consent replica: the newest snapshot %s is of epoch %d, not yet %d", name, st.epoch, minEpoch)
	}
	if st.seq+1 < info.State.FirstSeq {
		return nil, fmt.Errorf("consent replica: snapshot %s ends at stream sequence %d, the stream starts at %d: entries are lost between them",
			name, st.seq, info.State.FirstSeq)
	}
	st.tail = max(info.State.LastSeq, st.seq)
	r.logger.Info("consent replica: restored a snapshot", "name", name, "stream_sequence", st.seq)
	return st, nil
}

// download copies an object to path, atomically.
func download(ctx context.Context, obs jetstream.ObjectStore, name, path string) error {
	res, err := obs.Get(ctx, name)
	if err != nil {
		return err
	}
	defer func() { _ = res.Close() }()
	tmp := path + ".part"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, res); err != nil {
		return errors.Join(err, f.Close())
	}
	if err := errors.Join(f.Sync(), f.Close()); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// load reads a snapshot file into a new state.
func (r *Replica) load(path string) (*replicaState, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer func() { _ = f.Close() }()
	in := bufio.NewReaderSize(f, 1<<20)
	h := &consentv1.ReplicationSnapshot{}
	if err := protodelim.UnmarshalFrom(in, h); err != nil {
		return nil, fmt.Errorf("snapshot header: %w", err)
	}
	if h.Shard != r.opts.Shard {
		return nil, fmt.Errorf("snapshot of shard %q, not %q", h.Shard, r.opts.Shard)
	}
	st := &replicaState{index: decision.NewIndex(), revs: newAppliedRevisions(), seq: h.StreamSequence, epoch: h.Epoch,
		recent: newRecentChanges(r.opts.RecentChanges), held: map[string]map[uint64]*consentv1.ReplicationEntry{},
		heldSince: map[string]time.Time{}, caughtUp: make(chan struct{})}
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	revisions, err := st.index.ReadSnapshot(in, fi.Size())
	if err != nil {
		return nil, err
	}
	for tenant, rev := range revisions {
		st.revs.set(tenant, rev)
	}
	return st, nil
}

// start follows the stream for st from its snapshot's sequence + 1 and
// waits until st has caught up with the tail it saw when restored.
func (r *Replica) start(ctx context.Context, st *replicaState) error {
	cons, err := r.js.OrderedConsumer(ctx, broker.ConsentStateStreamName, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{broker.ConsentStateFilter(r.opts.Shard)},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    st.seq + 1,
	})
	if err != nil {
		return err
	}
	it, err := cons.Messages()
	if err != nil {
		return err
	}
	st.stop, st.done = it.Stop, make(chan struct{})
	if st.tail <= st.seq {
		close(st.caughtUp)
	}
	go func() {
		defer close(st.done)
		r.follow(st, it)
	}()
	select {
	case <-st.caughtUp:
		return nil
	case <-ctx.Done():
		st.stop()
		<-st.done
		return fmt.Errorf("consent replica: catching up to stream sequence %d: %w", st.tail, ctx.Err())
	}
}

// follow applies the stream's messages to st until the iterator stops.
func (r *Replica) follow(st *replicaState, it jetstream.MessagesContext) {
	for {
		msg, err := it.Next()
		if errors.Is(err, jetstream.ErrMsgIteratorClosed) {
			return
		}
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			r.logger.Warn("consent replica: reading the stream", "error", err)
			continue
		}
		md, err := msg.Metadata()
		if err != nil {
			r.logger.Error("consent replica: a message without metadata", "error", err)
			continue
		}
		r.handleMsg(st, msg, md.Sequence.Stream)
		if st == r.st.Load() {
			r.pending.Store(int64(md.NumPending))
		}
		if md.Sequence.Stream >= st.tail || md.NumPending == 0 {
			select {
			case <-st.caughtUp:
			default:
				close(st.caughtUp)
			}
		}
	}
}

// handleMsg applies the entries of one message of the stream at sequence
// seq (one, or a batch: decodeEntries).
func (r *Replica) handleMsg(st *replicaState, msg jetstream.Msg, seq uint64) {
	token := tokenOf(msg.Subject())
	entries, err := decodeEntries(msg.Headers(), msg.Data())
	if err != nil {
		r.poisoned(st, token, seq, err)
		return
	}
	for _, e := range entries {
		r.handle(st, token, e, seq)
	}
}

// tokenOf returns the last token of a NATS subject: the tenant of an
// entry, or heartbeatToken.
func tokenOf(natsSubject string) string {
	return natsSubject[strings.LastIndexByte(natsSubject, '.')+1:]
}

// poisoned isolates an entry that cannot be decoded: its tenant's state is
// unknown from here on, the other tenants' are not.
func (r *Replica) poisoned(st *replicaState, token string, seq uint64, err error) {
	r.poison.Add(1)
	r.poisonCount.Add(context.Background(), 1)
	st.unsure.Store(token, seq)
	r.logger.Error("consent replica: an undecodable replication entry; the tenant answers REPLICA_BEHIND until a newer snapshot",
		"tenant", token, "stream_sequence", seq, "error", err)
}

// handle applies one entry, on the NATS subject of token, of the stream's
// message at sequence seq.
func (r *Replica) handle(st *replicaState, token string, e *consentv1.ReplicationEntry, seq uint64) {
	if e.Epoch != st.epoch || st.superseded.Load() != 0 {
		r.otherEpoch(st, e, seq)
		return
	}
	var err error
	switch {
	case token == heartbeatToken && e.GetHeartbeat() != nil:
		if st.nothingHeld() && st == r.st.Load() {
			r.lastAt.Store(e.GetHeartbeat().AsTime().UnixNano())
		}
		return
	case e.TenantId != token:
		err = fmt.Errorf("entry of tenant %q on the NATS subject of %q", e.TenantId, token)
	case e.Change == nil && e.GetCountry() == nil:
		err = errors.New("an entry without a change")
	}
	if err != nil {
		r.poisoned(st, token, seq, err)
		return
	}
	if e.Change == nil {
		applyEntry(st.index, &st.notices, e, r.clock.Now())
		return
	}
	r.offer(st, e)
}

// otherEpoch handles an entry of another epoch than the state's, or any
// entry once the state saw a later epoch. One of an earlier epoch is
// skipped: the state's snapshot holds everything of it that counts. One
// of a later epoch supersedes the state: from here on it answers nothing
// and applies nothing, and Run restores the newest snapshot of the later
// epoch (heal).
func (r *Replica) otherEpoch(st *replicaState, e *consentv1.ReplicationEntry, seq uint64) {
	if e.Epoch < st.epoch {
		r.skipped.Add(1)
		return
	}
	if e.Epoch <= st.superseded.Load() || e.Epoch == st.epoch {
		return
	}
	if st.superseded.Swap(e.Epoch) == 0 {
		r.epochChanges.Add(1)
		r.logger.Warn("consent replica: the writer started a new replication epoch (its store was restored from a backup?); answering REPLICA_BEHIND for every tenant of the shard until the new epoch's snapshot is restored",
			"epoch", st.epoch, "new_epoch", e.Epoch, "stream_sequence", seq)
	}
	select {
	case r.healNow <- struct{}{}:
	default:
	}
}

// offer applies an entry in its tenant's revision order.
func (r *Replica) offer(st *replicaState, e *consentv1.ReplicationEntry) {
	tenant, rev := e.TenantId, e.Change.Revision
	applied := st.revs.get(tenant)
	if rev <= applied {
		r.skipped.Add(1)
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if rev > applied+1 {
		if st.held[tenant] == nil {
			st.held[tenant] = map[uint64]*consentv1.ReplicationEntry{}
			st.heldSince[tenant] = r.clock.Now()
		}
		st.held[tenant][rev] = e
		return
	}
	last := e
	for e != nil {
		r.apply(st, e)
		last = e
		next := e.Change.Revision + 1
		e = st.held[tenant][next]
		delete(st.held[tenant], next)
	}
	if len(st.held[tenant]) == 0 {
		delete(st.held, tenant)
		delete(st.heldSince, tenant)
	}
	if len(st.held) == 0 && st == r.st.Load() {
		r.lastAt.Store(last.Change.GetAt().AsTime().UnixNano())
	}
}

// apply applies one entry, the next of its tenant. The caller holds st.mu.
func (r *Replica) apply(st *replicaState, e *consentv1.ReplicationEntry) {
	applyEntry(st.index, &st.notices, e, r.clock.Now())
	st.revs.set(e.TenantId, e.Change.Revision)
	st.recent.add(e.TenantId, e.Change)
	r.applied.Add(1)
	if st == r.st.Load() {
		r.watchers.publish(e.TenantId, e.Change)
	}
}

// nothingHeld reports whether no tenant waits for a missing revision.
func (st *replicaState) nothingHeld() bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	return len(st.held) == 0
}

// heal marks the tenants whose gap outlasted GapBound unsure and, while
// any tenant is unsure or the state was superseded by a later epoch,
// restores the bucket's newest snapshot when it is newer than the state's
// and reaches past every poison entry, or is of the later epoch.
func (r *Replica) heal(ctx context.Context) error {
	st := r.st.Load()
	now := r.clock.Now()
	st.mu.Lock()
	for tenant, since := range st.heldSince {
		if now.Sub(since) >= r.opts.GapBound {
			if _, ok := st.unsure.LoadOrStore(tenant, uint64(0)); !ok {
				r.logger.Error("consent replica: a revision is missing past the bound; the tenant answers REPLICA_BEHIND until a newer snapshot",
					"tenant", tenant, "applied", st.revs.get(tenant))
			}
		}
	}
	st.mu.Unlock()
	// An unsure tenant needs a snapshot newer than the state's, and past
	// its problem; a later epoch, a snapshot of it (of any sequence: the
	// first one of an epoch may be at the state's own).
	epoch := st.superseded.Load()
	need, found := uint64(0), epoch > 0
	st.unsure.Range(func(_, v any) bool {
		found = true
		need = max(need, st.seq+1, v.(uint64))
		return true
	})
	if !found {
		return nil
	}
	next, err := r.restore(ctx, false, need, epoch)
	if err != nil {
		return err
	}
	if err := r.start(ctx, next); err != nil {
		return err
	}
	r.st.Store(next)
	r.restores.Add(1)
	st.stop()
	<-st.done
	return nil
}

// refusal refuses the answers of a tenant the state cannot vouch for.
func (st *replicaState) refusal(tenant string) error {
	if later := st.superseded.Load(); later != 0 {
		return apierror.FailedPrecondition(apierror.ReasonReplicaBehind, fmt.Sprintf(
			"the writer started replication epoch %d (its store was restored from a backup) and this replica holds epoch %d, whose revisions the writer now gives to other changes: it answers for tenant %q again once it restored the new epoch's snapshot; ask the writer",
			later, st.epoch, tenant)).
			WithMetadata(map[string]string{"revision": fmt.Sprint(st.revs.get(tenant))})
	}
	if _, ok := st.unsure.Load(tenant); ok {
		return apierror.FailedPrecondition(apierror.ReasonReplicaBehind, fmt.Sprintf(
			"this replica cannot vouch for tenant %q's state (a lost or undecodable entry) until it restores a newer snapshot: ask the writer", tenant)).
			WithMetadata(map[string]string{"revision": fmt.Sprint(st.revs.get(tenant))})
	}
	return nil
}

// Check implements ConsentService on the replica.
func (r *Replica) Check(ctx context.Context, req *consentv1.CheckRequest) (*consentv1.CheckResponse, error) {
	st, rev, err := r.answerable(ctx, req.TenantId, req.At, req.MinRevision)
	if err != nil {
		return nil, err
	}
	d := st.index.Check(req.TenantId, req.SubjectId, req.PurposeId, attributes(req.Attributes), r.clock.Now())
	return &consentv1.CheckResponse{Revision: rev, Decision: decisionOf(req.SubjectId, req.PurposeId, d)}, nil
}

// answerable returns the state to answer a tenant's checks from and the
// revision it answers at, once that is at least minRevision; or why the
// replica cannot answer: a past time, a tenant it cannot vouch for, or
// minRevision not reached within the wait.
func (r *Replica) answerable(ctx context.Context, tenant string, at *timestamppb.Timestamp, minRevision uint64) (*replicaState, uint64, error) {
	if at != nil {
		return nil, 0, pastOnWriter()
	}
	st := r.st.Load()
	if err := st.refusal(tenant); err != nil {
		return nil, 0, err
	}
	rev, err := st.revs.await(ctx, tenant, minRevision, r.opts.RevisionWait)
	return st, rev, err
}

// CheckBatch implements ConsentService on the replica.
func (r *Replica) CheckBatch(ctx context.Context, req *consentv1.CheckBatchRequest) (*consentv1.CheckBatchResponse, error) {
	st, rev, err := r.answerable(ctx, req.TenantId, req.At, req.MinRevision)
	if err != nil {
		return nil, err
	}
	now := r.clock.Now()
	resp := &consentv1.CheckBatchResponse{Revision: rev, Decisions: make([]*consentv1.Decision, 0, len(req.Items))}
	for _, item := range req.Items {
		d := st.index.Check(req.TenantId, item.SubjectId, item.PurposeId, attributes(item.Attributes), now)
		resp.Decisions = append(resp.Decisions, decisionOf(item.SubjectId, item.PurposeId, d))
	}
	return resp, nil
}

// pastOnWriter refuses a decision at a past time: it reads the history,
// which only the writer keeps.
func pastOnWriter() error {
	return apierror.FailedPrecondition(apierror.ReasonReadOnlyReplica,
		"a decision at a past time (at) reads the consent history, which only the writer keeps: ask the writer")
}

// Watch implements ConsentService on the replica, from the latest changes
// it keeps: a caller resuming from an older revision is told to ask the
// writer.
func (r *Replica) Watch(req *consentv1.WatchRequest, stream consentv1.ConsentService_WatchServer) error {
	w := r.watchers.subscribe(req.TenantId)
	defer r.watchers.unsubscribe(req.TenantId, w)
	st := r.st.Load()
	if err := st.refusal(req.TenantId); err != nil {
		return err
	}
	kept, complete := st.recent.after(req.TenantId, req.AfterRevision, st.revs.get(req.TenantId))
	if !complete {
		return apierror.FailedPrecondition(apierror.ReasonReadOnlyReplica, fmt.Sprintf(
			"this replica keeps only tenant %q's latest changes, not those after revision %d: watch from the writer", req.TenantId, req.AfterRevision))
	}
	last := req.AfterRevision
	if len(kept) > 0 {
		if err := stream.Send(&consentv1.WatchResponse{Changes: kept}); err != nil {
			return err
		}
		last = kept[len(kept)-1].Revision
	}
	return r.watchers.sendLive(stream, w, last)
}

// recentChanges keeps each tenant's latest changes for Watch.
type recentChanges struct {
	mu      sync.Mutex
	limit   int
	changes map[string][]*consentv1.Change
}

func newRecentChanges(limit int) *recentChanges {
	return &recentChanges{limit: limit, changes: map[string][]*consentv1.Change{}}
}

// add keeps a tenant's change, dropping its oldest past the limit.
func (rc *recentChanges) add(tenant string, c *consentv1.Change) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	kept := append(rc.changes[tenant], c)
	if len(kept) > rc.limit {
		kept = append(kept[:0:0], kept[len(kept)-rc.limit:]...)
	}
	rc.changes[tenant] = kept
}

// after returns the tenant's kept changes after revision after, and
// whether they are all the changes from after+1 to applied.
func (rc *recentChanges) after(tenant string, after, applied uint64) ([]*consentv1.Change, bool) {
	if after >= applied {
		return nil, true
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	kept := rc.changes[tenant]
	if len(kept) == 0 || kept[0].Revision > after+1 {
		return nil, false
	}
	var out []*consentv1.Change
	for _, c := range kept {
		if c.Revision > after {
			out = append(out, c)
		}
	}
	return out, true
}
