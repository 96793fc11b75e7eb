// Package outbox keeps Lethe's central promise that a state change and the
// events it causes are never separated. A service stages its events with
// AddTx in the same bbolt transaction as the change: both commit or
// neither does. A Relay then publishes the staged events to JetStream, with
// the event id as Nats-Msg-Id so the server drops re-publications, and
// removes each entry only after its publish was acknowledged. A crash at
// any point loses no committed event; at worst an event is published twice,
// which the stream's duplicate window and the subscribers' own
// de-duplication by event id absorb.
//
// When the broker is unreachable the backlog grows. Past a configured bound
// AddTx fails fast with Unavailable and a retry hint, so the caller's whole
// mutation is refused instead of the file growing without limit.
package outbox

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"buf.build/go/protovalidate"
	"github.com/nats-io/nats.go"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/types/known/timestamppb"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// DefaultMaxBacklog bounds the unpublished events of one service. At a few
// hundred bytes an event it keeps the backlog of an hour-long broker outage
// at moderate load in tens of megabytes.
const DefaultMaxBacklog = 100_000

// Config configures an Outbox.
type Config struct {
	// Source names the publishing service as "lethe/<service>"; it is every
	// event's source and CloudEvents ce-source.
	Source string
	// MaxBacklog is how many unpublished events may wait before AddTx
	// refuses new ones; DefaultMaxBacklog when zero.
	MaxBacklog int
	// RetryAfter is the hint given to callers refused for a full backlog.
	RetryAfter time.Duration
	// Clock stamps events; the wall clock when nil.
	Clock clock.Clock
	// Propagator captures the trace context of the committing call;
	// W3C trace context when nil.
	Propagator propagation.TextMapPropagator
	// Meter records the backlog's depth and age; no metrics when nil.
	Meter  metric.Meter
	Logger *slog.Logger
}

// Outbox stages events in a service's bbolt file.
type Outbox struct {
	db         *store.DB
	cfg        Config
	validator  protovalidate.Validator
	depth      atomic.Int64
	wake       chan struct{}
	registered metric.Registration
}

