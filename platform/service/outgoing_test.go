package service

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"google.golang.org/grpc"

	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
)

// productionConfig completes a production server configuration whose
// process holds a certificate for spiffe://lethe.example/service/<name>.
func productionConfig(t *testing.T, ca *tlstest.CA, dir, name string, lis net.Listener) server.CompletedConfig {
	t.Helper()
	certFile, keyFile := ca.Issue(t, tlstest.Leaf{Name: name, URIs: []string{"spiffe://lethe.example/service/" + name}}).Write(t, dir, name)
	policy := filepath.Join(dir, "policy.json")
	if err := os.WriteFile(policy, []byte(`{"rules": [{"identities": ["*"], "methods": ["*"], "tenants": ["*"]}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := server.Config{
		Name: "lethe-" + name, Profile: server.ProfileProduction, Addr: "127.0.0.1:0", Listener: lis, MetricsAddr: "",
		TLSCertFile: certFile, TLSKeyFile: keyFile, TLSClientCAFile: ca.WritePEM(t, dir, "ca.pem"), TrustDomain: "lethe.example",
		PolicyFile: policy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
	cc, err := cfg.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cc
}

// TestProductionDialsOverMutualTLS: in production a service refuses to dial
// without --tls-ca or with credentials in the NATS URL; with --tls-ca it
// dials the registry over mutual TLS, and the registry knows it by its
// certificate's SPIFFE id.
func TestProductionDialsOverMutualTLS(t *testing.T) {
	ca := tlstest.NewCA(t, "lethe CA")
	dir := t.TempDir()

	client := productionConfig(t, ca, dir, "dsar", nil)
	t.Cleanup(func() { _ = client.Telemetry.Shutdown(context.Background()) })
	_, _, err := Outgoing{}.options(client, "nats://lethe:s3cret@nats:4222")
	for _, want := range []string{"set --tls-ca", "refuses credentials in --nats-url"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("options = %v, want it to say %q", err, want)
		}
	}
	for _, url := range []string{"nats://nats:4222", "tls://a:4222, tls://b:4222", "nats-0:4222"} {
		if urlHasCredentials(url) {
			t.Errorf("%q has no credentials", url)
		}
	}
	for _, url := range []string{"nats://token@nats:4222", "tls://a:4222,nats://u:p@b:4222", "u:p@nats:4222"} {
		if !urlHasCredentials(url) {
			t.Errorf("%q has credentials", url)
		}
	}

	// The registry: a production server over TCP.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	registryCfg := productionConfig(t, ca, dir, "registry", lis)
	srv, err := registryCfg.New()
	if err != nil {
		t.Fatal(err)
	}
	srv.Register(&kittestv1.KitTestService_ServiceDesc, kittest.New(nil, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Error(err)
		}
	})

	natsOpts, dialer, err := Outgoing{CAFile: filepath.Join(dir, "ca.pem")}.options(client, "tls://nats:4222")
	if err != nil {
		t.Fatal(err)
	}
	if len(natsOpts) != 1 || dialer.transport == nil {
		t.Fatalf("options = %d NATS options, gRPC transport %v; want TLS for both", len(natsOpts), dialer.transport)
	}
	// The registry and a neighbour are dialled alike (startOne's dialAll):
	// both over mutual TLS, both knowing the caller by its SPIFFE id.
	addr := "localhost:" + strings.Split(lis.Addr().String(), ":")[1]
	registry, conns, err := dialer.dialAll(addr, map[string]string{"consent": addr})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = closeConns(registry, conns) }()
	callCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
	defer stop()
	for name, conn := range map[string]*grpc.ClientConn{"registry": registry, "consent": conns["consent"]} {
		resp, err := kittestv1.NewKitTestServiceClient(conn).Whoami(callCtx, &kittestv1.WhoamiRequest{})
		if err != nil {
			t.Fatalf("Whoami to the %s over mutual TLS: %v", name, err)
		}
		if resp.Identity != "spiffe://lethe.example/service/dsar" {
			t.Fatalf("the %s knows the caller as %q, want its SPIFFE id", name, resp.Identity)
		}
	}

	// A production process cannot dial plaintext: without a CA bundle its
	// dialer refuses, whatever the service.
	for _, name := range []string{"registry", "consent"} {
		if conn, err := NewDialer(client, nil).Dial(name, lis.Addr().String()); err == nil || !strings.Contains(err.Error(), "set --tls-ca") {
			if conn != nil {
				_ = conn.Close()
			}
			t.Fatalf("a production dialer without --tls-ca dialled the %s: %v", name, err)
		}
	}
	// And plaintext, as in development, is refused by a production server.
	devCfg, err := server.Config{Name: "lethe-dsar", Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = devCfg.Telemetry.Shutdown(context.Background()) })
	plain, err := NewDialer(devCfg, nil).Dial("registry", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := kittestv1.NewKitTestServiceClient(plain).Whoami(callCtx, &kittestv1.WhoamiRequest{}); err == nil {
		t.Fatal("a plaintext call reached the production registry")
	}
}

// TestNATSPasswordFromFile: the NATS password comes from a file, never
// from a flag value, and is read again at a reconnect.
func TestNATSPasswordFromFile(t *testing.T) {
	srv, err := natsserver.NewServer(&natsserver.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*natsserver.User{{Username: "consent", Password: "0123456789abcdef"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS not ready")
	}
	cfg, err := server.Config{Name: "lethe-consent", Addr: "127.0.0.1:0", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}.Complete(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cfg.Telemetry.Shutdown(context.Background()) })

	file := filepath.Join(t.TempDir(), "password")
	for _, tc := range []struct {
		password string
		ok       bool
	}{{"wrong-password-0000\n", false}, {"0123456789abcdef\n", true}} {
		if err := os.WriteFile(file, []byte(tc.password), 0o600); err != nil {
			t.Fatal(err)
		}
		natsOpts, _, err := Outgoing{NATSUser: "consent", NATSPasswordFile: file}.options(cfg, srv.ClientURL())
		if err != nil {
			t.Fatal(err)
		}
		nc, err := nats.Connect(srv.ClientURL(), append(natsOpts, nats.NoReconnect())...)
		if tc.ok != (err == nil) {
			t.Fatalf("password %q: connect = %v, want ok %v", tc.password, err, tc.ok)
		}
		if nc != nil {
			nc.Close()
		}
	}
	if _, _, err := (Outgoing{NATSUser: "consent"}).options(cfg, srv.ClientURL()); err == nil {
		t.Fatal("--nats-user without --nats-password-file accepted")
	}
}
