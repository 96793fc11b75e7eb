// Package consent is Lethe's consent service. It keeps each tenant's
// purposes, the append-only history of consent records (the proof of
// consent, Art. 7(1)), objections (Art. 21) and restrictions (Art. 18), and
// answers Check — may subject X's data be processed for purpose P, and why —
// from memory, without touching the disk. It is the single owner of the
// limit events (consent withdrawn, objection recorded, restriction applied
// and lifted), which it publishes through its outbox and follows to every
// system the registry routes them to.
//
// Beside its API it can serve a public endpoint for browsers on a listener
// of its own (Options.Public; docs/web-consent.md): a tenant's consent
// banner records decisions and reads a visitor's choices there, through
// the same methods.
//
// The service owns one bbolt file, consent.db, in the data folder. It is
// the single writer of its shard: read replicas (the same binary with
// --role=replica, replica.go) answer Check, CheckBatch and Watch from the
// changes it publishes on JetStream (replication.go).
package consent

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tenants"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.consent.v1.ConsentService"

// DefaultAddr is the gRPC address the consent deployable listens on by
// default.
const DefaultAddr = "127.0.0.1:7401"

// Factory builds the consent service for a host.
var Factory = service.Factory{
	Name:  "consent",
	New:   func(deps service.Deps) (service.Service, error) { return New(deps, Options{}) },
	Flags: flags,
}

// Roles of the consent deployable (--role).
const (
	RoleWriter  = "writer"
	RoleReplica = "replica"
)

// flags binds the consent deployable's own flags: its role, its shard and
// the replication's settings.
func flags(fs *flag.FlagSet) func(service.Deps) (service.Service, error) {
	role := fs.String("role", RoleWriter, "writer: the single writer of the consent store; replica: a read replica of the writer's shard serving Check, CheckBatch and Watch")
	var o Options
	var ro ReplicaOptions
	o.Public.RegisterFlags(fs)
	fs.StringVar(&o.Shard, "shard", DefaultShard, "the consent shard this writer owns, or this replica follows")
	fs.DurationVar(&o.ReplicaSnapshotEvery, "replica-snapshot-every", DefaultSnapshotEvery, "writer: period of the replication snapshots in JetStream, which read replicas start from")
	fs.IntVar(&o.ReplicaSnapshotAfter, "replica-snapshot-after", DefaultSnapshotAfter, "writer: take a replication snapshot once this many changes were committed since the last")
	fs.IntVar(&o.ReplicaSnapshotsKept, "replica-snapshots-kept", DefaultSnapshotsKept, "writer: how many of the shard's replication snapshots the bucket keeps")
	fs.DurationVar(&o.ChangesKeptFor, "changes-kept-for", DefaultChangesKeptFor, "writer: how long each tenant's change log keeps a change for Watch to resume from; negative keeps every change")
	fs.DurationVar(&o.RevisionWait, "revision-wait", DefaultRevisionWait, "how long a Check with min_revision waits for it before REPLICA_BEHIND")
	fs.DurationVar(&ro.GapBound, "replica-gap-bound", 5*time.Second, "replica: how long a missing revision is waited for before its tenant answers REPLICA_BEHIND until a newer snapshot")
	return func(deps service.Deps) (service.Service, error) {
		switch *role {
		case RoleWriter:
			return New(deps, o)
		case RoleReplica:
			ro.Shard, ro.RevisionWait = o.Shard, o.RevisionWait
			return NewReplica(deps, ro)
		}
		return nil, fmt.Errorf("--role %q: want %q or %q", *role, RoleWriter, RoleReplica)
	}
}

// Options tune the service; zero values are production defaults.
type Options struct {
	// ExpirySweepEvery is how often expired consents are looked for.
	// Default one minute.
	ExpirySweepEvery time.Duration
	// ResendAfter is how long a system may leave a limit unanswered before
	// it is re-sent. Default one hour.
	ResendAfter time.Duration
	// RecoveryMargin is how far before the file's last alive_at the
	// catch-up after a restore starts reading the stream (recovery.go).
	// Default DefaultRecoveryMargin.
	RecoveryMargin time.Duration
	// Stream is the platform stream the service's limit events are on.
	// Default the platform's, "LETHE".
	Stream string
	// Public configures the public consent endpoint for browsers
	// (public.go); off unless its Addr or Listener is set.
	Public PublicOptions
	// Shard is the consent shard the writer serves: a call for a tenant
	// the registry assigned to another is refused with FailedPrecondition
	// WRONG_SHARD naming that shard; its replication entries' NATS
	// subjects and snapshots are named by it, and its replicas follow it.
	// Default DefaultShard.
	Shard string
	// ReplicaSnapshotEvery and ReplicaSnapshotAfter schedule the
	// replication snapshots in JetStream (replication.go): every
	// ReplicaSnapshotEvery, or once ReplicaSnapshotAfter changes were
	// committed since the last. Defaults DefaultSnapshotEvery,
	// DefaultSnapshotAfter.
	ReplicaSnapshotEvery time.Duration
	ReplicaSnapshotAfter int
	// ReplicaSnapshotsKept is how many of the shard's snapshots the bucket
	// keeps. Default DefaultSnapshotsKept.
	ReplicaSnapshotsKept int
	// HeartbeatEvery is how often the writer commits a heartbeat entry,
	// from which replicas measure their lag. Default DefaultHeartbeatEvery.
	HeartbeatEvery time.Duration
	// RevisionWait bounds how long Check waits for a min_revision.
	// Default DefaultRevisionWait.
	RevisionWait time.Duration
	// SnapshotEvery is how often the decision index is written to the
	// data folder (index.go), besides at a clean stop and soon after a
	// start that had to read every record: a start replays the changes
	// committed since, so this bounds that work. Default five minutes;
	// negative writes none, and every start reads every record.
	SnapshotEvery time.Duration
	// ChangesKeptFor is how long a change stays in its tenant's log, from
	// which Watch resumes and a start replays what the index snapshot
	// lacks: a change older is deleted (TrimChanges) once the index
	// snapshot in the data folder covers it. A Watch resuming before
	// what is kept is refused with HISTORY_TRIMMED. Default
	// DefaultChangesKeptFor; negative keeps every change.
	ChangesKeptFor time.Duration
}

