package dsar_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/services/dsar"
)

// asConnect is a context authenticated as lethe-connect, with the SPIFFE
// id the production overlay's certificate carries.
func asConnect() context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), identityKey,
		"spiffe://lethe.test/ns/lethe/sa/"+dsar.ConnectServiceAccount)
}

// asTenantSystem calls as system of tenant, with an identity that names
// the tenant, as docs/security.md's example does.
func asTenantSystem(tenant, system string) context.Context {
	return metadata.AppendToOutgoingContext(context.Background(), identityKey,
		"spiffe://lethe.test/tenant/"+tenant+"/system/"+system)
}

// TestLetheConnectClaimsOnlyForTheSystemsItAnswers: lethe-connect answers
// every WEBHOOK and CONNECTOR system, so its identity is given the claim
// check for exactly those, as the registry lists them now, and refused
// for a system on the SDK (which answers as itself) and for one answered
// by hand (whose identifiers only an operator reads); a system's identity
// still claims only for itself, and a system that calls itself
// "lethe-connect" is not the runner.
func TestLetheConnectClaimsOnlyForTheSystemsItAnswers(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio", &registryv1.TenantSettings{Country: "SE"})
	hook := &registryv1.System{SystemId: "survey-tool", Name: "Survey tool", Kind: commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, Country: "SE",
		AnswerMode: commonv1.AnswerMode_ANSWER_MODE_WEBHOOK, Webhook: &registryv1.Webhook{Url: "https://hooks.survey.example/lethe"},
		Categories: []*commonv1.DataCategory{{Id: "user.contact"}}}
	analytics := &registryv1.System{SystemId: "web-analytics", Name: "Web analytics", Kind: commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, Country: "SE",
		AnswerMode: commonv1.AnswerMode_ANSWER_MODE_CONNECTOR, Connector: &registryv1.ConnectorRef{Name: "hotjar"},
		Categories: []*commonv1.DataCategory{{Id: "user.contact"}}}
	for _, sys := range []*registryv1.System{hook, analytics} {
		if _, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: sys}); err != nil {
			t.Fatalf("register %s: %v", sys.SystemId, err)
		}
	}
	f.system(t, "clio", "crm", sdk, nil, "user.contact")
	f.system(t, "clio", "processor", manual, nil, "user.contact")
	f.system(t, "clio", dsar.ConnectServiceAccount, sdk, nil, "user.contact")
	r := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Erasure: &dsarv1.ErasureDetails{}})
	for _, s := range []string{"survey-tool", "web-analytics", "crm", "processor", dsar.ConnectServiceAccount} {
		f.waitTask(t, "clio", r.DsarId, s)
	}
	claim := func(ctx context.Context, system string) error {
		_, err := f.dsar.GetIdentifiers(ctx, &dsarv1.GetIdentifiersRequest{TenantId: "clio", DsarId: r.DsarId, SystemId: system})
		return err
	}

	for _, system := range []string{"survey-tool", "web-analytics"} {
		got, err := f.dsar.GetIdentifiers(asConnect(), &dsarv1.GetIdentifiersRequest{TenantId: "clio", DsarId: r.DsarId, SystemId: system})
		if err != nil || len(got.Identifiers) != len(adaIdentifiers()) || got.Identifiers[0].Value != adaEmail {
			t.Fatalf("lethe-connect's claim for %s = %v, %v; want the subject's identifiers", system, got.GetIdentifiers(), err)
		}
	}
	cases := []struct {
		name   string
		ctx    context.Context
		system string
		want   codes.Code
	}{
		{"lethe-connect for an SDK system", asConnect(), "crm", codes.PermissionDenied},
		{"lethe-connect for a MANUAL system", asConnect(), "processor", codes.PermissionDenied},
		{"lethe-connect for a system the registry does not know", asConnect(), "ghost", codes.PermissionDenied},
		{"a system for itself", asSystem("crm"), "crm", codes.OK},
		{"a webhook system for itself", asSystem("survey-tool"), "survey-tool", codes.OK},
		{"a system for a webhook system", asSystem("crm"), "survey-tool", codes.PermissionDenied},
		{"a system named lethe-connect for a webhook system", asSystem(dsar.ConnectServiceAccount), "survey-tool", codes.PermissionDenied},
		{"a system named lethe-connect for itself", asSystem(dsar.ConnectServiceAccount), dsar.ConnectServiceAccount, codes.OK},
		{"a system of this tenant, naming it", asTenantSystem("clio", "crm"), "crm", codes.OK},
		{"a same-named system of another tenant", asTenantSystem("cleura", "crm"), "crm", codes.PermissionDenied},
	}
	for _, c := range cases {
		if err := claim(c.ctx, c.system); code(err) != c.want {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
	}

	// The registry decides, not the task: once the survey tool answers
	// through the SDK itself, lethe-connect no longer answers it and is
	// refused its identifiers, though its task was fanned out as WEBHOOK.
	onSDK := proto.Clone(hook).(*registryv1.System)
	onSDK.AnswerMode, onSDK.Webhook = sdk, nil
	if _, err := f.registry.UpdateSystem(f.ctx, &registryv1.UpdateSystemRequest{RequestId: f.id(), TenantId: "clio", System: onSDK}); err != nil {
		t.Fatal(err)
	}
	if err := claim(asConnect(), "survey-tool"); code(err) != codes.PermissionDenied {
		t.Fatalf("lethe-connect for a system moved to the SDK: %v, want PermissionDenied", err)
	}
	if err := claim(asSystem("survey-tool"), "survey-tool"); err != nil {
		t.Fatalf("the survey tool for itself, on the SDK: %v", err)
	}
}

