package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
)

// The operator commands reach the platform as kubectl reaches a cluster:
// by default the all-in-one address of `lethe dev`; otherwise through a
// context of the config file (~/.config/lethe/config, or $LETHE_CONFIG),
// which names each service's address and how to authenticate; flags
// override both.

// defaultAddr is where `lethe dev` serves all four services.
const defaultAddr = "127.0.0.1:7400"

// defaultNATS is the embedded NATS server of `lethe dev`.
const defaultNATS = "nats://127.0.0.1:4222"

// contextConfig is one context of the config file.
type contextConfig struct {
	Name string `yaml:"name"`
	// Address serves all four services (lethe dev, or a gateway).
	Address string `yaml:"address,omitempty"`
	// Per-service addresses, when the services run apart. Consent may be
	// a template with {shard} in it (lethe-consent-{shard}:7401): each
	// consent call then goes to the writer of its tenant's shard, which
	// the registry names (platform/shardrouter).
	Registry  string `yaml:"registry,omitempty"`
	Consent   string `yaml:"consent,omitempty"`
	DSAR      string `yaml:"dsar,omitempty"`
	Retention string `yaml:"retention,omitempty"`
	// NATS is the NATS URL `lethe events tail` reads from.
	NATS string `yaml:"nats,omitempty"`
	// TLS, when set, is used for every service.
	TLS *tlsConfig `yaml:"tls,omitempty"`
	// TokenFile holds a bearer token (a JWT, or a dev static token) sent
	// with every call. No secret is ever written in the config itself.
	TokenFile string `yaml:"tokenFile,omitempty"`
	// NATSCreds is a NATS credentials file for events tail.
	NATSCreds string `yaml:"natsCreds,omitempty"`
}

type tlsConfig struct {
	// CA is a PEM bundle of the CAs that sign the services' certificates;
	// empty for the system's roots.
	CA string `yaml:"ca,omitempty"`
	// Cert and Key are a client certificate and key, for mutual TLS.
	Cert string `yaml:"cert,omitempty"`
	Key  string `yaml:"key,omitempty"`
	// ServerName overrides the name the services' certificates are checked
	// against.
	ServerName string `yaml:"serverName,omitempty"`
}

// configFile is ~/.config/lethe/config.
type configFile struct {
	CurrentContext string          `yaml:"currentContext"`
	Contexts       []contextConfig `yaml:"contexts"`
}

// connFlags are the connection flags every operator command takes.
type connFlags struct {
	config, context                    string
	addr                               string
	registry, consent, dsar, retention string
	natsURL                            string
	tlsCA, tlsCert, tlsKey, tlsServer  string
	tokenFile                          string
	timeout                            time.Duration
	output                             string
}

func (c *connFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.config, "config", "", "config file of contexts (default $LETHE_CONFIG or ~/.config/lethe/config)")
	fs.StringVar(&c.context, "context", "", "context of the config file to use (default its currentContext)")
	fs.StringVar(&c.addr, "addr", "", "address serving all four services (default "+defaultAddr+", lethe dev's)")
	fs.StringVar(&c.registry, "registry-addr", "", "the registry's address, when the services run apart")
	fs.StringVar(&c.consent, "consent-addr", "", "the consent service's address; with "+shardrouter.ShardPlaceholder+
		" in it (lethe-consent-"+shardrouter.ShardPlaceholder+":7401), each call goes to the writer of its tenant's consent shard, which the registry names")
	fs.StringVar(&c.dsar, "dsar-addr", "", "the DSAR service's address")
	fs.StringVar(&c.retention, "retention-addr", "", "the retention service's address")
	fs.StringVar(&c.natsURL, "nats-url", "", "NATS URL for events (default "+defaultNATS+")")
	fs.StringVar(&c.tlsCA, "tls-ca", "", "PEM file of the CAs that sign the services' certificates; setting any --tls flag dials with TLS")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "PEM client certificate, for mutual TLS")
	fs.StringVar(&c.tlsKey, "tls-key", "", "PEM key of --tls-cert")
	fs.StringVar(&c.tlsServer, "tls-server-name", "", "name the services' certificates must carry, when it differs from the address")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding a bearer token sent with every call")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "deadline of each call")
}

func (c *connFlags) registerOutput(fs *flag.FlagSet) {
	fs.StringVar(&c.output, "o", "table", "output: table for people, json for scripts")
}

