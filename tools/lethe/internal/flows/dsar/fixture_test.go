package dsar_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/dsar"
	"github.com/lethe-privacy/lethe/services/registry"
	"github.com/lethe-privacy/lethe/services/retention"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// identityKey is the metadata key through which a test names the caller's
// identity, as a certificate or token would in production.
const identityKey = "x-test-identity"

// testAuthenticator gives a call the identity its metadata names, and the
// development identity otherwise.
type testAuthenticator struct{}

func (testAuthenticator) Authenticate(ctx context.Context) (auth.Identity, error) {
	if md, ok := metadata.FromIncomingContext(ctx); ok && len(md.Get(identityKey)) > 0 {
		return auth.Identity{Name: md.Get(identityKey)[0]}, nil
	}
	return auth.Identity{Name: auth.DevIdentityName}, nil
}

// asSystem is a context authenticated as a registered system.
func asSystem(system string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), identityKey, "spiffe://lethe.test/system/"+system)
}

// fixture runs the registry, the consent, retention and DSAR services as
// lethe dev does (servicetest), over gRPC, with an embedded NATS server,
// all keeping their files under one data folder.
type fixture struct {
	dsar     dsarv1.DsarServiceClient
	dsarConn *grpc.ClientConn
	registry registryv1.RegistryServiceClient
	consent  consentv1.ConsentServiceClient
	svc      *dsar.Service
	codes    *dsar.DevChannel
	// shard1 reaches the consent writer of shard s1 (options.secondShard).
	shard1     consentv1.ConsentServiceClient
	shard1Conn *grpc.ClientConn
	// retention is the retention service's API; ret the service, whose
	// sweeps a test runs itself.
	retention retentionv1.RetentionServiceClient
	ret       *retention.Service
	clock     *clock.Fake
	deps      service.Deps
	data      string
	n         atomic.Int64
	ctx       context.Context
}

type options struct {
	syncAlways bool
	// realClock runs the services on the wall clock (benchmarks).
	realClock bool
	// sweepEvery overrides the tests' 20ms sweep.
	sweepEvery time.Duration
	// tlsNeighbours serves consent and retention to the DSAR service as
	// production does, over TCP with mutual TLS, and lets the kit's
	// Dialer connect DSAR to them (Factory.Neighbours) instead of the
	// host's connection.
	tlsNeighbours bool
	// retentionAddr, when set, is where the DSAR service dials the
	// retention service (plaintext): an address nothing serves makes its
	// fan-outs fail.
	retentionAddr string
	// consentAddr is the same for the consent service: an address
	// nothing serves makes its consent steps fail, and leaves its intake
	// unable to check a request's purposes.
	consentAddr string
	// telemetry gives the DSAR service its meter.
	telemetry *telemetry.Providers
	// secondShard runs a second consent writer, shard s1, in a host of
	// its own on the same NATS server (f.shard1), and has the DSAR
	// service reach consent through a shardrouter.Router that sends each
	// tenant's calls to its shard's writer (s0 is the first host's).
	secondShard bool
}

func start(t testing.TB) *fixture { return startWith(t, options{}) }

