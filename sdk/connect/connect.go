// Package connect is lethe-connect's runner: a downstream system on the
// Go SDK that answers, for every registered system whose answer mode is
// WEBHOOK or CONNECTOR, that system's events. Each such system gets its
// own subscriber, reading the system's own durable consumers and recording
// in its own ledger, so each inherits what an SDK system has: delivery
// from where it stopped after an outage, exactly-once answers, outcomes
// reported on the system's outcome subject, FAILED after the last
// delivery.
//
// The runner follows the registry: it lists the tenants' systems when it
// starts and again every Config.Resync, starts a subscriber for a system
// that appeared, restarts one whose webhook or connector changed, and
// stops one that was removed or changed its answer mode (its consumers
// stay, so a system registered again resumes where it stood).
package connect

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/sdk/connect/connector"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// DefaultResync is how often the runner lists the systems again when
// Config.Resync is zero.
const DefaultResync = 30 * time.Second

// ConnectorHandlers builds the handlers of a CONNECTOR system, by kind:
// the seam to package sdk/connect/connector. secretsDir is the system's
// own folder, <secrets-dir>/<tenant>/<system>.
type ConnectorHandlers func(tenant string, sys *registryv1.System, secretsDir string) (map[contract.Kind]subscriber.Handler, error)

// BuiltinConnectors builds a CONNECTOR system's handlers from the builtin
// connector its registry entry names (connector.Builtin), with the
// entry's parameters and the secrets in secretsDir: one handler for every
// kind the connector answers.
func BuiltinConnectors(tenant string, sys *registryv1.System, secretsDir string) (map[contract.Kind]subscriber.Handler, error) {
	return BuiltinConnectorsWith(nil)(tenant, sys, secretsDir)
}

// BuiltinConnectorsWith is BuiltinConnectors reaching the vendors through
// client (connector.Config.HTTPClient): a deployment's proxy or private
// roots, or a test's local vendor servers. nil is the connectors' own
// client.
func BuiltinConnectorsWith(client *http.Client) ConnectorHandlers {
	return func(_ string, sys *registryv1.System, secretsDir string) (map[contract.Kind]subscriber.Handler, error) {
		def, err := connector.Builtin(sys.GetConnector().GetName())
		if err != nil {
			return nil, err
		}
		h, err := def.Handler(connector.Config{Params: sys.GetConnector().GetParams(), SecretsDir: secretsDir, HTTPClient: client})
		if err != nil {
			return nil, err
		}
		out := map[contract.Kind]subscriber.Handler{}
		for _, k := range def.Kinds() {
			out[k] = h
		}
		return out, nil
	}
}

// Config configures a Runner.
type Config struct {
	// JetStream is the connection to Lethe's NATS; it needs the
	// permissions of every system it answers (see subscriber.Config).
	JetStream jetstream.JetStream
	// Registry reaches the registry service (ListTenants, ListSystems).
	Registry grpc.ClientConnInterface
	// DSAR reaches the DSAR service for the claim check
	// (subscriber.DSARIdentifiers), which connectors use to find a
	// subject by e-mail; optional.
	DSAR grpc.ClientConnInterface
	// Tenants limits the runner to these tenants; every tenant when empty.
	Tenants []string
	// SecretsDir holds each system's secrets in <tenant>/<system>/.
	SecretsDir string
	// DataDir holds each system's ledger, <tenant>/<system>.ledger.db.
	DataDir string
	// AllowHTTP lets webhooks use http:// to loopback: the development
	// profile only.
	AllowHTTP bool
	// TLS configures the webhooks' TLS client (root CAs); the system's
	// roots when nil.
	TLS *tls.Config
	// Connectors builds CONNECTOR systems' handlers; BuiltinConnectors
	// (the connectors shipped in package connector) when nil.
	Connectors ConnectorHandlers
	// Resync is how often the systems are listed again; DefaultResync
	// when zero.
	Resync time.Duration
	// Subscriber, when set, adjusts each system's subscriber
	// configuration (MaxDeliver, BackOff, Workers) before it starts.
	Subscriber func(*subscriber.Config)
	// Logger receives the runner's logs; slog.Default() when nil.
	Logger *slog.Logger
	// Meter counts webhook deliveries; none when nil.
	Meter metric.Meter
	// ClaimBaseURL is the public base URL where Handler is served (https
	// in production); webhook events caused by a data-subject request
	// then offer the claim check, and a receiver that answers 202 answers
	// later by the signed callback there (webhook.Config.CallbackBaseURL).
	// Empty: neither is offered, and a 202 is delivered again.
	ClaimBaseURL string
	// CallbackDeadline is how long an event a receiver accepted with 202
	// waits for its callback before it ends FAILED;
	// webhook.DefaultCallbackDeadline (7 days) when zero.
	CallbackDeadline time.Duration
	// ClaimKey signs the claim tokens; the runner's own secret (24 bytes
	// or more), the same for every replica behind ClaimBaseURL. Required
	// with ClaimBaseURL.
	ClaimKey []byte
}