// DefaultChangesKeptFor is how long a change log keeps a change unless
// told otherwise: long enough for a watcher to be down over a holiday,
// short enough that the log does not grow with the life of the tenant.
const DefaultChangesKeptFor = 30 * 24 * time.Hour

// complete fills in the defaults of the options left zero.
func (o *Options) complete() {
	if o.ExpirySweepEvery <= 0 {
		o.ExpirySweepEvery = time.Minute
	}
	if o.RecoveryMargin <= 0 {
		o.RecoveryMargin = DefaultRecoveryMargin
	}
	if o.Stream == "" {
		o.Stream = broker.DefaultStreamConfig().Name
	}
	o.Public.complete()
	o.Shard = shardrouter.Of(o.Shard)
	if o.ReplicaSnapshotEvery <= 0 {
		o.ReplicaSnapshotEvery = DefaultSnapshotEvery
	}
	if o.ReplicaSnapshotAfter <= 0 {
		o.ReplicaSnapshotAfter = DefaultSnapshotAfter
	}
	if o.ReplicaSnapshotsKept <= 0 {
		o.ReplicaSnapshotsKept = DefaultSnapshotsKept
	}
	if o.HeartbeatEvery <= 0 {
		o.HeartbeatEvery = DefaultHeartbeatEvery
	}
	if o.RevisionWait <= 0 {
		o.RevisionWait = DefaultRevisionWait
	}
	if o.SnapshotEvery == 0 {
		o.SnapshotEvery = 5 * time.Minute
	}
	if o.ChangesKeptFor == 0 {
		o.ChangesKeptFor = DefaultChangesKeptFor
	}
}

// owner names the writer's durable consumers: "consent" for the default
// shard, as before shards, and "consent-<shard>" for the others, so that
// writers of several shards on one NATS cluster each have their own.
func (o Options) owner() string {
	if o.Shard == shardrouter.DefaultShard {
		return "consent"
	}
	return "consent-" + o.Shard
}

// Service implements lethe.consent.v1.ConsentService.
type Service struct {
	consentv1.UnimplementedConsentServiceServer
	*service.Base
	opts     Options
	deps     service.Deps
	index    *decision.Index
	tracker  *tasks.Tracker
	tenants  *tenants.Directory
	registry *registryclient.Client
	// registryRPC reads tenants' settings (their country) from the
	// registry; nil without a registry connection.
	registryRPC registryv1.RegistryServiceClient
	countries   *countryQueue
	watchers    *hub
	applied     *sequencer
	notices     notices
	// web holds every tenant's compiled web settings (web.go).
	web webConfigs
	// public is the public endpoint; nil when it is off.
	public *public
	// fullLoad is set when the start read every record, having no usable
	// index snapshot: a new one is then written soon.
	fullLoad bool
	// snapshotCovers is the revision of each tenant that the index
	// snapshot in the data folder covers, nil before there is one: the
	// change log is never trimmed past it, so that a start can replay
	// what the snapshot lacks (TrimChanges).
	snapshotCovers atomic.Pointer[map[string]uint64]
	changesTrimmed metric.Int64Counter
	// gap is set while limits may be lost beyond the stream's reach
	// (recovery.go); Check refuses to answer then.
	gap             atomic.Pointer[storage.Gap]
	recoveredEvents metric.Int64Counter
	// publicRequests counts the public endpoint's requests by route and
	// status.
	publicRequests metric.Int64Counter
	// metrics is the registration of the service's observable gauges
	// (metrics.go).
	metrics metric.Registration
	// snapshotMu serialises replication snapshots; changesSinceSnapshot
	// counts the changes committed since the last (replication.go).
	snapshotMu           sync.Mutex
	changesSinceSnapshot atomic.Int64
	// epoch is the replication epoch the writer publishes in, settled in
	// New before anything is staged (settleEpoch); indexAhead is why the
	// index snapshot in the data folder was found ahead of the store, if
	// it was (load). epochSnapshotDue is set when the shard has no
	// snapshot of the epoch yet, epochSnapshotAt when New took it.
	epoch            uint64
	indexAhead       string
	epochSnapshotDue bool
	epochSnapshotAt  time.Time
	epochsStarted    metric.Int64Counter
}

