// Package tenants tells a service which tenants exist. The registry owns
// tenants; every other service learns of them from the registry's
// tenant.registered, tenant.changed and tenant.removed events and keeps its
// own copy in its bbolt file. A call for an unknown tenant is then refused
// without a round trip to the registry, and a service keeps serving known
// tenants while the registry is down.
//
// A service runs Directory.Run beside its server and starts each
// tenant-scoped handler with RequireTx (or Require).
//
// The directory also keeps the settings other services compute with inside
// their own transactions, as the registry's events carry them: today the
// financial year end, from which retention counts accounting periods
// (FinancialYearEndTx).
package tenants

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Directory is a service's copy of the registry's tenants.
type Directory struct {
	db     *store.DB
	owner  string
	stream string
	logger *slog.Logger
	// onChange, when set, runs in the transaction that changes a tenant's
	// recorded settings.
	onChange func(tx *bolt.Tx, tenantID string) error
	// shard, when set, is the only consent shard whose tenants RequireTx
	// admits (ServeShard).
	shard string
}

// OnSettingsChangedTx makes fn run, in the directory's own transaction,
// whenever an event changes a tenant's recorded settings, so that a
// service re-evaluates what it computed from them (retention reschedules
// the tenant's subjects when its financial year end moves). Set it before
// Run.
func (d *Directory) OnSettingsChangedTx(fn func(tx *bolt.Tx, tenantID string) error) { d.onChange = fn }

// FinancialYearEndTx returns the tenant's financial year end as the
// registry's latest event gave it, in the caller's transaction. A tenant
// whose events predate the setting has the calendar year, as the
// registry's default is. NotFound unless the tenant is known.
func (d *Directory) FinancialYearEndTx(tx *bolt.Tx, tenantID string) (period.YearEnd, error) {
	v := store.BucketTx(tx, store.BucketTenantDirectory).Get([]byte(tenantID))
	if len(v) == 0 || v[0] != present {
		return period.YearEnd{}, apierror.NotFound("tenant", tenantID)
	}
	fye, _ := settingsOf(v)
	return period.ParseYearEnd(fye)
}

// ConsentShardTx returns the tenant's consent shard as the registry's
// latest event gave it (shardrouter.DefaultShard for a tenant whose events
// predate shards), in the caller's transaction. NotFound unless the
// tenant is known.
func (d *Directory) ConsentShardTx(tx *bolt.Tx, tenantID string) (string, error) {
	v := store.BucketTx(tx, store.BucketTenantDirectory).Get([]byte(tenantID))
	if len(v) == 0 || v[0] != present {
		return "", apierror.NotFound("tenant", tenantID)
	}
	_, shard := settingsOf(v)
	return shardrouter.Of(shard), nil
}

// ServeShard makes RequireTx and Require refuse, with FailedPrecondition
// WRONG_SHARD naming the tenant's shard in the ErrorInfo metadata
// "shard", every tenant the registry assigned to another consent shard
// than shard: the directory of a consent writer that serves one shard.
// Set it before the service serves.
func (d *Directory) ServeShard(shard string) { d.shard = shardrouter.Of(shard) }

// settingsOf splits an entry's settings: the financial year end, and the
// consent shard after a '/' (absent in entries written before shards).
func settingsOf(v []byte) (fye, shard string) {
	if len(v) <= 9 {
		return "", ""
	}
	fye, shard, _ = strings.Cut(string(v[9:]), "/")
	return fye, shard
}

// New returns the directory kept in db by the service owner ("consent"),
// fed from the named stream (contract.StreamName when empty).
func New(db *store.DB, owner, stream string, logger *slog.Logger) *Directory {
	if stream == "" {
		stream = contract.StreamName
	}
	if logger == nil {
		logger = slog.Default()
	}
	return &Directory{db: db, owner: owner, stream: stream, logger: logger}
}

// RequireTx returns NotFound unless the tenant is known, in the caller's
// transaction.
func (d *Directory) RequireTx(tx *bolt.Tx, tenantID string) error {
	v := store.BucketTx(tx, store.BucketTenantDirectory).Get([]byte(tenantID))
	if len(v) == 0 || v[0] != present {
		return apierror.NotFound("tenant", tenantID)
	}
	if d.shard == "" {
		return nil
	}
	if _, shard := settingsOf(v); shardrouter.Of(shard) != d.shard {
		return apierror.FailedPrecondition(apierror.ReasonWrongShard, fmt.Sprintf(
			"tenant %q is served by consent shard %s, not %s", tenantID, shardrouter.Of(shard), d.shard)).
			WithMetadata(map[string]string{"shard": shardrouter.Of(shard)})
	}
	return nil
}

// Require returns NotFound unless the tenant is known.
func (d *Directory) Require(tenantID string) error {
	return d.db.View(func(tx *bolt.Tx) error { return d.RequireTx(tx, tenantID) })
}

// Version returns the time (UnixNano) of the registry event that last set
// a known tenant's entry; it refuses as Require does. Every change of a
// tenant's settings in the registry publishes a tenant.changed event, so
// a new version follows each change as soon as the directory has
// recorded its event: a service may keep what it read of the tenant's
// settings from the registry under the version it saw before reading,
// and read again when the version moves.
func (d *Directory) Version(tenantID string) (int64, error) {
	var version int64
	err := d.db.View(func(tx *bolt.Tx) error {
		if err := d.RequireTx(tx, tenantID); err != nil {
			return err
		}
		v := store.BucketTx(tx, store.BucketTenantDirectory).Get([]byte(tenantID))
		if len(v) >= 9 {
			version = int64(binary.BigEndian.Uint64(v[1:9]))
		}
		return nil
	})
	return version, err
}

