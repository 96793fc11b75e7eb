package registry_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/registryclient"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/platform/tenants"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/services/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

// today is the fixture's clock: the day these tests were written.
var today = time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)

func date(y int, m time.Month, d int) *timestamppb.Timestamp {
	return timestamppb.New(time.Date(y, m, d, 0, 0, 0, 0, time.UTC))
}

type fixture struct {
	conn   *grpc.ClientConn
	client registryv1.RegistryServiceClient
	js     jetstream.JetStream
	clock  *clock.Fake
	ctx    context.Context
	n      int
}

func start(t testing.TB) *fixture {
	t.Helper()
	return startProfile(t, server.ProfileProduction)
}

// startProfile starts the registry as a host in profile would: the
// registry judges registered URLs by its profile. The server itself stays
// in development (the harness's plaintext loopback listener); only the
// registry is told the profile.
func startProfile(t testing.TB, profile string) *fixture {
	t.Helper()
	clk := clock.NewFake(today)
	reg := service.Factory{Name: registry.Factory.Name, New: func(d service.Deps) (service.Service, error) {
		d.Profile = profile
		return registry.Factory.New(d)
	}}
	h := servicetest.Start(t, servicetest.Options{Clock: clk}, reg)
	return &fixture{conn: h.Conn, client: registryv1.NewRegistryServiceClient(h.Conn), js: h.JetStream, clock: clk, ctx: context.Background()}
}

// id returns a fresh request id.
func (f *fixture) id() string {
	f.n++
	return "req-" + time.Duration(f.n).String()
}

func (f *fixture) tenant(t testing.TB, id, name string) {
	t.Helper()
	_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(), Tenant: &registryv1.Tenant{
		TenantId: id, DisplayName: name,
		Settings: &registryv1.TenantSettings{
			Country: "DK", TimeZone: "Europe/Copenhagen", DsarSla: durationpb.New(14 * 24 * time.Hour),
			Dpo:                  &registryv1.Contact{Name: "Data Protection Officer", Email: "dpo@" + id + ".example"},
			SupervisoryAuthority: &registryv1.SupervisoryAuthority{Name: "Datatilsynet", Country: "DK", Url: "https://www.datatilsynet.dk"},
		},
	}})
	if err != nil {
		t.Fatalf("create tenant %s: %v", id, err)
	}
}

func (f *fixture) register(t testing.TB, tenant string, sys *registryv1.System) {
	t.Helper()
	if _, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: tenant, System: sys}); err != nil {
		t.Fatalf("register %s: %v", sys.SystemId, err)
	}
}

func categories(ids ...string) []*commonv1.DataCategory {
	out := make([]*commonv1.DataCategory, len(ids))
	for i, id := range ids {
		out[i] = &commonv1.DataCategory{Id: id}
	}
	return out
}

func system(id, name, country string, kind commonv1.SystemKind, cats ...string) *registryv1.System {
	sys := &registryv1.System{
		SystemId: id, Name: name, Kind: kind, Country: country, Categories: categories(cats...),
		TenantRole: registryv1.TenantRole_TENANT_ROLE_CONTROLLER, AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK,
	}
	if kind == commonv1.SystemKind_SYSTEM_KIND_PROCESSOR || kind == commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR {
		sys.DpaSignedAt = date(2021, 9, 1)
	}
	return sys
}

// clickLearn registers ClickLearn ApS's register as its privacy policy
// describes it (SEEDS.md): Azure hosting in the EU, Campaign Monitor for
// e-mail under SCCs, Google Analytics in the United States under the EU-US
// Privacy Shield, and shipping carriers as recipients.
func clickLearn(t testing.TB, f *fixture) {
	t.Helper()
	f.tenant(t, "clicklearn", "ClickLearn ApS")
	f.register(t, "clicklearn", system("azure", "Microsoft Azure", "IE", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR,
		"user.contact", "user.account", "user.financial"))
	cm := system("campaign-monitor", "Campaign Monitor", "AU", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.contact.email", "user.name")
	cm.Transfer = &registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_STANDARD_CONTRACTUAL_CLAUSES, SccVersion: "2021/914", Since: date(2022, 4, 1)}
	cm.PurposeIds = []string{"marketing.newsletter"}
	f.register(t, "clicklearn", cm)
	ga := system("google-analytics", "Google Analytics", "US", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.behavior")
	ga.Transfer = &registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_EU_US_PRIVACY_SHIELD, Since: date(2018, 5, 25)}
	f.register(t, "clicklearn", ga)
	carrier := system("carrier", "Shipping carriers", "DK", commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, "user.contact", "user.name")
	carrier.AnswerMode = commonv1.AnswerMode_ANSWER_MODE_MANUAL
	f.register(t, "clicklearn", carrier)
}