// Runner answers the events of every WEBHOOK and CONNECTOR system.
type Runner struct {
	cfg      Config
	registry registryv1.RegistryServiceClient
	log      *slog.Logger

	mu      sync.Mutex
	running map[key]*running
	// refused remembers the spec of each system that could not start, so
	// that it is logged once, not at every sync, until it changes.
	refused map[key]string
	wg      sync.WaitGroup
	// listed is set once a sync listed the tenants and started their
	// systems (Ready).
	listed atomic.Bool
}

// key names a system.
type key struct{ tenant, system string }

// running is one system's subscriber.
type running struct {
	spec   string // what it was started from; a change restarts it
	stop   context.CancelFunc
	done   chan struct{}
	failed atomic.Bool // Run returned an error: start it again at the next sync
	// sub takes the callbacks of a WEBHOOK system's receiver; nil for a
	// CONNECTOR system, which has none.
	sub *subscriber.Subscriber
}

// New checks cfg and returns a Runner; Run starts it.
func New(cfg Config) (*Runner, error) {
	switch {
	case cfg.JetStream == nil:
		return nil, errors.New("connect: JetStream is required")
	case cfg.Registry == nil:
		return nil, errors.New("connect: Registry is required")
	case cfg.SecretsDir == "":
		return nil, errors.New("connect: SecretsDir is required")
	case cfg.DataDir == "":
		return nil, errors.New("connect: DataDir is required")
	case cfg.Resync < 0:
		return nil, errors.New("connect: Resync must not be negative")
	case cfg.ClaimBaseURL != "" && (len(cfg.ClaimKey) < 24 || cfg.DSAR == nil):
		return nil, errors.New("connect: ClaimBaseURL needs a ClaimKey of at least 24 bytes and DSAR")
	}
	if cfg.Resync == 0 {
		cfg.Resync = DefaultResync
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	return &Runner{cfg: cfg, registry: registryv1.NewRegistryServiceClient(cfg.Registry), log: cfg.Logger, running: map[key]*running{}, refused: map[key]string{}}, nil
}

// Run follows the registry and runs the systems' subscribers until ctx
// ends, then stops them all and returns nil. A failed listing is logged
// and tried again at the next sync.
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.Resync)
	defer t.Stop()
	for {
		if err := r.sync(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("listing the systems failed; trying again", "error", err, "retry_in", r.cfg.Resync)
		}
		select {
		case <-ctx.Done():
			r.stopAll()
			return nil
		case <-t.C:
		}
	}
}

// sync lists the systems once and starts, restarts and stops subscribers
// to match; the subscribers run until ctx ends.
func (r *Runner) sync(ctx context.Context) error {
	want, private, err := r.wanted(ctx)
	if err != nil && want == nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.stopChanged(want, private)
	r.startWanted(ctx, want, private)
	r.listed.Store(true)
	return err
}

// Ready says why the runner does not answer its systems yet: it has not
// listed them from the registry, or its NATS connection is down. nil once
// it does.
func (r *Runner) Ready() error {
	if !r.listed.Load() {
		return errors.New("the systems have not been listed from the registry yet")
	}
	if nc := r.cfg.JetStream.Conn(); nc != nil && !nc.IsConnected() {
		return fmt.Errorf("not connected to NATS (%s)", nc.Status())
	}
	return nil
}

// HealthHandler serves the runner's health in plaintext HTTP, for the
// kubelet's probes: /healthz answers 200 while the process serves, and
// /readyz 200 when Ready, 503 with the reason otherwise. It tells nothing
// of any system or subject.
func (r *Runner) HealthHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := r.Ready(); err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ready\n")
	})
	return mux
}

// wanted lists every tenant's WEBHOOK and CONNECTOR systems, and whether
// each tenant allows private networks. A tenant whose listing failed
// keeps its running systems, as nil entries, and its error is returned
// beside the rest; want is nil only when the tenants could not be listed.
func (r *Runner) wanted(ctx context.Context) (want map[key]*registryv1.System, private map[string]bool, err error) {
	tenants, err := r.tenants(ctx)
	if err != nil {
		return nil, nil, err
	}
	want, private = map[key]*registryv1.System{}, map[string]bool{}
	var errs []error
	for _, t := range tenants {
		private[t.GetTenantId()] = t.GetSettings().GetWebhookPrivateNetworks()
		systems, err := r.systems(ctx, t.GetTenantId())
		if err != nil {
			// Keep the tenant's subscribers as they are rather than stop
			// them for a listing that failed.
			errs = append(errs, err)
			r.keepTenant(t.GetTenantId(), want)
			continue
		}
		for _, sys := range systems {
			switch sys.GetAnswerMode() {
			case commonv1.AnswerMode_ANSWER_MODE_WEBHOOK, commonv1.AnswerMode_ANSWER_MODE_CONNECTOR:
				want[key{t.GetTenantId(), sys.GetSystemId()}] = sys
			}
		}
	}
	return want, private, errors.Join(errs...)
}

