package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"buf.build/go/protovalidate"
	"go.opentelemetry.io/otel/metric"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"
	reflectionv1 "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"

	"github.com/lethe-privacy/lethe/gen/go/descriptorset"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/telemetry"
)

// Server is a gRPC server with Lethe's interceptor chain. Register services
// on it, then Run it.
type Server struct {
	cfg       CompletedConfig
	grpc      *grpc.Server
	health    *health.Server
	validator protovalidate.Validator
	codec     requestCodec

	// methods and healthNames are written by Register before Run and only
	// read afterwards, so the interceptors read them without locks.
	methods     map[string]methodInfo
	healthNames []string

	// detailsMu guards details and running: a service sets a detail
	// from its own goroutines while Run turns the server SERVING.
	detailsMu sync.Mutex
	// details are the health details by name, true while the part they
	// name works (see RegisterHealthDetail).
	details map[string]bool
	// running is true once Run has turned the server SERVING.
	running bool
}

// methodInfo is what the chain knows about a registered method.
type methodInfo struct {
	// mutation is true unless the proto marks the method
	// idempotency_level = NO_SIDE_EFFECTS.
	mutation bool
	// audit is the log of the service that owns the method; nil for
	// services that keep no audit log.
	audit *audit.Log
}

// ServiceOption configures a registered service's methods.
type ServiceOption func(*methodInfo)

// WithAudit names the audit log that records the service's mutations and
// its denied calls. A mutation made with package mutation records its
// entry in the file it changes, which may be another of the service's
// files than log's.
func WithAudit(log *audit.Log) ServiceOption {
	return func(m *methodInfo) { m.audit = log }
}

// New builds a server from a completed configuration.
func (cc CompletedConfig) New() (*Server, error) {
	validator, err := protovalidate.New()
	if err != nil {
		return nil, fmt.Errorf("request validator: %w", err)
	}
	s := &Server{
		cfg:       cc,
		health:    health.NewServer(),
		validator: validator,
		methods:   map[string]methodInfo{},
		details:   map[string]bool{},
	}
	if _, ok := cc.Policy.(auth.AllowAll); ok {
		cc.Logger.Warn("authorization: development policy, every authenticated caller may call every method for every tenant")
	}
	if reason := devAuthenticator(cc.Authenticator); reason != "" {
		cc.Logger.Warn("authentication: development profile, accepting " + reason)
	}
	if cc.serverTLS == nil {
		cc.Logger.Warn("transport: plaintext (development profile)")
	}

	// Tracing and RPC metrics come from the stats handler, which wraps
	// every interceptor below, so a span covers the whole call including
	// a recovered panic. Health checks are probed every few seconds and
	// would drown real traces, so they are left out. Which calls are
	// traced is the providers' sampler's decision (telemetry.NewSampler).
	stats, err := telemetry.NewServerHandler(cc.Telemetry, publicMethod)
	if err != nil {
		return nil, err
	}
	opts := []grpc.ServerOption{
		grpc.StatsHandler(stats),
		grpc.ForceServerCodecV2(&s.codec),
		grpc.ChainUnaryInterceptor(s.unaryChain()...),
		grpc.ChainStreamInterceptor(s.streamChain()...),
	}
	if cc.serverTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cc.serverTLS)))
	}
	// Calls run on a pool of goroutines whose stacks have already grown
	// to the interceptor chain's depth, rather than each on a fresh
	// goroutine that grows its stack twice: measured on the retention
	// service's signals, that growth was 7% of the server's CPU. Beyond
	// the pool, gRPC starts goroutines as usual.
	opts = append(opts, grpc.NumStreamWorkers(streamWorkers))
	s.grpc = grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(s.grpc, s.health)
	if err := registerReflection(s.grpc); err != nil {
		return nil, err
	}
	if err := s.registerCertificateExpiry(); err != nil {
		return nil, err
	}
	return s, nil
}

// registerReflection serves gRPC reflection (v1, and v1alpha for older
// clients) from Lethe's descriptors with their comments, so that
// `grpcurl describe` shows each method's and field's documentation.
func registerReflection(s *grpc.Server) error {
	resolver, err := descriptorset.Resolver()
	if err != nil {
		return err
	}
	opts := reflection.ServerOptions{Services: s, DescriptorResolver: resolver}
	reflectionv1.RegisterServerReflectionServer(s, reflection.NewServerV1(opts))
	reflectionv1alpha.RegisterServerReflectionServer(s, reflection.NewServer(opts))
	return nil
}

// streamWorkers is the size of the server's goroutine pool: enough for the
// concurrent calls a busy service sees, at the cost of a parked goroutine
// (a few kilobytes of stack) each.
const streamWorkers = 128

