package registry_test

import (
	"testing"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/server"
)

func webhookSystem(id, url string) *registryv1.System {
	s := system(id, "Receiver "+id, "DK", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user.contact.email")
	s.AnswerMode = commonv1.AnswerMode_ANSWER_MODE_WEBHOOK
	s.Webhook = &registryv1.Webhook{Url: url}
	return s
}

// A registered URL is what the runner will call from inside the
// deployment: the registry refuses one that points at the deployment's own
// neighbours (server-side request forgery) or travels without TLS, naming
// the field, and stores nothing.
func TestWebhookAndConnectorSystemsAreChecked(t *testing.T) {
	f := start(t)
	clickLearn(t, f)
	reg := func(sys *registryv1.System) error {
		_, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clicklearn", System: sys})
		return err
	}
	connector := func(id, name string) *registryv1.System {
		s := system(id, "Connector "+id, "DK", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.contact.email")
		s.AnswerMode = commonv1.AnswerMode_ANSWER_MODE_CONNECTOR
		s.Connector = &registryv1.ConnectorRef{Name: name}
		return s
	}
	for _, tc := range []struct {
		name  string
		sys   *registryv1.System
		field string
	}{
		{"webhook without a URL", webhookSystem("w1", ""), "system.webhook.url"},
		{"plain http to a public host", webhookSystem("w2", "http://erase.example.com/lethe"), "system.webhook.url"},
		{"http to loopback outside the development profile", webhookSystem("w3", "http://127.0.0.1:8080/"), "system.webhook.url"},
		{"user name and password in the URL", webhookSystem("w4", "https://user:pw@erase.example.com/"), "system.webhook.url"},
		{"private address (RFC 1918)", webhookSystem("w5", "https://10.0.0.5/erase"), "system.webhook.url"},
		{"loopback address", webhookSystem("w6", "https://[::1]:8443/erase"), "system.webhook.url"},
		{"localhost", webhookSystem("w7", "https://localhost/erase"), "system.webhook.url"},
		{"cloud metadata address", webhookSystem("w8", "https://169.254.169.254/latest/meta-data/"), "system.webhook.url"},
		{"IPv4-mapped private address", webhookSystem("w9", "https://[::ffff:192.168.1.1]/"), "system.webhook.url"},
		{"not a URL", webhookSystem("w10", "erase.example.com/lethe"), "system.webhook.url"},
		{"ftp", webhookSystem("w11", "ftp://erase.example.com/"), "system.webhook.url"},
		{"a webhook on an SDK system", func() *registryv1.System {
			s := webhookSystem("w12", "https://erase.example.com/")
			s.AnswerMode = commonv1.AnswerMode_ANSWER_MODE_SDK
			return s
		}(), "system.webhook"},
		{"connector without a name", connector("c1", ""), "system.connector.name"},
		{"a connector on a webhook system", func() *registryv1.System {
			s := webhookSystem("c2", "https://erase.example.com/")
			s.Connector = &registryv1.ConnectorRef{Name: "hotjar"}
			return s
		}(), "system.connector"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if fields := violations(t, reg(tc.sys)); len(fields) != 1 || fields[0] != tc.field {
				t.Fatalf("violations name %v, want %s", fields, tc.field)
			}
		})
	}
	list, err := f.client.ListSystems(f.ctx, &registryv1.ListSystemsRequest{TenantId: "clicklearn"})
	if err != nil || len(list.Systems) != 4 {
		t.Fatalf("systems after the rejected calls = %d, %v; want the 4 registered", len(list.GetSystems()), err)
	}

	// Accepted: a public https endpoint, and a connector by name.
	f.register(t, "clicklearn", webhookSystem("shop", "https://erase.clicklearn.example/lethe"))
	f.register(t, "clicklearn", connector("ga4", "google-analytics"))
	got, err := f.client.GetSystem(f.ctx, &registryv1.GetSystemRequest{TenantId: "clicklearn", SystemId: "shop"})
	if err != nil || got.System.GetWebhook().GetUrl() != "https://erase.clicklearn.example/lethe" {
		t.Fatalf("stored webhook = %v, %v", got.GetSystem().GetWebhook(), err)
	}

	// A tenant that allows private networks may register an in-house
	// receiver on one; metadata addresses stay refused.
	tenant, err := f.client.GetTenant(f.ctx, &registryv1.GetTenantRequest{TenantId: "clicklearn"})
	if err != nil {
		t.Fatal(err)
	}
	tenant.Tenant.Settings.WebhookPrivateNetworks = true
	if _, err := f.client.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(), Tenant: tenant.Tenant}); err != nil {
		t.Fatal(err)
	}
	f.register(t, "clicklearn", webhookSystem("crm", "https://10.0.0.5/erase"))
	if fields := violations(t, reg(webhookSystem("meta", "https://169.254.169.254/"))); len(fields) != 1 || fields[0] != "system.webhook.url" {
		t.Fatalf("metadata address with private networks allowed: violations %v", fields)
	}
	// Plain http stays refused outside the development profile even to an
	// allowed loopback host.
	if fields := violations(t, reg(webhookSystem("dev", "http://127.0.0.1:8080/"))); len(fields) != 1 {
		t.Fatalf("http to loopback in production: violations %v", fields)
	}
}

// In the development profile a receiver beside Lethe may be reached over
// plain http on loopback, once the tenant allows private networks; a
// public host still needs https.
func TestWebhookHTTPOnLoopbackInDevelopment(t *testing.T) {
	f := startProfile(t, server.ProfileDev)
	f.tenant(t, "clio", "Clio")
	tenant, err := f.client.GetTenant(f.ctx, &registryv1.GetTenantRequest{TenantId: "clio"})
	if err != nil {
		t.Fatal(err)
	}
	reg := func(sys *registryv1.System) error {
		_, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: sys})
		return err
	}
	if fields := violations(t, reg(webhookSystem("crm", "http://127.0.0.1:8080/"))); len(fields) != 1 || fields[0] != "system.webhook.url" {
		t.Fatalf("loopback without webhook_private_networks: violations %v", fields)
	}
	tenant.Tenant.Settings.WebhookPrivateNetworks = true
	if _, err := f.client.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(), Tenant: tenant.Tenant}); err != nil {
		t.Fatal(err)
	}
	f.register(t, "clio", webhookSystem("crm", "http://127.0.0.1:8080/"))
	if fields := violations(t, reg(webhookSystem("pub", "http://erase.example.com/"))); len(fields) != 1 || fields[0] != "system.webhook.url" {
		t.Fatalf("http to a public host in development: violations %v", fields)
	}
}
