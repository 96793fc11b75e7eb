package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/flagenv"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/sdk/connect"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/dsar"
	"github.com/lethe-privacy/lethe/services/registry"
	"github.com/lethe-privacy/lethe/services/retention"
)

// factories are the services lethe dev hosts, in the order they start;
// devConfig.factories varies them by flags.
// The registry comes first because the others learn of tenants from it.
var factories = []service.Factory{registry.Factory, consent.Factory, retention.Factory, dsar.Factory}

// healthNames are the gRPC service names lethe dev reports in health.
var healthNames = []string{registry.ServiceName, consent.ServiceName, retention.ServiceName, dsar.ServiceName}

// devConfig is what lethe dev is started with.
type devConfig struct {
	server     server.Config
	dataDir    string
	natsAddr   string
	syncAlways bool
	devCodes   bool
	stream     *broker.StreamConfig
	// connectSecrets, when set, hosts lethe-connect's runner with the
	// systems' secrets in this folder.
	connectSecrets string
	// connectMaxDeliver and connectBackOff override the SDK's delivery
	// limits for the runner's subscribers (10 deliveries over about 50
	// minutes), so that a failing endpoint shows as failed in a demo.
	connectMaxDeliver int
	connectBackOff    time.Duration
	// connectAddr, when set, serves the webhooks' claim check there.
	connectAddr string
	// public configures the consent service's public endpoint for
	// browsers (--public-addr and its limits).
	public consent.PublicOptions
	// demoDir, when set, is served on demoAddr as a website that uses the
	// public endpoint (examples/web).
	demoDir, demoAddr string
	// replicaAddr, when set, serves a consent read replica there (gRPC),
	// and on replicaHTTPAddr (HTTP/JSON) when that is set too.
	replicaAddr, replicaHTTPAddr string
}

func parseDevFlags(args []string, stderr io.Writer) (devConfig, error) {
	fs := flag.NewFlagSet("lethe dev", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c devConfig
	c.server.RegisterFlags(fs, "127.0.0.1:7400")
	// A developer's Ctrl-C should stop at once, and read as text.
	flagenv.SetDefault(fs, "drain-delay", "0s")
	flagenv.SetDefault(fs, "shutdown-timeout", "5s")
	flagenv.SetDefault(fs, "log-format", "text")
	// HTTP/JSON beside gRPC, in Lethe's range: 8080 is where many a
	// developer's own server already listens, and 7401–7404 are the
	// per-service binaries' gRPC ports.
	flagenv.SetDefault(fs, "http-addr", "127.0.0.1:7410")
	// The public consent endpoint for browsers next to it; the demo page
	// is served from 7412 (examples/).
	c.public.RegisterFlags(fs)
	flagenv.SetDefault(fs, "public-addr", "127.0.0.1:7411")
	fs.StringVar(&c.dataDir, "data", "./data", "folder for the bbolt files and the NATS store; kept across restarts")
	fs.StringVar(&c.natsAddr, "nats-addr", "127.0.0.1:4222", "address of the embedded NATS server")
	fs.BoolVar(&c.devCodes, "dsar-dev-codes", false,
		"verify data-subject requests by one-time code through a development channel that writes each code to this log "+
			"(lethe dsar verify --start, then --code); never where subjects are real")
	fs.BoolVar(&c.syncAlways, "nats-sync-always", true,
		"fsync every JetStream write before acknowledging it. Off, publishing is much faster, but an "+
			"acknowledged event can be lost if the machine loses power before the next periodic sync (2 minutes)")
	fs.StringVar(&c.connectSecrets, "connect-secrets", "",
		"host lethe-connect: answer every WEBHOOK system's events, with its signing secret in <folder>/<tenant>/<system>/signing-secret "+
			"(http:// to loopback allowed, as the development profile allows)")
	fs.IntVar(&c.connectMaxDeliver, "connect-max-deliver", 0, "with --connect-secrets: deliveries of an event before its task fails (0: the SDK's 10)")
	fs.DurationVar(&c.connectBackOff, "connect-backoff", 0, "with --connect-secrets: the delay between deliveries (0: the SDK's 1s, 5s, 30s, 2m, 10m)")
	fs.StringVar(&c.connectAddr, "connect-addr", "", "with --connect-secrets: serve the webhooks' claim check and signed callback on this loopback address (plain http)")
	fs.StringVar(&c.demoDir, "demo", "", "serve this folder of demo pages (examples/web) as a website on --demo-addr, pointing them at the public endpoint")
	fs.StringVar(&c.demoAddr, "demo-addr", DefaultDemoAddr, "with --demo: the loopback address to serve the demo pages on (plain http)")
	fs.StringVar(&c.replicaAddr, "replica-addr", DefaultReplicaAddr,
		"serve a consent read replica here (gRPC), as production runs them beside the writer: Check, CheckBatch and Watch "+
			"from the writer's replication stream, every other call refused READ_ONLY_REPLICA (off or empty: none)")
	fs.StringVar(&c.replicaHTTPAddr, "replica-http-addr", DefaultReplicaHTTPAddr, "with --replica-addr: the replica's HTTP/JSON address (off or empty: none)")
	c.stream = service.StreamFlags(fs)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: lethe dev [flags]\n\nStarts the whole Lethe platform in one process.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := flagenv.Apply(fs, service.EnvPrefix); err != nil {
		return c, err
	}
	c.replicaAddr, c.replicaHTTPAddr = offIsEmpty(c.replicaAddr), offIsEmpty(c.replicaHTTPAddr)
	if c.replicaAddr == "" {
		c.replicaHTTPAddr = ""
	}
	// lethe dev is the development profile: plaintext on loopback, and its
	// services dial each other in plaintext. A deployment runs the
	// per-service binaries (deploy/).
	if c.server.Profile == server.ProfileProduction || c.server.TLSCertFile != "" || c.server.TLSClientCAFile != "" {
		return c, errors.New("lethe dev runs the development profile only (plaintext, loopback); run the per-service binaries for TLS and the production profile (see deploy/README.md)")
	}
	return c, nil
}

// offIsEmpty reads an address flag's "off" as empty: no listener.
func offIsEmpty(addr string) string {
	if strings.EqualFold(strings.TrimSpace(addr), "off") {
		return ""
	}
	return addr
}

func runDev(args []string, stdout, stderr io.Writer) int {
	c, err := parseDevFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "lethe dev:", err)
		return 2
	}
	service.SetProcs()
	service.SetMemoryLimit()
	ctx, stop := service.SignalContext()
	defer stop()
	if err := service.StoppedCleanly(ctx, dev(ctx, c, stdout, stderr)); err != nil {
		fmt.Fprintln(stderr, "lethe dev:", err)
		return 1
	}
	return 0
}