// registerCertificateExpiry reports when the certificate the server
// presents expires, as a gauge of Unix seconds
// (lethe_tls_certificate_expiry_seconds): an operator alerts on it well
// before a rotation is missed. It follows rotations: the value is read from
// the certificate in force at each collection.
func (s *Server) registerCertificateExpiry() error {
	pair := s.cfg.KeyPair
	if pair == nil || s.cfg.Telemetry.Meter == nil {
		return nil
	}
	meter := s.cfg.Telemetry.Meter.Meter("github.com/lethe-privacy/lethe/platform/server")
	expiry, err := meter.Float64ObservableGauge("lethe.tls.certificate_expiry", metric.WithUnit("s"),
		metric.WithDescription("When the certificate the server presents expires, in seconds since 1970."))
	if err != nil {
		return err
	}
	_, err = meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		if c := pair.Certificate(); c != nil && c.Leaf != nil {
			o.ObserveFloat64(expiry, float64(c.Leaf.NotAfter.Unix()))
		}
		return nil
	}, expiry)
	return err
}

// Register serves impl as the service desc describes, and reports it in
// health under its full name. The proto's idempotency_level option decides
// which of its methods are mutations that the audit slot records.
func (s *Server) Register(desc *grpc.ServiceDesc, impl any, opts ...ServiceOption) {
	s.grpc.RegisterService(desc, impl)
	names := make([]string, 0, len(desc.Methods)+len(desc.Streams))
	for _, m := range desc.Methods {
		names = append(names, m.MethodName)
	}
	for _, st := range desc.Streams {
		names = append(names, st.StreamName)
	}
	for _, name := range names {
		info := methodInfo{mutation: isMutation(desc.ServiceName, name)}
		for _, opt := range opts {
			opt(&info)
		}
		s.methods["/"+desc.ServiceName+"/"+name] = info
	}
	s.RegisterHealth(desc.ServiceName)
}

// RegisterHealth reports name in health without serving any method under
// it: a service whose API is not built yet is visible as deployed.
func (s *Server) RegisterHealth(name string) {
	s.healthNames = append(s.healthNames, name)
	s.health.SetServingStatus(name, healthpb.HealthCheckResponse_NOT_SERVING)
}

// HealthDetail is a name in health that a service reports on its own,
// beside its readiness: a part of its work that can fail while the
// service still serves calls, such as a neighbour it cannot reach. A
// readiness probe must not name it, or one failing part would take the
// whole service out of its load balancer; an operator or an alert probes
// it (grpc-health-probe -service NAME) to see the failure within minutes.
type HealthDetail struct {
	srv  *Server
	name string
}

// RegisterHealthDetail reports name in health: NOT_SERVING until the
// server runs, then SERVING while the detail is set so (the default) and
// NOT_SERVING while it is not; NOT_SERVING again from the drain on, like
// every name.
func (s *Server) RegisterHealthDetail(name string) *HealthDetail {
	s.detailsMu.Lock()
	defer s.detailsMu.Unlock()
	s.details[name] = true
	s.health.SetServingStatus(name, servingStatus(s.running))
	return &HealthDetail{srv: s, name: name}
}

// Set reports whether the part the detail names works. Before Run the
// value is kept and reported once the server serves; after the drain
// began it is ignored.
func (d *HealthDetail) Set(ok bool) {
	s := d.srv
	s.detailsMu.Lock()
	defer s.detailsMu.Unlock()
	s.details[d.name] = ok
	if s.running {
		s.health.SetServingStatus(d.name, servingStatus(ok))
	}
}

// Name is the detail's name in health.
func (d *HealthDetail) Name() string { return d.name }

func servingStatus(ok bool) healthpb.HealthCheckResponse_ServingStatus {
	if ok {
		return healthpb.HealthCheckResponse_SERVING
	}
	return healthpb.HealthCheckResponse_NOT_SERVING
}

// isMutation reports whether a method changes state: every method that the
// proto does not declare free of side effects (unknown methods included:
// audit more, never less).
func isMutation(service, method string) bool {
	return !telemetry.ReadMethod("/" + service + "/" + method)
}

// policyReloadEvery is how often a policy file is checked for changes.
const policyReloadEvery = 5 * time.Second

