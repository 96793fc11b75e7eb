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
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"time"

	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
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
	// TraceReadRatio is the share of reads (methods the proto marks
	// NO_SIDE_EFFECTS) traced when the caller's trace is not sampled:
	// telemetry.DefaultReadRatio when zero, none when negative, all at 1.
	// Changes of state and failed calls are always traced.
	TraceReadRatio float64
	// PolicyFile, when set and Policy is nil, is an authorization policy
	// file (see auth.FilePolicy): the server loads it at start and reloads
	// it when it changes.
	PolicyFile string
	// Profile is ProfileDev (the default) or ProfileProduction, which
	// refuses to start without TLS, real authentication and a policy file.
	Profile string
	// TLSCertFile and TLSKeyFile, when set, make the listener speak TLS
	// with this PEM certificate chain and key, reloaded when they change.
	// The pair is also what the process presents when it dials the
	// registry and NATS.
	TLSCertFile string
	TLSKeyFile  string
	// TLSClientCAFile, when set, makes TLS mutual: every caller must
	// present a certificate that one of these PEM CAs signed.
	TLSClientCAFile string
	// TrustDomain, when set, identifies callers by the SPIFFE id
	// (spiffe://<TrustDomain>/...) of their verified client certificate;
	// it needs TLSClientCAFile.
	TrustDomain string
	// JWTKeysFile, JWTIssuer and JWTAudience, when set, identify callers
	// by a signed JWT bearer token (see auth.JWTAuthenticator).
	JWTKeysFile string
	JWTIssuer   string
	JWTAudience string
	// TokensFile, development profile only, is a file of static bearer
	// tokens (see auth.TokenAuthenticator).
	TokensFile string
	// HealthAddr, when set, serves grpc.health.v1 alone, in plaintext and
	// without authentication, for probes that cannot speak TLS (the
	// kubelet's gRPC probe). Nothing else is served on it.
	HealthAddr string
	// HTTPAddr, when set, serves every registered service as HTTP/JSON
	// (the Connect protocol) through the same interceptor chain, with the
	// gRPC listener's TLS configuration. Empty turns it off.
	HTTPAddr string

	// Listener, when set, is served instead of listening on Addr: tests
	// pass a bufconn listener, and a caller that must know the bound port
	// before serving passes its own.
	Listener net.Listener
	// Logger, when set, is used instead of one built from LogLevel and
	// LogFormat.
	Logger *slog.Logger
	// HealthListener, when set, is served as HealthAddr would be.
	HealthListener net.Listener
	// HTTPListener, when set, is served as HTTPAddr would be.
	HTTPListener net.Listener
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
	// FileWatch tunes how certificate files are watched for rotation.
	FileWatch tlsconfig.Options
}