func TestClickLearnTransferFindingClearsUnderAValidMechanism(t *testing.T) {
	f := start(t)
	clickLearn(t, f)

	resp, err := f.client.ListTransferFindings(f.ctx, &registryv1.ListTransferFindingsRequest{TenantId: "clicklearn"})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Findings) != 1 {
		t.Fatalf("findings = %v, want exactly one, for Google Analytics", resp.Findings)
	}
	got := resp.Findings[0]
	if got.SystemId != "google-analytics" || got.Severity != registryv1.Severity_SEVERITY_CRITICAL {
		t.Fatalf("finding = %v, want a critical one for google-analytics", got)
	}

	// Moved to the EU-US Data Privacy Framework, the finding clears; the
	// Privacy Shield version stays in the history.
	ga, err := f.client.GetSystem(f.ctx, &registryv1.GetSystemRequest{TenantId: "clicklearn", SystemId: "google-analytics"})
	if err != nil {
		t.Fatal(err)
	}
	moved := proto.Clone(ga.System).(*registryv1.System)
	moved.EffectiveAt = nil
	moved.Transfer = &registryv1.Transfer{
		Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_EU_US_DATA_PRIVACY_FRAMEWORK,
		Since:     date(2023, 7, 10), Reference: "https://www.dataprivacyframework.gov/list (Google LLC)",
	}
	if _, err := f.client.UpdateSystem(f.ctx, &registryv1.UpdateSystemRequest{RequestId: f.id(), TenantId: "clicklearn", System: moved}); err != nil {
		t.Fatal(err)
	}
	resp, err = f.client.ListTransferFindings(f.ctx, &registryv1.ListTransferFindingsRequest{TenantId: "clicklearn"})
	if err != nil || len(resp.Findings) != 0 {
		t.Fatalf("findings after the move = %v, %v; want none", resp.GetFindings(), err)
	}
	history, err := f.client.GetSystemHistory(f.ctx, &registryv1.GetSystemHistoryRequest{TenantId: "clicklearn", SystemId: "google-analytics"})
	if err != nil || len(history.Versions) != 2 ||
		history.Versions[0].System.Transfer.Mechanism != registryv1.TransferMechanism_TRANSFER_MECHANISM_EU_US_PRIVACY_SHIELD {
		t.Fatalf("history = %v, %v; want both versions, Privacy Shield first", history, err)
	}
}

