// Package dsar is Lethe's DSAR service. It handles data-subject requests
// under GDPR Articles 15 to 22: every right as a request with a lifecycle,
// identity verification and deadlines (statutory and the tenant's SLA kept
// apart). Erasure, rectification and access are directives it publishes
// through its outbox and tracks per system until each has answered, after
// asking the retention service which legal holds apply; objection,
// restriction and consent withdrawal it applies through the consent
// service with the request as their cause, and follows that fan-out to
// completion. Access and portability answers are assembled into one JSON
// package; every closed request yields a receipt on a hash-chained log.
//
// Identifiers (e-mail, phone, name, address) and corrected values reach
// systems only by claim check (GetIdentifiers), never on the stream. They
// are stored sealed under a per-request key kept in a separate slot file
// (see keyring), which is overwritten when the request is closed and
// answered, so nothing in Lethe's files can recover them afterwards.
//
// The service owns dsar.db and dsar.keys in the data folder.
package dsar

import (
	"context"
	"errors"
	"path/filepath"
	"time"

	"google.golang.org/grpc"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tenants"
)

// ServiceName is the gRPC service's full name, under which it reports
// health.
const ServiceName = "lethe.dsar.v1.DsarService"

// DefaultAddr is the gRPC address the dsar deployable listens on by default.
const DefaultAddr = "127.0.0.1:7402"

// Neighbours are the services the DSAR service calls beside the
// registry: consent, to apply objections, restrictions and withdrawals,
// and retention, to learn which legal holds an erasure must respect. The
// development addresses are those services' own DefaultAddr.
var Neighbours = []service.Neighbour{
	{Name: "consent", DevAddr: "127.0.0.1:7401"},
	{Name: "retention", DevAddr: "127.0.0.1:7403"},
}

// Factory builds the dsar service for a host, which dials its Neighbours
// (in lethe dev, the one address that serves all four services).
var Factory = service.Factory{
	Name:       "dsar",
	Neighbours: Neighbours,
	New:        func(deps service.Deps) (service.Service, error) { return New(deps, Options{}) },
}

// Options tune the service; zero values are production defaults.
type Options struct {
	// Consent and Retention reach those services; the host's connections
	// to the neighbours "consent" and "retention" (deps.Neighbours) when
	// nil.
	Consent   grpc.ClientConnInterface
	Retention grpc.ClientConnInterface
	// Channel sends one-time codes. Without one, identity can only be
	// attested (AttestIdentity); StartVerification is refused.
	Channel Channel
	// CodeTTL is how long a one-time code is valid; 15 minutes by default.
	CodeTTL time.Duration
	// CodeAttempts is how many tries one code allows; 5 by default.
	CodeAttempts int
	// MaxCodes is how many codes one request may be sent; 3 by default.
	// When the last one's attempts are spent the request is rejected.
	MaxCodes int
	// ResendAfter is how long a system may leave a directive unanswered
	// before it is re-sent and its task flagged stalled; one hour by
	// default.
	ResendAfter time.Duration
	// SweepEvery is how often requests not yet fanned out are retried,
	// consent fan-out followed and expired packages destroyed; five seconds by
	// default.
	SweepEvery time.Duration
	// PackageTTL is how long an access package stays downloadable when its
	// delivery is never confirmed; 30 days by default.
	PackageTTL time.Duration
	// FanoutUnhealthyAfter is how long a request's fan-out may keep
	// failing before the health detail FanoutHealthName turns
	// NOT_SERVING; two minutes by default: a neighbour's restart or
	// rollout, which the sweep rides out, takes less, and an operator
	// still learns of a neighbour that stays away within minutes.
	FanoutUnhealthyAfter time.Duration
}