// The profiles a server runs in.
const (
	// ProfileDev is for a developer's machine and tests: plaintext on
	// loopback unless TLS is configured, local callers accepted as
	// auth.DevIdentityName, every call allowed unless a policy is given.
	ProfileDev = "dev"
	// ProfileProduction refuses to start unless the listener speaks TLS,
	// callers are authenticated by certificate or JWT, and a policy file
	// decides what they may do.
	ProfileProduction = "production"
)

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
	c.TraceReadRatio = telemetry.DefaultReadRatio
	fs.Func("trace-read-ratio", fmt.Sprintf("share of reads (NO_SIDE_EFFECTS methods such as Check) traced when the caller's trace is not sampled, "+
		"from 0 (none) to 1 (all) (default %g). Changes of state and failed calls are always traced", telemetry.DefaultReadRatio),
		func(v string) error {
			r, err := strconv.ParseFloat(v, 64)
			if err != nil || r < 0 || r > 1 {
				return fmt.Errorf("%q is not a share between 0 and 1", v)
			}
			if r == 0 {
				r = -1 // none; zero in a Config means the default
			}
			c.TraceReadRatio = r
			return nil
		})
	fs.StringVar(&c.PolicyFile, "authz-policy", "", "authorization policy file (JSON); reloaded when it changes. Empty: the development policy, which allows everything (refused in production)")
	fs.StringVar(&c.Profile, "profile", ProfileDev, "dev or production; production refuses to start without TLS, certificate or JWT authentication and a policy file")
	fs.StringVar(&c.TLSCertFile, "tls-cert", "", "PEM certificate chain of this process: served on the gRPC listener, presented to the registry and NATS; reloaded when it changes")
	fs.StringVar(&c.TLSKeyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&c.TLSClientCAFile, "tls-client-ca", "", "PEM CA bundle that signs callers' certificates; when set every caller must present one (mutual TLS)")
	fs.StringVar(&c.TrustDomain, "trust-domain", "", "SPIFFE trust domain of callers: a verified client certificate's spiffe://<domain>/... URI is the caller's identity")
	fs.StringVar(&c.JWTKeysFile, "jwt-keys", "", "JWKS or PEM file of the public keys bearer JWTs are signed with (ES256, EdDSA, RS256); reloaded when it changes")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "required iss claim of bearer JWTs")
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", "required aud claim of bearer JWTs")
	fs.StringVar(&c.TokensFile, "dev-tokens", "", "file of static bearer tokens (JSON), development profile only")
	fs.StringVar(&c.HTTPAddr, "http-addr", "", "HTTP/JSON listen address (Connect protocol, same TLS, authentication and policy as gRPC; empty disables)")
	fs.StringVar(&c.HealthAddr, "health-addr", "", "plaintext listen address serving only grpc.health.v1, for probes that cannot speak TLS (empty disables)")
}

// CompletedConfig is a validated Config with its dependencies built. Only
// Complete makes one.
type CompletedConfig struct {
	*completed
}

type completed struct {
	Config
	ownsTelemetry bool
	// KeyPair is the process's certificate, nil in plaintext; a host
	// presents it when it dials other services and NATS.
	KeyPair *tlsconfig.KeyPair
	// serverTLS is the listener's TLS configuration, nil in plaintext.
	serverTLS *tls.Config
}

// Complete validates c, fills defaults and builds the logger and telemetry
// providers.
func (c Config) Complete(ctx context.Context) (CompletedConfig, error) {
	if c.Profile == "" {
		c.Profile = ProfileDev
	}
	if err := errors.Join(append(c.checkRequired(), c.checkProfile()...)...); err != nil {
		return CompletedConfig{}, err
	}
	if err := c.completeLogger(); err != nil {
		return CompletedConfig{}, err
	}
	keyPair, serverTLS, err := c.loadTLS()
	if err != nil {
		return CompletedConfig{}, err
	}
	if err := c.completeAuth(); err != nil {
		return CompletedConfig{}, err
	}
	if c.Clock == nil {
		c.Clock = clock.Real{}
	}
	// Telemetry last: its providers run goroutines that a failed Complete
	// would leave behind.
	owns := false
	if c.Telemetry == nil {
		providers, err := telemetry.Setup(ctx, telemetry.Config{
			ServiceName:  c.Name,
			OTLPEndpoint: c.OTLPEndpoint,
			OTLPInsecure: c.OTLPInsecure,
			ReadRatio:    c.TraceReadRatio,
		})
		if err != nil {
			return CompletedConfig{}, err
		}
		c.Telemetry, owns = providers, true
	}
	return CompletedConfig{&completed{Config: c, ownsTelemetry: owns, KeyPair: keyPair, serverTLS: serverTLS}}, nil
}

// checkRequired returns what c lacks or has out of range whatever the
// profile.
func (c *Config) checkRequired() []error {
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
	if c.TraceReadRatio > 1 {
		errs = append(errs, fmt.Errorf("--trace-read-ratio %g is above 1 (every read)", c.TraceReadRatio))
	}
	return errs
}

// completeLogger builds the logger from the flags unless one is given,
// names the server in it, and lends it to the file watcher.
func (c *Config) completeLogger() error {
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
			return err
		}
		c.Logger = logger
	}
	c.Logger = c.Logger.With("server", c.Name)
	if c.FileWatch.Logger == nil {
		c.FileWatch.Logger = c.Logger
	}
	return nil
}

