// Command lethe-connect answers, for every system registered with answer
// mode WEBHOOK or CONNECTOR, that system's Lethe events: it delivers them
// to the system's signed webhook, or calls the processor's deletion API
// through a connector (package github.com/lethe-privacy/lethe/sdk/connect).
//
// Against lethe dev on this machine:
//
//	go run ./sdk/connect/cmd/lethe-connect --secrets ./secrets --data ./connect-data --dev
//
// In production, over TLS everywhere, as the NATS user the deployment gives
// the runner:
//
//	lethe-connect --nats-url tls://nats.lethe.svc:4222 --nats-user lethe-connect \
//	  --nats-password-file /run/secrets/nats-password --nats-ca ca.crt \
//	  --registry-addr lethe-registry:7404 --dsar-addr lethe-dsar:7402 \
//	  --grpc-ca ca.crt --grpc-cert tls.crt --grpc-key tls.key \
//	  --secrets /run/secrets/lethe-connect --data /var/lib/lethe-connect \
//	  --claims-addr :8443 --claims-url https://connect.lethe.example --claims-key-file /run/secrets/claim-key \
//	  --claims-tls-cert tls.crt --claims-tls-key tls.key
//
// A webhook system's signing secret is <secrets>/<tenant>/<system>/signing-secret
// ("whsec_" and base64, as Standard Webhooks gives it), with
// signing-secret.previous beside it during a rotation.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/lethe-privacy/lethe/sdk/connect"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/sdk/connection"
)

func main() {
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := run(log, os.Args[1:]); err != nil {
		log.Error("lethe-connect stopped", "error", err)
		os.Exit(1)
	}
}

// options are lethe-connect's flags.
type options struct {
	natsURL, registryAddr, dsarAddr, webhookCA, secrets, data, tenants string
	nats                                                               connection.NATS
	grpc                                                               grpcFlags
	resync, callbackDeadline                                           time.Duration
	dev                                                                bool
	claimsAddr, claimsURL, claimsKeyFile, claimsCert, claimsKey        string
	healthAddr                                                         string
}

func parseFlags(args []string) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("lethe-connect", flag.ContinueOnError)
	fs.StringVar(&o.natsURL, "nats-url", nats.DefaultURL, "Lethe's NATS server")
	o.nats.RegisterFlags(fs)
	fs.StringVar(&o.registryAddr, "registry-addr", "127.0.0.1:7404", "the registry service's gRPC address")
	fs.StringVar(&o.dsarAddr, "dsar-addr", "127.0.0.1:7402", "the DSAR service's gRPC address, for the claim check; empty for none")
	fs.StringVar(&o.grpc.caFile, "grpc-ca", "", "CA certificate of the services' TLS; without it the services are reached in plaintext, on loopback only")
	fs.StringVar(&o.grpc.certFile, "grpc-cert", "", "client certificate for mutual TLS with the services")
	fs.StringVar(&o.grpc.keyFile, "grpc-key", "", "client key for mutual TLS with the services")
	fs.StringVar(&o.webhookCA, "webhook-ca", "", "extra CA certificates (PEM) to trust for webhook endpoints, beside the system's")
	fs.StringVar(&o.secrets, "secrets", "", "folder of the systems' secrets, <tenant>/<system>/<name> (required)")
	fs.StringVar(&o.data, "data", "lethe-connect-data", "folder of the systems' ledgers")
	fs.StringVar(&o.tenants, "tenants", "", "comma-separated tenants to serve; every tenant when empty")
	fs.DurationVar(&o.resync, "resync", connect.DefaultResync, "how often to list the registered systems again")
	fs.BoolVar(&o.dev, "dev", false, "development profile: allow http:// webhooks to loopback")
	fs.StringVar(&o.claimsAddr, "claims-addr", "", "serve the webhooks' claim check and signed callback on this address (with --claims-url and --claims-key-file); none when empty")
	fs.DurationVar(&o.callbackDeadline, "callback-deadline", webhook.DefaultCallbackDeadline, "with --claims-addr: how long an event a receiver accepted (202) waits for its callback before its task fails")
	fs.StringVar(&o.claimsURL, "claims-url", "", "the public https base URL of --claims-addr, as receivers reach it")
	fs.StringVar(&o.claimsKeyFile, "claims-key-file", "", "file of the key that signs claim tokens (32 random bytes or more, base64), the same for every replica")
	fs.StringVar(&o.claimsCert, "claims-tls-cert", "", "certificate of the claim check's HTTPS listener")
	fs.StringVar(&o.claimsKey, "claims-tls-key", "", "key of the claim check's HTTPS listener")
	fs.StringVar(&o.healthAddr, "health-addr", "", "serve /healthz (alive) and /readyz (the systems listed, NATS connected) in plaintext HTTP on this address, for probes; none when empty")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.secrets == "" {
		return nil, errors.New("--secrets is required")
	}
	return o, nil
}