// resolve merges the config file's context with the flags.
func (c *connFlags) resolve() (contextConfig, error) {
	ctx, err := c.fileContext()
	if err != nil {
		return ctx, err
	}
	c.override(&ctx)
	ctx.TokenFile, ctx.NATSCreds = expandHome(ctx.TokenFile), expandHome(ctx.NATSCreds)
	if ctx.TLS != nil {
		ctx.TLS.CA, ctx.TLS.Cert, ctx.TLS.Key = expandHome(ctx.TLS.CA), expandHome(ctx.TLS.Cert), expandHome(ctx.TLS.Key)
	}
	if ctx.Address == "" {
		ctx.Address = defaultAddr
	}
	if ctx.NATS == "" {
		ctx.NATS = defaultNATS
	}
	return ctx, nil
}

// fileContext returns the context --context (or the file's current one)
// names in the config file: --config, $LETHE_CONFIG, or the user's
// config folder. Only that last, implicit file may be missing, and then
// only when no context is named.
func (c *connFlags) fileContext() (contextConfig, error) {
	path := c.config
	if path == "" {
		path = os.Getenv("LETHE_CONFIG")
	}
	explicit := path != ""
	if path == "" {
		if dir, err := os.UserConfigDir(); err == nil {
			path = filepath.Join(dir, "lethe", "config")
		}
	}
	if path == "" {
		return contextConfig{}, nil
	}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, os.ErrNotExist) && !explicit && c.context == "":
		return contextConfig{}, nil
	case err != nil:
		return contextConfig{}, fmt.Errorf("config file: %w", err)
	}
	var cf configFile
	if err := yaml.Unmarshal(data, &cf); err != nil {
		return contextConfig{}, fmt.Errorf("config file %s: %w", path, err)
	}
	name := c.context
	if name == "" {
		name = cf.CurrentContext
	}
	var ctx contextConfig
	found := false
	for _, cc := range cf.Contexts {
		if cc.Name == name {
			ctx, found = cc, true
		}
	}
	if !found && name != "" {
		return ctx, fmt.Errorf("config file %s has no context %q", path, name)
	}
	return ctx, nil
}

// override sets in ctx every connection flag that was given.
func (c *connFlags) override(ctx *contextConfig) {
	override := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	override(&ctx.Address, c.addr)
	override(&ctx.Registry, c.registry)
	override(&ctx.Consent, c.consent)
	override(&ctx.DSAR, c.dsar)
	override(&ctx.Retention, c.retention)
	override(&ctx.NATS, c.natsURL)
	override(&ctx.TokenFile, c.tokenFile)
	if c.tlsCA != "" || c.tlsCert != "" || c.tlsKey != "" || c.tlsServer != "" {
		if ctx.TLS == nil {
			ctx.TLS = &tlsConfig{}
		}
		override(&ctx.TLS.CA, c.tlsCA)
		override(&ctx.TLS.Cert, c.tlsCert)
		override(&ctx.TLS.Key, c.tlsKey)
		override(&ctx.TLS.ServerName, c.tlsServer)
	}
}