// stopChanged stops the subscribers of systems no longer wanted, changed
// or failed; r.mu is held.
func (r *Runner) stopChanged(want map[key]*registryv1.System, private map[string]bool) {
	for k, run := range r.running {
		sys, ok := want[k]
		if ok && sys != nil && spec(sys, private[k.tenant]) == run.spec && !run.failed.Load() {
			continue
		}
		if ok && sys == nil {
			continue // its tenant's listing failed: keep it
		}
		run.stop()
		<-run.done
		delete(r.running, k)
		if !ok {
			r.log.Info("stopped answering a system that is no longer WEBHOOK or CONNECTOR", "tenant", k.tenant, "system", k.system)
		}
	}
}

// startWanted starts a subscriber for every wanted system without one, in
// a stable order; r.mu is held.
func (r *Runner) startWanted(ctx context.Context, want map[key]*registryv1.System, private map[string]bool) {
	keys := make([]key, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].tenant+"/"+keys[i].system < keys[j].tenant+"/"+keys[j].system })
	for _, k := range keys {
		sys := want[k]
		if _, ok := r.running[k]; ok || sys == nil {
			continue
		}
		// A poison system (a bad URL, a connector that will not build)
		// is logged and skipped; the others still start.
		if err := r.start(ctx, k, sys, private[k.tenant]); err != nil {
			if s := spec(sys, private[k.tenant]); r.refused[k] != s {
				r.refused[k] = s
				r.log.Error("cannot answer the system; trying again when it changes or at each sync", "tenant", k.tenant, "system", k.system, "error", err)
			}
			continue
		}
		delete(r.refused, k)
	}
	for k := range r.refused {
		if _, ok := want[k]; !ok {
			delete(r.refused, k)
		}
	}
}

// keepTenant marks the running systems of tenant as wanted unchanged.
func (r *Runner) keepTenant(tenant string, want map[key]*registryv1.System) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k := range r.running {
		if k.tenant == tenant {
			want[k] = nil
		}
	}
}

// Systems returns the systems being answered, as "tenant/system", sorted.
func (r *Runner) Systems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for k, run := range r.running {
		if !run.failed.Load() {
			out = append(out, k.tenant+"/"+k.system)
		}
	}
	slices.Sort(out)
	return out
}

// spec is what a system's subscriber is built from.
func spec(sys *registryv1.System, private bool) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(&registryv1.System{
		AnswerMode: sys.GetAnswerMode(), Webhook: sys.GetWebhook(), Connector: sys.GetConnector(),
	})
	return fmt.Sprintf("%x/%v", b, private)
}

// start builds and runs the subscriber of one system. r.mu is held.
func (r *Runner) start(ctx context.Context, k key, sys *registryv1.System, private bool) error {
	handlers, err := r.handlers(k, sys, private)
	if err != nil {
		return err
	}
	dir := filepath.Join(r.cfg.DataDir, k.tenant)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	l, err := ledger.Open(filepath.Join(dir, k.system+".ledger.db"), ledger.Options{})
	if err != nil {
		return err
	}
	scfg := subscriber.Config{SystemID: k.system, Tenant: k.tenant, JetStream: r.cfg.JetStream, Ledger: l, Handlers: handlers,
		Logger: r.log}
	if r.cfg.DSAR != nil {
		scfg.Identifiers = subscriber.DSARIdentifiers(r.cfg.DSAR)
	}
	if r.cfg.Subscriber != nil {
		r.cfg.Subscriber(&scfg)
	}
	sub, err := subscriber.New(scfg)
	if err != nil {
		return errors.Join(err, l.Close())
	}
	subCtx, stop := context.WithCancel(ctx)
	run := &running{spec: spec(sys, private), stop: stop, done: make(chan struct{})}
	if sys.GetAnswerMode() == commonv1.AnswerMode_ANSWER_MODE_WEBHOOK {
		run.sub = sub
	}
	r.running[k] = run
	r.wg.Go(func() {
		defer close(run.done)
		err := sub.Run(subCtx)
		if cerr := l.Close(); cerr != nil {
			err = errors.Join(err, cerr)
		}
		if err != nil {
			r.log.Error("the system's subscriber stopped; starting it again at the next sync", "tenant", k.tenant, "system", k.system, "error", err)
			run.failed.Store(true)
		}
	})
	r.log.Info("answering the system", "tenant", k.tenant, "system", k.system, "mode", sys.GetAnswerMode())
	return nil
}

