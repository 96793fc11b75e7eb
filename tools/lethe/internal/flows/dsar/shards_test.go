package dsar_test

import (
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/shardrouter"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// TestConsentShards: two consent writers, s0 and s1, each serve the
// tenants the registry assigned to them and refuse the other's with
// WRONG_SHARD naming the right one; a shardrouter.Router sends each
// tenant's calls to its writer; and the DSAR service, reaching consent
// through the router, completes an erasure and a withdrawal of consent
// for a tenant on s1.
func TestConsentShards(t *testing.T) {
	f := startWith(t, options{secondShard: true})
	writers := map[string]consentv1.ConsentServiceClient{"s0": f.consent, "s1": f.shard1}
	tenantShard := map[string]string{"clio": "s0", "clevio": "s1"}
	for tenant, shard := range tenantShard {
		servertest.CreateTenant(t, f.registry, &registryv1.CreateTenantRequest{RequestId: f.id(),
			Tenant: &registryv1.Tenant{TenantId: tenant, DisplayName: tenant, ConsentShard: shard}}, func() error {
			if _, err := f.dsar.ListRequests(f.ctx, &dsarv1.ListRequestsRequest{TenantId: tenant}); err != nil {
				return err
			}
			_, err := writers[shard].ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: tenant})
			return err
		})
	}
	// Each writer refuses the other's tenant, naming the tenant's shard,
	// once it has the registry's event (NotFound before).
	for tenant, shard := range tenantShard {
		for name, w := range writers {
			if name == shard {
				continue
			}
			eventually.True(t, "writer "+name+" refuses "+tenant, func() bool {
				_, err := w.ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: tenant})
				if status.Code(err) == codes.NotFound {
					return false
				}
				got, ok := shardrouter.WrongShard(err)
				if !ok || got != shard {
					t.Fatalf("%s on writer %s = %v, want WRONG_SHARD naming %s", tenant, name, err, shard)
				}
				return true
			})
			_, err := w.Check(f.ctx, &consentv1.CheckRequest{TenantId: tenant, SubjectId: "subject-ada", PurposeId: "marketing.email"})
			if got, ok := shardrouter.WrongShard(err); !ok || got != shard {
				t.Fatalf("Check of %s on writer %s = %v, want WRONG_SHARD naming %s", tenant, name, err, shard)
			}
		}
	}

	// The router sends each tenant's writes and checks to its writer.
	router, err := shardrouter.New(shardrouter.Config{Registry: f.dsarConn, Template: shardrouter.ShardPlaceholder,
		Dial: func(addr string) (grpc.ClientConnInterface, error) {
			return map[string]grpc.ClientConnInterface{"s0": f.dsarConn, "s1": f.shard1Conn}[addr], nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	routed := consentv1.NewConsentServiceClient(router)
	for tenant, shard := range tenantShard {
		if _, err := routed.PutPurpose(f.ctx, &consentv1.PutPurposeRequest{RequestId: f.id(), TenantId: tenant,
			Purpose: &consentv1.Purpose{PurposeId: "marketing.email", Name: "E-mail marketing", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DirectMarketing: true}}); err != nil {
			t.Fatalf("put purpose of %s through the router: %v", tenant, err)
		}
		if _, err := routed.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: tenant, SubjectId: "subject-ada",
			PurposeId: "marketing.email", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM}); err != nil {
			t.Fatalf("record consent of %s through the router: %v", tenant, err)
		}
		// The writer of the tenant's shard holds it, asked directly.
		check, err := writers[shard].Check(f.ctx, &consentv1.CheckRequest{TenantId: tenant, SubjectId: "subject-ada", PurposeId: "marketing.email"})
		if err != nil || !check.Decision.Allowed {
			t.Fatalf("check of %s on its writer %s = %v, %v", tenant, shard, check, err)
		}
		if got, err := router.Shard(f.ctx, tenant); err != nil || got != shard {
			t.Fatalf("router: %s on %s, %v; want %s", tenant, got, err, shard)
		}
	}

	// A DSAR erasure for the tenant on s1 completes end to end, and a
	// withdrawal of consent reaches s1's writer through the DSAR service's
	// router.
	f.system(t, "clevio", "crm", sdk, []string{"marketing.email"}, "user.contact")
	f.subscribe(t, "clevio", "crm", "", answer(subscriber.Erased()))
	w := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", SubjectId: "subject-ada", Withdrawal: &dsarv1.WithdrawalDetails{PurposeIds: []string{"marketing.email"}}})
	f.attest(t, "clevio", w.DsarId)
	f.waitState(t, "clevio", w.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	check, err := f.shard1.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clevio", SubjectId: "subject-ada", PurposeId: "marketing.email"})
	if err != nil || check.Decision.Allowed {
		t.Fatalf("check on s1 after the DSAR withdrawal = %v, %v; want denied", check, err)
	}
	e := f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevio", SubjectId: "subject-ada", Erasure: &dsarv1.ErasureDetails{}})
	f.attest(t, "clevio", e.DsarId)
	final := f.waitState(t, "clevio", e.DsarId, dsarv1.RequestState_REQUEST_STATE_COMPLETED)
	if taskOf(final, "crm").GetOutcome() != eventsv1.OutcomeKind_OUTCOME_KIND_ERASED {
		t.Fatalf("erasure on s1's tenant: %v", final.Result)
	}
}