// loadTLS loads the certificate and, for mutual TLS, the client CAs; both
// results are nil in plaintext.
func (c *Config) loadTLS() (*tlsconfig.KeyPair, *tls.Config, error) {
	if c.TLSCertFile == "" {
		return nil, nil, nil
	}
	pair, err := tlsconfig.LoadKeyPair(c.TLSCertFile, c.TLSKeyFile, c.FileWatch)
	if err != nil {
		return nil, nil, fmt.Errorf("--tls-cert: %w", err)
	}
	var clientCAs *tlsconfig.Pool
	if c.TLSClientCAFile != "" {
		if clientCAs, err = tlsconfig.LoadPool(c.TLSClientCAFile, c.FileWatch); err != nil {
			return nil, nil, fmt.Errorf("--tls-client-ca: %w", err)
		}
	}
	return pair, tlsconfig.Server(pair, clientCAs), nil
}

// completeAuth fills the authenticator from the flags and the policy from
// its file, allowing everything when none is given (which production has
// refused already).
func (c *Config) completeAuth() error {
	if c.Authenticator == nil {
		a, err := c.buildAuthenticator()
		if err != nil {
			return err
		}
		c.Authenticator = a
	}
	if c.Policy == nil && c.PolicyFile != "" {
		policy, err := auth.LoadPolicy(c.PolicyFile, c.Logger)
		if err != nil {
			return err
		}
		c.Policy = policy
	}
	if c.Policy == nil {
		c.Policy = auth.AllowAll{}
	}
	return nil
}

// ProfileOrDefault is c's profile, ProfileDev when none is set.
func (c Config) ProfileOrDefault() string {
	if c.Profile == "" {
		return ProfileDev
	}
	return c.Profile
}

// Refusals returns what the profile refuses in c, every piece at once, as
// Complete would before it reads a file: a host reports them with its own
// refusals, and a deployment's tests check a manifest's configuration
// with them.
func (c Config) Refusals() []error {
	c.Profile = c.ProfileOrDefault()
	return c.checkProfile()
}

// checkProfile returns what the profile refuses in c. Production names
// every missing piece at once, so that one failed start tells an operator
// all that is left to configure.
func (c *Config) checkProfile() []error {
	errs := c.checkFlagPairs()
	switch c.Profile {
	case ProfileDev:
		errs = append(errs, c.devRefusals()...)
	case ProfileProduction:
		errs = append(errs, c.productionRefusals()...)
	default:
		errs = append(errs, fmt.Errorf("--profile %q is not %s or %s", c.Profile, ProfileDev, ProfileProduction))
	}
	return errs
}

// usesJWT reports whether any of the JWT flags is set.
func (c *Config) usesJWT() bool {
	return c.JWTKeysFile != "" || c.JWTIssuer != "" || c.JWTAudience != ""
}

// checkFlagPairs returns the flags set without those they need, in any
// profile.
func (c *Config) checkFlagPairs() []error {
	var errs []error
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		errs = append(errs, errors.New("--tls-cert and --tls-key go together"))
	}
	if c.TLSClientCAFile != "" && c.TLSCertFile == "" {
		errs = append(errs, errors.New("--tls-client-ca needs --tls-cert and --tls-key: mutual TLS is TLS first"))
	}
	if c.TrustDomain != "" {
		if err := auth.ValidTrustDomain(c.TrustDomain); err != nil {
			errs = append(errs, fmt.Errorf("--trust-domain: %w", err))
		}
		if c.TLSClientCAFile == "" {
			errs = append(errs, errors.New("--trust-domain needs --tls-client-ca: identities come from client certificates that CA verified"))
		}
	}
	if c.usesJWT() && (c.JWTKeysFile == "" || c.JWTIssuer == "" || c.JWTAudience == "") {
		errs = append(errs, errors.New("--jwt-keys, --jwt-issuer and --jwt-audience go together"))
	}
	return errs
}

