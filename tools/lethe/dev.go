package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/flagenv"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
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
	fs.StringVar(&c.dataDir, "data", "./data", "folder for the bbolt files and the NATS store; kept across restarts")
	fs.StringVar(&c.natsAddr, "nats-addr", "127.0.0.1:4222", "address of the embedded NATS server")
	fs.BoolVar(&c.devCodes, "dsar-dev-codes", false,
		"verify data-subject requests by one-time code through a development channel that writes each code to this log "+
			"(lethe dsar verify --start, then --code); never where subjects are real")
	fs.BoolVar(&c.syncAlways, "nats-sync-always", true,
		"fsync every JetStream write before acknowledging it. Off, publishing is much faster, but an "+
			"acknowledged event can be lost if the machine loses power before the next periodic sync (2 minutes)")
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
	// lethe dev is the development profile: plaintext on loopback, and its
	// services dial each other in plaintext. A deployment runs the
	// per-service binaries (deploy/).
	if c.server.Profile == server.ProfileProduction || c.server.TLSCertFile != "" || c.server.TLSClientCAFile != "" {
		return c, errors.New("lethe dev runs the development profile only (plaintext, loopback); run the per-service binaries for TLS and the production profile (see deploy/README.md)")
	}
	return c, nil
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
	lis, err := net.Listen("tcp", c.server.Addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", c.server.Addr, err)
	}
	completed.Listener = lis
	if c.server.HTTPAddr != "" {
		hlis, err := net.Listen("tcp", c.server.HTTPAddr)
		if err != nil {
			return errors.Join(fmt.Errorf("listen for HTTP on %s: %w", c.server.HTTPAddr, err), lis.Close())
		}
		completed.HTTPListener = hlis
	}
	// One listener serves all four services, so one connection reaches the
	// registry and every service's neighbours.
	local, err := service.NewDialer(completed, nil).Dial("lethe dev", lis.Addr().String())
	if err != nil {
		return errors.Join(err, lis.Close())
	}
	defer local.Close()

	var services []service.Service
	for _, f := range c.factories() {
		deps := service.Deps{DataDir: c.dataDir, Clock: completed.Clock, Logger: logger, NATS: nc, JetStream: js, Telemetry: completed.Telemetry, Registry: local,
			Neighbours: map[string]grpc.ClientConnInterface{}}
		for _, n := range f.Neighbours {
			deps.Neighbours[n.Name] = local
		}
		svc, err := f.New(deps)
		if err != nil {
			return errors.Join(fmt.Errorf("start %s: %w", f.Name, err), closeAll(services), lis.Close())
		}
		services = append(services, svc)
	}

	srv, err := completed.New()
	if err != nil {
		return errors.Join(err, closeAll(services), lis.Close())
	}
	printEndpoints(stdout, lis.Addr().String(), httpAddr(completed.HTTPListener), embedded.ClientURL(), c)
	return service.Run(ctx, srv, services)
}

// factories are the services to host: with --dsar-dev-codes, the DSAR
// service sends its one-time codes through a development channel that logs
// them, so a developer can play the subject.
func (c devConfig) factories() []service.Factory {
	all := slices.Clone(factories)
	if c.devCodes {
		all[slices.IndexFunc(all, func(f service.Factory) bool { return f.Name == dsar.Factory.Name })] = service.Factory{
			Name:       dsar.Factory.Name,
			Neighbours: dsar.Factory.Neighbours,
			New: func(deps service.Deps) (service.Service, error) {
				return dsar.New(deps, dsar.Options{Channel: &dsar.DevChannel{Logger: deps.Logger}})
			},
		}
	}
	return all
}

func closeAll(services []service.Service) error {
	var err error
	for _, s := range services {
		err = errors.Join(err, s.Close())
	}
	return err
}

// httpAddr is the address lis is bound to, "" when there is none.
func httpAddr(lis net.Listener) string {
	if lis == nil {
		return ""
	}
	return lis.Addr().String()
}

func printEndpoints(w io.Writer, grpcAddr, httpAddr, natsURL string, c devConfig) {
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