func startWith(t testing.TB, o options) *fixture {
	t.Helper()
	f := &fixture{clock: clock.NewFake(servicetest.Epoch), ctx: context.Background(), codes: &dsar.DevChannel{Logger: quiet}}
	var clk clock.Clock = f.clock
	if o.realClock {
		clk = clock.Real{}
	}
	var con *consent.Service
	// shard1 is the connection to the second consent shard's host, once
	// it runs (options.secondShard); the router dials it on first use.
	var shard1 atomic.Pointer[grpc.ClientConn]
	conFactory := service.Factory{Name: consent.Factory.Name, Neighbours: consent.Factory.Neighbours,
		New: func(d service.Deps) (service.Service, error) {
			s, err := consent.New(d, consent.Options{ExpirySweepEvery: time.Hour})
			con = s
			return s, err
		}}
	retFactory := service.Factory{Name: retention.Factory.Name, Neighbours: retention.Factory.Neighbours,
		New: func(d service.Deps) (service.Service, error) {
			s, err := retention.New(d, retention.Options{SweepEvery: time.Hour})
			f.ret = s
			return s, err
		}}
	dsarFactory := service.Factory{Name: dsar.Factory.Name, Neighbours: dsar.Factory.Neighbours,
		New: func(d service.Deps) (service.Service, error) {
			sweep := 20 * time.Millisecond
			if o.sweepEvery > 0 {
				sweep = o.sweepEvery
			}
			opts := dsar.Options{Channel: f.codes, SweepEvery: sweep}
			if o.telemetry != nil {
				d.Telemetry = o.telemetry
			}
			if o.retentionAddr != "" {
				opts.Retention = servertest.Dial(t, o.retentionAddr, nil)
			}
			if o.consentAddr != "" {
				opts.Consent = servertest.Dial(t, o.consentAddr, nil)
			}
			if o.tlsNeighbours {
				d.Neighbours = tlsNeighbours(t, clk, map[string]func(*server.Server){"consent": con.Register, "retention": f.ret.Register})
			}
			if o.secondShard {
				// The shard's "address" is its name; dialling it picks
				// the host: s0 is this one, s1 the second.
				router, err := shardrouter.New(shardrouter.Config{Registry: d.Registry, Template: shardrouter.ShardPlaceholder,
					Dial: func(addr string) (grpc.ClientConnInterface, error) {
						if addr == "s1" {
							if c := shard1.Load(); c != nil {
								return c, nil
							}
							return nil, errors.New("shard s1 is not running yet")
						}
						return d.Registry, nil
					}})
				if err != nil {
					return nil, err
				}
				opts.Consent = router
			}
			s, err := dsar.New(d, opts)
			f.svc = s
			return s, err
		}}
	h := servicetest.Start(t, servicetest.Options{Clock: clk, Logger: quiet, SyncAlways: o.syncAlways,
		Server: server.Config{Authenticator: testAuthenticator{}}},
		registry.Factory, conFactory, retFactory, dsarFactory)
	f.data = h.DataDir
	f.deps = service.Deps{Clock: clk, Logger: quiet, NATS: h.NATS, JetStream: h.JetStream}
	f.dsarConn = h.Conn
	f.registry = registryv1.NewRegistryServiceClient(h.Conn)
	f.consent = consentv1.NewConsentServiceClient(h.Conn)
	f.retention = retentionv1.NewRetentionServiceClient(h.Conn)
	f.dsar = dsarv1.NewDsarServiceClient(h.Conn)
	if o.secondShard {
		s1 := service.Factory{Name: consent.Factory.Name, New: func(d service.Deps) (service.Service, error) {
			return consent.New(d, consent.Options{ExpirySweepEvery: time.Hour, Shard: "s1"})
		}}
		h1 := servicetest.Start(t, servicetest.Options{Clock: clk, Logger: quiet, Join: h,
			Server: server.Config{Authenticator: testAuthenticator{}}}, s1)
		shard1.Store(h1.Conn)
		f.shard1, f.shard1Conn = consentv1.NewConsentServiceClient(h1.Conn), h1.Conn
	}
	return f
}

// tlsNeighbours serves each neighbour of the DSAR service (registered by
// its function) on a production server over TCP with mutual TLS, and
// returns the connections the kit's Dialer makes to them for a production
// DSAR process, which presents its certificate.
func tlsNeighbours(t testing.TB, clk clock.Clock, register map[string]func(*server.Server)) map[string]grpc.ClientConnInterface {
	t.Helper()
	pki := servertest.NewPKI(t)
	cfg := pki.Production(t, `{"rules": [{"identities": ["spiffe://`+servertest.TrustDomain+`/service/server"], "methods": ["*"], "tenants": ["*"]}]}`)
	cfg.Clock, cfg.Logger = clk, quiet
	// The DSAR process: the production profile, the PKI's key pair.
	dsarCfg := cfg
	dsarCfg.Name, dsarCfg.Addr = "lethe-dsar", "127.0.0.1:0"
	completed, err := dsarCfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = completed.Telemetry.Shutdown(context.Background()) })
	roots, err := tlsconfig.LoadPool(cfg.TLSClientCAFile, tlsconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	dialer := service.NewDialer(completed, roots)
	conns := map[string]grpc.ClientConnInterface{}
	for _, n := range dsar.Neighbours {
		reg, ok := register[n.Name]
		if !ok {
			t.Fatalf("no server for the neighbour %s", n.Name)
		}
		conn, err := dialer.Dial(n.Name, servertest.StartTCP(t, cfg, reg))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		conns[n.Name] = conn
	}
	return conns
}

func (f *fixture) id() string { return fmt.Sprint("req-", f.n.Add(1)) }