// handlers returns what answers each kind of the system's events.
func (r *Runner) handlers(k key, sys *registryv1.System, private bool) (map[contract.Kind]subscriber.Handler, error) {
	switch sys.GetAnswerMode() {
	case commonv1.AnswerMode_ANSWER_MODE_WEBHOOK:
		h, err := webhook.Handler(webhook.Config{URL: sys.GetWebhook().GetUrl(), Tenant: k.tenant, SystemID: k.system,
			SecretsDir: r.cfg.SecretsDir, AllowPrivate: private, AllowHTTP: r.cfg.AllowHTTP, TLS: r.cfg.TLS,
			Logger: r.log, Meter: r.cfg.Meter, ClaimBaseURL: r.cfg.ClaimBaseURL, ClaimKey: r.cfg.ClaimKey,
			CallbackBaseURL: r.cfg.ClaimBaseURL, CallbackDeadline: r.cfg.CallbackDeadline})
		if err != nil {
			return nil, err
		}
		// The receiver answers every kind a system answers; one that holds
		// nothing for a kind answers NOT_FOUND or NOT_APPLICABLE.
		out := map[contract.Kind]subscriber.Handler{}
		for _, kind := range slices.Concat(contract.Directives, contract.Limits) {
			out[kind] = h
		}
		return out, nil
	case commonv1.AnswerMode_ANSWER_MODE_CONNECTOR:
		build := r.cfg.Connectors
		if build == nil {
			build = BuiltinConnectors
		}
		return build(k.tenant, sys, filepath.Join(r.cfg.SecretsDir, k.tenant, k.system))
	}
	return nil, fmt.Errorf("answer mode %s is not answered by lethe-connect", sys.GetAnswerMode())
}

// Handler serves, at Config.ClaimBaseURL, what the webhook receivers
// call: the claim check (webhook.ClaimHandler, /v1/claims/) and the signed
// callback of a receiver that answered 202 (webhook.CallbackHandler,
// /v1/webhooks/); nil when the runner serves neither.
func (r *Runner) Handler() http.Handler {
	if r.cfg.ClaimBaseURL == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/v1/claims/", webhook.ClaimHandler(r.cfg.ClaimKey, r.cfg.DSAR, nil))
	mux.Handle("/v1/webhooks/", webhook.CallbackHandler(r.cfg.SecretsDir, r.answerer, nil))
	return mux
}

// answerer returns the subscriber of a running WEBHOOK system, which
// takes its receiver's callbacks; nil for any other.
func (r *Runner) answerer(tenant, system string) webhook.Answerer {
	r.mu.Lock()
	defer r.mu.Unlock()
	run, ok := r.running[key{tenant, system}]
	if !ok || run.sub == nil || run.failed.Load() {
		return nil
	}
	return run.sub
}

// stopAll stops every subscriber and waits for them.
func (r *Runner) stopAll() {
	r.mu.Lock()
	for k, run := range r.running {
		run.stop()
		delete(r.running, k)
	}
	r.mu.Unlock()
	r.wg.Wait()
}

// tenants returns the tenants to serve.
func (r *Runner) tenants(ctx context.Context) ([]*registryv1.Tenant, error) {
	if len(r.cfg.Tenants) > 0 {
		var out []*registryv1.Tenant
		for _, id := range r.cfg.Tenants {
			resp, err := r.registry.GetTenant(ctx, &registryv1.GetTenantRequest{TenantId: id})
			if err != nil {
				return nil, fmt.Errorf("tenant %s: %w", id, err)
			}
			out = append(out, resp.GetTenant())
		}
		return out, nil
	}
	var out []*registryv1.Tenant
	token := ""
	for {
		resp, err := r.registry.ListTenants(ctx, &registryv1.ListTenantsRequest{PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list tenants: %w", err)
		}
		out = append(out, resp.GetTenants()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}

// systems lists a tenant's current systems.
func (r *Runner) systems(ctx context.Context, tenant string) ([]*registryv1.System, error) {
	var out []*registryv1.System
	token := ""
	for {
		resp, err := r.registry.ListSystems(ctx, &registryv1.ListSystemsRequest{TenantId: tenant, PageSize: 1000, PageToken: token})
		if err != nil {
			return nil, fmt.Errorf("list systems of %s: %w", tenant, err)
		}
		out = append(out, resp.GetSystems()...)
		if token = resp.GetNextPageToken(); token == "" {
			return out, nil
		}
	}
}