func dev(ctx context.Context, c devConfig, stdout, stderr io.Writer) error {
	c.server.Name = "lethe-dev"
	c.server.LogOutput = stderr
	completed, err := c.server.Complete(ctx)
	if err != nil {
		return err
	}
	logger := completed.Logger

	host, portText, err := net.SplitHostPort(c.natsAddr)
	if err != nil {
		return fmt.Errorf("--nats-addr %q: %w", c.natsAddr, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("--nats-addr %q: port: %w", c.natsAddr, err)
	}
	natsCfg := broker.DefaultEmbeddedConfig(c.dataDir)
	natsCfg.Host, natsCfg.Port, natsCfg.SyncAlways = host, port, c.syncAlways
	natsCfg.ServerName = "lethe-dev"
	embedded, err := broker.StartEmbedded(natsCfg, logger)
	if err != nil {
		return err
	}
	defer embedded.Shutdown()

	nc, err := broker.Connect(embedded.ClientURL(), "lethe-dev", logger)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	provisionCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err := broker.EnsureStream(provisionCtx, js, *c.stream); err != nil {
		return err
	}

	// Listen before anything else so the printed address is the bound one
	// and the services can reach the registry on it.
	unbind, err := bindDev(&c, completed)
	if err != nil {
		return err
	}
	var replica *devReplica
	if c.replicaAddr != "" {
		if replica, err = newDevReplica(ctx, c, completed); err != nil {
			return errors.Join(err, unbind(), completed.Listener.Close())
		}
	}
	deps := service.Deps{DataDir: c.dataDir, NATS: nc, JetStream: js, Stream: *c.stream}
	local, err := service.NewLocal(completed, deps, c.factories())
	if err != nil {
		// NewLocal closed the gRPC listener; the others are still ours.
		err = errors.Join(err, unbind())
		if replica != nil {
			err = errors.Join(err, replica.close())
		}
		return err
	}
	printEndpoints(stdout, completed.Listener.Addr().String(), httpAddr(completed.HTTPListener), embedded.ClientURL(), replica, c)
	if replica == nil {
		return local.Run(ctx)
	}
	return runWithReplica(ctx, local, replica, deps)
}

// bindDev binds the gRPC, HTTP and public listeners, and returns what
// closes those NewLocal does not own once it has failed (all but gRPC).
func bindDev(c *devConfig, completed server.CompletedConfig) (func() error, error) {
	l, err := net.Listen("tcp", c.server.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", c.server.Addr, err)
	}
	completed.Listener = l
	var others []net.Listener
	unbind := func() error {
		var err error
		for _, o := range others {
			err = errors.Join(err, o.Close())
		}
		return err
	}
	if c.server.HTTPAddr != "" {
		hlis, err := net.Listen("tcp", c.server.HTTPAddr)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("listen for HTTP on %s: %w", c.server.HTTPAddr, err), l.Close())
		}
		completed.HTTPListener = hlis
		others = append(others, hlis)
	}
	if c.public.Addr != "" {
		plis, err := net.Listen("tcp", c.public.Addr)
		if err != nil {
			err = fmt.Errorf("listen for the public consent endpoint on %s: %w", c.public.Addr, err)
			return nil, errors.Join(err, unbind(), l.Close())
		}
		c.public.Listener = plis
		others = append(others, plis)
	}
	return unbind, nil
}