// tenant creates a tenant and waits until the DSAR and consent services
// learned of it.
func (f *fixture) tenant(t testing.TB, id string, settings *registryv1.TenantSettings) {
	t.Helper()
	servertest.CreateTenant(t, f.registry, &registryv1.CreateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: id, DisplayName: id, Settings: settings}}, func() error {
		if _, err := f.dsar.ListRequests(f.ctx, &dsarv1.ListRequestsRequest{TenantId: id}); err != nil {
			return err
		}
		if _, err := f.consent.ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: id}); err != nil {
			return err
		}
		_, err := f.retention.ListHolds(f.ctx, &retentionv1.ListHoldsRequest{TenantId: id})
		return err
	})
}

func (f *fixture) system(t testing.TB, tenant, id string, mode commonv1.AnswerMode, purposes []string, cats ...string) {
	t.Helper()
	sys := &registryv1.System{SystemId: id, Name: id, Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "SE",
		AnswerMode: mode, PurposeIds: purposes}
	for _, c := range cats {
		sys.Categories = append(sys.Categories, &commonv1.DataCategory{Id: c})
	}
	if _, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: tenant, System: sys}); err != nil {
		t.Fatalf("register %s: %v", id, err)
	}
}

// settled returns once nothing the DSAR service has committed is still on
// its way to systems: the service swept (so a request marked for fan-out
// was fanned out and its directive committed), its outbox published every
// event, and each of systems' consumers has nothing pending or
// unacknowledged (the SDK acknowledges after the handler). An event a
// system has not seen afterwards was never sent; this is the sync point
// for checking that something was not sent.
func (f *fixture) settled(t testing.TB, systems ...*testSystem) {
	t.Helper()
	f.svc.Sweep(f.ctx)
	eventually.True(t, "the DSAR service's outbox published everything", func() bool { return f.svc.Outbox.Depth() == 0 })
	for _, s := range systems {
		for _, name := range s.sub.ConsumerNames() {
			eventually.Succeeds(t, "consumer "+name+" took every event", func() error {
				info, err := f.consumerInfo(name)
				if err != nil {
					return err
				}
				if info.NumPending > 0 || info.NumAckPending > 0 {
					return fmt.Errorf("%d pending, %d unacknowledged", info.NumPending, info.NumAckPending)
				}
				return nil
			})
		}
	}
}

// delivered counts the deliveries of s's consumers so far, redeliveries
// included.
func (f *fixture) delivered(t testing.TB, s *testSystem) uint64 {
	t.Helper()
	var n uint64
	for _, name := range s.sub.ConsumerNames() {
		info, err := f.consumerInfo(name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		n += info.Delivered.Consumer
	}
	return n
}

func (f *fixture) consumerInfo(name string) (*jetstream.ConsumerInfo, error) {
	cons, err := f.deps.JetStream.Consumer(f.ctx, contract.StreamName, name)
	if err != nil {
		return nil, err
	}
	return cons.Info(f.ctx)
}

// file creates a request for subject ada with her e-mail and phone.
func (f *fixture) file(t testing.TB, req *dsarv1.CreateRequestRequest) *dsarv1.Request {
	t.Helper()
	req.RequestId = f.id()
	if req.SubjectId == "" {
		req.SubjectId = "subject-ada"
	}
	if req.Requester == nil {
		req.Requester = &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}
	}
	if req.Identifiers == nil {
		req.Identifiers = adaIdentifiers()
	}
	resp, err := f.dsar.CreateRequest(f.ctx, req)
	if err != nil {
		t.Fatalf("create request: %v", err)
	}
	return resp.Request
}

const (
	adaEmail = "ada.lovelace@example.com"
	adaPhone = "+46701234567"
	adaName  = "Augusta Ada King"
)

func adaIdentifiers() []*commonv1.Identifier {
	return []*commonv1.Identifier{
		{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL, Value: adaEmail},
		{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE, Value: adaPhone},
		{Type: commonv1.IdentifierType_IDENTIFIER_TYPE_NAME, Value: adaName},
	}
}

func (f *fixture) attest(t testing.TB, tenant, id string) *dsarv1.Request {
	t.Helper()
	resp, err := f.dsar.AttestIdentity(f.ctx, &dsarv1.AttestIdentityRequest{RequestId: f.id(), TenantId: tenant, DsarId: id,
		Method: commonv1.VerificationMethod_VERIFICATION_METHOD_LOGIN_ATTESTATION, EvidenceReference: "session-1"})
	if err != nil {
		t.Fatalf("attest: %v", err)
	}
	return resp.Request
}

func (f *fixture) get(t testing.TB, tenant, id string) *dsarv1.Request {
	t.Helper()
	resp, err := f.dsar.GetRequest(f.ctx, &dsarv1.GetRequestRequest{TenantId: tenant, DsarId: id})
	if err != nil {
		t.Fatalf("get request: %v", err)
	}
	return resp.Request
}

