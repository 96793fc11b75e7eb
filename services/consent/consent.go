// Package consent is Lethe's consent service. It keeps each tenant's
// purposes, the append-only history of consent records (the proof of
// consent, Art. 7(1)), objections (Art. 21) and restrictions (Art. 18), and
// answers Check — may subject X's data be processed for purpose P, and why —
// from memory, without touching the disk. It is the single owner of the
// limit events (consent withdrawn, objection recorded, restriction applied
// and lifted), which it publishes through its outbox and follows to every
// system the registry routes them to.
//
// The service owns one bbolt file, consent.db, in the data folder.
package consent

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync/atomic"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
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
	Name: "consent",
	New:  func(deps service.Deps) (service.Service, error) { return New(deps, Options{}) },
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
	// gap is set while limits may be lost beyond the stream's reach
	// (recovery.go); Check refuses to answer then.
	gap             atomic.Pointer[storage.Gap]
	recoveredEvents metric.Int64Counter
	recoveryMetrics metric.Registration
}

// New opens the consent service's store and loads its state into memory.
func New(deps service.Deps, opts Options) (*Service, error) {
	if opts.ExpirySweepEvery <= 0 {
		opts.ExpirySweepEvery = time.Minute
	}
	if opts.RecoveryMargin <= 0 {
		opts.RecoveryMargin = DefaultRecoveryMargin
	}
	if opts.Stream == "" {
		opts.Stream = broker.DefaultStreamConfig().Name
	}
	base, err := service.OpenBase(deps, storage.Schema)
	if err != nil {
		return nil, err
	}
	s := &Service{
		Base: base, opts: opts, deps: deps,
		index:     decision.NewIndex(),
		tenants:   tenants.New(base.DB, "consent", "", base.Logger),
		watchers:  newHub(),
		applied:   newSequencer(),
		countries: newCountryQueue(),
	}
	if deps.Registry != nil {
		s.registry = registryclient.New(deps.Registry)
		s.registryRPC = registryv1.NewRegistryServiceClient(deps.Registry)
	}
	s.tracker, err = tasks.New(base.DB, tasks.Config{
		Owner: "consent", Outbox: base.Outbox, Clock: base.Clock, ResendAfter: opts.ResendAfter,
		Meter: base.Meter, Logger: base.Logger,
	})
	if err == nil {
		s.recoveredEvents, err = base.Meter.Int64Counter("lethe.consent.recovery.recovered",
			metric.WithDescription("Limit events the consent service re-applied from the event stream at start because its store, restored from a backup, lacked them."))
	}
	if err == nil {
		err = s.load()
	}
	if err == nil {
		// Before the service serves or publishes: a restored store must
		// not answer Check from state older than the stream's.
		ctx, cancel := context.WithTimeout(context.Background(), recoveryTimeout)
		err = s.recoverLimits(ctx)
		cancel()
	}
	if err == nil {
		err = s.registerRecoveryMetrics()
	}
	if err != nil {
		return nil, errors.Join(err, base.Close())
	}
	return s, nil
}

// recoveryTimeout bounds the catch-up at start. Thirty days of limit
// events are read in well under a minute; a stream that does not answer
// in this time fails the start, which the supervisor retries.
const recoveryTimeout = 5 * time.Minute

// Close releases the service's resources after Run returned.
func (s *Service) Close() error {
	return errors.Join(s.recoveryMetrics.Unregister(), s.Base.Close())
}

// Register serves the consent API on srv.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&consentv1.ConsentService_ServiceDesc, s, s.ServeOptions()...)
}

// Run does the service's background work until ctx ends: the outbox relay,
// following tenants and outcomes, and expiring consents.
func (s *Service) Run(ctx context.Context) error {
	bg := service.Background{Workers: []func(context.Context) error{s.Base.Run, s.followCountries}, Every: s.opts.ExpirySweepEvery, Tick: s.tick}
	if js := s.deps.JetStream; js != nil {
		bg.Workers = append(bg.Workers,
			func(ctx context.Context) error { return s.tenants.Run(ctx, js) },
			func(ctx context.Context) error { return s.tracker.Run(ctx, js) })
	}
	err := bg.Run(ctx)
	s.watchers.closeAll()
	return err
}

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
}

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