func TestRoutingIsHierarchicalAndTenantIsolated(t *testing.T) {
	f := start(t)
	clickLearn(t, f)
	f.tenant(t, "clio", "Clio ApS")
	f.register(t, "clio", system("mailer", "Clio mailer", "DK", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user.contact.email"))

	route := func(req *registryv1.RouteRequest) string {
		t.Helper()
		resp, err := f.client.Route(f.ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range resp.Systems {
			ids = append(ids, s.SystemId+":"+strings.TrimPrefix(s.AnswerMode.String(), "ANSWER_MODE_"))
		}
		return strings.Join(ids, ",")
	}
	for _, tc := range []struct {
		name string
		req  *registryv1.RouteRequest
		want string
	}{
		{"a child category reaches systems holding it and its parent",
			&registryv1.RouteRequest{TenantId: "clicklearn", Categories: categories("user.contact.email")},
			"azure:SDK,campaign-monitor:SDK,carrier:MANUAL"},
		{"a parent category reaches systems holding its children",
			&registryv1.RouteRequest{TenantId: "clicklearn", Categories: categories("user.contact")},
			"azure:SDK,campaign-monitor:SDK,carrier:MANUAL"},
		{"unrelated categories reach nobody else",
			&registryv1.RouteRequest{TenantId: "clicklearn", Categories: categories("user.behavior")},
			"google-analytics:SDK"},
		{"a purpose reaches the systems processing for it",
			&registryv1.RouteRequest{TenantId: "clicklearn", PurposeId: "marketing.newsletter"},
			"campaign-monitor:SDK"},
		{"all data reaches every system of the tenant and no other",
			&registryv1.RouteRequest{TenantId: "clicklearn", AllCategories: true},
			"azure:SDK,campaign-monitor:SDK,carrier:MANUAL,google-analytics:SDK"},
		{"another tenant sees only its own",
			&registryv1.RouteRequest{TenantId: "clio", Categories: categories("user.contact")},
			"mailer:SDK"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := route(tc.req); got != tc.want {
				t.Fatalf("route = %s, want %s", got, tc.want)
			}
		})
	}

	// A removed system stops receiving events at once.
	if _, err := f.client.RemoveSystem(f.ctx, &registryv1.RemoveSystemRequest{RequestId: f.id(), TenantId: "clicklearn", SystemId: "carrier"}); err != nil {
		t.Fatal(err)
	}
	if got := route(&registryv1.RouteRequest{TenantId: "clicklearn", Categories: categories("user.contact")}); got != "azure:SDK,campaign-monitor:SDK" {
		t.Fatalf("route after removal = %s", got)
	}
	if _, err := f.client.Route(f.ctx, &registryv1.RouteRequest{TenantId: "nobody", AllCategories: true}); status.Code(err) != codes.NotFound {
		t.Fatalf("route for an unknown tenant = %v, want NotFound", err)
	}
}

// TestDisclosuresAndHistoryFollowEffectiveDates is Clevio's twelve-month
// disclosure list: a recipient removed within the period is included, one
// added after it is not, and "who held what" is answered for any date.
func TestDisclosuresAndHistoryFollowEffectiveDates(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevio", "Clevio")
	hotjar := system("hotjar", "HotJar", "MT", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.behavior")
	hotjar.EffectiveAt = date(2025, 3, 1)
	f.register(t, "clevio", hotjar)
	ads := system("facebook-ads", "Facebook Ads", "IE", commonv1.SystemKind_SYSTEM_KIND_RECIPIENT, "user.contact.email")
	ads.EffectiveAt = date(2025, 6, 1)
	f.register(t, "clevio", ads)
	internal := system("courses", "Course platform", "DE", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user.contact", "user.account")
	internal.EffectiveAt = date(2025, 1, 1)
	f.register(t, "clevio", internal)

	// Facebook Ads also receives device ids from January, and is dropped in
	// April; Google Tags arrives after the period.
	ads.EffectiveAt = date(2026, 1, 15)
	ads.Categories = categories("user.contact.email", "user.device")
	if _, err := f.client.UpdateSystem(f.ctx, &registryv1.UpdateSystemRequest{RequestId: f.id(), TenantId: "clevio", System: ads}); err != nil {
		t.Fatal(err)
	}
	if _, err := f.client.RemoveSystem(f.ctx, &registryv1.RemoveSystemRequest{RequestId: f.id(), TenantId: "clevio", SystemId: "facebook-ads", EffectiveAt: date(2026, 4, 1)}); err != nil {
		t.Fatal(err)
	}
	tags := system("google-tags", "Google Tags", "IE", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.device")
	tags.EffectiveAt = date(2026, 11, 20)
	f.register(t, "clevio", tags)

	resp, err := f.client.ListDisclosures(f.ctx, &registryv1.ListDisclosuresRequest{TenantId: "clevio", From: date(2025, 11, 1), Until: date(2026, 10, 31)})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range resp.Disclosures {
		var cats []string
		for _, c := range d.Categories {
			cats = append(cats, c.Id)
		}
		got = append(got, d.SystemId+"="+strings.Join(cats, "+"))
	}
	if want := "facebook-ads=user.contact.email+user.device,hotjar=user.behavior"; strings.Join(got, ",") != want {
		t.Fatalf("disclosures = %s, want %s", strings.Join(got, ","), want)
	}

	// Who held what on a date.
	for _, tc := range []struct {
		at   *timestamppb.Timestamp
		want string
	}{
		{date(2025, 7, 1), "courses,facebook-ads,hotjar"},
		{date(2026, 5, 1), "courses,hotjar"},
		{nil, "courses,google-tags,hotjar"},
	} {
		list, err := f.client.ListSystems(f.ctx, &registryv1.ListSystemsRequest{TenantId: "clevio", AsOf: tc.at})
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, s := range list.Systems {
			ids = append(ids, s.SystemId)
		}
		if strings.Join(ids, ",") != tc.want {
			t.Errorf("systems at %v = %v, want %s", tc.at.AsTime(), ids, tc.want)
		}
	}
	old, err := f.client.GetSystem(f.ctx, &registryv1.GetSystemRequest{TenantId: "clevio", SystemId: "facebook-ads", AsOf: date(2025, 12, 1)})
	if err != nil || len(old.System.Categories) != 1 {
		t.Fatalf("facebook-ads in December 2025 = %v, %v; want its first version", old, err)
	}
	if _, err := f.client.GetSystem(f.ctx, &registryv1.GetSystemRequest{TenantId: "clevio", SystemId: "facebook-ads"}); status.Code(err) != codes.NotFound {
		t.Fatalf("a removed system now = %v, want NotFound", err)
	}
}

func TestRecordsOfProcessingExport(t *testing.T) {
	f := start(t)
	clickLearn(t, f)
	_, err := f.client.PutActivity(f.ctx, &registryv1.PutActivityRequest{RequestId: f.id(), TenantId: "clicklearn", Activity: &registryv1.ProcessingActivity{
		ActivityId: "newsletter", Name: "Newsletter", Purpose: "Send news about ClickLearn to those who signed up",
		PurposeId: "marketing.newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT,
		DataSubjectCategories: []string{"newsletter subscribers"}, Categories: categories("user.contact.email", "user.name"),
		RecipientSystemIds: []string{"campaign-monitor"}, Retention: "Until consent is withdrawn",
		SecurityMeasures: []string{"Encryption in transit and at rest", "Access limited to the marketing team"},
	}})
	if err != nil {
		t.Fatal(err)
	}

	js, err := f.client.ExportRecordsOfProcessing(f.ctx, &registryv1.ExportRecordsOfProcessingRequest{TenantId: "clicklearn", Format: registryv1.ExportFormat_EXPORT_FORMAT_JSON})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(js.Content, &doc); err != nil {
		t.Fatalf("JSON export does not parse: %v\n%s", err, js.Content)
	}
	text := string(js.Content)
	// Art. 30(1)(a)–(g): controller and DPO, purpose, subjects and data,
	// recipients, third-country transfers with their safeguard, erasure
	// time limit, security measures.
	for _, want := range []string{"ClickLearn ApS", "dpo@clicklearn.example", "Send news about ClickLearn", "newsletter subscribers",
		"user.contact.email", "Campaign Monitor", "AU", "2021/914", "Until consent is withdrawn", "Encryption in transit"} {
		if !strings.Contains(text, want) {
			t.Errorf("JSON export lacks %q", want)
		}
	}
	md, err := f.client.ExportRecordsOfProcessing(f.ctx, &registryv1.ExportRecordsOfProcessingRequest{TenantId: "clicklearn", Format: registryv1.ExportFormat_EXPORT_FORMAT_MARKDOWN})
	if err != nil || !strings.HasPrefix(md.ContentType, "text/markdown") || !strings.Contains(string(md.Content), "# ") || !strings.Contains(string(md.Content), "Newsletter") {
		t.Fatalf("Markdown export = %s, %v", md.GetContent(), err)
	}
	csv, err := f.client.ExportRecordsOfProcessing(f.ctx, &registryv1.ExportRecordsOfProcessingRequest{TenantId: "clicklearn", Format: registryv1.ExportFormat_EXPORT_FORMAT_CSV})
	if err != nil || !strings.HasPrefix(csv.ContentType, "text/csv") || !strings.Contains(string(csv.Content), "Newsletter") {
		t.Fatalf("CSV export = %s, %v", csv.GetContent(), err)
	}

	subs, err := f.client.ListSubProcessors(f.ctx, &registryv1.ListSubProcessorsRequest{TenantId: "clicklearn"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range subs.Systems {
		ids = append(ids, s.SystemId)
	}
	if strings.Join(ids, ",") != "azure,campaign-monitor,google-analytics" {
		t.Fatalf("sub-processor list = %v; want the processors, not the carrier", ids)
	}
}

// violations returns the fields an InvalidArgument names.
func violations(t testing.TB, err error) []string {
	t.Helper()
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("error = %v, want InvalidArgument", err)
	}
	var fields []string
	for _, v := range apierror.Violations(err) {
		fields = append(fields, v.Field)
	}
	return fields
}

func TestInvalidInputNamesTheFieldAndWritesNothing(t *testing.T) {
	f := start(t)
	clickLearn(t, f)
	reg := func(sys *registryv1.System) error {
		_, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clicklearn", System: sys})
		return err
	}
	for _, tc := range []struct {
		name  string
		err   error
		field string
	}{
		{"unknown category", reg(system("x1", "X", "DK", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user.contact.email", "user.telepathy")), "system.categories[1].id"},
		{"country code that does not exist", reg(system("x2", "X", "XX", commonv1.SystemKind_SYSTEM_KIND_INTERNAL)), "system.country"},
		{"lower-case country code", reg(system("x3", "X", "dk", commonv1.SystemKind_SYSTEM_KIND_INTERNAL)), "system.country"},
		{"sub-processor without a parent", reg(system("x4", "X", "DK", commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR)), "system.parent_system_id"},
		{"sub-processor with an unknown parent", reg(func() *registryv1.System {
			s := system("x5", "X", "DK", commonv1.SystemKind_SYSTEM_KIND_SUB_PROCESSOR)
			s.ParentSystemId = "nobody"
			return s
		}()), "system.parent_system_id"},
		{"update dated before the current version", func() error {
			s := system("azure", "Microsoft Azure", "IE", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.contact")
			s.EffectiveAt = date(2020, 1, 1)
			_, err := f.client.UpdateSystem(f.ctx, &registryv1.UpdateSystemRequest{RequestId: f.id(), TenantId: "clicklearn", System: s})
			return err
		}(), "system.effective_at"},
		{"disclosure period ending before it starts", func() error {
			_, err := f.client.ListDisclosures(f.ctx, &registryv1.ListDisclosuresRequest{TenantId: "clicklearn", From: date(2026, 6, 1), Until: date(2026, 1, 1)})
			return err
		}(), "until"},
		{"tenant in a time zone that does not exist", func() error {
			_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(), Tenant: &registryv1.Tenant{TenantId: "atlantis", DisplayName: "x",
				Settings: &registryv1.TenantSettings{TimeZone: "Europe/Atlantis"}}})
			return err
		}(), "tenant.settings.time_zone"},
		{"tenant in the host's zone", func() error {
			_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(), Tenant: &registryv1.Tenant{TenantId: "local", DisplayName: "x",
				Settings: &registryv1.TenantSettings{TimeZone: "Local"}}})
			return err
		}(), "tenant.settings.time_zone"},
		{"tenant allowing receipts a year old", func() error {
			_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(), Tenant: &registryv1.Tenant{TenantId: "lax", DisplayName: "x",
				Settings: &registryv1.TenantSettings{MaxReceiptAge: durationpb.New(365 * 24 * time.Hour)}}})
			return err
		}(), "tenant.settings.max_receipt_age"},
		{"tenant with a bad id", func() error {
			_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(), Tenant: &registryv1.Tenant{TenantId: "Bad.Tenant", DisplayName: "x"}})
			return err
		}(), "tenant.tenant_id"},
		{"financial year end that is not MM-DD", func() error {
			_, err := f.client.CreateTenant(f.ctx, &registryv1.CreateTenantRequest{RequestId: f.id(), Tenant: &registryv1.Tenant{TenantId: "fy", DisplayName: "x",
				Settings: &registryv1.TenantSettings{FinancialYearEnd: "13-01"}}})
			return err
		}(), "tenant.settings.financial_year_end"},
		{"category under an unknown parent", func() error {
			_, err := f.client.DefineCategory(f.ctx, &registryv1.DefineCategoryRequest{RequestId: f.id(), TenantId: "clicklearn",
				Category: &registryv1.Category{Id: "user.nothing.licence_key", Name: "Licence key"}})
			return err
		}(), "category.id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if fields := violations(t, tc.err); len(fields) != 1 || fields[0] != tc.field {
				t.Fatalf("violations name %v, want %s", fields, tc.field)
			}
		})
	}
	list, err := f.client.ListSystems(f.ctx, &registryv1.ListSystemsRequest{TenantId: "clicklearn"})
	if err != nil || len(list.Systems) != 4 {
		t.Fatalf("systems after the rejected calls = %d, %v; want the 4 registered", len(list.GetSystems()), err)
	}

	if _, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "nobody",
		System: system("x", "X", "DK", commonv1.SystemKind_SYSTEM_KIND_INTERNAL)}); status.Code(err) != codes.NotFound {
		t.Fatalf("register for an unknown tenant = %v, want NotFound", err)
	}
	if _, err := f.client.GetTenant(f.ctx, &registryv1.GetTenantRequest{TenantId: "nobody"}); status.Code(err) != codes.NotFound {
		t.Fatalf("unknown tenant = %v, want NotFound", err)
	}
	if _, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clicklearn",
		System: system("azure", "Azure again", "IE", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR)}); status.Code(err) != codes.AlreadyExists {
		t.Fatalf("registering a registered system = %v, want AlreadyExists", err)
	}
}