func (f *fixture) waitState(t testing.TB, tenant, id string, want dsarv1.RequestState) *dsarv1.Request {
	t.Helper()
	var r *dsarv1.Request
	eventually.True(t, fmt.Sprintf("request %s is %s", id, want), func() bool {
		r = f.get(t, tenant, id)
		return r.State == want
	})
	return r
}

// resend publishes ev to the platform stream again under a new message id,
// as the task tracker's re-send does (outbox.ResendTx), so that the
// stream's de-duplication does not drop it.
func resend(t testing.TB, js jetstream.JetStream, ev *eventsv1.Event) {
	t.Helper()
	natsSubject, err := contract.EventSubject(ev)
	if err != nil {
		t.Fatal(err)
	}
	header, err := contract.EventHeaders(ev)
	if err != nil {
		t.Fatal(err)
	}
	header.Set(jetstream.MsgIDHeader, ev.GetId()+"~test")
	data, err := contract.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: natsSubject, Header: header, Data: data}); err != nil {
		t.Fatalf("re-send %s: %v", ev.GetId(), err)
	}
}

// handler answers one event for a test system.
type handler func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error)

// system is a subscribing test system: an SDK subscriber with its own
// ledger, which records every event it was handed.
type testSystem struct {
	mu     sync.Mutex
	events []*eventsv1.Event
	ledger *ledger.Ledger
	// sub is the subscriber, whose consumers settled waits on.
	sub    *subscriber.Subscriber
	cancel context.CancelFunc
	done   chan error
}

func (s *testSystem) seen() []*eventsv1.Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*eventsv1.Event(nil), s.events...)
}

// subscribe runs a subscriber for system that answers every directive and
// limit with h. ledgerPath reopens an existing ledger (a restart).
func (f *fixture) subscribe(t testing.TB, tenant, system, ledgerPath string, h handler) *testSystem {
	t.Helper()
	if ledgerPath == "" {
		ledgerPath = filepath.Join(t.TempDir(), "ledger.db")
	}
	l, err := ledger.Open(ledgerPath, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testSystem{ledger: l, done: make(chan error, 1)}
	wrap := func(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		ts.mu.Lock()
		ts.events = append(ts.events, ev.Proto())
		ts.mu.Unlock()
		return h(ctx, ev)
	}
	handlers := map[contract.Kind]subscriber.Handler{}
	for _, k := range append(append([]contract.Kind{}, contract.Directives...), contract.Limits...) {
		handlers[k] = wrap
	}
	sub, err := subscriber.New(subscriber.Config{SystemID: system, Tenant: tenant, JetStream: f.deps.JetStream, Ledger: l, Logger: quiet,
		BackOff: []time.Duration{10 * time.Millisecond}, AckWait: time.Second, Workers: 32, Handlers: handlers,
		Identifiers: subscriber.DSARIdentifiers(f.dsarConn)})
	if err != nil {
		t.Fatal(err)
	}
	ts.sub = sub
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- sub.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-ts.done; err != nil {
				t.Errorf("subscriber %s: %v", system, err)
			}
			if err := l.Close(); err != nil {
				t.Errorf("ledger %s: %v", system, err)
			}
		})
	}
	t.Cleanup(stop)
	ts.cancel = stop
	return ts
}

// answer returns a handler that answers directives with out and limits
// with APPLIED.
func answer(out subscriber.Outcome) handler {
	return func(_ context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
		if slices_contains(contract.Limits, ev.Kind()) {
			return subscriber.Applied(), nil
		}
		return out, nil
	}
}

func slices_contains(ks []contract.Kind, k contract.Kind) bool {
	for _, x := range ks {
		if x == k {
			return true
		}
	}
	return false
}

func code(err error) codes.Code { return status.Code(err) }

// reason returns the ErrorInfo reason of err.
func reasonOf(err error) string {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if info, ok := d.(interface{ GetReason() string }); ok {
			return info.GetReason()
		}
	}
	return ""
}

func fields(err error) string {
	var out []string
	for _, v := range apierror.Violations(err) {
		out = append(out, v.Field)
	}
	return strings.Join(out, ",")
}

// bboltUpdate runs fn in a write transaction of a test system's ledger.
func bboltUpdate(l *ledger.Ledger, fn func(tx *bbolt.Tx) error) error { return l.DB().Update(fn) }

// natsMsg is a message to publish as a system that does not use the SDK.
func natsMsg(subject string, h nats.Header, data []byte) *nats.Msg {
	return &nats.Msg{Subject: subject, Header: h, Data: data}
}