// Run serves until ctx ends, then shuts down in Kubernetes order: health
// turns NOT_SERVING, the server keeps serving for DrainDelay while load
// balancers notice, GracefulStop lets in-flight calls finish for up to
// ShutdownTimeout, and Stop cancels whatever still runs.
func (s *Server) Run(ctx context.Context) error {
	cfg := s.cfg
	lis := cfg.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", cfg.Addr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.Addr, err)
		}
	}

	metrics, err := s.startMetrics()
	if err != nil {
		_ = lis.Close()
		return err
	}
	healthOnly, err := s.startHealthOnly()
	if err != nil {
		_ = lis.Close()
		stopSides(metrics, nil)
		return err
	}

	if policy, ok := cfg.Policy.(*auth.FilePolicy); ok {
		watchCtx, stopWatching := context.WithCancel(ctx)
		defer stopWatching()
		go policy.Watch(watchCtx, policyReloadEvery)
	}

	httpSrv, err := s.startHTTP()
	if err != nil {
		_ = lis.Close()
		stopSides(metrics, healthOnly)
		return err
	}

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.grpc.Serve(lis) }()
	s.setServing(healthpb.HealthCheckResponse_SERVING)
	names := append([]string(nil), s.healthNames...)
	sort.Strings(names)
	cfg.Logger.Info("serving", "addr", lis.Addr().String(), "services", names, "profile", cfg.Profile, "tls", cfg.serverTLS != nil)

	select {
	case <-ctx.Done():
	case err = <-serveErr:
		err = fmt.Errorf("grpc serve: %w", err)
	}
	s.shutdown(httpSrv)
	stopSides(metrics, healthOnly)
	if cfg.ownsTelemetry {
		flushCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		err = errors.Join(err, cfg.Telemetry.Shutdown(flushCtx))
	}
	cfg.Logger.Info("stopped")
	return err
}

// startMetrics serves /metrics on MetricsAddr, when one is set.
func (s *Server) startMetrics() (*http.Server, error) {
	cfg := s.cfg
	if cfg.MetricsAddr == "" {
		return nil, nil
	}
	mlis, err := net.Listen("tcp", cfg.MetricsAddr)
	if err != nil {
		return nil, fmt.Errorf("listen for metrics on %s: %w", cfg.MetricsAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", cfg.Telemetry.MetricsHandler())
	metrics := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = metrics.Serve(mlis) }()
	cfg.Logger.Info("metrics endpoint", "addr", mlis.Addr().String())
	return metrics, nil
}

// startHealthOnly serves grpc.health.v1 alone, in plaintext, on
// HealthListener or HealthAddr, when one is set.
func (s *Server) startHealthOnly() (*grpc.Server, error) {
	cfg := s.cfg
	hlis := cfg.HealthListener
	if hlis == nil && cfg.HealthAddr == "" {
		return nil, nil
	}
	if hlis == nil {
		var err error
		if hlis, err = net.Listen("tcp", cfg.HealthAddr); err != nil {
			return nil, fmt.Errorf("listen for health on %s: %w", cfg.HealthAddr, err)
		}
	}
	// The same health.Server as the main listener's, so that both
	// report NOT_SERVING together during the drain.
	healthOnly := grpc.NewServer()
	healthpb.RegisterHealthServer(healthOnly, s.health)
	go func() { _ = healthOnly.Serve(hlis) }()
	cfg.Logger.Info("health endpoint (plaintext, grpc.health.v1 only)", "addr", hlis.Addr().String())
	return healthOnly, nil
}

// stopSides stops the metrics and health-only endpoints that run.
func stopSides(metrics *http.Server, healthOnly *grpc.Server) {
	if healthOnly != nil {
		healthOnly.Stop()
	}
	if metrics != nil {
		_ = metrics.Close()
	}
}

// setServing reports st under every registered name, and each health
// detail as it was last set while the server serves.
func (s *Server) setServing(st healthpb.HealthCheckResponse_ServingStatus) {
	s.health.SetServingStatus("", st)
	for _, name := range s.healthNames {
		s.health.SetServingStatus(name, st)
	}
	s.detailsMu.Lock()
	defer s.detailsMu.Unlock()
	s.running = st == healthpb.HealthCheckResponse_SERVING
	for name, ok := range s.details {
		s.health.SetServingStatus(name, servingStatus(ok && s.running))
	}
}

func (s *Server) shutdown(httpSrv *http.Server) {
	cfg := s.cfg
	s.detailsMu.Lock()
	s.running = false
	s.detailsMu.Unlock()
	// Shutdown turns every status NOT_SERVING and ignores later updates.
	s.health.Shutdown()
	if cfg.DrainDelay > 0 {
		cfg.Logger.Info("draining", "delay", cfg.DrainDelay)
		time.Sleep(cfg.DrainDelay)
	}
	// One deadline for both listeners. HTTP stops first: its calls are
	// gRPC calls through grpc.Server.ServeHTTP, which GracefulStop would
	// cancel (grpc-go drains such a call by closing its transport), so
	// Shutdown waits for them while the gRPC server still runs them.
	deadline := time.Now().Add(cfg.ShutdownTimeout)
	httpCtx, cancelHTTP := context.WithDeadline(context.Background(), deadline)
	stopHTTP(httpCtx, httpSrv)
	cancelHTTP()
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		cfg.Logger.Warn("shutdown timeout passed, cancelling in-flight calls", "timeout", cfg.ShutdownTimeout)
		s.grpc.Stop()
		<-stopped
	}
}