// An entry is a state byte, the commit time (UnixNano) of the registry
// event that set it, and the settings that event carried: the financial
// year end as "MM-DD", or nothing for the calendar year, then, when the
// event named one, '/' and the tenant's consent shard. The time orders
// redelivered events: an older event never overrides a newer one, so a
// tenant removed stays removed.
const (
	present byte = 1
	removed byte = 2
)

// Run follows the registry's tenant events until ctx ends, from the first
// one the stream holds, with a durable consumer of its own. A stop during
// start-up is a stop, not a failure.
func (d *Directory) Run(ctx context.Context, js jetstream.JetStream) error {
	err := d.run(ctx, js)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (d *Directory) run(ctx context.Context, js jetstream.JetStream) error {
	var filters []string
	for _, k := range []contract.Kind{contract.KindTenantRegistered, contract.KindTenantChanged, contract.KindTenantRemoved} {
		s, err := contract.KindSubject("*", k)
		if err != nil {
			return err
		}
		filters = append(filters, s)
	}
	config := jetstream.ConsumerConfig{
		Durable:        "lethe-" + d.owner + "-tenants",
		Description:    "the registry's tenants, as the " + d.owner + " service knows them",
		FilterSubjects: filters,
		AckPolicy:      jetstream.AckExplicitPolicy,
		DeliverPolicy:  jetstream.DeliverAllPolicy,
	}
	// The consumer is set up again whenever it cannot be reached: while a
	// NATS node restarts its creation can time out, and a consumer lost
	// with a node's store is created anew (durable: it resumes where the
	// cluster's copy stood). Giving up would stop the whole service over
	// a transient broker fault.
	delay := time.Second
	for {
		started := time.Now()
		err := d.follow(ctx, js, config)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > time.Minute {
			delay = time.Second // it followed for a while: a new fault
		}
		d.logger.Warn("tenants: following the tenant events failed; setting the consumer up again", "after", delay, "error", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(delay):
		}
		delay = min(2*delay, 30*time.Second)
	}
}

// follow creates the consumer and consumes from it until ctx ends (nil)
// or the consumer is lost (why).
func (d *Directory) follow(ctx context.Context, js jetstream.JetStream, config jetstream.ConsumerConfig) error {
	attempt, cancel := context.WithTimeout(ctx, 10*time.Second)
	cons, err := js.CreateOrUpdateConsumer(attempt, d.stream, config)
	cancel()
	if err != nil {
		return fmt.Errorf("tenants: consumer: %w", err)
	}
	lost := make(chan error, 1)
	cc, err := broker.Consume(cons, d.handle, jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrConsumerNotFound) {
			select {
			case lost <- err:
			default:
			}
		}
	}))
	if err != nil {
		return fmt.Errorf("tenants: consume: %w", err)
	}
	defer cc.Stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-lost:
		return err
	case <-cc.Closed():
		return errors.New("tenants: the consumer stopped")
	}
}

// entryOf reads what a tenant event sets: the state, the financial year
// end ("" for the calendar year) and the consent shard ("" when the event
// names none).
func entryOf(ev *eventsv1.Event) (state byte, fye, shard string, err error) {
	state = present
	switch {
	case ev.GetTenantRemoved() != nil:
		state = removed
	case ev.GetTenantRegistered() != nil:
		fye, shard = ev.GetTenantRegistered().FinancialYearEnd, ev.GetTenantRegistered().ConsentShard
	case ev.GetTenantChanged() != nil:
		fye, shard = ev.GetTenantChanged().FinancialYearEnd, ev.GetTenantChanged().ConsentShard
	}
	if shard != "" && !shardrouter.Valid(shard) {
		return 0, "", "", fmt.Errorf("consent shard %q is not a shard name", shard)
	}
	y, err := period.ParseYearEnd(fye)
	if err != nil {
		return 0, "", "", err
	}
	if y == period.CalendarYear {
		fye = "" // one spelling of the default, so that "12-31" and "" are no change
	}
	return state, fye, shard, nil
}

func (d *Directory) handle(msg jetstream.Msg) {
	ev := &eventsv1.Event{}
	if err := proto.Unmarshal(msg.Data(), ev); err != nil || !contract.ValidToken(ev.TenantId) {
		d.logger.Warn("tenants: ignoring an undecodable tenant event", "nats_subject", msg.Subject())
		_ = msg.Term()
		return
	}
	state, fye, shard, err := entryOf(ev)
	if err != nil {
		// The registry validates its settings; an event that carries a
		// bad one is not applied rather than applied half.
		d.logger.Warn("tenants: ignoring a tenant event with an invalid setting", "tenant", ev.TenantId, "error", err)
		_ = msg.Term()
		return
	}
	at := ev.GetOccurredAt().AsTime()
	err = d.db.Batch(func(tx *bolt.Tx) error {
		b := store.BucketTx(tx, store.BucketTenantDirectory)
		old := b.Get([]byte(ev.TenantId))
		if len(old) >= 9 && int64(binary.BigEndian.Uint64(old[1:9])) > at.UnixNano() {
			return nil // a newer event already decided
		}
		v := binary.BigEndian.AppendUint64([]byte{state}, uint64(at.UnixNano()))
		v = append(v, fye...)
		if shard != "" {
			v = append(append(v, '/'), shard...)
		}
		oldFYE, _ := settingsOf(old)
		changed := len(old) >= 9 && state == present && oldFYE != fye
		if err := b.Put([]byte(ev.TenantId), v); err != nil {
			return err
		}
		if changed && d.onChange != nil {
			return d.onChange(tx, ev.TenantId)
		}
		return nil
	})
	if err != nil {
		d.logger.Error("tenants: recording a tenant event failed; it will be redelivered", "tenant", ev.TenantId, "error", err)
		_ = msg.NakWithDelay(time.Second)
		return
	}
	_ = msg.Ack()
}