// load rebuilds the in-memory state from the store.
func (s *Service) load() error {
	now := s.Clock.Now()
	return s.DB.View(func(tx *bolt.Tx) error {
		err := storage.Each(tx, storage.BucketPurposes, nil, func(k, v []byte) error {
			p := &consentv1.Purpose{}
			if err := proto.Unmarshal(v, p); err != nil {
				return err
			}
			s.index.PutPurpose(tenantOfKey(k), compile(p, now))
			s.notices.schedule(tenantOfKey(k), p, now)
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketRecords, nil, func(_, v []byte) error {
			r := &consentv1.ConsentRecord{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			s.index.Update(r.TenantId, r.SubjectId, func(sub *decision.Subject) { sub.SetConsent(r.PurposeId, consentOf(r)) })
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketObjections, nil, func(k, v []byte) error {
			var o storage.Objection
			if err := json.Unmarshal(v, &o); err != nil {
				return err
			}
			s.index.Update(tenantOfKey(k), o.Subject, func(sub *decision.Subject) {
				sub.AddObjection(decision.Objection{ID: o.ID, Scope: o.Scope, Purposes: o.Purposes})
			})
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketTenantCountries, nil, func(k, v []byte) error {
			s.index.SetCountry(string(k), string(v))
			return nil
		})
		if err != nil {
			return err
		}
		err = storage.Each(tx, storage.BucketRevisions, nil, func(k, v []byte) error {
			s.applied.start(string(k), store.KeyUint64(v))
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
				s.index.Update(tenantOfKey(k), r.Subject, func(sub *decision.Subject) {
					sub.AddRestriction(decision.Restriction{ID: r.ID, Purposes: r.Purposes})
				})
			}
			return nil
		})
	})
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

// requireTenantTx refuses calls for tenants the registry never announced.
func (s *Service) requireTenantTx(tx *bolt.Tx, tenant string) error {
	return s.tenants.RequireTx(tx, tenant)
}

// expect asks the registry which systems must honour a limit on the given
// purposes (all of the subject's processing when purposes is empty). It
// runs before the write transaction: a network call must not hold the
// store's single writer.
func (s *Service) expect(ctx context.Context, tenant string, purposes []string) ([]tasks.Expect, error) {
	if s.registry == nil {
		return nil, errors.New("consent: no registry connection to route limits")
	}
	if len(purposes) == 0 {
		return s.registry.Expect(ctx, tenant, registryclient.Scope{All: true})
	}
	seen := map[string]bool{}
	var out []tasks.Expect
	for _, p := range purposes {
		systems, err := s.registry.Expect(ctx, tenant, registryclient.Scope{Purpose: p})
		if err != nil {
			return nil, err
		}
		for _, e := range systems {
			if !seen[e.SystemID] {
				seen[e.SystemID] = true
				out = append(out, e)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].SystemID < out[j].SystemID })
	return out, nil
}

// publishLimitTx publishes a limit event about a subject and tracks one
// task per expected system, in the caller's transaction.
func (s *Service) publishLimitTx(ctx context.Context, tx *bolt.Tx, tenant, subject string, cause *commonv1.Cause, expect []tasks.Expect, ev *eventsv1.Event) error {
	ev.TenantId, ev.SubjectId, ev.Cause = tenant, subject, cause
	return s.tracker.PublishTx(ctx, tx, ev, expect)
}

// changeTx records a change in the tenant's log. Once the transaction
// commits, and after every earlier change of the tenant, apply updates the
// in-memory state and watchers are told.
func (s *Service) changeTx(tx *bolt.Tx, tenant string, c *consentv1.Change, apply func()) error {
	rev, err := storage.AddChangeTx(tx, tenant, c)
	if err != nil {
		return err
	}
	tx.OnCommit(func() {
		s.applied.committed(tenant, rev, func() {
			if apply != nil {
				apply()
			}
			s.watchers.publish(tenant, c)
		})
	})
	return nil
}

// fingerprintTx hashes what the caller saw under the tenant's evidence key,
// creating the key on first use.
func fingerprintTx(tx *bolt.Tx, tenant string, in *consentv1.EvidenceInput) (*consentv1.Evidence, error) {
	ev := &consentv1.Evidence{Gpc: in.GetGpc()}
	if in.GetIpAddress() == "" && in.GetUserAgent() == "" {
		return ev, nil
	}
	key, ok, err := storage.EvidenceKeyTx(tx, tenant)
	if err != nil {
		return nil, err
	}
	if !ok {
		key = storage.EvidenceKey{ID: outbox.NewEventID(), Key: make([]byte, 32)}
		if _, err := rand.Read(key.Key); err != nil {
			return nil, err
		}
		if err := storage.PutEvidenceKeyTx(tx, tenant, key); err != nil {
			return nil, err
		}
	}
	mac := hmac.New(sha256.New, key.Key)
	fmt.Fprintf(mac, "%d:%s|%d:%s", len(in.IpAddress), in.IpAddress, len(in.UserAgent), in.UserAgent)
	ev.Fingerprint, ev.KeyId = mac.Sum(nil), key.ID
	return ev, nil
}

// unknownPurpose is the error of a request naming a purpose the tenant
// does not have.
func unknownPurpose(field, id string) error {
	return apierror.Invalid(field, fmt.Sprintf("the tenant has no purpose %q", id))
}