// devRefusals returns what the development profile refuses in c: a
// plaintext listener, gRPC or HTTP, that other machines could reach.
func (c *Config) devRefusals() []error {
	var errs []error
	if c.TLSCertFile == "" && c.Listener == nil && c.Addr != "" {
		if err := requireLoopback("--addr", c.Addr); err != nil {
			errs = append(errs, err)
		}
	}
	if c.TLSCertFile == "" && c.HTTPListener == nil && c.HTTPAddr != "" {
		if err := requireLoopback("--http-addr", c.HTTPAddr); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

// productionRefusals returns what the production profile refuses in c:
// plaintext, static tokens, no authenticator or a development one, and no
// policy or the allow-all one.
func (c *Config) productionRefusals() []error {
	var errs []error
	if c.TLSCertFile == "" {
		errs = append(errs, errors.New("production refuses a plaintext listener: set --tls-cert and --tls-key"))
	}
	if c.TokensFile != "" {
		errs = append(errs, errors.New("production refuses static tokens (--dev-tokens): use client certificates or JWTs"))
	}
	if c.Authenticator == nil && c.TrustDomain == "" && !c.usesJWT() {
		errs = append(errs, errors.New("production needs an authenticator: client certificates (--tls-client-ca and --trust-domain) or JWTs (--jwt-keys, --jwt-issuer, --jwt-audience)"))
	}
	if reason := devAuthenticator(c.Authenticator); reason != "" {
		errs = append(errs, errors.New("production refuses "+reason))
	}
	if _, ok := c.Policy.(auth.AllowAll); ok {
		errs = append(errs, errors.New("production refuses the allow-all policy: set --authz-policy"))
	}
	if c.Policy == nil && c.PolicyFile == "" {
		errs = append(errs, errors.New("production needs an authorization policy: set --authz-policy (everything else is denied)"))
	}
	return errs
}

// devAuthenticator names the development-only authenticator in a, if any.
func devAuthenticator(a auth.Authenticator) string {
	switch a := a.(type) {
	case auth.DevAuthenticator, *auth.DevAuthenticator:
		return "the development authenticator (local callers as " + auth.DevIdentityName + ")"
	case *auth.TokenAuthenticator:
		return "static tokens"
	case auth.Chain:
		for _, inner := range a {
			if reason := devAuthenticator(inner); reason != "" {
				return reason
			}
		}
	}
	return ""
}

// requireLoopback refuses a plaintext listen address that other machines
// can reach: the development profile has no transport security, and its
// authenticator would refuse remote callers anyway.
func requireLoopback(flag, addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: %w", flag, addr, err)
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
		return nil
	}
	return fmt.Errorf("the development profile serves plaintext on loopback only, and %s %q is not a loopback address: "+
		"listen on 127.0.0.1, or configure TLS (--tls-cert, --tls-key) or --profile production", flag, addr)
}

// buildAuthenticator fills the authentication slot from the flags:
// bearer tokens (static in development, JWTs), then client certificates,
// and in development local callers last.
func (c *Config) buildAuthenticator() (auth.Authenticator, error) {
	var chain auth.Chain
	if c.TokensFile != "" {
		tokens, err := auth.LoadTokens(c.TokensFile, c.Logger)
		if err != nil {
			return nil, fmt.Errorf("--dev-tokens: %w", err)
		}
		chain = append(chain, tokens)
	}
	if c.JWTKeysFile != "" {
		jwt, err := auth.NewJWTAuthenticator(auth.JWTConfig{
			KeysFile: c.JWTKeysFile, Issuer: c.JWTIssuer, Audience: c.JWTAudience, Logger: c.Logger,
		})
		if err != nil {
			return nil, fmt.Errorf("--jwt-keys: %w", err)
		}
		chain = append(chain, jwt)
	}
	if c.TrustDomain != "" {
		chain = append(chain, auth.CertAuthenticator{TrustDomain: c.TrustDomain})
	}
	if c.Profile == ProfileProduction {
		return chain, nil
	}
	if len(chain) == 0 {
		return auth.DevAuthenticator{}, nil
	}
	return append(chain, auth.DevAuthenticator{}), nil
}