func TestMutationsAreIdempotentAndValidateOnlyChangesNothing(t *testing.T) {
	f := start(t)
	f.tenant(t, "cleura", "Cleura AB")
	req := &registryv1.RegisterSystemRequest{RequestId: "register-billing", TenantId: "cleura",
		System: system("billing", "Billing", "SE", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user.financial")}

	dry := proto.Clone(req).(*registryv1.RegisterSystemRequest)
	dry.ValidateOnly = true
	if _, err := f.client.RegisterSystem(f.ctx, dry); err != nil {
		t.Fatalf("dry run: %v", err)
	}
	if _, err := f.client.GetSystem(f.ctx, &registryv1.GetSystemRequest{TenantId: "cleura", SystemId: "billing"}); status.Code(err) != codes.NotFound {
		t.Fatalf("system after a dry run = %v, want NotFound", err)
	}
	first, err := f.client.RegisterSystem(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(time.Hour)
	again, err := f.client.RegisterSystem(f.ctx, req)
	if err != nil || !proto.Equal(first, again) {
		t.Fatalf("replay = %v, %v; want the first response", again, err)
	}
	history, err := f.client.GetSystemHistory(f.ctx, &registryv1.GetSystemHistoryRequest{TenantId: "cleura", SystemId: "billing"})
	if err != nil || len(history.Versions) != 1 {
		t.Fatalf("history after a replay = %v, %v; want one version", history, err)
	}
}

// TestChangesArePublished: the other services learn of tenants and systems
// from the registry's events.
func TestChangesArePublished(t *testing.T) {
	f := start(t)
	f.tenant(t, "cleura", "Cleura AB")
	f.register(t, "cleura", system("billing", "Billing", "SE", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user.financial"))
	if _, err := f.client.RemoveSystem(f.ctx, &registryv1.RemoveSystemRequest{RequestId: f.id(), TenantId: "cleura", SystemId: "billing"}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cons, err := f.js.OrderedConsumer(ctx, contract.StreamName, jetstream.OrderedConsumerConfig{FilterSubjects: []string{"lethe.cleura.>"}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for len(got) < 3 {
		msg, err := cons.Next(jetstream.FetchMaxWait(5 * time.Second))
		if err != nil {
			t.Fatalf("after %v: %v", got, err)
		}
		ev := &eventsv1.Event{}
		if err := proto.Unmarshal(msg.Data(), ev); err != nil {
			t.Fatal(err)
		}
		if ev.Cause.Kind != commonv1.CauseKind_CAUSE_KIND_CONFIGURATION || ev.Source != "lethe/registry" {
			t.Errorf("event %v: want a configuration cause from lethe/registry", ev)
		}
		got = append(got, msg.Subject()+" "+ev.Cause.Id)
	}
	want := "lethe.cleura.tenant.registered cleura|lethe.cleura.system.registered billing|lethe.cleura.system.removed billing"
	if strings.Join(got, "|") != want {
		t.Fatalf("events = %v, want %s", got, want)
	}
}

// FuzzRegisterSystem sends arbitrary systems through the whole chain as a
// dry run: whatever the input, the answer is a clean OK, InvalidArgument or
// AlreadyExists, never a crash or an internal error.
func FuzzRegisterSystem(f *testing.F) {
	fx := start(f)
	fx.tenant(f, "clio", "Clio ApS")
	f.Add("crm", "CRM", "DK", int32(1), "", "user.contact.email", int64(1700000000))
	f.Add("sub", "Sub", "US", int32(3), "crm", "user.telepathy", int64(-1))
	f.Add("", "", "", int32(99), "../../", "..", int64(0))
	f.Fuzz(func(t *testing.T, id, name, country string, kind int32, parent, category string, effective int64) {
		_, err := fx.client.RegisterSystem(context.Background(), &registryv1.RegisterSystemRequest{
			RequestId: "fuzz", TenantId: "clio", ValidateOnly: true,
			System: &registryv1.System{
				SystemId: id, Name: name, Country: country, Kind: commonv1.SystemKind(kind), ParentSystemId: parent,
				Categories: categories(category), AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK,
				EffectiveAt: timestamppb.New(time.Unix(effective, 0)),
			},
		})
		switch status.Code(err) {
		case codes.OK, codes.InvalidArgument, codes.AlreadyExists:
		default:
			t.Fatalf("RegisterSystem = %v", err)
		}
	})
}

// TestOtherServicesLearnOfTenants: a tenant created through the registry's
// API becomes known to another service's directory through the event
// stream; a tenant never created stays unknown.
func TestOtherServicesLearnOfTenants(t *testing.T) {
	f := start(t)
	consentDB := storetest.Open(t, store.Schema{Service: "consent", Version: 1})
	dir := tenants.New(consentDB, "consent", "", brokertest.Logger(t))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dir.Run(ctx, f.js) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()

	f.tenant(t, "clio", "Clio ApS")
	eventually.Succeeds(t, "the consent service learns of tenant clio", func() error { return dir.Require("clio") })
	if err := dir.Require("clevio"); status.Code(err) != codes.NotFound {
		t.Fatalf("a tenant never created = %v, want NotFound", err)
	}
}

// TestRoutingFeedsTaskTracking: a service that publishes an erasure asks
// the registry which systems must answer, and its tracker expects exactly
// those — the SDK systems to answer themselves, the manual one by an
// operator.
func TestRoutingFeedsTaskTracking(t *testing.T) {
	f := start(t)
	clickLearn(t, f)
	expect, err := registryclient.New(f.conn).Expect(f.ctx, "clicklearn", registryclient.Scope{Categories: []string{"user.contact.email"}})
	if err != nil {
		t.Fatal(err)
	}

	dsarDB := storetest.Open(t, store.Schema{Service: "dsar", Version: 1})
	ob, err := outbox.New(dsarDB, outbox.Config{Source: "lethe/dsar", Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	tracker, err := tasks.New(dsarDB, tasks.Config{Owner: "dsar", Outbox: ob, Clock: f.clock})
	if err != nil {
		t.Fatal(err)
	}
	ev := &eventsv1.Event{
		TenantId: "clicklearn", SubjectId: "subject-7",
		Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "dsar-1"},
		Body: &eventsv1.Event_ErasureRequested{ErasureRequested: &eventsv1.ErasureRequested{
			Scope: &eventsv1.Scope{Categories: categories("user.contact.email")}, Action: eventsv1.ErasureAction_ERASURE_ACTION_ERASE,
		}},
	}
	if err := dsarDB.Update(func(tx *bolt.Tx) error { return tracker.PublishTx(f.ctx, tx, ev, expect) }); err != nil {
		t.Fatal(err)
	}
	open, err := tracker.CauseTasks("clicklearn", ev.Cause)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, task := range open {
		got = append(got, task.SystemID+":"+strings.TrimPrefix(task.Mode.String(), "ANSWER_MODE_"))
	}
	if want := "azure:SDK,campaign-monitor:SDK,carrier:MANUAL"; strings.Join(got, ",") != want {
		t.Fatalf("tasks = %v, want %s", got, want)
	}
}

// TestSystematicTransfersAndUnknownCountries: Clevio hosts everything in
// the US on the user's authorisation, an Art. 49(1)(a) derogation. A
// registered system receives data routinely, so its transfer is
// systematic, which derogations — exceptions to be interpreted
// restrictively, for occasional transfers (Art. 49(1), recital 113; EDPB
// Guidelines 2/2018) — cannot carry: a warning, not information. A
// processor whose country the policy does not name is registered without
// one rather than with a guess; it is treated as outside the EU/EEA and
// the findings say the country is unknown.
func TestSystematicTransfersAndUnknownCountries(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevio", "Clevio")
	platform := system("platform", "Clevio platform", "US", commonv1.SystemKind_SYSTEM_KIND_INTERNAL, "user")
	platform.Transfer = &registryv1.Transfer{Mechanism: registryv1.TransferMechanism_TRANSFER_MECHANISM_DEROGATION,
		Reference: "Art. 49(1)(a): the user's authorisation"}
	f.register(t, "clevio", platform)
	f.register(t, "clevio", system("campaign-monitor", "Campaign Monitor", "", commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, "user.contact.email"))

	resp, err := f.client.ListTransferFindings(f.ctx, &registryv1.ListTransferFindingsRequest{TenantId: "clevio"})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, fd := range resp.Findings {
		got = append(got, fd.SystemId+" "+fd.Severity.String()+" "+fd.Code)
		if fd.Code == "DEROGATION_SYSTEMATIC" && !strings.Contains(fd.Message, "2/2018") {
			t.Errorf("the derogation finding does not cite the EDPB guidelines: %s", fd.Message)
		}
	}
	want := []string{
		"campaign-monitor SEVERITY_CRITICAL TRANSFER_MECHANISM_MISSING",
		"campaign-monitor SEVERITY_WARNING COUNTRY_UNKNOWN",
		"platform SEVERITY_WARNING DEROGATION_SYSTEMATIC",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("findings:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// An unknown country is empty, not a code that is not one.
	if _, err := f.client.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clevio",
		System: system("x", "X", "QQ", commonv1.SystemKind_SYSTEM_KIND_INTERNAL)}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an unassigned country code = %v", err)
	}
}

// TestCategoriesStateTheirProvenance: where data comes from decides what
// a portable copy holds (Art. 20(1); WP242 rev.01). Built-in categories
// state it (an interest profile is inferred, a credit rating comes from a
// third party, usage is observed); a tenant's category inherits its
// parent's unless it states its own.
func TestCategoriesStateTheirProvenance(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", "Clevenio")
	for _, c := range []*registryv1.Category{
		{Id: "user.contact.email.work", Name: "Work e-mail"},
		{Id: "user.professional.public_role", Name: "Public business role", Provenance: registryv1.DataProvenance_DATA_PROVENANCE_THIRD_PARTY},
	} {
		if _, err := f.client.DefineCategory(f.ctx, &registryv1.DefineCategoryRequest{RequestId: f.id(), TenantId: "clevenio", Category: c}); err != nil {
			t.Fatal(err)
		}
	}
	resp, err := f.client.ListCategories(f.ctx, &registryv1.ListCategoriesRequest{TenantId: "clevenio", PageSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]registryv1.DataProvenance{}
	for _, c := range resp.Categories {
		got[c.Id] = c.Provenance
	}
	for id, want := range map[string]registryv1.DataProvenance{
		"user.contact.email":            registryv1.DataProvenance_DATA_PROVENANCE_PROVIDED,
		"user.contact.email.work":       registryv1.DataProvenance_DATA_PROVENANCE_PROVIDED,
		"user.behavior.usage":           registryv1.DataProvenance_DATA_PROVENANCE_OBSERVED,
		"user.inference.interests":      registryv1.DataProvenance_DATA_PROVENANCE_INFERRED,
		"user.financial.credit":         registryv1.DataProvenance_DATA_PROVENANCE_THIRD_PARTY,
		"user.professional":             registryv1.DataProvenance_DATA_PROVENANCE_PROVIDED,
		"user.professional.public_role": registryv1.DataProvenance_DATA_PROVENANCE_THIRD_PARTY,
		"user.genetic":                  registryv1.DataProvenance_DATA_PROVENANCE_UNSPECIFIED,
	} {
		if got[id] != want {
			t.Errorf("%s: provenance %s, want %s", id, got[id], want)
		}
	}
	_, err = f.client.DefineCategory(f.ctx, &registryv1.DefineCategoryRequest{RequestId: f.id(), TenantId: "clevenio",
		Category: &registryv1.Category{Id: "user.contact.fax", Name: "Fax", Provenance: 42}})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an undefined provenance = %v", err)
	}
}
