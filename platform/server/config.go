// Package server is the bootstrap every Lethe service runs on: a gRPC server
// with health (grpc.health.v1), reflection, OpenTelemetry tracing and
// metrics, structured logs, and an interceptor chain whose slots —
// recovery, error boundary, logging, authentication, authorization,
// validation, audit — are filled once here so that no service implements
// them itself.
//
// A process builds a server in three steps, as SpiceDB does: a Config is
// filled from flags and the environment, Complete validates it and builds
// its dependencies, and Run serves until its context ends, then shuts down
// in Kubernetes order. Tests run the same path over an in-memory listener.
package server

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/telemetry"
)

// Config is what a server is built from. Flags fill the first group; code
// fills the second.
type Config struct {
	// Name names the process in logs, traces and metrics ("lethe-consent").
	Name string
	// Addr is the gRPC listen address, used when Listener is nil.
	Addr string
	// MetricsAddr is where Prometheus metrics are served over HTTP; empty
	// turns the endpoint off. It defaults to loopback because metrics can
	// reveal tenant names and traffic patterns.
	MetricsAddr string
	// DrainDelay is how long the server reports NOT_SERVING before it stops
	// accepting calls, so that load balancers and readiness probes notice
	// and send no new traffic. Set it to the probe period in Kubernetes;
	// zero in tests.
	DrainDelay time.Duration
	// ShutdownTimeout bounds how long in-flight calls may run after the
	// drain before the server closes them.
	ShutdownTimeout time.Duration
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is json or text.
	LogFormat string
	// OTLPEndpoint, when set, receives traces over OTLP/gRPC.
	OTLPEndpoint string
	// OTLPInsecure sends traces to OTLPEndpoint without TLS.
	OTLPInsecure bool
	// PolicyFile, when set and Policy is nil, is an authorization policy
	// file (see auth.FilePolicy): the server loads it at start and reloads
	// it when it changes.
	PolicyFile string

	// Listener, when set, is served instead of listening on Addr: tests
	// pass a bufconn listener, and a caller that must know the bound port
	// before serving passes its own.
	Listener net.Listener
	// Logger, when set, is used instead of one built from LogLevel and
	// LogFormat.
	Logger *slog.Logger
	// LogOutput is where a built logger writes; standard error by default.
	LogOutput io.Writer
	// Telemetry, when set, is used instead of providers built from the
	// OTLP settings; the caller then owns its shutdown.
	Telemetry *telemetry.Providers
	// Authenticator fills the authentication slot; DevAuthenticator when nil.
	Authenticator auth.Authenticator
	// Policy fills the authorization slot; AllowAll when nil.
	Policy auth.Policy
	// Clock stamps audit entries; the wall clock when nil.
	Clock clock.Clock
}

// RegisterFlags binds the flag-settable fields to fs, with defaultAddr as
// the default gRPC address. A host that wants other defaults changes them
// with flagenv.SetDefault.
func (c *Config) RegisterFlags(fs *flag.FlagSet, defaultAddr string) {
	fs.StringVar(&c.Addr, "addr", defaultAddr, "gRPC listen address")
	fs.StringVar(&c.MetricsAddr, "metrics-addr", "127.0.0.1:9464", "Prometheus metrics listen address (empty disables)")
	fs.DurationVar(&c.DrainDelay, "drain-delay", 5*time.Second, "how long to report NOT_SERVING before stopping, so load balancers drain")
	fs.DurationVar(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long in-flight calls may finish before they are cancelled")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log level: debug, info, warn, error")
	fs.StringVar(&c.LogFormat, "log-format", "json", "log format: json or text")
	fs.StringVar(&c.OTLPEndpoint, "otlp-endpoint", "", "OTLP/gRPC collector for traces, host:port (empty keeps traces in-process)")
	fs.BoolVar(&c.OTLPInsecure, "otlp-insecure", false, "send traces to the OTLP collector without TLS")
	fs.StringVar(&c.PolicyFile, "authz-policy", "", "authorization policy file (JSON); reloaded when it changes. Empty: the development policy, which allows everything")
}

// CompletedConfig is a validated Config with its dependencies built. Only
// Complete makes one.
type CompletedConfig struct {
	*completed
}

type completed struct {
	Config
	ownsTelemetry bool
}

// Complete validates c, fills defaults and builds the logger and telemetry
// providers.
func (c Config) Complete(ctx context.Context) (CompletedConfig, error) {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("server name is required"))
	}
	if c.Listener == nil && c.Addr == "" {
		errs = append(errs, errors.New("--addr is required"))
	}
	if c.DrainDelay < 0 {
		errs = append(errs, fmt.Errorf("--drain-delay %s is negative", c.DrainDelay))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("--shutdown-timeout %s is negative", c.ShutdownTimeout))
	}
	if err := errors.Join(errs...); err != nil {
		return CompletedConfig{}, err
	}

	if c.Logger == nil {
		if c.LogOutput == nil {
			c.LogOutput = os.Stderr
		}
		if c.LogLevel == "" {
			c.LogLevel = "info"
		}
		if c.LogFormat == "" {
			c.LogFormat = "json"
		}
		logger, err := telemetry.NewLogger(c.LogOutput, c.LogLevel, c.LogFormat)
		if err != nil {
			return CompletedConfig{}, err
		}
		c.Logger = logger
	}
	c.Logger = c.Logger.With("server", c.Name)

	owns := false
	if c.Telemetry == nil {
		providers, err := telemetry.Setup(ctx, telemetry.Config{
			ServiceName:  c.Name,
			OTLPEndpoint: c.OTLPEndpoint,
			OTLPInsecure: c.OTLPInsecure,
		})
		if err != nil {
			return CompletedConfig{}, err
		}
		c.Telemetry, owns = providers, true
	}
	if c.Authenticator == nil {
		c.Authenticator = auth.DevAuthenticator{}
	}
	if c.Policy == nil && c.PolicyFile != "" {
		policy, err := auth.LoadPolicy(c.PolicyFile, c.Logger)
		if err != nil {
			return CompletedConfig{}, err
		}
		c.Policy = policy
	}
	if c.Policy == nil {
		c.Policy = auth.AllowAll{}
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	return CompletedConfig{&completed{Config: c, ownsTelemetry: owns}}, nil
}
