package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/platform/tlsconfig"
)

// The four services over HTTP/JSON in the production profile: mutual TLS
// on the HTTP listener, callers identified by a bearer JWT, the policy
// file deciding. For each service one call succeeds, a mistake is 400
// naming the field in the JSON body, a missing thing is 404, a token the
// server does not trust is 401 and another tenant is 403 — the gRPC
// chain's answers, as the Connect protocol maps them. A request id over
// HTTP and over gRPC is one mutation.
func TestHTTPJSONEveryServiceInProduction(t *testing.T) {
	pki := servertest.NewPKI(t)
	cfg := pki.Production(t, `{"rules": [
		{"identities": ["`+servertest.ServerIdentity+`"], "methods": ["*"], "tenants": ["*"]},
		{"identities": ["`+servertest.JWTIdentity("ada")+`"], "methods": ["*"], "tenants": ["clio"]},
		{"identities": ["`+servertest.JWTIdentity("ada")+`"], "methods": ["/lethe.registry.v1.RegistryService/CreateTenant"], "tenants": ["*"]}]}`)
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Name, cfg.Logger = "lethe-http-test", quiet
	jwt := pki.WithJWT(t, &cfg)
	// The same issuer and audience, signed by a key the server does not
	// know: a forged token.
	forger := pki.WithJWT(t, &server.Config{})
	grpcAddr, base := startProductionPlatform(t, pki, cfg, quiet)
	client := pki.HTTPClient(t, "operator")
	ada := jwt.Token("ada")
	call := func(token, procedure, body string) (int, []byte) {
		return servertest.PostJSON(t, client, base, procedure, token, body)
	}

	// A tenant, created over HTTP; the same request id over gRPC is the
	// same mutation and the same answer.
	create := `{"requestId": "clio-t1", "tenant": {"tenantId": "clio", "displayName": "Clio ApS"}}`
	status, body := call(ada, "/lethe.registry.v1.RegistryService/CreateTenant", create)
	if status != http.StatusOK {
		t.Fatalf("CreateTenant over HTTP: %d %s", status, body)
	}
	overHTTP := &registryv1.CreateTenantResponse{}
	if err := protojson.Unmarshal(body, overHTTP); err != nil {
		t.Fatal(err)
	}
	req := &registryv1.CreateTenantRequest{}
	if err := protojson.Unmarshal([]byte(create), req); err != nil {
		t.Fatal(err)
	}
	conn := servertest.Dial(t, grpcAddr, pki.Client(t, "operator"))
	ctx := metadata.AppendToOutgoingContext(context.Background(), "authorization", "Bearer "+ada)
	overGRPC, err := registryv1.NewRegistryServiceClient(conn).CreateTenant(ctx, req)
	if err != nil || !proto.Equal(overGRPC, overHTTP) {
		t.Fatalf("the same CreateTenant over gRPC = %v, %v; want the HTTP answer %v", overGRPC, err, overHTTP)
	}

	for _, svc := range []struct {
		name string
		// ok succeeds once the service knows the tenant; its body names
		// tenant clio, which the 401 and 403 calls replace.
		ok, okBody string
		// bad is refused naming field; missing answers NotFound.
		bad, badBody, field  string
		missing, missingBody string
	}{
		{"registry", "GetTenant", `{"tenantId": "clio"}`,
			"GetSystem", `{"tenantId": "clio", "systemId": "Not A System"}`, "system_id",
			"GetSystem", `{"tenantId": "clio", "systemId": "newsletter"}`},
		{"consent", "ListPurposes", `{"tenantId": "clio"}`,
			"ListPurposes", `{"tenantId": "clio", "pageSize": -1}`, "page_size",
			"RecordConsent", `{"requestId": "c1", "tenantId": "clio", "subjectId": "s-1", "purposeId": "newsletter",
				"action": "CONSENT_ACTION_GRANT", "method": "COLLECTION_METHOD_FORM"}`},
		{"retention", "ListRules", `{"tenantId": "clio"}`,
			"ListRules", `{"tenantId": "clio", "pageSize": -1}`, "page_size",
			"DeleteRule", `{"requestId": "d1", "tenantId": "clio", "ruleId": "usage"}`},
		{"dsar", "ListRequests", `{"tenantId": "clio"}`,
			"GetRequest", `{"tenantId": "clio", "dsarId": ""}`, "dsar_id",
			"GetRequest", `{"tenantId": "clio", "dsarId": "no-such-request"}`},
	} {
		t.Run(svc.name, func(t *testing.T) {
			prefix := "/lethe." + svc.name + ".v1." + serviceNames[svc.name] + "/"
			// The consent, retention and DSAR services learn of the tenant
			// from the registry's event, a moment after CreateTenant.
			eventually.Succeeds(t, svc.ok+" answers 200", func() error {
				if status, body := call(ada, prefix+svc.ok, svc.okBody); status != http.StatusOK {
					return fmt.Errorf("%d %s", status, body)
				}
				return nil
			})
			want := func(what string, status int, body []byte, wantStatus int, wantCode string) servertest.HTTPError {
				t.Helper()
				e := servertest.DecodeHTTPError(t, body)
				if status != wantStatus || e.Code != wantCode {
					t.Fatalf("%s: %d %s, want %d %s", what, status, body, wantStatus, wantCode)
				}
				return e
			}
			status, body := call(ada, prefix+svc.bad, svc.badBody)
			if e := want(svc.bad+" with a mistake", status, body, http.StatusBadRequest, "invalid_argument"); !slices.Contains(e.Fields(), svc.field) {
				t.Fatalf("%s with a mistake: the JSON body names %q, want %s: %s", svc.bad, e.Fields(), svc.field, body)
			}
			status, body = call(ada, prefix+svc.missing, svc.missingBody)
			want(svc.missing+" of what does not exist", status, body, http.StatusNotFound, "not_found")
			status, body = call(forger.Token("ada"), prefix+svc.ok, svc.okBody)
			want("a forged token", status, body, http.StatusUnauthorized, "unauthenticated")
			status, body = call(ada, prefix+svc.ok, strings.Replace(svc.okBody, `"clio"`, `"cleura"`, 1))
			want("another tenant", status, body, http.StatusForbidden, "permission_denied")
		})
	}
}

// startProductionPlatform hosts the four services on one production server
// (servicetest, lethe dev's composition), with an HTTP listener beside the
// gRPC one, and returns the gRPC address and the HTTP base URL. The
// services dial each other on the same listener over mutual TLS,
// presenting the server's certificate, as a deployed service presents its
// own.
func startProductionPlatform(t *testing.T, pki *servertest.PKI, cfg server.Config, logger *slog.Logger) (string, string) {
	t.Helper()
	hlis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.HTTPListener = hlis
	roots, err := tlsconfig.LoadPool(pki.CAFile(), tlsconfig.Options{Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	// The real clock: the bearer tokens are issued and checked at the
	// wall clock's time.
	h := servicetest.Start(t, servicetest.Options{Server: cfg, Clock: clock.Real{}, Logger: logger, Roots: roots},
		factories...)
	return h.Addr, "https://" + hlis.Addr().String()
}
