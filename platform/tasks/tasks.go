// Package tasks tracks what every system must answer. When a service
// publishes an event that systems must act on — an erasure, a withdrawal —
// it records one task per expected system in the same transaction
// (PublishTx), and the tracker follows each task to a final state:
//
//   - reported: the system published its outcome (or an operator recorded
//     it, for a system answered by hand);
//   - dead-lettered: the system's consumer gave up after its maximum
//     deliveries, which JetStream announces with a MAX_DELIVERIES advisory;
//   - system removed: the registry removed the system while its task was
//     open.
//
// An SDK task unanswered after ResendAfter is re-sent with the same event id
// and flagged stalled; a late answer still closes it. When the last task of
// a cause becomes final, the owner's OnCauseComplete runs in the very
// transaction that closed it, so the owner's own state (a request
// completed) commits with it or not at all.
//
// State lives in the owner's bbolt file; the owner's outcomes consumer is
// durable, and a task is changed before its outcome message is
// acknowledged, so a crash at any point loses no answer.
package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/timerange"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// State is where a task stands.
type State string

// Task states.
const (
	// StateOpen: sent, no answer yet.
	StateOpen State = "open"
	// StateStalled: no answer within ResendAfter; the event was re-sent.
	StateStalled State = "stalled"
	// StateFinal: answered, dead-lettered or closed by the system's removal.
	StateFinal State = "final"
)

// Resolution is how a final task became final.
type Resolution string

// Task resolutions.
const (
	// ResolutionReported: the system (or an operator for it) reported the
	// outcome.
	ResolutionReported Resolution = "reported"
	// ResolutionDeadLettered: the system's consumer exhausted its
	// deliveries; the outcome is FAILED.
	ResolutionDeadLettered Resolution = "dead_lettered"
	// ResolutionSystemRemoved: the system was removed from the registry
	// while the task was open.
	ResolutionSystemRemoved Resolution = "system_removed"
)

// Expect names a system that must answer an event.
type Expect struct {
	SystemID string
	// Mode says whether the system answers through the SDK or an operator
	// answers for it; only SDK tasks are re-sent.
	Mode commonv1.AnswerMode
}

