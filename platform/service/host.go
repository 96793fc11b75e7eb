package service

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/broker"
	"github.com/lethe-privacy/lethe/platform/flagenv"
	"github.com/lethe-privacy/lethe/platform/server"
)

// EnvPrefix is the prefix of the environment variables that stand in for
// flags: --nats-url is LETHE_NATS_URL.
const EnvPrefix = "LETHE"

// Run registers services on srv, then runs srv and every service's
// background work until ctx ends or one of them fails, and finally closes
// the services. The server stops first, in Kubernetes order, so that no
// call arrives at a service that is shutting down.
func Run(ctx context.Context, srv *server.Server, services []Service) error {
	for _, s := range services {
		s.Register(srv)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	errs := make(chan error, len(services))
	for _, s := range services {
		go func() {
			err := s.Run(ctx)
			if err != nil {
				cancel() // one failed service stops the process; its supervisor restarts it
			}
			errs <- err
		}()
	}
	err := srv.Run(ctx)
	cancel()
	for range services {
		err = errors.Join(err, <-errs)
	}
	for _, s := range services {
		err = errors.Join(err, s.Close())
	}
	return err
}

// StreamFlags binds the platform stream's settings to fs.
func StreamFlags(fs *flag.FlagSet) *broker.StreamConfig {
	cfg := broker.DefaultStreamConfig()
	fs.DurationVar(&cfg.MaxAge, "stream-max-age", cfg.MaxAge, "how long the platform stream keeps events; subscribers de-duplicate for at least this long")
	fs.IntVar(&cfg.Replicas, "stream-replicas", cfg.Replicas, "replicas of the platform stream (3 on a NATS cluster)")
	fs.DurationVar(&cfg.ErasureLedgerMaxAge, "erasure-ledger-max-age", cfg.ErasureLedgerMaxAge,
		"how long the erasure ledger keeps erasure directives for systems restored from a backup: at least the oldest backup a system may restore, and --stream-max-age")
	return &cfg
}

// SignalContext returns a context that ends on SIGINT or SIGTERM.
func SignalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

// hostConfig is a deployable's configuration as its flags and LETHE_*
// variables give it.
type hostConfig struct {
	server       server.Config
	dataDir      string
	natsURL      string
	registryAddr string
	backup       BackupConfig
	out          Outgoing
	neighbours   neighbourAddrs
	stream       *broker.StreamConfig
	// declared are the neighbours the factory calls.
	declared []Neighbour
	// newService builds the service with its own flags (Factory.Flags);
	// nil for Factory.New.
	newService func(Deps) (Service, error)
}

// newFlags binds the flags of f's deployable to a new hostConfig.
func newFlags(f Factory, defaultAddr string) (*flag.FlagSet, *hostConfig) {
	fs := flag.NewFlagSet("lethe-"+f.Name, flag.ContinueOnError)
	c := &hostConfig{neighbours: neighbourAddrs{}, declared: f.Neighbours}
	c.server.RegisterFlags(fs, defaultAddr)
	fs.StringVar(&c.dataDir, "data", "./data", "folder of the service's bbolt file")
	fs.StringVar(&c.natsURL, "nats-url", "nats://127.0.0.1:4222", "NATS server URL(s), comma-separated")
	fs.StringVar(&c.registryAddr, "registry-addr", "127.0.0.1:7404", "gRPC address of the registry service")
	c.neighbours.registerFlags(fs, f.Neighbours)
	fs.StringVar(&c.backup.Dir, "backup-dir", "", "folder that receives a consistent copy of the bbolt file every --backup-every (empty: no backups)")
	fs.DurationVar(&c.backup.Every, "backup-every", time.Hour, "period of the backups to --backup-dir")
	c.out.RegisterFlags(fs)
	c.stream = StreamFlags(fs)
	if f.Flags != nil {
		c.newService = f.Flags(fs)
	}
	return fs, c
}

// FlagSet returns the flags of f's deployable, as its --help lists them;
// each may be given as LETHE_<FLAG>.
func FlagSet(f Factory) *flag.FlagSet {
	fs, _ := newFlags(f, "")
	return fs
}

// parseFlags reads f's deployable's flags from args, then from the
// environment (LETHE_<FLAG>) for those args did not give. The flag set's
// usage (--help) lists every flag, the neighbours' addresses among them.
func parseFlags(f Factory, defaultAddr string, args []string, output io.Writer) (*hostConfig, error) {
	fs, c := newFlags(f, defaultAddr)
	fs.SetOutput(output)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := flagenv.Apply(fs, EnvPrefix); err != nil {
		fmt.Fprintln(fs.Output(), err)
		return nil, err
	}
	return c, nil
}

// Refusals returns, as one error, everything the profile refuses in the
// configuration that args and the LETHE_* environment give f's
// deployable, without opening a file or connecting anywhere: what a start
// would refuse before it reads its certificates. A deployment's tests run
// it with a manifest's arguments and environment.
func Refusals(f Factory, args []string) error {
	c, err := parseFlags(f, "", args, io.Discard)
	if err != nil {
		return err
	}
	return errors.Join(c.refusals()...)
}

// refusals is what the profile refuses in c: the listener's, the outgoing
// connections' and the neighbours' refusals together.
func (c *hostConfig) refusals() []error {
	errs := c.server.Refusals()
	errs = append(errs, c.out.check(c.server.ProfileOrDefault(), c.natsURL)...)
	_, missing := c.neighbours.resolve(c.server.ProfileOrDefault(), c.declared)
	return append(errs, missing...)
}

// Main runs one service as its own deployable, serving only that service
// and connecting to an external NATS server. Flags may be given as
// LETHE_<FLAG> environment variables. It returns the process exit code.
func Main(f Factory, defaultAddr string, args []string) int {
	SetProcs()
	SetMemoryLimit()
	c, err := parseFlags(f, defaultAddr, args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // the flag set printed why
	}
	ctx, stop := SignalContext()
	defer stop()
	if err := StoppedCleanly(ctx, startOne(ctx, f, c)); err != nil {
		fmt.Fprintf(os.Stderr, "lethe-%s: %v\n", f.Name, err)
		return 1
	}
	return 0
}

// StoppedCleanly returns nil when the process was asked to stop (ctx is the
// signal context), whatever the stop interrupted: a SIGTERM during
// start-up, as a rollout may send, is not a crash. A failure that nobody
// asked for keeps its error.
func StoppedCleanly(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func startOne(ctx context.Context, f Factory, c *hostConfig) error {
	cfg := c.server
	cfg.Name = "lethe-" + f.Name
	// The outgoing connections' refusals are checked before the server
	// configuration is completed and reported with its refusals: one
	// failed start names every missing piece.
	refused := c.out.check(cfg.ProfileOrDefault(), c.natsURL)
	neighbours, missing := c.neighbours.resolve(cfg.ProfileOrDefault(), c.declared)
	refusedErr := errors.Join(append(refused, missing...)...)
	completed, err := cfg.Complete(ctx)
	if err != nil {
		return errors.Join(err, refusedErr)
	}
	if refusedErr != nil {
		// Complete started the telemetry providers (the flags give none).
		return errors.Join(refusedErr, completed.Telemetry.Shutdown(ctx))
	}
	logger := completed.Logger
	// A negative argument reads the limit without changing it; no limit
	// reads as the largest int64.
	logger.Info("runtime limits", "gomaxprocs", runtime.GOMAXPROCS(0), "go_memory_limit_bytes", debug.SetMemoryLimit(-1))
	natsOpts, dialer, err := c.out.options(completed, c.natsURL)
	if err != nil {
		return err
	}
	nc, err := broker.Connect(c.natsURL, cfg.Name, logger, natsOpts...)
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
	// Connections are made on first use, so the neighbours may start later.
	registry, conns, err := dialer.dialAll(c.registryAddr, neighbours)
	if err != nil {
		return err
	}
	defer func() { _ = closeConns(registry, conns) }()
	deps := Deps{DataDir: c.dataDir, Clock: completed.Clock, Logger: logger, NATS: nc, JetStream: js, Telemetry: completed.Telemetry, Registry: registry,
		Neighbours: map[string]grpc.ClientConnInterface{}, Backup: c.backup, Profile: cfg.ProfileOrDefault(), Stream: *c.stream}
	for name, conn := range conns {
		deps.Neighbours[name] = conn
	}
	routers, err := dialer.routeSharded(registry, neighbours)
	if err != nil {
		return err
	}
	for name, r := range routers {
		defer func() { _ = r.Close() }()
		deps.Neighbours[name] = r
	}
	build := f.New
	if c.newService != nil {
		build = c.newService
	}
	svc, err := build(deps)
	if err != nil {
		return err
	}
	srv, err := completed.New()
	if err != nil {
		return errors.Join(err, svc.Close())
	}
	return Run(ctx, srv, []Service{svc})
}

// procsPerCPU is how many Ps (GOMAXPROCS) a service process runs for each
// CPU that the Go runtime would use by default.
//
// Every commit ends in fdatasync, which blocks its goroutine for a
// fraction of a millisecond or more, and that goroutine keeps its P until
// the runtime's monitor takes it back, which it does late when the thread
// makes several syscalls in a row, as a bbolt commit does (write, sync,
// write, sync; golang/go#28701). With one P per CPU, a service whose
// commits follow one another leaves cores idle while calls wait to run.
// Measured on two cores, alternating in one process (docs/benchmarks.md):
// two Ps per CPU gave the retention service's single signals 3–12% more
// per second, the consent service's checks about 15% more, and its
// banner decisions the same.
const procsPerCPU = 2

// defaultProcs is the number of Ps the runtime chose at start: one per CPU
// the process may use, or GOMAXPROCS from the environment.
var defaultProcs = runtime.GOMAXPROCS(0)

// Procs is the number of Ps a service process runs: procsPerCPU per CPU, or
// the number GOMAXPROCS in the environment sets.
func Procs() int {
	if os.Getenv("GOMAXPROCS") != "" {
		return defaultProcs
	}
	return procsPerCPU * defaultProcs
}

// SetProcs runs the process with Procs() Ps. It fixes the number for the
// process's life: the runtime no longer follows a changed CPU limit.
func SetProcs() { runtime.GOMAXPROCS(Procs()) }