// runWithReplica runs the services and the replica until ctx ends or
// either fails, which stops the other: one failed part stops lethe dev,
// as one failed service does.
func runWithReplica(ctx context.Context, local *service.Local, replica *devReplica, deps service.Deps) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	replicaDone := make(chan error, 1)
	go func() {
		err := replica.run(ctx, deps)
		if err != nil {
			cancel()
		}
		replicaDone <- err
	}()
	err := local.Run(ctx)
	cancel()
	return errors.Join(err, <-replicaDone)
}

// factories are the services to host: with --dsar-dev-codes, the DSAR
// service sends its one-time codes through a development channel that logs
// them, so a developer can play the subject.
func (c devConfig) factories() []service.Factory {
	all := slices.Clone(factories)
	all[slices.IndexFunc(all, func(f service.Factory) bool { return f.Name == consent.Factory.Name })] = service.Factory{
		Name:       consent.Factory.Name,
		Neighbours: consent.Factory.Neighbours,
		New: func(deps service.Deps) (service.Service, error) {
			return consent.New(deps, consent.Options{Public: c.public})
		},
	}
	if c.devCodes {
		all[slices.IndexFunc(all, func(f service.Factory) bool { return f.Name == dsar.Factory.Name })] = service.Factory{
			Name:       dsar.Factory.Name,
			Neighbours: dsar.Factory.Neighbours,
			New: func(deps service.Deps) (service.Service, error) {
				return dsar.New(deps, dsar.Options{Channel: &dsar.DevChannel{Logger: deps.Logger}})
			},
		}
	}
	if c.demoDir != "" {
		all = append(all, service.Factory{Name: "demo", New: func(service.Deps) (service.Service, error) {
			if c.public.Listener == nil {
				return nil, errors.New("--demo needs the public consent endpoint (--public-addr)")
			}
			return newDemoSite(c.demoDir, c.demoAddr, c.public.Listener.Addr().String())
		}})
	}
	if c.connectSecrets != "" {
		all = append(all, service.Factory{Name: "connect", New: func(deps service.Deps) (service.Service, error) {
			return newDevConnect(c, deps)
		}})
	}
	return all
}

// devConnect hosts lethe-connect's runner among lethe dev's services, so a
// webhook receiver on the developer's machine is answered without a
// second process. It has no API of its own.
type devConnect struct {
	runner *connect.Runner
	claims *http.Server // nil without --connect-addr
	lis    net.Listener
}

// devConnectResync is how often lethe dev's runner lists the systems: a
// system registered in a demo is answered within seconds.
const devConnectResync = 2 * time.Second