// Task is one system's share of an event.
type Task struct {
	EventID    string              `json:"event_id"`
	TenantID   string              `json:"tenant_id"`
	SystemID   string              `json:"system_id"`
	Kind       contract.Kind       `json:"kind"`
	CauseKind  commonv1.CauseKind  `json:"cause_kind"`
	CauseID    string              `json:"cause_id"`
	Mode       commonv1.AnswerMode `json:"mode"`
	State      State               `json:"state"`
	Resolution Resolution          `json:"resolution,omitempty"`
	// Outcome is the final outcome, binary protobuf (see OutcomeProto).
	Outcome   []byte    `json:"outcome,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	SentAt    time.Time `json:"sent_at"`
	Resends   int       `json:"resends,omitempty"`
	ClosedAt  time.Time `json:"closed_at,omitzero"`
}

// OutcomeProto decodes the task's final outcome; nil while it is open.
func (t Task) OutcomeProto() (*eventsv1.Outcome, error) {
	if t.Outcome == nil {
		return nil, nil
	}
	o := &eventsv1.Outcome{}
	return o, proto.Unmarshal(t.Outcome, o)
}

// Config configures a Tracker.
type Config struct {
	// Owner is the short name of the owning service ("dsar"); it names the
	// durable consumers.
	Owner string
	// Outbox publishes the owner's events and re-sends.
	Outbox *outbox.Outbox
	// ResendAfter is how long an SDK task may stay unanswered before its
	// event is re-sent and the task flagged stalled. Default one hour.
	ResendAfter time.Duration
	// SweepEvery is how often due re-sends are looked for. Default one
	// minute.
	SweepEvery time.Duration
	// OnCauseComplete, when set, runs in the transaction that made the last
	// task of a cause final, with every task of the cause. Like any function
	// run in a shared transaction it may run more than once (a batch whose
	// other member failed is retried): it must write only through tx.
	OnCauseComplete func(tx *bolt.Tx, tenantID string, cause *commonv1.Cause, tasks []Task) error
	// OnTaskFinal, when set, runs in the transaction that made a task
	// final, once per task, with its outcome: an owner that counts answers
	// or acts on one (a "retained until" answer) does it here, exactly once
	// per task. The same rules as for OnCauseComplete apply.
	//
	// An owner whose causes have very many tasks (a retention rule) should
	// set only this hook: without OnCauseComplete, closing a task does not
	// read the other tasks of its cause.
	OnTaskFinal func(tx *bolt.Tx, task Task, outcome *eventsv1.Outcome) error
	// CheckOutcome, when set, checks a reported outcome against the
	// owner's rules before it closes its task, and returns why it is not
	// acceptable, or "". An unacceptable outcome closes the task FAILED
	// with that reason, so that an operator sees it and the cause does
	// not wait for an answer that the system, which re-sends the outcome
	// it gave, will never change.
	CheckOutcome func(task Task, outcome *eventsv1.Outcome) string
	// Workers is how many outcomes are recorded at once; 64 by default.
	// Outcomes recorded together share one commit (the store's group
	// commit), so workers multiply throughput rather than contention.
	Workers int
	// StreamName is the platform stream; contract.StreamName by default.
	StreamName string
	Clock      clock.Clock
	Meter      metric.Meter
	Logger     *slog.Logger
}

// Tracker tracks tasks in its owner's bbolt file.
type Tracker struct {
	db        *store.DB
	cfg       Config
	validator protovalidate.Validator
	closed    metric.Int64Counter
	resent    metric.Int64Counter
	ignored   metric.Int64Counter
	refused   metric.Int64Counter
}

// New returns a tracker over db.
func New(db *store.DB, cfg Config) (*Tracker, error) {
	if cfg.Owner == "" || !contract.ValidToken(cfg.Owner) {
		return nil, fmt.Errorf("tasks: owner %q must be a lower-case token", cfg.Owner)
	}
	if cfg.Outbox == nil {
		return nil, errors.New("tasks: an outbox is required")
	}
	if cfg.ResendAfter <= 0 {
		cfg.ResendAfter = time.Hour
	}
	if cfg.SweepEvery <= 0 {
		cfg.SweepEvery = time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 64
	}
	if cfg.StreamName == "" {
		cfg.StreamName = contract.StreamName
	}
	if cfg.Clock == nil {
		cfg.Clock = clock.Real{}
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	t := &Tracker{db: db, cfg: cfg}
	var err error
	if t.validator, err = protovalidate.New(); err != nil {
		return nil, fmt.Errorf("tasks: outcome validator: %w", err)
	}
	if t.closed, err = cfg.Meter.Int64Counter("lethe.tasks.closed",
		metric.WithDescription("Tasks that became final, by resolution and outcome.")); err != nil {
		return nil, err
	}
	if t.resent, err = cfg.Meter.Int64Counter("lethe.tasks.resent",
		metric.WithDescription("Events re-sent to systems that had not answered in time.")); err != nil {
		return nil, err
	}
	if t.ignored, err = cfg.Meter.Int64Counter("lethe.tasks.outcomes_ignored",
		metric.WithDescription("Outcomes that answered no open task of this owner (duplicates, other owners' events).")); err != nil {
		return nil, err
	}
	if t.refused, err = cfg.Meter.Int64Counter("lethe.tasks.outcomes_refused",
		metric.WithDescription("Outcomes that broke the contract's rules or time window; their tasks closed FAILED.")); err != nil {
		return nil, err
	}
	if err := markPublishedCauses(db); err != nil {
		return nil, err
	}
	return t, nil
}

// metaCauseMarkers, in the kit's meta bucket, records that every event
// published to no system has its causeMarker.
var metaCauseMarkers = []byte("tasks.cause_markers")

// markPublishedCauses gives the events published to no system before
// causeMarker existed their markers, once: every published event is in
// store.BucketTaskEvents, so a cause with an event there and no entry in
// the cause index is one of them. Without it Fanout would report
// such a cause as never published.
func markPublishedCauses(db *store.DB) error {
	var done bool
	if err := db.View(func(tx *bolt.Tx) error {
		done = store.BucketTx(tx, store.BucketMeta).Get(metaCauseMarkers) != nil
		return nil
	}); err != nil || done {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		index := store.BucketTx(tx, store.BucketTasksByCause)
		err := store.BucketTx(tx, store.BucketTaskEvents).ForEach(func(k, v []byte) error {
			ev := &eventsv1.Event{}
			if err := proto.Unmarshal(v, ev); err != nil {
				return fmt.Errorf("tasks: decode event %s: %w", k, err)
			}
			prefix := causePrefix(ev.TenantId, ev.Cause)
			if first, _ := index.Cursor().Seek(prefix); bytes.HasPrefix(first, prefix) {
				return nil
			}
			return index.Put(causeMarker(ev.TenantId, ev.Cause, ev.Id), nil)
		})
		if err != nil {
			return err
		}
		return store.BucketTx(tx, store.BucketMeta).Put(metaCauseMarkers, []byte{1})
	})
}

// Keys are the kit's (store.Key): each id followed by NUL, so that the
// keys under one id never share a prefix with another's. A task is keyed
// (event id, system id); the cause index (tenant, cause kind, cause id,
// event id, system id); the system index (tenant, system id, event id);
// the re-send index the time, then the task's key. A task is kept in the
// protobuf wire format (codec.go), with its final outcome inside.
func taskKey(eventID, systemID string) []byte { return store.Key(eventID, systemID) }

func causePrefix(tenant string, cause *commonv1.Cause) []byte {
	return store.Key(tenant, cause.GetKind().String(), cause.GetId())
}

func systemKey(tenant, systemID, eventID string) []byte { return store.Key(tenant, systemID, eventID) }

// taskOfKey reads the (event id, system id) a task key ends with, after
// the prefix the caller has checked.
func taskOfKey(rest []byte) (eventID, systemID string, ok bool) {
	ids, ok := store.SplitKey(rest)
	if !ok || len(ids) != 2 {
		return "", "", false
	}
	return ids[0], ids[1], true
}

// PublishTx publishes ev through the outbox and records a task for each
// expected system, in the caller's transaction. With no system to expect,
// the cause is complete at once.
func (t *Tracker) PublishTx(ctx context.Context, tx *bolt.Tx, ev *eventsv1.Event, expect []Expect) error {
	if err := t.cfg.Outbox.AddTx(ctx, tx, ev); err != nil {
		return err
	}
	kind, err := contract.KindOf(ev)
	if err != nil {
		return err
	}
	payload, err := contract.Marshal(ev)
	if err != nil {
		return err
	}
	if err := store.BucketTx(tx, store.BucketTaskEvents).Put([]byte(ev.Id), payload); err != nil {
		return err
	}
	now := t.cfg.Clock.Now()
	for _, e := range expect {
		if !contract.ValidToken(e.SystemID) {
			return fmt.Errorf("tasks: system id %q is not a lower-case token", e.SystemID)
		}
		task := Task{
			EventID: ev.Id, TenantID: ev.TenantId, SystemID: e.SystemID, Kind: kind,
			CauseKind: ev.Cause.GetKind(), CauseID: ev.Cause.GetId(), Mode: e.Mode,
			State: StateOpen, CreatedAt: now, SentAt: now,
		}
		if err := t.putTx(tx, task); err != nil {
			return err
		}
		if err := store.BucketTx(tx, store.BucketTasksByCause).Put(append(causePrefix(ev.TenantId, ev.Cause), taskKey(ev.Id, e.SystemID)...), nil); err != nil {
			return err
		}
		if err := store.BucketTx(tx, store.BucketTasksBySystem).Put(systemKey(ev.TenantId, e.SystemID, ev.Id), nil); err != nil {
			return err
		}
		if e.Mode != commonv1.AnswerMode_ANSWER_MODE_MANUAL {
			if err := t.scheduleTx(tx, task, now.Add(t.cfg.ResendAfter)); err != nil {
				return err
			}
		}
	}
	if len(expect) == 0 {
		// No task says the cause was published: a marker does, so that
		// Fanout tells it from a cause never published.
		if err := store.BucketTx(tx, store.BucketTasksByCause).Put(causeMarker(ev.TenantId, ev.Cause, ev.Id), nil); err != nil {
			return err
		}
		return t.completeTx(tx, ev.TenantId, ev.Cause)
	}
	return nil
}

// causeMarker is the cause index entry of an event published to no
// system: a task key with an empty system id, which no task has.
func causeMarker(tenant string, cause *commonv1.Cause, eventID string) []byte {
	return append(causePrefix(tenant, cause), taskKey(eventID, "")...)
}

func (t *Tracker) putTx(tx *bolt.Tx, task Task) error {
	return store.BucketTx(tx, store.BucketTasks).Put(taskKey(task.EventID, task.SystemID), encodeTask(nil, task))
}

func getTx(tx *bolt.Tx, eventID, systemID string) (Task, bool, error) {
	v := store.BucketTx(tx, store.BucketTasks).Get(taskKey(eventID, systemID))
	if v == nil {
		return Task{}, false, nil
	}
	task, err := decodeTask(v)
	if err != nil {
		return Task{}, false, fmt.Errorf("tasks: decode task %s/%s: %w", eventID, systemID, err)
	}
	return task, true, nil
}

func dueKey(at time.Time, task Task) []byte {
	return append(store.TimeKey(at), taskKey(task.EventID, task.SystemID)...)
}

func (t *Tracker) scheduleTx(tx *bolt.Tx, task Task, at time.Time) error {
	return store.BucketTx(tx, store.BucketTasksDue).Put(dueKey(at, task), nil)
}

func (t *Tracker) unscheduleTx(tx *bolt.Tx, task Task) error {
	if task.Mode == commonv1.AnswerMode_ANSWER_MODE_MANUAL {
		return nil
	}
	return store.BucketTx(tx, store.BucketTasksDue).Delete(dueKey(task.SentAt.Add(t.cfg.ResendAfter), task))
}

// closeTx makes a task final. It reports false, changing nothing, when the
// task is not this owner's or is final already (a duplicate answer). For
// a reported outcome, breach is t.breach(outcome): it depends on the
// outcome alone, so callers work it out before their transaction, where
// it would hold up every other write of the owner's committer.
func (t *Tracker) closeTx(tx *bolt.Tx, eventID, systemID string, resolution Resolution, outcome *eventsv1.Outcome, breach string) (bool, error) {
	task, ok, err := getTx(tx, eventID, systemID)
	if err != nil || !ok || task.State == StateFinal {
		return false, err
	}
	if resolution == ResolutionReported {
		if why := breach; why != "" {
			// Nothing of an outcome that breaks the contract is kept: its
			// dates may be the very thing out of range.
			t.refused.Add(context.Background(), 1)
			t.cfg.Logger.Warn("tasks: an outcome breaks the contract; its task fails", "system", task.SystemID, "event", task.EventID, "error", why)
			outcome = t.trackerOutcome(task, eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, why)
		} else if t.cfg.CheckOutcome != nil {
			if why := t.cfg.CheckOutcome(task, outcome); why != "" {
				failed := t.trackerOutcome(task, eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, why)
				failed.SubjectId, failed.ReportedAt = outcome.GetSubjectId(), outcome.GetReportedAt()
				outcome = failed
			}
		}
	}
	if err := t.unscheduleTx(tx, task); err != nil {
		return false, err
	}
	if err := store.BucketTx(tx, store.BucketTasksBySystem).Delete(systemKey(task.TenantID, task.SystemID, task.EventID)); err != nil {
		return false, err
	}
	if task.Outcome, err = proto.Marshal(outcome); err != nil {
		return false, err
	}
	task.State, task.Resolution, task.ClosedAt = StateFinal, resolution, t.cfg.Clock.Now()
	if err := t.putTx(tx, task); err != nil {
		return false, err
	}
	tx.OnCommit(func() {
		t.closed.Add(context.Background(), 1, metric.WithAttributes(
			attribute.String("owner", t.cfg.Owner),
			attribute.String("resolution", string(resolution)),
			attribute.String("outcome", outcome.GetKind().String())))
	})
	if t.cfg.OnTaskFinal != nil {
		if err := t.cfg.OnTaskFinal(tx, task, outcome); err != nil {
			return false, err
		}
	}
	if t.cfg.OnCauseComplete == nil {
		return true, nil
	}
	cause := &commonv1.Cause{Kind: task.CauseKind, Id: task.CauseID}
	if final, err := causeFinalTx(tx, task.TenantID, cause); err != nil || !final {
		return true, err
	}
	return true, t.completeTx(tx, task.TenantID, cause)
}

// causeFinalTx reports whether every task of a cause is final. It runs
// for every task closed, inside the owner's committer, so it reads only
// each task's state and stops at the first open one; completeTx reads the
// tasks whole, once, when the cause is complete.
func causeFinalTx(tx *bolt.Tx, tenant string, cause *commonv1.Cause) (bool, error) {
	prefix := causePrefix(tenant, cause)
	tasks := store.BucketTx(tx, store.BucketTasks)
	c := store.BucketTx(tx, store.BucketTasksByCause).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		eventID, systemID, ok := taskOfKey(k[len(prefix):])
		if !ok {
			return false, fmt.Errorf("tasks: corrupt cause index key %q", k)
		}
		if systemID == "" {
			continue // an event published to no system (causeMarker)
		}
		v := tasks.Get(taskKey(eventID, systemID))
		if v == nil {
			continue // as causeTasksTx: an index entry without its task counts for nothing
		}
		state, err := decodeState(v)
		if err != nil {
			return false, fmt.Errorf("tasks: decode task %s/%s: %w", eventID, systemID, err)
		}
		if state != StateFinal {
			return false, nil
		}
	}
	return true, nil
}

func (t *Tracker) completeTx(tx *bolt.Tx, tenant string, cause *commonv1.Cause) error {
	if t.cfg.OnCauseComplete == nil {
		return nil
	}
	all, _, err := causeTasksTx(tx, tenant, cause)
	if err != nil {
		return err
	}
	return t.cfg.OnCauseComplete(tx, tenant, cause, all)
}

// causeTasksTx returns every task of a cause, and whether anything was
// published under it for the tenant.
func causeTasksTx(tx *bolt.Tx, tenant string, cause *commonv1.Cause) (all []Task, published bool, err error) {
	prefix := causePrefix(tenant, cause)
	c := store.BucketTx(tx, store.BucketTasksByCause).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		published = true
		eventID, systemID, ok := taskOfKey(k[len(prefix):])
		if !ok {
			return nil, false, fmt.Errorf("tasks: corrupt cause index key %q", k)
		}
		if systemID == "" {
			continue // an event published to no system (causeMarker)
		}
		task, found, err := getTx(tx, eventID, systemID)
		if err != nil {
			return nil, false, err
		}
		if found {
			all = append(all, task)
		}
	}
	return all, published, nil
}

// ErrNoSuchTask is returned by RecordOutcome for an outcome that answers no
// task of this owner.
var ErrNoSuchTask = errors.New("tasks: no such task")

// RecordOutcome makes the task the outcome answers final, for a system an
// operator answers for. Recording the same answer twice is harmless; it
// returns ErrNoSuchTask for an unknown task.
func (t *Tracker) RecordOutcome(o *eventsv1.Outcome) error {
	return t.db.Update(func(tx *bolt.Tx) error {
		_, err := t.RecordOutcomeTx(tx, o)
		return err
	})
}

// RecordOutcomeTx is RecordOutcome in the caller's transaction, so that an
// owner records an operator's answer (or a system's gRPC submission) with
// its own state change, idempotency record and audit entry. It reports
// whether the task became final now: false for a task final already.
//
// An answer that closes the task is also published, through the outbox in
// the same transaction, on the system's outcome NATS subject, as the SDK
// publishes a system's own answer: every service that follows outcomes
// then learns of it whoever gave it. Above all the retention service,
// which erases what a RETAINED answer kept at its until-date: an
// operator's "billing kept until 2033-12-31" is kept as a promise exactly
// as an SDK system's is. The owner's own tracker reads the answer back and
// ignores it, the task being final.
func (t *Tracker) RecordOutcomeTx(tx *bolt.Tx, o *eventsv1.Outcome) (bool, error) {
	_, ok, err := getTx(tx, o.GetEventId(), o.GetSystemId())
	if err != nil {
		return false, err
	}
	if !ok {
		return false, ErrNoSuchTask
	}
	closed, err := t.closeTx(tx, o.GetEventId(), o.GetSystemId(), ResolutionReported, o, t.breach(o))
	if err != nil || !closed {
		return closed, err
	}
	return true, t.cfg.Outbox.AddOutcomeTx(context.Background(), tx, o)
}

// CloseSystemTx makes every open task of a removed system final, with a
// NOT_APPLICABLE outcome that says why, in the caller's transaction.
func (t *Tracker) CloseSystemTx(tx *bolt.Tx, tenant, systemID string) error {
	prefix := store.Key(tenant, systemID)
	var eventIDs []string
	c := store.BucketTx(tx, store.BucketTasksBySystem).Cursor()
	for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
		ids, ok := store.SplitKey(k[len(prefix):])
		if !ok || len(ids) != 1 {
			return fmt.Errorf("tasks: corrupt system index key %q", k)
		}
		eventIDs = append(eventIDs, ids[0])
	}
	for _, eventID := range eventIDs {
		task, ok, err := getTx(tx, eventID, systemID)
		if err != nil || !ok {
			return err
		}
		outcome := t.trackerOutcome(task, eventsv1.OutcomeKind_OUTCOME_KIND_NOT_APPLICABLE, "")
		if _, err := t.closeTx(tx, eventID, systemID, ResolutionSystemRemoved, outcome, ""); err != nil {
			return err
		}
	}
	return nil
}

// trackerOutcome is an outcome the tracker records on a system's behalf.
func (t *Tracker) trackerOutcome(task Task, kind eventsv1.OutcomeKind, reason string) *eventsv1.Outcome {
	return &eventsv1.Outcome{
		EventId: task.EventID, TenantId: task.TenantID, SystemId: task.SystemID,
		Cause: &commonv1.Cause{Kind: task.CauseKind, Id: task.CauseID},
		Kind:  kind, Reason: reason,
		ReportedAt: timestamppb.New(t.cfg.Clock.Now()),
	}
}

// Filter selects tasks for List; empty fields match everything.
type Filter struct {
	TenantID string
	SystemID string
	CauseID  string
	State    State
}

func (f Filter) match(task Task) bool {
	return (f.TenantID == "" || f.TenantID == task.TenantID) &&
		(f.SystemID == "" || f.SystemID == task.SystemID) &&
		(f.CauseID == "" || f.CauseID == task.CauseID) &&
		(f.State == "" || f.State == task.State)
}

// List returns the tasks that match f, for operators: what is stalled,
// what failed, what a request still waits for.
func (t *Tracker) List(f Filter) ([]Task, error) {
	var out []Task
	err := t.db.View(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, store.BucketTasks).ForEach(func(k, v []byte) error {
			task, err := decodeTask(v)
			if err != nil {
				return fmt.Errorf("tasks: decode task %q: %w", k, err)
			}
			if f.match(task) {
				out = append(out, task)
			}
			return nil
		})
	})
	return out, err
}

// CauseTasksTx returns every task of a cause, in the caller's transaction.
func (t *Tracker) CauseTasksTx(tx *bolt.Tx, tenant string, cause *commonv1.Cause) ([]Task, error) {
	all, _, err := causeTasksTx(tx, tenant, cause)
	return all, err
}

// CauseTasks returns every task of a cause.
func (t *Tracker) CauseTasks(tenant string, cause *commonv1.Cause) ([]Task, error) {
	all, _, err := t.Fanout(tenant, cause)
	return all, err
}

// Fanout returns every task of a cause, and whether the owner
// published anything under it for the tenant. A cause published to no
// system has no task and is published: it is complete. One never
// published, or published for another tenant, is not: an owner reports it
// as not found rather than complete.
func (t *Tracker) Fanout(tenant string, cause *commonv1.Cause) (tasks []Task, published bool, err error) {
	err = t.db.View(func(tx *bolt.Tx) error {
		tasks, published, err = causeTasksTx(tx, tenant, cause)
		return err
	})
	return tasks, published, err
}

// consumerName is the owner's durable consumer of the named source.
func (t *Tracker) consumerName(of string) string { return "lethe-" + t.cfg.Owner + "-" + of }

// Run consumes outcomes and dead-letter advisories and re-sends due tasks
// until ctx ends. A stop during start-up is a stop, not a failure.
func (t *Tracker) Run(ctx context.Context, js jetstream.JetStream) error {
	err := t.run(ctx, js)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (t *Tracker) run(ctx context.Context, js jetstream.JetStream) error {
	outcomes, err := js.CreateOrUpdateConsumer(ctx, t.cfg.StreamName, jetstream.ConsumerConfig{
		Durable:       t.consumerName("outcomes"),
		Description:   "outcomes answering the " + t.cfg.Owner + " service's tasks",
		FilterSubject: contract.AllOutcomes,
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxAckPending: 4 * t.cfg.Workers,
	})
	if err != nil {
		return fmt.Errorf("tasks: outcomes consumer: %w", err)
	}
	deadLetters, err := js.CreateOrUpdateConsumer(ctx, broker.DeadLetterStreamName(t.cfg.StreamName), jetstream.ConsumerConfig{
		Durable:       t.consumerName("dead-letters"),
		Description:   "systems that gave up on the " + t.cfg.Owner + " service's events",
		AckPolicy:     jetstream.AckExplicitPolicy,
		DeliverPolicy: jetstream.DeliverAllPolicy,
	})
	if err != nil {
		return fmt.Errorf("tasks: dead-letter consumer: %w", err)
	}
	// How far behind the tracker's consumers are: an outcome not yet
	// recorded is a task that looks open to operators.
	var monitors sync.WaitGroup
	defer monitors.Wait()
	lagCtx, stopLag := context.WithCancel(ctx)
	defer stopLag() // before the Wait: run may return with ctx still live
	for stream, name := range map[string]string{
		t.cfg.StreamName: t.consumerName("outcomes"),
		broker.DeadLetterStreamName(t.cfg.StreamName): t.consumerName("dead-letters"),
	} {
		lag, err := broker.NewLagMonitor(broker.LagConfig{JetStream: js, Meter: t.cfg.Meter, Stream: stream,
			Names: []string{name}, Logger: t.cfg.Logger})
		if err != nil {
			return err
		}
		defer func() { _ = lag.Close() }()
		monitors.Go(func() { lag.Run(lagCtx) })
	}
	// Consume calls back one message at a time; workers record outcomes
	// concurrently so that their transactions are committed together. A
	// message not handed over before the end is redelivered later.
	queue := make(chan jetstream.Msg)
	var workers sync.WaitGroup
	defer workers.Wait()
	for range t.cfg.Workers {
		workers.Go(func() {
			for {
				select {
				case msg := <-queue:
					t.handleOutcome(msg)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	outcomeCtx, err := broker.Consume(outcomes, func(msg jetstream.Msg) {
		select {
		case queue <- msg:
		case <-ctx.Done():
		}
	})
	if err != nil {
		return err
	}
	defer outcomeCtx.Stop()
	deadCtx, err := broker.Consume(deadLetters, func(msg jetstream.Msg) { t.handleDeadLetter(ctx, js, msg) })
	if err != nil {
		return err
	}
	defer deadCtx.Stop()

	ticker := time.NewTicker(t.cfg.SweepEvery)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
			if _, err := t.Resend(ctx); err != nil {
				t.cfg.Logger.Error("tasks: re-send sweep failed", "owner", t.cfg.Owner, "error", err)
			}
		}
	}
}

func (t *Tracker) handleOutcome(msg jetstream.Msg) {
	tenant, system, ok := contract.ParseOutcomeSubject(msg.Subject())
	var outcomes []*eventsv1.Outcome
	if ok {
		var err error
		outcomes, err = contract.UnmarshalOutcomes(msg.Headers(), msg.Data())
		ok = err == nil && len(outcomes) > 0
	}
	for _, o := range outcomes {
		ok = ok && o.TenantId == tenant && o.SystemId == system
	}
	if !ok {
		// A system may answer only for itself, on its own NATS subject.
		t.cfg.Logger.Warn("tasks: rejected an outcome that does not match its NATS subject", "nats_subject", msg.Subject())
		_ = msg.Term()
		return
	}
	// Checked here, on the worker, not in the transaction: the committer
	// runs every caller's function one after another.
	breaches := make([]string, len(outcomes))
	for i, o := range outcomes {
		breaches[i] = t.breach(o)
	}
	ignored := 0
	err := t.db.Batch(func(tx *bolt.Tx) error {
		ignored = 0
		for i, o := range outcomes {
			closed, err := t.closeTx(tx, o.EventId, o.SystemId, ResolutionReported, o, breaches[i])
			if err != nil {
				return err
			}
			if !closed {
				ignored++
			}
		}
		return nil
	})
	if err != nil {
		t.cfg.Logger.Error("tasks: recording outcomes failed; they will be redelivered", "outcomes", len(outcomes), "system", system, "error", err)
		_ = msg.Nak()
		return
	}
	if ignored > 0 {
		t.ignored.Add(context.Background(), int64(ignored))
	}
	_ = msg.Ack()
}

// breach returns how an outcome breaks the contract (its protovalidate
// rules and package timerange's window), or "". An outcome arrives from a
// system over NATS, not through the gRPC edge, so the tracker is its edge:
// a RETAINED answer "until" the year 34089 would reach every loop that
// later formats it. Like an outcome CheckOutcome refuses, it closes its
// task FAILED with the reason, where an operator sees it, rather than
// leaving the cause waiting on a system that re-sends the same answer.
func (t *Tracker) breach(o *eventsv1.Outcome) string {
	err := t.validator.Validate(o)
	var verr *protovalidate.ValidationError
	switch {
	case errors.As(err, &verr) && len(verr.Violations) > 0:
		v := verr.Violations[0].Proto
		return fmt.Sprintf("the outcome breaks the contract: %s: %s", protovalidate.FieldPathString(v.GetField()), v.GetMessage())
	case err != nil:
		return "the outcome breaks the contract: " + err.Error()
	}
	if v := timerange.Check(o); len(v) > 0 {
		return fmt.Sprintf("the outcome breaks the contract: %s: %s", v[0].Field, v[0].Description)
	}
	return ""
}

// maxDeliveriesAdvisory is the part of JetStream's MAX_DELIVERIES advisory
// the tracker reads.
type maxDeliveriesAdvisory struct {
	Stream     string `json:"stream"`
	Consumer   string `json:"consumer"`
	StreamSeq  uint64 `json:"stream_seq"`
	Deliveries uint64 `json:"deliveries"`
}

// handleDeadLetter fails the task of a message a system's consumer gave up
// on: the consumer's metadata names the system, the stream sequence names
// the event.
func (t *Tracker) handleDeadLetter(ctx context.Context, js jetstream.JetStream, msg jetstream.Msg) {
	var adv maxDeliveriesAdvisory
	if err := json.Unmarshal(msg.Data(), &adv); err != nil {
		_ = msg.Term()
		return
	}
	system, err := t.systemOfConsumer(ctx, js, adv.Stream, adv.Consumer)
	if err != nil {
		t.cfg.Logger.Warn("tasks: cannot tell which system gave up; retrying", "consumer", adv.Consumer, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	stream, err := js.Stream(ctx, adv.Stream)
	if err != nil {
		_ = msg.NakWithDelay(time.Second)
		return
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if err != nil {
		// The event aged out of the stream: nothing left to fail by it.
		_ = msg.Ack()
		return
	}
	ev := &eventsv1.Event{}
	if proto.Unmarshal(raw.Data, ev) != nil {
		_ = msg.Ack()
		return
	}
	err = t.db.Update(func(tx *bolt.Tx) error {
		task, ok, err := getTx(tx, ev.Id, system)
		if err != nil || !ok {
			return err
		}
		reason := fmt.Sprintf("the system's consumer %s gave up after %d deliveries", adv.Consumer, adv.Deliveries)
		_, err = t.closeTx(tx, ev.Id, system, ResolutionDeadLettered, t.trackerOutcome(task, eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, reason), "")
		return err
	})
	if err != nil {
		_ = msg.Nak()
		return
	}
	_ = msg.Ack()
}

func (t *Tracker) systemOfConsumer(ctx context.Context, js jetstream.JetStream, stream, consumer string) (string, error) {
	c, err := js.Consumer(ctx, stream, consumer)
	if err != nil {
		return "", err
	}
	// The SDK records the system a durable consumer belongs to in its
	// metadata.
	system := c.CachedInfo().Config.Metadata[contract.MetadataSystem]
	if system == "" {
		return "", fmt.Errorf("consumer %s has no %s metadata", consumer, contract.MetadataSystem)
	}
	return system, nil
}

// resendBatch bounds the tasks one sweep transaction re-sends.
const resendBatch = 256

// Resend re-sends the events of SDK tasks that are due — open or stalled
// and unanswered for ResendAfter — and flags them stalled. It returns how
// many it re-sent. Run calls it every SweepEvery; a sweep reads only the due
// part of the index.
func (t *Tracker) Resend(ctx context.Context) (int, error) {
	total := 0
	for {
		read, n := 0, 0
		err := t.db.Update(func(tx *bolt.Tx) error {
			read, n = 0, 0
			now := t.cfg.Clock.Now()
			due := store.BucketTx(tx, store.BucketTasksDue)
			var keys [][]byte
			c := due.Cursor()
			for k, _ := c.First(); k != nil && len(keys) < resendBatch; k, _ = c.Next() {
				if bytes.Compare(k[:8], store.TimeKey(now)) > 0 {
					break
				}
				keys = append(keys, append([]byte(nil), k...))
			}
			read = len(keys)
			for _, k := range keys {
				if err := due.Delete(k); err != nil {
					return err
				}
				eventID, systemID, ok := taskOfKey(k[8:])
				if !ok {
					return fmt.Errorf("tasks: corrupt re-send index key %q", k)
				}
				task, ok, err := getTx(tx, eventID, systemID)
				if err != nil {
					return err
				}
				if !ok || task.State == StateFinal {
					continue
				}
				if err := t.resendTx(ctx, tx, task, now); err != nil {
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
		if n > 0 {
			t.resent.Add(ctx, int64(n))
			t.cfg.Logger.Warn("tasks: re-sent events to systems that had not answered", "owner", t.cfg.Owner, "count", n)
		}
		if read < resendBatch {
			return total, nil
		}
	}
}

// EventTx returns the event a task answers, as the tracker published it,
// and false if the tracker holds no such event.
func (t *Tracker) EventTx(tx *bolt.Tx, eventID string) (*eventsv1.Event, bool, error) {
	v := store.BucketTx(tx, store.BucketTaskEvents).Get([]byte(eventID))
	if v == nil {
		return nil, false, nil
	}
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(v, ev); err != nil {
		return nil, false, fmt.Errorf("tasks: decode event %s: %w", eventID, err)
	}
	return ev, true, nil
}

// resendTx re-sends a task's event unchanged and flags the task stalled.
func (t *Tracker) resendTx(ctx context.Context, tx *bolt.Tx, task Task, now time.Time) error {
	ev, ok, err := t.EventTx(tx, task.EventID)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("tasks: the event %s of an open task is missing", task.EventID)
	}
	task.Resends++
	if err := t.cfg.Outbox.ResendTx(ctx, tx, ev, task.Resends); err != nil {
		return err
	}
	task.State, task.SentAt = StateStalled, now
	if err := t.putTx(tx, task); err != nil {
		return err
	}
	return t.scheduleTx(tx, task, now.Add(t.cfg.ResendAfter))
}
