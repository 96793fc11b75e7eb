package server_test

import (
	"testing"

	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/idempotency"
	"github.com/lethe-privacy/lethe/platform/internal/kittest"
	kittestv1 "github.com/lethe-privacy/lethe/platform/internal/kittest/gen/lethe/kittest/v1"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/store/storetest"

	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
)

func TestHTTPExplore(t *testing.T) {
	pki := servertest.NewPKI(t)
	cfg := pki.Production(t, `{"rules": [{"identities": ["`+servertest.Identity("newsletter")+`", "`+servertest.JWTIdentity("ada")+`"],
		"methods": ["/lethe.kittest.v1.KitTestService/*"], "tenants": ["clio"]}]}`)
	jwt := pki.WithJWT(t, &cfg)
	f := &fixture{}
	_ = f
	_, base := servertest.StartHTTP(t, cfg, registerKittest(t))
	c := pki.HTTPClient(t, "newsletter")
	for _, call := range []struct{ proc, token, body string }{
		{"/lethe.kittest.v1.KitTestService/Whoami", "", `{}`},
		{"/lethe.kittest.v1.KitTestService/Whoami", jwt.Token("ada"), `{}`},
		{"/lethe.kittest.v1.KitTestService/Put", "", `{"requestId":"r1","tenantId":"Bad","key":"k"}`},
		{"/lethe.kittest.v1.KitTestService/Get", "", `{"tenantId":"clio","key":"missing"}`},
		{"/lethe.kittest.v1.KitTestService/Get", "", `{"tenantId":"cleura","key":"missing"}`},
		{"/lethe.kittest.v1.KitTestService/Get", "garbage", `{"tenantId":"clio","key":"missing"}`},
	} {
		code, body := servertest.PostJSON(t, c, base, call.proc, call.token, call.body)
		t.Logf("%s %d %s", call.proc, code, body)
	}
	_ = server.ProfileProduction
}

// registerKittest registers the kit test service on fresh stores, as start
// does, and returns the registration.
func registerKittest(t *testing.T) func(*server.Server) {
	db := storetest.Open(t, kittest.Schema)
	clk := clock.NewFake(epoch)
	svc := kittest.New(db, mutation.New(db, idempotency.New(clk, idempotency.DefaultTTL)))
	log := audit.New(db, clk)
	return func(s *server.Server) { s.Register(&kittestv1.KitTestService_ServiceDesc, svc, server.WithAudit(log)) }
}