func run(log *slog.Logger, args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	natsOpts, err := o.nats.Options("lethe-connect")
	if err != nil {
		return err
	}
	conn, err := nats.Connect(o.natsURL, natsOpts...)
	if err != nil {
		return err
	}
	defer conn.Close()
	js, err := jetstream.New(conn)
	if err != nil {
		return err
	}
	creds, err := o.grpc.credentials()
	if err != nil {
		return err
	}
	registry, err := dial(o.registryAddr, creds)
	if err != nil {
		return err
	}
	defer registry.Close()
	cfg := connect.Config{JetStream: js, Registry: registry, SecretsDir: o.secrets, DataDir: o.data, AllowHTTP: o.dev,
		Resync: o.resync, CallbackDeadline: o.callbackDeadline, Logger: log}
	if o.dsarAddr != "" {
		dsar, err := dial(o.dsarAddr, creds)
		if err != nil {
			return err
		}
		defer dsar.Close()
		cfg.DSAR = dsar
	}
	if o.tenants != "" {
		cfg.Tenants = strings.Split(o.tenants, ",")
	}
	if cfg.TLS, err = webhookTLS(o.webhookCA); err != nil {
		return err
	}
	if err := o.claims(&cfg); err != nil {
		return err
	}
	runner, err := connect.New(cfg)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var servers []listener
	if o.claimsAddr != "" {
		servers = append(servers, listener{name: "claim check", certFile: o.claimsCert, keyFile: o.claimsKey,
			srv: &http.Server{Addr: o.claimsAddr, Handler: runner.Handler(), ReadHeaderTimeout: 10 * time.Second,
				TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}})
	}
	if o.healthAddr != "" {
		servers = append(servers, listener{name: "health endpoint",
			srv: &http.Server{Addr: o.healthAddr, Handler: runner.HealthHandler(), ReadHeaderTimeout: 10 * time.Second}})
	}
	return serve(ctx, stop, runner, servers)
}

// webhookTLS trusts the CA certificates in file beside the system's; nil
// (the system's roots) without a file.
func webhookTLS(file string) (*tls.Config, error) {
	if file == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--webhook-ca %s holds no PEM certificate", file)
	}
	return &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}, nil
}

// claims configures the claim check when --claims-addr is set.
func (o *options) claims(cfg *connect.Config) error {
	if o.claimsAddr == "" {
		return nil
	}
	if o.claimsURL == "" || o.claimsKeyFile == "" || cfg.DSAR == nil {
		return errors.New("--claims-addr needs --claims-url, --claims-key-file and --dsar-addr")
	}
	if !o.dev && (o.claimsCert == "" || o.claimsKey == "" || !strings.HasPrefix(o.claimsURL, "https://")) {
		return errors.New("the claim check hands out identifiers: serve it over TLS (--claims-tls-cert, --claims-tls-key, an https --claims-url), or run with --dev")
	}
	raw, err := os.ReadFile(o.claimsKeyFile)
	if err != nil {
		return err
	}
	if cfg.ClaimKey, err = base64.StdEncoding.DecodeString(strings.TrimSpace(string(raw))); err != nil {
		return fmt.Errorf("--claims-key-file: not base64: %w", err)
	}
	cfg.ClaimBaseURL = o.claimsURL
	return nil
}

// listener is an HTTP server lethe-connect runs beside its runner: over
// TLS when it has a certificate.
type listener struct {
	name              string
	srv               *http.Server
	certFile, keyFile string
}

// serve runs the runner and its servers until ctx ends or any of them
// fails, then stops the rest.
func serve(ctx context.Context, stop func(), runner *connect.Runner, servers []listener) error {
	served := make(chan error, len(servers))
	for _, l := range servers {
		go func() {
			var err error
			if l.certFile != "" {
				err = l.srv.ListenAndServeTLS(l.certFile, l.keyFile)
			} else {
				err = l.srv.ListenAndServe()
			}
			served <- fmt.Errorf("%s: %w", l.name, err)
		}()
	}
	runErr := make(chan error, 1)
	go func() { runErr <- runner.Run(ctx) }()
	var err error
	select {
	case err = <-served:
		stop()
		err = errors.Join(err, <-runErr)
	case err = <-runErr:
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, l := range servers {
		err = errors.Join(err, l.srv.Shutdown(shutdown))
	}
	return err
}

// dial connects to a service: over TLS when creds is set, in plaintext
// only to a loopback address.
func dial(addr string, creds credentials.TransportCredentials) (*grpc.ClientConn, error) {
	if creds == nil {
		host, _, err := net.SplitHostPort(addr)
		ip := net.ParseIP(host)
		if err != nil || (host != "localhost" && (ip == nil || !ip.IsLoopback())) {
			return nil, fmt.Errorf("%s is not a loopback address: give --grpc-ca (and --grpc-cert, --grpc-key) to reach it over TLS", addr)
		}
		creds = insecure.NewCredentials()
	}
	return grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
}

// grpcFlags is how the runner reaches Lethe's services.
type grpcFlags struct{ caFile, certFile, keyFile string }

// credentials returns the TLS credentials, or nil for plaintext.
func (g grpcFlags) credentials() (credentials.TransportCredentials, error) {
	if g.caFile == "" {
		if g.certFile != "" || g.keyFile != "" {
			return nil, errors.New("--grpc-cert and --grpc-key need --grpc-ca")
		}
		return nil, nil
	}
	pem, err := os.ReadFile(g.caFile)
	if err != nil {
		return nil, err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--grpc-ca %s holds no PEM certificate", g.caFile)
	}
	cfg := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	switch {
	case g.certFile != "" && g.keyFile != "":
		cert, err := tls.LoadX509KeyPair(g.certFile, g.keyFile)
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{cert}
	case g.certFile != "" || g.keyFile != "":
		return nil, errors.New("--grpc-cert and --grpc-key go together")
	}
	return credentials.NewTLS(cfg), nil
}