// New returns the outbox kept in db. It counts the entries left by an
// earlier run, so the backlog bound holds across restarts.
func New(db *store.DB, cfg Config) (*Outbox, error) {
	if cfg.Source == "" {
		return nil, errors.New("outbox: source is required")
	}
	if cfg.MaxBacklog <= 0 {
		cfg.MaxBacklog = DefaultMaxBacklog
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = 5 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	validator, err := protovalidate.New()
	if err != nil {
		return nil, err
	}
	o := &Outbox{db: db, cfg: cfg, validator: validator, wake: make(chan struct{}, 1)}
	if err := db.View(func(tx *bolt.Tx) error {
		o.depth.Store(int64(store.BucketTx(tx, store.BucketOutbox).Stats().KeyN))
		return nil
	}); err != nil {
		return nil, err
	}
	if err := o.registerMetrics(); err != nil {
		return nil, err
	}
	return o, nil
}

func (o *Outbox) registerMetrics() error {
	depth, err := o.cfg.Meter.Int64ObservableGauge("lethe.outbox.backlog",
		metric.WithDescription("Events committed and not yet acknowledged by JetStream."))
	if err != nil {
		return err
	}
	age, err := o.cfg.Meter.Float64ObservableGauge("lethe.outbox.oldest_age",
		metric.WithUnit("s"), metric.WithDescription("Age of the oldest unpublished event."))
	if err != nil {
		return err
	}
	o.registered, err = o.cfg.Meter.RegisterCallback(func(_ context.Context, obs metric.Observer) error {
		obs.ObserveInt64(depth, o.depth.Load())
		oldest, ok, err := o.Oldest()
		if err != nil {
			return err
		}
		if ok {
			obs.ObserveFloat64(age, o.cfg.Clock.Now().Sub(oldest).Seconds())
		} else {
			obs.ObserveFloat64(age, 0)
		}
		return nil
	}, depth, age)
	return err
}

// Close stops reporting metrics.
func (o *Outbox) Close() error {
	if o.registered != nil {
		return o.registered.Unregister()
	}
	return nil
}

// Depth returns how many events wait to be published.
func (o *Outbox) Depth() int { return int(o.depth.Load()) }

// Oldest returns when the oldest waiting event was committed.
func (o *Outbox) Oldest() (time.Time, bool, error) {
	var at time.Time
	var ok bool
	err := o.db.View(func(tx *bolt.Tx) error {
		_, v := store.BucketTx(tx, store.BucketOutbox).Cursor().First()
		if v == nil {
			return nil
		}
		e, err := decodeEntry(v)
		if err != nil {
			return err
		}
		at, ok = e.committed, true
		return nil
	})
	return at, ok, err
}

// AddTx stages ev for publication in the caller's transaction. It fills
// what the outbox owns: a new id when ev has none, the source, the commit
// time, and for an event about a subject the next per-subject sequence. The
// trace context of ctx travels with the event, so a subscriber's handler
// joins the trace of the call that caused it.
//
// When the backlog is full AddTx returns Unavailable with a retry hint and
// the caller's transaction must roll back.
func (o *Outbox) AddTx(ctx context.Context, tx *bolt.Tx, ev *eventsv1.Event) error {
	if err := o.admit(); err != nil {
		return err
	}
	if ev.Id == "" {
		ev.Id = NewEventID()
	}
	ev.Source = o.cfg.Source
	ev.OccurredAt = timestamppb.New(o.cfg.Clock.Now())
	if ev.SubjectId != "" {
		seq, err := nextSubjectSequence(tx, ev.TenantId, ev.SubjectId)
		if err != nil {
			return err
		}
		ev.Sequence = seq
	}
	return o.stageTx(ctx, tx, ev, ev.Id)
}

// ResendTx stages ev again, unchanged, for a re-send the caller decided on
// (an unanswered task). It keeps the event id, which subscribers
// de-duplicate by, but publishes under a new Nats-Msg-Id so that the
// stream's duplicate window does not swallow the re-send.
func (o *Outbox) ResendTx(ctx context.Context, tx *bolt.Tx, ev *eventsv1.Event, attempt int) error {
	if err := o.admit(); err != nil {
		return err
	}
	return o.stageTx(ctx, tx, ev, fmt.Sprintf("%s~%d", ev.Id, attempt))
}

// AddOutcomeTx stages a system's outcome for publication on the system's
// outcome NATS subject, in the caller's transaction, exactly as the SDK would
// publish it (same Nats-Msg-Id and headers, but ce-source naming this
// service, which published it): an answer an operator
// records for a system answered by hand then reaches every service that
// follows outcomes, as an SDK system's answer does (a RETAINED answer is
// scheduled for erasure by the retention service either way).
func (o *Outbox) AddOutcomeTx(ctx context.Context, tx *bolt.Tx, out *eventsv1.Outcome) error {
	if err := o.admit(); err != nil {
		return err
	}
	if err := o.validator.Validate(out); err != nil {
		return fmt.Errorf("outbox: invalid outcome: %w", err)
	}
	natsSubject, err := contract.OutcomeSubject(out.TenantId, out.SystemId)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	payload, err := contract.Marshal(out)
	if err != nil {
		return fmt.Errorf("outbox: encode outcome: %w", err)
	}
	headers := propagation.MapCarrier{}
	ce := contract.OutcomeHeaders(out)
	// The answer is the system's, but this service published it: the
	// CloudEvents source says who put it on the stream.
	ce.Set(contract.HeaderSource, o.cfg.Source)
	for k := range ce {
		headers[k] = ce.Get(k)
	}
	o.cfg.Propagator.Inject(ctx, headers)
	return o.putTx(tx, entry{natsSubject: natsSubject, committed: o.cfg.Clock.Now(), headers: headers, payload: payload})
}

// HeaderBatch marks a message that carries messages staged with
// AddMessageTx: its payload is their payloads, each prefixed by its
// uvarint length, in commit order; the header's value is how many.
const HeaderBatch = "Lethe-Batch"

// AddMessageTx stages a message that is not an event (a consent writer's
// replication entry, which replicas read as state) for publication on
// natsSubject, in the caller's transaction, with msgID as its Nats-Msg-Id
// so that the stream drops a re-publication. It is held to the same
// backlog bound as events and published in commit order with them. The
// relay publishes such messages that follow one another on one NATS
// subject together, as one batch message (HeaderBatch), so a reader must
// split every message it receives and tolerate an entry read twice (a
// batch re-published after a failure may be grouped differently).
func (o *Outbox) AddMessageTx(tx *bolt.Tx, natsSubject, msgID string, payload []byte) error {
	if err := o.admit(); err != nil {
		return err
	}
	if natsSubject == "" || msgID == "" {
		return errors.New("outbox: a message needs a NATS subject and an id")
	}
	return o.putTx(tx, entry{natsSubject: natsSubject, committed: o.cfg.Clock.Now(),
		headers: map[string]string{nats.MsgIdHdr: msgID, HeaderBatch: "1"}, payload: payload})
}

// SplitBatch returns the payloads a batch message (HeaderBatch) carries,
// or an error when its framing is broken.
func SplitBatch(data []byte) ([][]byte, error) {
	var out [][]byte
	for len(data) > 0 {
		n, k := binary.Uvarint(data)
		if k <= 0 || uint64(len(data)-k) < n {
			return nil, errors.New("outbox: a batch message's framing is broken")
		}
		out = append(out, data[k:k+int(n)])
		data = data[k+int(n):]
	}
	return out, nil
}

func (o *Outbox) admit() error {
	if o.depth.Load() >= int64(o.cfg.MaxBacklog) {
		return apierror.Unavailable(apierror.ReasonBacklogFull,
			fmt.Sprintf("%d events wait for the event stream; retry later", o.cfg.MaxBacklog), o.cfg.RetryAfter)
	}
	return nil
}

func (o *Outbox) stageTx(ctx context.Context, tx *bolt.Tx, ev *eventsv1.Event, msgID string) error {
	if err := o.validator.Validate(ev); err != nil {
		return fmt.Errorf("outbox: invalid event: %w", err)
	}
	natsSubject, err := contract.EventSubject(ev)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	payload, err := contract.Marshal(ev)
	if err != nil {
		return fmt.Errorf("outbox: encode event: %w", err)
	}
	ce, err := contract.EventHeaders(ev)
	if err != nil {
		return fmt.Errorf("outbox: %w", err)
	}
	headers := propagation.MapCarrier{}
	for k := range ce {
		headers[k] = ce.Get(k)
	}
	headers[nats.MsgIdHdr] = msgID
	o.cfg.Propagator.Inject(ctx, headers)

	return o.putTx(tx, entry{natsSubject: natsSubject, committed: o.cfg.Clock.Now(), headers: headers, payload: payload})
}

// putTx appends a staged publication and wakes the relay once the
// transaction commits.
func (o *Outbox) putTx(tx *bolt.Tx, e entry) error {
	b := store.AppendBucketTx(tx, store.BucketOutbox)
	seq, err := b.NextSequence()
	if err != nil {
		return err
	}
	if err := b.Put(store.Uint64Key(seq), e.encode()); err != nil {
		return err
	}
	// Counted only once the transaction commits; bbolt does not call
	// OnCommit for an attempt that a batch rolls back and re-runs.
	tx.OnCommit(func() {
		o.depth.Add(1)
		select {
		case o.wake <- struct{}{}:
		default:
		}
	})
	return nil
}

// nextSubjectSequence assigns the next sequence number of the subject's
// events.
func nextSubjectSequence(tx *bolt.Tx, tenant, subject string) (uint64, error) {
	b := store.BucketTx(tx, store.BucketSubjectSequence)
	key := subjectSequenceKey(tenant, subject)
	var seq uint64
	if v := b.Get(key); len(v) == 8 {
		seq = binary.BigEndian.Uint64(v)
	}
	seq++
	return seq, b.Put(key, store.Uint64Key(seq))
}

// RaiseSubjectSequenceTx makes the subject's next event sequence follow
// seq: an owner that recovers, after a restore from a backup, events the
// stream holds and its file lost must not number the subject's next event
// with a sequence already used, which subscribers ordering by sequence
// would take for an old event. It writes nothing when the subject's
// sequence is at seq or beyond, and reports whether it raised it.
func RaiseSubjectSequenceTx(tx *bolt.Tx, tenant, subject string, seq uint64) (bool, error) {
	b := store.BucketTx(tx, store.BucketSubjectSequence)
	key := subjectSequenceKey(tenant, subject)
	if v := b.Get(key); len(v) == 8 && binary.BigEndian.Uint64(v) >= seq {
		return false, nil
	}
	return true, b.Put(key, store.Uint64Key(seq))
}

func subjectSequenceKey(tenant, subject string) []byte {
	key := make([]byte, 0, len(tenant)+1+len(subject))
	return append(append(append(key, tenant...), 0), subject...)
}

// NewEventID returns a new event id: a UUID version 7, whose leading
// timestamp keeps ids of one source roughly in commit order, which makes
// logs and stream listings easier to read.
func NewEventID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("outbox: crypto/rand failed: " + err.Error())
	}
	ms := uint64(time.Now().UnixMilli())
	b[0], b[1], b[2] = byte(ms>>40), byte(ms>>32), byte(ms>>24)
	b[3], b[4], b[5] = byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70 // version 7
	b[8] = b[8]&0x3f | 0x80 // RFC 9562 variant
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:])
	return string(s[:])
}
