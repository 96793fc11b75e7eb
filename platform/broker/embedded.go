package broker

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// readyTimeout bounds the wait for the client listener once Start has
// returned; it matches nats-server's own test.RunServer.
const readyTimeout = 10 * time.Second

// EmbeddedConfig configures an in-process nats-server with JetStream. The
// embedded server has no authentication, so it listens on loopback unless
// told otherwise; production services connect to an external cluster
// instead.
type EmbeddedConfig struct {
	// Host is the interface the client listener binds to. Empty means
	// 127.0.0.1, never all interfaces: the server accepts any client.
	Host string
	// Port is the client port. -1 picks a free port (for tests; read it
	// back with [Embedded.ClientURL]); 0 means the NATS default, 4222.
	Port int
	// StoreDir is where JetStream keeps streams and consumers (the server
	// adds a "jetstream" folder below it). Required: left empty,
	// nats-server would fall back to a folder under os.TempDir() that a
	// reboot may wipe.
	StoreDir string
	// ServerName names the server in logs and monitoring. Empty means the
	// server's random ID, which changes on every start.
	ServerName string
	// SyncAlways makes the server fsync every JetStream write before it
	// acknowledges the publish.
	//
	// A JetStream publish acknowledgement is not an fsync. Without
	// SyncAlways, nats-server writes to the operating system's page cache
	// and forces a sync only every two minutes (its sync_interval), so an
	// event whose publish was acknowledged — and whose outbox entry was
	// therefore deleted — can be lost on power failure or a kernel crash.
	// Lethe turns SyncAlways on by default (it is the server's
	// "sync_interval: always"). Turning it off trades that durability for
	// throughput: on a 2-core development machine with 256 publishes in
	// flight, about 2,600–3,000 acknowledged publishes per second with
	// SyncAlways against about 70,000 without. BenchmarkPublish measures
	// it; the figures move with the disk, the ratio of twenty or more
	// holds.
	SyncAlways bool
	// MaxStore caps JetStream file storage in bytes. Zero or less lets
	// nats-server size it from the free disk space at start.
	MaxStore int64
	// TLS, when set, makes the client listener speak TLS only. With
	// ClientAuth tls.RequireAndVerifyClientCert and ClientCAs, every client
	// must present a certificate those CAs signed (nats-server's "verify").
	TLS *tls.Config
}

// DefaultEmbeddedConfig returns the configuration of the all-in-one binary:
// loopback on the standard NATS port, storage in dataDir/nats beside the
// services' bbolt files, and every write synced to disk.
func DefaultEmbeddedConfig(dataDir string) EmbeddedConfig {
	return EmbeddedConfig{
		Host:       "127.0.0.1",
		Port:       server.DEFAULT_PORT,
		StoreDir:   filepath.Join(dataDir, "nats"),
		ServerName: "lethe",
		SyncAlways: true,
	}
}

// Embedded is a running in-process nats-server with JetStream enabled.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a nats-server in this process and returns once it
// accepts client connections. Server logs go to logger (nil means
// slog.Default()). The server installs no signal handlers, because the host
// process owns SIGTERM and shuts the server down through
// [Embedded.Shutdown].
func StartEmbedded(cfg EmbeddedConfig, logger *slog.Logger) (*Embedded, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("broker: embedded NATS server: StoreDir is required")
	}
	if logger == nil {
		logger = slog.Default()
	}
	host := cfg.Host
	if host == "" {
		host = "127.0.0.1"
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		Host:       host,
		Port:       cfg.Port,
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		SyncAlways: cfg.SyncAlways,
		// The host process owns signals and logging: without NoSigs the
		// server would trap SIGINT/SIGTERM and exit the process itself.
		NoSigs: true,
		NoLog:  true,
		// The ASCII-art banner is noise in structured logs.
		DisableJetStreamBanner: true,
	}
	if cfg.MaxStore > 0 {
		opts.JetStreamMaxStore = cfg.MaxStore
	}
	if cfg.TLS != nil {
		opts.TLSConfig = cfg.TLS
		opts.TLS = true
		opts.TLSVerify = cfg.TLS.ClientAuth == tls.RequireAndVerifyClientCert
		opts.TLSTimeout = 2 // seconds, nats-server's default
	}

	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("broker: embedded NATS server: %w", err)
	}
	sl := newServerLogger(logger.With(slog.String("component", "nats-server")))
	srv.SetLoggerV2(sl, sl.debug, sl.trace, false)

	// Start returns once the client listener is up, or after a startup
	// failure (port in use, JetStream store unusable). nats-server
	// reports such a failure only through Logger.Fatalf, whose standard
	// implementation exits the process, and then carries on: after a
	// failed bind it still logs "Server is ready". Our logger records the
	// fatal error instead, so the caller gets the reason at once rather
	// than a readiness timeout ten seconds later.
	srv.Start()
	if err := sl.fatalErr(); err != nil {
		shutdown(srv)
		return nil, fmt.Errorf("broker: embedded NATS server did not start: %w", err)
	}
	if !srv.ReadyForConnections(readyTimeout) {
		shutdown(srv)
		return nil, fmt.Errorf("broker: embedded NATS server not ready for connections after %s", readyTimeout)
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL returns the URL clients connect to, with the port the server
// actually bound (useful with Port -1).
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Server returns the underlying nats-server, for what this package does not
// wrap (monitoring, JetStream statistics in tests).
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has closed its clients and
// flushed JetStream storage, so that the store may be reopened at once. It
// is safe to call more than once.
func (e *Embedded) Shutdown() {
	if e == nil {
		return
	}
	shutdown(e.srv)
}

func shutdown(srv *server.Server) {
	srv.Shutdown()
	srv.WaitForShutdown()
}
