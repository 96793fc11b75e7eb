package server_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/auth/authtest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/tlsconfig/tlstest"
)

const (
	trustDomain = "lethe.example"
	newsletter  = "spiffe://lethe.example/system/newsletter"
	admin       = "spiffe://lethe.example/operator/admin"
	stranger    = "spiffe://lethe.example/system/crm"
	jwtIssuer   = "https://idp.lethe.example"
	jwtAudience = "lethe"
	dpo         = "jwt:" + jwtIssuer + "/dpo-alice"
	kitService  = "/lethe.kittest.v1.KitTestService/"
)

// pki is a test deployment's certificates, written where a server reads them.
type pki struct {
	dir        string
	ca         *tlstest.CA
	caFile     string
	serverCert string
	serverKey  string
	jwtKey     *ecdsa.PrivateKey
	jwtKeys    string
	policy     string
}

// testPolicy: the newsletter system may read (its Check) for Clio only; the
// DSAR operator, authenticated by a JWT, may complete manual tasks (Touch)
// for every tenant and list Clio's; the admin may call the method that is
// not tenant-scoped; nobody else may do anything.
const testPolicy = `{"rules": [
  {"identities": ["` + newsletter + `"], "methods": ["` + kitService + `Get"], "tenants": ["clio"]},
  {"identities": ["` + dpo + `"], "methods": ["` + kitService + `Touch"], "tenants": ["*"]},
  {"identities": ["` + dpo + `"], "methods": ["` + kitService + `List"], "tenants": ["clio"]},
  {"identities": ["` + admin + `"], "methods": ["` + kitService + `Noop", "` + kitService + `Whoami"], "tenants": ["*"]},
  {"identities": ["*"], "methods": ["` + kitService + `Whoami"], "tenants": ["*"]}
]}`

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir(), ca: tlstest.NewCA(t, "lethe test CA")}
	p.caFile = p.ca.WritePEM(t, p.dir, "ca.pem")
	p.serverCert, p.serverKey = p.ca.Issue(t, tlstest.Leaf{Name: "lethe-consent", URIs: []string{"spiffe://lethe.example/service/consent"}}).Write(t, p.dir, "server")
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p.jwtKey = key
	p.jwtKeys = filepath.Join(p.dir, "jwt-keys.pem")
	authtest.WritePEM(t, p.jwtKeys, key)
	p.policy = filepath.Join(p.dir, "policy.json")
	if err := os.WriteFile(p.policy, []byte(testPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// production is the configuration a production deployment runs with.
func (p *pki) production() server.Config {
	return server.Config{
		Profile:         server.ProfileProduction,
		TLSCertFile:     p.serverCert,
		TLSKeyFile:      p.serverKey,
		TLSClientCAFile: p.caFile,
		TrustDomain:     trustDomain,
		JWTKeysFile:     p.jwtKeys,
		JWTIssuer:       jwtIssuer,
		JWTAudience:     jwtAudience,
		PolicyFile:      p.policy,
	}
}

// client returns the TLS configuration of a caller holding pair, trusting
// the test CA.
func (p *pki) client(t *testing.T, pair *tlstest.Pair) *tls.Config {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(p.ca.Cert)
	c := &tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12}
	if pair != nil {
		cert, err := tls.X509KeyPair(pair.CertPEM, pair.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		// Always sent, whatever CAs the server names as acceptable (a
		// client with Certificates would send nothing when its CA is not
		// among them), so that the server's verification is what is tested.
		c.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	}
	return c
}

func (p *pki) token(t *testing.T, sub string) string {
	return authtest.Sign(t, p.jwtKey, "ES256", "", map[string]any{
		"iss": jwtIssuer, "sub": sub, "aud": jwtAudience, "exp": time.Now().Add(time.Hour).Unix(),
	})
}

// tcpServer is the kit test service behind a real TCP listener.
type tcpServer struct {
	addr  string
	audit *audit.Log
}

func startTCP(t *testing.T, cfg server.Config) *tcpServer {
	t.Helper()
	clk := clock.NewFake(epoch)
	db := storetest.Open(t, kittest.Schema)
	log := audit.New(db, clk)
	svc := kittest.New(db, mutation.New(db, idempotency.New(clk, idempotency.DefaultTTL)))
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Name, cfg.Listener, cfg.MetricsAddr, cfg.Clock = "tls-test", lis, "", clk
	cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.FileWatch.Interval = -1 // look at the certificate files at every handshake
	completed, err := cfg.Complete(context.Background())
	if err != nil {
		_ = lis.Close()
		t.Fatalf("complete: %v", err)
	}
	srv, err := completed.New()
	if err != nil {
		t.Fatal(err)
	}
	srv.Register(&kittestv1.KitTestService_ServiceDesc, svc, server.WithAudit(log))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			t.Errorf("run: %v", err)
		}
	})
	return &tcpServer{addr: lis.Addr().String(), audit: log}
}