// complete fills in the defaults of the options left zero, and the
// neighbours' connections the host dialled (deps.Neighbours).
func (o *Options) complete(deps service.Deps) {
	if o.Consent == nil {
		o.Consent = deps.Neighbours["consent"]
	}
	if o.Retention == nil {
		o.Retention = deps.Neighbours["retention"]
	}
	if o.CodeTTL <= 0 {
		o.CodeTTL = 15 * time.Minute
	}
	if o.CodeAttempts <= 0 {
		o.CodeAttempts = 5
	}
	if o.MaxCodes <= 0 {
		o.MaxCodes = 3
	}
	if o.SweepEvery <= 0 {
		o.SweepEvery = 5 * time.Second
	}
	if o.PackageTTL <= 0 {
		o.PackageTTL = 30 * 24 * time.Hour
	}
	if o.FanoutUnhealthyAfter <= 0 {
		o.FanoutUnhealthyAfter = 2 * time.Minute
	}
}

// Service implements lethe.dsar.v1.DsarService.
type Service struct {
	dsarv1.UnimplementedDsarServiceServer
	*service.Base
	opts      Options
	deps      service.Deps
	tracker   *tasks.Tracker
	tenants   *tenants.Directory
	routes    *registryclient.Client
	settings  settingsCache
	registry  registryv1.RegistryServiceClient
	consent   consentv1.ConsentServiceClient
	retention retentionv1.RetentionServiceClient
	keys      *keyring
	metrics   *metrics
	// fanout are the requests whose fan-out is failing, and fanoutHealth
	// reports them in health.
	fanout       fanoutFailures
	fanoutHealth fanoutHealth
}

// New opens the DSAR service's store and key file.
func New(deps service.Deps, opts Options) (*Service, error) {
	opts.complete(deps)
	base, err := service.OpenBase(deps, schema)
	if err != nil {
		return nil, err
	}
	s := &Service{Base: base, opts: opts, deps: deps,
		tenants: tenants.New(base.DB, "dsar", "", base.Logger)}
	if deps.Registry != nil {
		s.routes = registryclient.New(deps.Registry)
		s.registry = registryv1.NewRegistryServiceClient(deps.Registry)
	}
	if opts.Consent != nil {
		s.consent = consentv1.NewConsentServiceClient(opts.Consent)
	}
	if opts.Retention != nil {
		s.retention = retentionv1.NewRetentionServiceClient(opts.Retention)
	}
	s.tracker, err = tasks.New(base.DB, tasks.Config{
		Owner: "dsar", Outbox: base.Outbox, Clock: base.Clock, ResendAfter: opts.ResendAfter,
		Meter: base.Meter, Logger: base.Logger, OnCauseComplete: s.onCauseComplete,
		CheckOutcome: checkOutcome,
	})
	if err == nil {
		s.keys, err = openKeyring(filepath.Join(deps.DataDir, "dsar.keys"), base.Logger)
	}
	if err == nil {
		err = s.reconcileKeys()
	}
	if err == nil {
		s.metrics, err = newMetrics(s)
	}
	if err == nil {
		err = s.registerFanoutMetrics()
	}
	if err != nil {
		if s.keys != nil {
			err = errors.Join(err, s.keys.Close())
		}
		return nil, errors.Join(err, base.Close())
	}
	return s, nil
}

// Register serves the DSAR API on srv, and reports the fan-out in health
// under FanoutHealthName.
func (s *Service) Register(srv *server.Server) {
	srv.Register(&dsarv1.DsarService_ServiceDesc, s, s.ServeOptions()...)
	s.fanoutHealth.detail.Store(srv.RegisterHealthDetail(FanoutHealthName))
	s.reportFanoutHealth()
}

// Close releases the store and the key file.
func (s *Service) Close() error { return errors.Join(s.Base.Close(), s.keys.Close()) }

// Run does the service's background work until ctx ends: the outbox relay,
// following tenants and outcomes, and the sweep that retries fan-outs,
// follows the consent service and destroys expired packages.
func (s *Service) Run(ctx context.Context) error {
	bg := service.Background{Workers: []func(context.Context) error{s.Base.Run}, Every: s.opts.SweepEvery, Tick: s.Sweep}
	if js := s.deps.JetStream; js != nil {
		bg.Workers = append(bg.Workers,
			func(ctx context.Context) error { return s.tenants.Run(ctx, js) },
			func(ctx context.Context) error { return s.tracker.Run(ctx, js) })
	}
	return bg.Run(ctx)
}