// newDevConnect builds the runner from the services' dependencies: it
// reaches the registry and DSAR on the local connection.
func newDevConnect(c devConfig, deps service.Deps) (*devConnect, error) {
	cfg := connect.Config{JetStream: deps.JetStream, Registry: deps.Registry, DSAR: deps.Registry, SecretsDir: c.connectSecrets,
		DataDir: filepath.Join(c.dataDir, "connect"), AllowHTTP: true, Resync: devConnectResync,
		Logger: deps.Logger.With("service", "connect")}
	if c.connectMaxDeliver < 0 || c.connectBackOff < 0 {
		return nil, errors.New("--connect-max-deliver and --connect-backoff must not be negative")
	}
	cfg.Subscriber = func(s *subscriber.Config) {
		s.MaxDeliver = c.connectMaxDeliver
		if c.connectBackOff > 0 {
			s.BackOff = []time.Duration{c.connectBackOff}
		}
	}
	if deps.Telemetry != nil {
		cfg.Meter = deps.Telemetry.Meter.Meter("github.com/lethe-privacy/lethe/sdk/connect")
	}
	var lis net.Listener
	if c.connectAddr != "" {
		host, _, err := net.SplitHostPort(c.connectAddr)
		if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
			return nil, fmt.Errorf("--connect-addr %q: lethe dev serves the claim check in plain http on a loopback address only", c.connectAddr)
		}
		if lis, err = net.Listen("tcp", c.connectAddr); err != nil {
			return nil, err
		}
		// A key per process: a token outlives no restart, which its
		// fifteen minutes barely notice.
		cfg.ClaimKey = make([]byte, 32)
		_, _ = rand.Read(cfg.ClaimKey)
		cfg.ClaimBaseURL = "http://" + lis.Addr().String()
	}
	r, err := connect.New(cfg)
	if err != nil {
		if lis != nil {
			err = errors.Join(err, lis.Close())
		}
		return nil, err
	}
	d := &devConnect{runner: r, lis: lis}
	if lis != nil {
		d.claims = &http.Server{Handler: r.Handler(), ReadHeaderTimeout: 10 * time.Second}
	}
	return d, nil
}

// Register adds nothing: the runner serves no API.
func (*devConnect) Register(*server.Server) {}

// Run answers the systems, and serves the claim check, until ctx ends.
func (d *devConnect) Run(ctx context.Context) error {
	if d.claims == nil {
		return d.runner.Run(ctx)
	}
	served := make(chan error, 1)
	go func() { served <- d.claims.Serve(d.lis) }()
	err := d.runner.Run(ctx)
	shutdown, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err = errors.Join(err, d.claims.Shutdown(shutdown))
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// Close releases the claim check's listener if Run never served it; Run
// closed the ledgers.
func (d *devConnect) Close() error {
	if d.lis != nil {
		if err := d.lis.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
	}
	return nil
}

// httpAddr is the address lis is bound to, "" when there is none.
func httpAddr(lis net.Listener) string {
	if lis == nil {
		return ""
	}
	return lis.Addr().String()
}

func printEndpoints(w io.Writer, grpcAddr, httpAddr, natsURL string, replica *devReplica, c devConfig) {
	data, err := filepath.Abs(c.dataDir)
	if err != nil {
		data = c.dataDir
	}
	fmt.Fprintf(w, "Lethe is running (development profile: plaintext, local callers only).\n")
	fmt.Fprintf(w, "  gRPC     %s\n", grpcAddr)
	for _, name := range healthNames {
		fmt.Fprintf(w, "           %s\n", name)
	}
	if httpAddr != "" {
		fmt.Fprintf(w, "  HTTP     http://%s (JSON: POST /<service>/<method>, Connect protocol)\n", httpAddr)
	}
	if c.public.Listener != nil {
		fmt.Fprintf(w, "  public   http://%s (consent endpoint for browsers: /v1/tenants/<tenant>/banner, docs/web-consent.md)\n", c.public.Listener.Addr())
	}
	if replica != nil {
		raddr, rhttp := replica.addrs()
		fmt.Fprintf(w, "  replica  %s (consent read replica: Check, CheckBatch, Watch; pass a write's revision as min_revision)\n", raddr)
		if rhttp != "" {
			fmt.Fprintf(w, "           http://%s (the replica's HTTP/JSON)\n", rhttp)
		}
	}
	if c.demoDir != "" {
		for _, page := range demoPages(c.demoDir) {
			fmt.Fprintf(w, "  demo     http://%s/%s/ (%s)\n", c.demoAddr, page, filepath.Join(c.demoDir, page))
		}
	}
	fmt.Fprintf(w, "  NATS     %s (JetStream, stream %s, sync always: %t)\n", natsURL, c.stream.Name, c.syncAlways)
	if c.server.MetricsAddr != "" {
		fmt.Fprintf(w, "  metrics  http://%s/metrics\n", c.server.MetricsAddr)
	}
	fmt.Fprintf(w, "  data     %s\n", data)
	fmt.Fprintf(w, "Try: grpcurl -plaintext %s list\n", grpcAddr)
	if httpAddr != "" {
		fmt.Fprintf(w, "     curl -H 'Content-Type: application/json' -d '{}' http://%s/lethe.registry.v1.RegistryService/ListTenants\n", httpAddr)
	}
	fmt.Fprintf(w, "Stop with Ctrl-C.\n")
}