// New opens the consent service's store and loads its state into memory.
func New(deps service.Deps, opts Options) (*Service, error) {
	opts.complete()
	if !shardrouter.Valid(opts.Shard) {
		return nil, fmt.Errorf("consent: shard %q is not a shard name (s0, s1, ...)", opts.Shard)
	}
	base, err := service.OpenBase(deps, storage.Schema)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Base: base, opts: opts, deps: deps,
		index:     decision.NewIndex(),
		tenants:   tenants.New(base.DB, opts.owner(), "", base.Logger),
		watchers:  newHub(),
		applied:   newSequencer(),
		countries: newCountryQueue(),
	}
	s.tenants.ServeShard(opts.Shard)
	if deps.Registry != nil {
		s.registry = registryclient.New(deps.Registry)
		s.registryRPC = registryv1.NewRegistryServiceClient(deps.Registry)
	}
	s.tracker, err = tasks.New(base.DB, tasks.Config{
		Owner: opts.owner(), Outbox: base.Outbox, Clock: base.Clock, ResendAfter: opts.ResendAfter,
		Meter: base.Meter, Logger: base.Logger,
	})
	if err == nil {
		err = s.registerMetrics()
	}
	if err == nil {
		err = s.load()
	}
	if err == nil {
		err = s.loadWeb()
	}
	if err == nil {
		err = s.openPublic()
	}
	// Each step within recoveryTimeout, in this order: the replication
	// stream exists before the epoch is settled from it; the epoch is
	// settled before anything is staged (the catch-up stages the
	// replication entries of what it recovers); the catch-up runs before
	// the service serves or publishes (a restored store must not answer
	// Check from state older than the stream's); and a new epoch's first
	// snapshot is taken before Run publishes anything of it.
	for _, step := range []func(context.Context) error{s.ensureReplication, s.settleEpoch, s.recoverLimits, s.openEpoch} {
		if err != nil {
			break
		}
		ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
		err = step(ctx)
		cancel()
	}
	if err != nil {
		if s.public != nil {
			err = errors.Join(err, s.public.lis.Close())
		}
		if s.metrics != nil {
			err = errors.Join(err, s.metrics.Unregister())
		}
		return nil, errors.Join(err, base.Close())
	}
	return s, nil
}

// ensureReplication provisions the replication stream and snapshot
// bucket, on the platform stream's configuration.
func (s *Service) ensureReplication(ctx context.Context) error {
	if s.deps.JetStream == nil {
		return nil
	}
	cfg := s.deps.Stream
	if cfg.Name == "" {
		cfg = broker.DefaultStreamConfig()
	}
	return broker.EnsureConsentReplication(ctx, s.deps.JetStream, cfg)
}

// recoveryTimeout bounds the catch-up at start. Thirty days of limit
// events are read in well under a minute; a stream that does not answer
// in this time fails the start, which the supervisor retries.
const recoveryTimeout = 5 * time.Minute

// Close releases the service's resources after Run returned.
func (s *Service) Close() error {
	var err error
	if s.public != nil {
		// Closed already when Run served it; not when Run never ran.
		if cerr := s.public.lis.Close(); cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	}
	return errors.Join(err, s.metrics.Unregister(), s.Base.Close())
}

// Register serves the consent API on srv.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&consentv1.ConsentService_ServiceDesc, s, s.ServeOptions()...)
}

// Run does the service's background work until ctx ends: the outbox relay,
// following tenants and outcomes, and expiring consents.
func (s *Service) Run(ctx context.Context) error {
	bg := service.Background{Workers: []func(context.Context) error{s.Base.Run, s.followCountries, s.servePublic, s.snapshots, s.runReplication},
		Every: s.opts.ExpirySweepEvery, Tick: s.tick}
	if js := s.deps.JetStream; js != nil {
		bg.Workers = append(bg.Workers,
			func(ctx context.Context) error { return s.tenants.Run(ctx, js) },
			func(ctx context.Context) error { return s.tracker.Run(ctx, js) })
	}
	err := bg.Run(ctx)
	s.watchers.closeAll()
	if s.opts.SnapshotEvery > 0 {
		// A clean stop leaves a snapshot as fresh as it can be, so the
		// next start replays next to nothing.
		err = errors.Join(err, s.saveSnapshot())
	}
	return err
}

// requireTenantTx refuses calls for tenants the registry never announced.
func (s *Service) requireTenantTx(tx *bolt.Tx, tenant string) error {
	return s.tenants.RequireTx(tx, tenant)
}