// expandHome reads "~/" at the start of a path in the config file as the
// user's home folder, as a shell would.
func expandHome(path string) string {
	if rest, ok := strings.CutPrefix(path, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return path
}

// clients are the four services' clients.
type clients struct {
	registry  registryv1.RegistryServiceClient
	consent   consentv1.ConsentServiceClient
	dsar      dsarv1.DsarServiceClient
	retention retentionv1.RetentionServiceClient
	timeout   time.Duration
	conns     []*grpc.ClientConn
	// consentShard reaches the writer of a consent shard, for the calls
	// that name no tenant to route by.
	consentShard func(shard string) (consentv1.ConsentServiceClient, error)
}

func (c *clients) Close() {
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// call returns a context with the per-call deadline.
func (c *clients) call(parent context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(parent, c.timeout)
}

// dial connects to every service of the resolved context. Connections are
// lazy: nothing is dialled until a call is made.
func (c *connFlags) dial() (*clients, contextConfig, error) {
	ctx, err := c.resolve()
	if err != nil {
		return nil, ctx, err
	}
	opts, err := dialOptions(ctx)
	if err != nil {
		return nil, ctx, err
	}
	cl := &clients{timeout: c.timeout}
	// get is also the shard router's dialler, which calls it when a
	// tenant's shard is first needed.
	var mu sync.Mutex
	conns := map[string]*grpc.ClientConn{}
	get := func(addr string) (*grpc.ClientConn, error) {
		mu.Lock()
		defer mu.Unlock()
		if addr == "" {
			addr = ctx.Address
		}
		if conn, ok := conns[addr]; ok {
			return conn, nil
		}
		conn, err := grpc.NewClient(addr, opts...)
		if err != nil {
			return nil, fmt.Errorf("dial %s: %w", addr, err)
		}
		conns[addr] = conn
		cl.conns = append(cl.conns, conn)
		return conn, nil
	}
	var errs []error
	for _, s := range []struct {
		addr string
		set  func(*grpc.ClientConn) error
	}{
		{ctx.Registry, func(cc *grpc.ClientConn) error { cl.registry = registryv1.NewRegistryServiceClient(cc); return nil }},
		{ctx.DSAR, func(cc *grpc.ClientConn) error { cl.dsar = dsarv1.NewDsarServiceClient(cc); return nil }},
		{ctx.Retention, func(cc *grpc.ClientConn) error { cl.retention = retentionv1.NewRetentionServiceClient(cc); return nil }},
		{ctx.Registry, func(registry *grpc.ClientConn) error {
			consent, err := consentConn(ctx.Consent, registry, get)
			cl.consent = consentv1.NewConsentServiceClient(consent)
			return err
		}},
	} {
		conn, err := get(s.addr)
		if err == nil {
			err = s.set(conn)
		}
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		cl.Close()
		return nil, ctx, err
	}
	cl.consentShard = func(shard string) (consentv1.ConsentServiceClient, error) {
		if !shardrouter.Valid(shard) {
			return nil, fmt.Errorf("%q is not a shard name (s0, s1, ...)", shard)
		}
		conn, err := get(shardrouter.Address(ctx.Consent, shard))
		if err != nil {
			return nil, err
		}
		return consentv1.NewConsentServiceClient(conn), nil
	}
	return cl, ctx, nil
}

// consentConn reaches the consent service at addr. An address with
// {shard} in it is a template, as the DSAR service's --consent-addr: a
// shardrouter.Router asks the registry for each tenant's consent shard
// (once, then from its cache), dials the template with the shard in
// place, and follows a writer's WRONG_SHARD refusal to the shard it
// names. Every consent call of the CLI names its tenant, which is what
// the router routes by.
func consentConn(addr string, registry grpc.ClientConnInterface, get func(string) (*grpc.ClientConn, error)) (grpc.ClientConnInterface, error) {
	if !strings.Contains(addr, shardrouter.ShardPlaceholder) {
		return get(addr)
	}
	return shardrouter.New(shardrouter.Config{Registry: registry, Template: addr,
		Dial: func(shardAddr string) (grpc.ClientConnInterface, error) { return get(shardAddr) }})
}

func dialOptions(ctx contextConfig) ([]grpc.DialOption, error) {
	var opts []grpc.DialOption
	secure := ctx.TLS != nil
	if secure {
		cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: ctx.TLS.ServerName}
		if ctx.TLS.CA != "" {
			pem, err := os.ReadFile(ctx.TLS.CA)
			if err != nil {
				return nil, fmt.Errorf("tls ca: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls ca %s: no PEM certificate in it", ctx.TLS.CA)
			}
			cfg.RootCAs = pool
		}
		if (ctx.TLS.Cert == "") != (ctx.TLS.Key == "") {
			return nil, errors.New("tls: a client certificate needs both cert and key")
		}
		if ctx.TLS.Cert != "" {
			pair, err := tls.LoadX509KeyPair(ctx.TLS.Cert, ctx.TLS.Key)
			if err != nil {
				return nil, fmt.Errorf("tls client certificate: %w", err)
			}
			cfg.Certificates = []tls.Certificate{pair}
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if ctx.TokenFile != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(tokenCredentials{file: ctx.TokenFile, secure: secure}))
	}
	return opts, nil
}

// tokenCredentials reads the bearer token from its file for every call, so
// a rotated token is picked up without a restart.
type tokenCredentials struct {
	file   string
	secure bool
}

func (t tokenCredentials) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	data, err := os.ReadFile(t.file)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return nil, fmt.Errorf("token file %s is empty", t.file)
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

// RequireTransportSecurity lets a token travel in plaintext only to a
// development platform, whose static tokens are not secrets.
func (t tokenCredentials) RequireTransportSecurity() bool { return t.secure }