// TestLetheConnectClaimsOverMutualTLS runs the same rule as a production
// deployment does: the DSAR service on a production-profile server over
// TCP, callers identified by the SPIFFE ids of their client certificates,
// and a policy that gives lethe-connect's identity GetIdentifiers alone,
// as deploy/overlays/production/policy.json does. The policy lets the
// runner call the method for any system; the DSAR service narrows it to
// the WEBHOOK and CONNECTOR systems.
func TestLetheConnectClaimsOverMutualTLS(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio", &registryv1.TenantSettings{Country: "SE"})
	hook := &registryv1.System{SystemId: "survey-tool", Name: "Survey tool", Kind: commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, Country: "SE",
		AnswerMode: commonv1.AnswerMode_ANSWER_MODE_WEBHOOK, Webhook: &registryv1.Webhook{Url: "https://hooks.survey.example/lethe"},
		Categories: []*commonv1.DataCategory{{Id: "user.contact"}}}
	if _, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: hook}); err != nil {
		t.Fatal(err)
	}
	f.system(t, "clio", "crm", sdk, nil, "user.contact")
	f.system(t, "clio", "processor", manual, nil, "user.contact")
	r := f.inProgress(t, &dsarv1.CreateRequestRequest{TenantId: "clio", Erasure: &dsarv1.ErasureDetails{}})
	for _, s := range []string{"survey-tool", "crm", "processor"} {
		f.waitTask(t, "clio", r.DsarId, s)
	}

	pki := servertest.NewPKI(t)
	connectID := "spiffe://" + servertest.TrustDomain + "/ns/lethe/sa/" + dsar.ConnectServiceAccount
	cfg := pki.Production(t, `{"rules": [
	  {"identities": ["`+connectID+`"], "methods": ["/lethe.dsar.v1.DsarService/GetIdentifiers"], "tenants": ["*"]},
	  {"identities": ["`+servertest.Identity("crm")+`"], "methods": ["/lethe.dsar.v1.DsarService/GetIdentifiers"], "tenants": ["clio"]}]}`)
	cfg.Clock, cfg.Logger = f.clock, quiet
	addr := servertest.StartTCP(t, cfg, func(srv *server.Server) {
		srv.Register(&dsarv1.DsarService_ServiceDesc, f.svc, f.svc.ServeOptions()...)
	})
	runner := dsarv1.NewDsarServiceClient(servertest.Dial(t, addr, pki.ClientWithIdentity(t, connectID)))
	crm := dsarv1.NewDsarServiceClient(servertest.Dial(t, addr, pki.Client(t, "crm")))
	claim := func(c dsarv1.DsarServiceClient, system string) (*dsarv1.GetIdentifiersResponse, error) {
		return c.GetIdentifiers(f.ctx, &dsarv1.GetIdentifiersRequest{TenantId: "clio", DsarId: r.DsarId, SystemId: system})
	}

	if got, err := claim(runner, "survey-tool"); err != nil || len(got.Identifiers) != len(adaIdentifiers()) {
		t.Fatalf("lethe-connect's claim for the webhook system = %v, %v", got.GetIdentifiers(), err)
	}
	for _, system := range []string{"crm", "processor"} {
		if _, err := claim(runner, system); code(err) != codes.PermissionDenied {
			t.Errorf("lethe-connect's claim for %s: %v, want PermissionDenied", system, err)
		}
	}
	if _, err := claim(crm, "crm"); err != nil {
		t.Errorf("crm's claim for itself: %v", err)
	}
	if _, err := claim(crm, "survey-tool"); code(err) != codes.PermissionDenied {
		t.Errorf("crm's claim for the webhook system: %v, want PermissionDenied", err)
	}
	// Nothing but the claim check: the policy refuses the runner the rest.
	if _, err := runner.GetRequest(f.ctx, &dsarv1.GetRequestRequest{TenantId: "clio", DsarId: r.DsarId}); code(err) != codes.PermissionDenied {
		t.Errorf("lethe-connect reading a request: %v, want PermissionDenied", err)
	}
}