func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func callCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestProductionRefuses: the production profile does not start with a
// plaintext listener, the development authenticator, static tokens, the
// allow-all policy or no policy, and says what is missing; the development
// profile serves plaintext on loopback only.
func TestProductionRefuses(t *testing.T) {
	p := newPKI(t)
	tokens := filepath.Join(p.dir, "tokens.json")
	if err := os.WriteFile(tokens, []byte(`{"tokens": [{"name": "dev", "token": "0123456789abcdef"}]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	plaintext := p.production()
	plaintext.TLSCertFile, plaintext.TLSKeyFile, plaintext.TLSClientCAFile, plaintext.TrustDomain = "", "", "", ""
	devAuth := p.production()
	devAuth.Authenticator = auth.DevAuthenticator{}
	allowAll := p.production()
	allowAll.PolicyFile, allowAll.Policy = "", auth.AllowAll{}
	noPolicy := p.production()
	noPolicy.PolicyFile = ""
	static := p.production()
	static.TokensFile = tokens
	noAuthn := p.production()
	noAuthn.TrustDomain, noAuthn.JWTKeysFile, noAuthn.JWTIssuer, noAuthn.JWTAudience = "", "", "", ""
	bare := server.Config{Profile: server.ProfileProduction, Addr: "127.0.0.1:0"}
	expired := p.production()
	expired.TLSCertFile, expired.TLSKeyFile = p.ca.Issue(t, tlstest.Leaf{Name: "old", NotAfter: time.Now().Add(-time.Minute)}).Write(t, p.dir, "expired")

	for _, tc := range []struct {
		name string
		cfg  server.Config
		want []string
	}{
		{"plaintext", plaintext, []string{"refuses a plaintext listener: set --tls-cert and --tls-key"}},
		{"development authenticator", devAuth, []string{"refuses the development authenticator"}},
		{"allow-all policy", allowAll, []string{"refuses the allow-all policy"}},
		{"no policy", noPolicy, []string{"needs an authorization policy: set --authz-policy"}},
		{"static tokens", static, []string{"refuses static tokens (--dev-tokens)"}},
		{"no authenticator", noAuthn, []string{"needs an authenticator"}},
		{"nothing configured", bare, []string{"plaintext listener", "needs an authenticator", "needs an authorization policy"}},
		{"expired server certificate", expired, []string{"certificate expired"}},
		{"unknown profile", server.Config{Profile: "staging", Addr: "127.0.0.1:0"}, []string{`--profile "staging"`}},
		{"dev on all interfaces", server.Config{Addr: "0.0.0.0:7400"}, []string{"loopback only"}},
		{"dev on an empty host", server.Config{Addr: ":7400"}, []string{"loopback only"}},
		{"dev on a public name", server.Config{Addr: "lethe.example:7400"}, []string{"loopback only"}},
		{"trust domain without client CA", server.Config{Addr: "127.0.0.1:0", TLSCertFile: p.serverCert, TLSKeyFile: p.serverKey, TrustDomain: trustDomain}, []string{"--trust-domain needs --tls-client-ca"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Name = "refused"
			if tc.cfg.Addr == "" {
				tc.cfg.Addr = "127.0.0.1:0"
			}
			tc.cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
			_, err := tc.cfg.Complete(context.Background())
			if err == nil {
				t.Fatal("Complete accepted the configuration")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}

	// What the development profile accepts.
	for _, cfg := range []server.Config{
		{Addr: "127.0.0.1:7400"}, {Addr: "localhost:7400"}, {Addr: "[::1]:7400"},
		{Addr: "0.0.0.0:7400", TLSCertFile: p.serverCert, TLSKeyFile: p.serverKey},
	} {
		cfg.Name = "accepted"
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		cc, err := cfg.Complete(context.Background())
		if err != nil {
			t.Errorf("dev profile on %s: %v", cfg.Addr, err)
			continue
		}
		if err := cc.Telemetry.Shutdown(context.Background()); err != nil {
			t.Error(err)
		}
	}
}

// TestMutualTLS runs the production profile over a real TCP listener: only
// a current certificate from the configured CA gets through the handshake,
// and only one with a SPIFFE id of the trust domain gets an identity.
func TestMutualTLS(t *testing.T) {
	p := newPKI(t)
	cfg := p.production()
	healthLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HealthListener = healthLis
	srv := startTCP(t, cfg)
	foreign := tlstest.NewCA(t, "someone else's CA")

	for _, tc := range []struct {
		name string
		pair *tlstest.Pair
		want codes.Code
	}{
		{"current certificate of the trust domain", ptr(p.ca.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}})), codes.OK},
		{"expired certificate", ptr(p.ca.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})), codes.Unavailable},
		{"not yet valid certificate", ptr(p.ca.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}, NotBefore: time.Now().Add(time.Hour)})), codes.Unavailable},
		{"certificate of a foreign CA", ptr(foreign.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}})), codes.Unavailable},
		{"no certificate", nil, codes.Unavailable},
		{"another trust domain", ptr(p.ca.Issue(t, tlstest.Leaf{Name: "x", URIs: []string{"spiffe://other.example/system/newsletter"}})), codes.Unauthenticated},
		{"no SPIFFE id", ptr(p.ca.Issue(t, tlstest.Leaf{Name: "newsletter"})), codes.Unauthenticated},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client := kittestv1.NewKitTestServiceClient(dial(t, srv.addr, credentials.NewTLS(p.client(t, tc.pair))))
			resp, err := client.Whoami(callCtx(t), &kittestv1.WhoamiRequest{})
			if code(err) != tc.want {
				t.Fatalf("Whoami = %v, %v; want %v", resp, err, tc.want)
			}
			if err == nil && resp.Identity != newsletter {
				t.Fatalf("identity = %q, want %q", resp.Identity, newsletter)
			}
		})
	}

	t.Run("plaintext client", func(t *testing.T) {
		client := kittestv1.NewKitTestServiceClient(dial(t, srv.addr, insecure.NewCredentials()))
		if _, err := client.Whoami(callCtx(t), &kittestv1.WhoamiRequest{}); code(err) != codes.Unavailable {
			t.Fatalf("Whoami in plaintext = %v, want Unavailable", err)
		}
	})
	t.Run("server of a CA the client does not trust", func(t *testing.T) {
		c := p.client(t, ptr(p.ca.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}})))
		c.RootCAs = x509.NewCertPool()
		c.RootCAs.AddCert(foreign.Cert)
		client := kittestv1.NewKitTestServiceClient(dial(t, srv.addr, credentials.NewTLS(c)))
		if _, err := client.Whoami(callCtx(t), &kittestv1.WhoamiRequest{}); code(err) != codes.Unavailable {
			t.Fatalf("Whoami = %v, want Unavailable", err)
		}
	})

	noIdentity := p.client(t, ptr(p.ca.Issue(t, tlstest.Leaf{Name: "probe"})))
	conn := dial(t, srv.addr, credentials.NewTLS(noIdentity))
	t.Run("health is public", func(t *testing.T) {
		resp, err := healthpb.NewHealthClient(conn).Check(callCtx(t), &healthpb.HealthCheckRequest{})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health = %v, %v; want SERVING without an identity", resp, err)
		}
	})
	t.Run("reflection needs an identity", func(t *testing.T) {
		stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(callCtx(t))
		if err == nil {
			// Send reports only io.EOF when the server has ended the
			// stream; Recv has the status.
			_ = stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
			_, err = stream.Recv()
		}
		if code(err) != codes.Unauthenticated {
			t.Fatalf("reflection = %v, want Unauthenticated", err)
		}
	})
	t.Run("a bearer token that fails is not passed over for the certificate", func(t *testing.T) {
		c := p.client(t, ptr(p.ca.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}})))
		client := kittestv1.NewKitTestServiceClient(dial(t, srv.addr, credentials.NewTLS(c)))
		ctx := metadata.AppendToOutgoingContext(callCtx(t), "authorization", "Bearer not.a.token")
		if _, err := client.Whoami(ctx, &kittestv1.WhoamiRequest{}); code(err) != codes.Unauthenticated {
			t.Fatalf("Whoami = %v, want Unauthenticated", err)
		}
	})
	t.Run("the health port serves health alone, in plaintext", func(t *testing.T) {
		plain := dial(t, healthLis.Addr().String(), insecure.NewCredentials())
		resp, err := healthpb.NewHealthClient(plain).Check(callCtx(t), &healthpb.HealthCheckRequest{Service: kittestv1.KitTestService_ServiceDesc.ServiceName})
		if err != nil || resp.Status != healthpb.HealthCheckResponse_SERVING {
			t.Fatalf("health on the health port = %v, %v; want SERVING", resp, err)
		}
		if _, err := kittestv1.NewKitTestServiceClient(plain).Noop(callCtx(t), &kittestv1.NoopRequest{}); code(err) != codes.Unimplemented {
			t.Fatalf("Noop on the health port = %v, want Unimplemented", err)
		}
	})
}

func ptr[T any](v T) *T { return &v }

// TestCertificateRotation replaces the server's certificate on disk while
// it serves: connections made before keep working, and every new handshake
// presents the new certificate. A broken replacement keeps the last good
// one.
func TestCertificateRotation(t *testing.T) {
	p := newPKI(t)
	srv := startTCP(t, p.production())
	clientPair := ptr(p.ca.Issue(t, tlstest.Leaf{Name: "admin", URIs: []string{admin}}))
	presented := func() *x509.Certificate {
		t.Helper()
		c, err := tls.Dial("tcp", srv.addr, p.client(t, clientPair))
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	first := presented()
	before := kittestv1.NewKitTestServiceClient(dial(t, srv.addr, credentials.NewTLS(p.client(t, clientPair))))
	if _, err := before.Noop(callCtx(t), &kittestv1.NoopRequest{}); err != nil {
		t.Fatal(err)
	}

	rotated := p.ca.Issue(t, tlstest.Leaf{Name: "lethe-consent", URIs: []string{"spiffe://lethe.example/service/consent"}})
	rotated.Write(t, p.dir, "server")
	if got := presented(); got.SerialNumber.Cmp(rotated.Cert.SerialNumber) != 0 || got.SerialNumber.Cmp(first.SerialNumber) == 0 {
		t.Fatalf("after rotation the server presents serial %v, want the new %v (old %v)", got.SerialNumber, rotated.Cert.SerialNumber, first.SerialNumber)
	}
	if _, err := before.Noop(callCtx(t), &kittestv1.NoopRequest{}); err != nil {
		t.Fatalf("a connection made before the rotation: %v", err)
	}
	after := kittestv1.NewKitTestServiceClient(dial(t, srv.addr, credentials.NewTLS(p.client(t, clientPair))))
	if _, err := after.Noop(callCtx(t), &kittestv1.NoopRequest{}); err != nil {
		t.Fatalf("a connection made after the rotation: %v", err)
	}

	// A half-done rotation: a new key that does not match the certificate.
	if err := os.WriteFile(p.serverKey, p.ca.Issue(t, tlstest.Leaf{Name: "x"}).KeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if got := presented(); got.SerialNumber.Cmp(rotated.Cert.SerialNumber) != 0 {
		t.Fatalf("after a broken rotation the server presents serial %v, want the last good %v", got.SerialNumber, rotated.Cert.SerialNumber)
	}
}

// TestAuthorizationMatrix drives every identity × method × tenant through a
// production server over mutual TLS and holds the answers to the policy:
// allowed calls get past authorization, every other is PermissionDenied,
// and every denial is in the audit log with who, what and for which tenant.
func TestAuthorizationMatrix(t *testing.T) {
	p := newPKI(t)
	srv := startTCP(t, p.production())

	// Each caller: a client certificate, and for the DPO a JWT over the
	// connection of the tool it uses (whose own certificate has no rights).
	type caller struct {
		pair  tlstest.Pair
		token string
	}
	callers := map[string]caller{
		newsletter: {pair: p.ca.Issue(t, tlstest.Leaf{Name: "newsletter", URIs: []string{newsletter}})},
		admin:      {pair: p.ca.Issue(t, tlstest.Leaf{Name: "admin", URIs: []string{admin}})},
		stranger:   {pair: p.ca.Issue(t, tlstest.Leaf{Name: "crm", URIs: []string{stranger}})},
		dpo:        {pair: p.ca.Issue(t, tlstest.Leaf{Name: "operator console", URIs: []string{"spiffe://lethe.example/tool/console"}}), token: p.token(t, "dpo-alice")},
	}
	type call func(ctx context.Context, c kittestv1.KitTestServiceClient, tenant string) error
	methods := map[string]call{
		"Get": func(ctx context.Context, c kittestv1.KitTestServiceClient, tenant string) error {
			_, err := c.Get(ctx, &kittestv1.GetRequest{TenantId: tenant, Key: "k"})
			return err
		},
		"Put": func(ctx context.Context, c kittestv1.KitTestServiceClient, tenant string) error {
			_, err := c.Put(ctx, &kittestv1.PutRequest{RequestId: "r-" + tenant, TenantId: tenant, Key: "k", Value: "v"})
			return err
		},
		"Touch": func(ctx context.Context, c kittestv1.KitTestServiceClient, tenant string) error {
			_, err := c.Touch(ctx, &kittestv1.TouchRequest{RequestId: "t-" + tenant, TenantId: tenant})
			return err
		},
		"List": func(ctx context.Context, c kittestv1.KitTestServiceClient, tenant string) error {
			stream, err := c.List(ctx, &kittestv1.ListRequest{TenantId: tenant})
			if err != nil {
				return err
			}
			for {
				if _, err := stream.Recv(); err != nil {
					if errors.Is(err, io.EOF) {
						return nil
					}
					return err
				}
			}
		},
		"Noop": func(ctx context.Context, c kittestv1.KitTestServiceClient, _ string) error {
			_, err := c.Noop(ctx, &kittestv1.NoopRequest{})
			return err
		},
	}
	// allowed lists what the policy allows; everything else is denied.
	allowed := map[string]bool{
		newsletter + " Get clio": true,
		dpo + " Touch clio":      true,
		dpo + " Touch cleura":    true,
		dpo + " List clio":       true,
		admin + " Noop (none)":   true,
	}

	var wantDenials []string
	for identity, cl := range callers {
		conn := dial(t, srv.addr, credentials.NewTLS(p.client(t, &cl.pair)))
		client := kittestv1.NewKitTestServiceClient(conn)
		for name, do := range methods {
			tenants := []string{"clio", "cleura"}
			if name == "Noop" {
				tenants = []string{""}
			}
			for _, tenant := range tenants {
				ctx := callCtx(t)
				if cl.token != "" {
					ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+cl.token)
				}
				label := tenant
				if label == "" {
					label = "(none)"
				}
				key := identity + " " + name + " " + label
				err := do(ctx, client, tenant)
				gotAllowed := code(err) != codes.PermissionDenied
				if gotAllowed != allowed[key] {
					t.Errorf("%s: allowed %v (%v), want %v", key, gotAllowed, err, allowed[key])
				}
				if gotAllowed && code(err) != codes.OK && code(err) != codes.NotFound {
					t.Errorf("%s: %v, want success once authorized", key, err)
				}
				if !allowed[key] {
					wantDenials = append(wantDenials, identity+" "+kitService+name+" "+tenant)
				}
			}
		}
	}

	var gotDenials []string
	for _, e := range auditEntries(t, srv.audit) {
		if e.Code == codes.PermissionDenied.String() {
			gotDenials = append(gotDenials, e.Actor+" "+e.Method+" "+e.TenantID)
		}
	}
	if fmt.Sprint(sorted(gotDenials)) != fmt.Sprint(sorted(wantDenials)) {
		t.Errorf("audited denials:\n%s\nwant:\n%s", strings.Join(sorted(gotDenials), "\n"), strings.Join(sorted(wantDenials), "\n"))
	}
	if len(wantDenials) != len(callers)*9-len(allowed) {
		t.Fatalf("the matrix covered %d denials, want %d", len(wantDenials), len(callers)*9-len(allowed))
	}
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	slices.Sort(out)
	return out
}

// The certificate the server presents is a metric of when it expires, and
// a rotation moves it.
func TestCertificateExpiryIsAMetric(t *testing.T) {
	p := newPKI(t)
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "expiry"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	cfg := p.production()
	cfg.Telemetry = providers
	startTCP(t, cfg)
	expiry := func() float64 {
		t.Helper()
		families, err := providers.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == "lethe_tls_certificate_expiry_seconds" && len(f.GetMetric()) == 1 {
				return f.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no lethe_tls_certificate_expiry_seconds")
		return 0
	}
	first, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(first.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if got, want := expiry(), float64(leaf.NotAfter.Unix()); got != want {
		t.Fatalf("expiry = %v, want the certificate's NotAfter %v", got, want)
	}
	later := time.Now().Add(72 * time.Hour).Truncate(time.Second)
	p.ca.Issue(t, tlstest.Leaf{Name: "lethe-consent", URIs: []string{"spiffe://lethe.example/service/consent"}, NotAfter: later}).Write(t, p.dir, "server")
	if got := expiry(); got != float64(later.Unix()) {
		t.Fatalf("after rotation the expiry = %v, want %v", got, float64(later.Unix()))
	}
}
