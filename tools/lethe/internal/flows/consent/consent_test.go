package consent_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/broker/brokertest"
	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/server"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/service/servicetest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/ledger"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
	"github.com/lethe-privacy/lethe/services/consent"
	"github.com/lethe-privacy/lethe/services/registry"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m, brokertest.LeakOptions...) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// fixture runs the registry and the consent service as lethe dev does
// (servicetest): the consent service learns tenants from the registry's
// events and asks it which systems must honour a limit.
type fixture struct {
	// conn reaches the consent service (and, from startWith, the extra
	// services beside it).
	conn     grpc.ClientConnInterface
	consent  consentv1.ConsentServiceClient
	registry registryv1.RegistryServiceClient
	svc      *consent.Service
	clock    *clock.Fake
	deps     service.Deps
	n        atomic.Int64
	ctx      context.Context
	// host runs both services on their data folder; backup and telemetry
	// are what the consent service starts with, so that a test can stop
	// the host and start it again on the same files with them
	// (stopConsent, withBackups, restart).
	host      *servicetest.Host
	backup    service.BackupConfig
	telemetry *telemetry.Providers
	// public is the consent service's public endpoint (web_test.go).
	public consent.PublicOptions
}

func run(t testing.TB, svc interface{ Run(context.Context) error }, closer func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
		if err := closer(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
}

func start(t testing.TB) *fixture { return startWith(t, nil) }

// startWith also serves the consent service, with extra services beside
// it, on an in-memory server that f.conn and f.consent reach (benchmarks
// compare the two on one server and transport).
func startWith(t testing.TB, extra func(*server.Server)) *fixture {
	t.Helper()
	return startOn(t, servicetest.Options{Clock: clock.NewFake(servicetest.Epoch), Logger: quiet}, extra)
}

// startOn is startWith on the host options opts; f.clock is nil unless
// their Clock is a clock.Fake.
func startOn(t testing.TB, opts servicetest.Options, extra func(*server.Server), configure ...func(*fixture)) *fixture {
	t.Helper()
	f := &fixture{ctx: context.Background()}
	for _, c := range configure {
		c(f)
	}
	f.clock, _ = opts.Clock.(*clock.Fake)
	con := service.Factory{Name: consent.Factory.Name, Neighbours: consent.Factory.Neighbours,
		New: func(d service.Deps) (service.Service, error) {
			d.Backup = f.backup
			if f.telemetry != nil {
				d.Telemetry = f.telemetry
			}
			svc, err := consent.New(d, consent.Options{ExpirySweepEvery: time.Hour, Public: f.public})
			f.svc = svc
			return svc, err
		}}
	f.host = servicetest.Start(t, opts, registry.Factory, con)
	f.deps = service.Deps{Clock: f.host.Clock, Logger: quiet, NATS: f.host.NATS, JetStream: f.host.JetStream}
	f.registry = registryv1.NewRegistryServiceClient(f.host.Conn)
	f.conn = f.host.Conn
	if extra != nil {
		f.conn = servertest.Start(t, server.Config{Clock: f.host.Clock, Logger: quiet}, func(s *server.Server) {
			f.svc.Register(s)
			extra(s)
		})
	}
	f.consent = consentv1.NewConsentServiceClient(f.conn)
	return f
}

// stopConsent stops the services and closes their files.
func (f *fixture) stopConsent() { f.host.Stop() }

func (f *fixture) id() string { return fmt.Sprint("req-", f.n.Add(1)) }

// tenant creates a tenant in the registry and waits until the consent
// service has learned of it from the registry's event.
func (f *fixture) tenant(t testing.TB, id string) {
	t.Helper()
	servertest.CreateTenant(t, f.registry, &registryv1.CreateTenantRequest{RequestId: f.id(),
		Tenant: &registryv1.Tenant{TenantId: id, DisplayName: id}}, func() error {
		_, err := f.consent.ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: id})
		return err
	})
}

func (f *fixture) purpose(t testing.TB, tenant string, p *consentv1.Purpose) {
	t.Helper()
	if _, err := f.consent.PutPurpose(f.ctx, &consentv1.PutPurposeRequest{RequestId: f.id(), TenantId: tenant, Purpose: p}); err != nil {
		t.Fatalf("put purpose %s: %v", p.PurposeId, err)
	}
}

func (f *fixture) record(t testing.TB, tenant, subject, purpose string, action consentv1.ConsentAction) *consentv1.ConsentRecord {
	t.Helper()
	resp, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: tenant, SubjectId: subject,
		PurposeId: purpose, Action: action, Method: consentv1.CollectionMethod_COLLECTION_METHOD_API,
		Evidence: &consentv1.EvidenceInput{IpAddress: "192.0.2.7", UserAgent: "Mozilla/5.0"}})
	if err != nil {
		t.Fatalf("record %s %s for %s: %v", action, purpose, subject, err)
	}
	return resp.Record
}

func (f *fixture) check(t testing.TB, tenant, subject, purpose string, attrs *consentv1.SubjectAttributes) *consentv1.Decision {
	t.Helper()
	resp, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: tenant, SubjectId: subject, PurposeId: purpose, Attributes: attrs})
	if err != nil {
		t.Fatalf("check %s for %s: %v", purpose, subject, err)
	}
	return resp.Decision
}

func notice(version string, at time.Time, material bool) *consentv1.NoticeVersion {
	return &consentv1.NoticeVersion{Version: version, EffectiveAt: timestamppb.New(at), Material: material}
}

// clio declares Clio's purposes (SEEDS.md): a necessary cookie, statistics
// and marketing cookies with lifetimes, marketing never for students,
// a contract-based transactional mail, legitimate-interest profiling, and
// Clevio's course sign-up gated by the age of digital consent.
func clio(t testing.TB, f *fixture) {
	t.Helper()
	f.tenant(t, "clio")
	v1 := notice("2024-01", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), true)
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "cookies.necessary", Name: "Necessary cookies",
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS, Necessary: true})
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "cookies.statistics", Name: "Statistics cookies",
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DefaultLifetime: durationpb.New(365 * 24 * time.Hour),
		NoticeVersions: []*consentv1.NoticeVersion{v1}})
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "marketing", Name: "Marketing", DirectMarketing: true, GpcOptOut: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DefaultLifetime: durationpb.New(730 * 24 * time.Hour),
		Eligibility: &consentv1.Eligibility{ExcludedRoles: []string{"student"}}, NoticeVersions: []*consentv1.NoticeVersion{v1}})
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "mail.transactional", Name: "Course messages",
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONTRACT})
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "profiling", Name: "Learning recommendations",
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_LEGITIMATE_INTERESTS})
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "courses.signup", Name: "Course sign-up",
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, Eligibility: &consentv1.Eligibility{DigitalConsentAge: true}})
}

func expect(t *testing.T, d *consentv1.Decision, allowed bool, reason consentv1.Reason) {
	t.Helper()
	if d.Allowed != allowed || d.Reason != reason {
		t.Fatalf("decision = %v %s, want %v %s", d.Allowed, d.Reason, allowed, reason)
	}
}

func TestEveryCheckReason(t *testing.T) {
	f := start(t)
	clio(t, f)
	teacher := &consentv1.SubjectAttributes{Role: "teacher"}

	expect(t, f.check(t, "clio", "ada", "marketing", teacher), false, consentv1.Reason_REASON_NOT_GRANTED)
	expect(t, f.check(t, "clio", "ada", "cookies.necessary", teacher), true, consentv1.Reason_REASON_NECESSARY)
	expect(t, f.check(t, "clio", "ada", "mail.transactional", teacher), true, consentv1.Reason_REASON_CONTRACT)
	expect(t, f.check(t, "clio", "ada", "profiling", teacher), true, consentv1.Reason_REASON_LEGITIMATE_INTEREST)
	expect(t, f.check(t, "clio", "ada", "no.such.purpose", teacher), false, consentv1.Reason_REASON_UNKNOWN_PURPOSE)

	// Clio's banner: "accept all" — but marketing is never for students.
	banner, err := f.consent.RecordBannerDecision(f.ctx, &consentv1.RecordBannerDecisionRequest{RequestId: f.id(), TenantId: "clio",
		SubjectId: "ada", Choice: consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL,
		ShownPurposeIds: []string{"cookies.necessary", "cookies.statistics", "marketing"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(banner.Records) != 2 {
		t.Fatalf("accept all recorded %d records, want one per optional purpose shown (2)", len(banner.Records))
	}
	granted := f.check(t, "clio", "ada", "marketing", teacher)
	expect(t, granted, true, consentv1.Reason_REASON_GRANTED)
	expect(t, f.check(t, "clio", "ada", "marketing", &consentv1.SubjectAttributes{Role: "student"}), false, consentv1.Reason_REASON_INELIGIBLE_ROLE)
	expect(t, f.check(t, "clio", "ada", "marketing", &consentv1.SubjectAttributes{Role: "teacher", Gpc: true}), false, consentv1.Reason_REASON_GPC_OPT_OUT)

	// Statistics expire after a year; a renewal extends them.
	f.clock.Advance(300 * 24 * time.Hour)
	f.record(t, "clio", "ada", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_RENEW)
	f.clock.Advance(100 * 24 * time.Hour)
	expect(t, f.check(t, "clio", "ada", "cookies.statistics", teacher), true, consentv1.Reason_REASON_GRANTED)
	f.clock.Advance(300 * 24 * time.Hour)
	expect(t, f.check(t, "clio", "ada", "cookies.statistics", teacher), false, consentv1.Reason_REASON_EXPIRED)

	// A material change of the notice requires consent again.
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "marketing", Name: "Marketing", DirectMarketing: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT, DefaultLifetime: durationpb.New(730 * 24 * time.Hour),
		Eligibility: &consentv1.Eligibility{ExcludedRoles: []string{"student"}},
		NoticeVersions: []*consentv1.NoticeVersion{
			notice("2024-01", time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC), true),
			notice("2027-10", f.clock.Now(), true),
		}})
	expect(t, f.check(t, "clio", "ada", "marketing", teacher), false, consentv1.Reason_REASON_RECONSENT_REQUIRED)
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	expect(t, f.check(t, "clio", "ada", "marketing", teacher), true, consentv1.Reason_REASON_GRANTED)

	f.record(t, "clio", "bob", "marketing", consentv1.ConsentAction_CONSENT_ACTION_DENY)
	expect(t, f.check(t, "clio", "bob", "marketing", teacher), false, consentv1.Reason_REASON_DENIED)

	// Objecting to direct marketing leaves the contract-based transactional
	// messages allowed (Clevio).
	obj, err := f.consent.RecordObjection(f.ctx, &consentv1.RecordObjectionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
		Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(obj.PurposeIds, ",") != "marketing" {
		t.Fatalf("the objection covers %v, want marketing", obj.PurposeIds)
	}
	expect(t, f.check(t, "clio", "ada", "marketing", teacher), false, consentv1.Reason_REASON_OBJECTED)
	expect(t, f.check(t, "clio", "ada", "mail.transactional", teacher), true, consentv1.Reason_REASON_CONTRACT)

	// Restriction: storage only, even for a necessary purpose; lifting it
	// restores.
	restr, err := f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
		Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_ACCURACY_CONTESTED})
	if err != nil {
		t.Fatal(err)
	}
	expect(t, f.check(t, "clio", "ada", "cookies.necessary", teacher), false, consentv1.Reason_REASON_RESTRICTED)
	if _, err := f.consent.LiftRestriction(f.ctx, &consentv1.LiftRestrictionRequest{RequestId: f.id(), TenantId: "clio", RestrictionId: restr.RestrictionId,
		SubjectInformedAt: timestamppb.New(f.clock.Now())}); err != nil {
		t.Fatal(err)
	}
	expect(t, f.check(t, "clio", "ada", "cookies.necessary", teacher), true, consentv1.Reason_REASON_NECESSARY)

	// Withdrawal.
	f.record(t, "clio", "cy", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.record(t, "clio", "cy", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	expect(t, f.check(t, "clio", "cy", "cookies.statistics", teacher), false, consentv1.Reason_REASON_WITHDRAWN)

	// Clevio: the age of digital consent of the subject's own country.
	f.record(t, "clio", "kid", "courses.signup", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	expect(t, f.check(t, "clio", "kid", "courses.signup", &consentv1.SubjectAttributes{Age: 14, Country: "DE"}), false, consentv1.Reason_REASON_UNDER_AGE)
	expect(t, f.check(t, "clio", "kid", "courses.signup", &consentv1.SubjectAttributes{Age: 14, Country: "SE"}), true, consentv1.Reason_REASON_GRANTED)

	// A necessary purpose cannot be refused.
	_, err = f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
		PurposeId: "cookies.necessary", Action: consentv1.ConsentAction_CONSENT_ACTION_DENY, Method: consentv1.CollectionMethod_COLLECTION_METHOD_BANNER})
	if fields := violations(t, err); strings.Join(fields, ",") != "action" {
		t.Fatalf("denying a necessary purpose names %v, want action", fields)
	}

	batch, err := f.consent.CheckBatch(f.ctx, &consentv1.CheckBatchRequest{TenantId: "clio", Items: []*consentv1.CheckBatchItem{
		{SubjectId: "ada", PurposeId: "mail.transactional"}, {SubjectId: "bob", PurposeId: "marketing"},
	}})
	if err != nil || len(batch.Decisions) != 2 || !batch.Decisions[0].Allowed || batch.Decisions[1].Reason != consentv1.Reason_REASON_DENIED {
		t.Fatalf("batch = %v, %v", batch, err)
	}
}

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

// subscribe runs an SDK subscriber for system that applies every limit.
func (f *fixture) subscribe(t testing.TB, system string, applied *atomic.Int64) {
	t.Helper()
	l, err := ledger.Open(filepath.Join(t.TempDir(), "ledger.db"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	apply := func(context.Context, *subscriber.Event) (subscriber.Outcome, error) {
		applied.Add(1)
		return subscriber.Applied(), nil
	}
	sub, err := subscriber.New(subscriber.Config{SystemID: system, Tenant: "clio", JetStream: f.deps.JetStream, Ledger: l, Logger: quiet,
		BackOff: []time.Duration{5 * time.Millisecond},
		Handlers: map[contract.Kind]subscriber.Handler{
			contract.KindConsentWithdrawn: apply, contract.KindObjectionRecorded: apply,
			contract.KindRestrictionApplied: apply, contract.KindRestrictionLifted: apply,
		}})
	if err != nil {
		t.Fatal(err)
	}
	run(t, sub, l.Close)
}

func (f *fixture) waitFanout(t *testing.T, cause *commonv1.Cause, want string) {
	t.Helper()
	eventually.Succeeds(t, fmt.Sprintf("fan-out of %v is %s", cause, want), func() error {
		p, err := f.consent.GetFanout(f.ctx, &consentv1.GetFanoutRequest{TenantId: "clio", Cause: cause})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, task := range p.Tasks {
			got = append(got, task.SystemId+"="+strings.TrimPrefix(task.Outcome.String(), "OUTCOME_KIND_"))
		}
		if !p.Complete || strings.Join(got, ",") != want {
			return fmt.Errorf("%v (complete %v)", got, p.Complete)
		}
		return nil
	})
}

// TestLimitsReachEverySystem: Clio's newsletter unsubscribe reaches the
// newsletter system and its processor; an objection filed through a
// data-subject request carries the request as its cause; each system's
// answer shows in the fan-out.
func TestLimitsReachEverySystem(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", DirectMarketing: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	for _, sys := range []struct{ id, country string }{{"newsletter", "DK"}, {"mail-processor", "IE"}} {
		_, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: &registryv1.System{
			SystemId: sys.id, Name: sys.id, Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, Country: sys.country,
			Categories: []*commonv1.DataCategory{{Id: "user.contact.email"}}, PurposeIds: []string{"newsletter", "marketing"},
			AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK, DpaSignedAt: timestamppb.Now()}})
		if err != nil {
			t.Fatal(err)
		}
	}
	var applied atomic.Int64
	f.subscribe(t, "newsletter", &applied)
	f.subscribe(t, "mail-processor", &applied)

	f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	withdrawal := f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	f.waitFanout(t, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: withdrawal.RecordId},
		"mail-processor=APPLIED,newsletter=APPLIED")

	dsar := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: "dsar-42"}
	if _, err := f.consent.RecordObjection(f.ctx, &consentv1.RecordObjectionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "bob",
		Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING, Cause: dsar}); err != nil {
		t.Fatal(err)
	}
	f.waitFanout(t, dsar, "mail-processor=APPLIED,newsletter=APPLIED")

	restr, err := f.consent.ApplyRestriction(f.ctx, &consentv1.ApplyRestrictionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "cy",
		Ground: eventsv1.RestrictionGround_RESTRICTION_GROUND_LEGAL_CLAIMS, PurposeIds: []string{"newsletter"}})
	if err != nil {
		t.Fatal(err)
	}
	f.waitFanout(t, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_RESTRICTION, Id: restr.RestrictionId},
		"mail-processor=APPLIED,newsletter=APPLIED")
	if n := applied.Load(); n != 6 {
		t.Fatalf("handlers applied %d limits, want 3 events x 2 systems", n)
	}
}

// A cause nothing was published under, for the tenant asking, has no
// fan-out to be complete: an unknown id, and another tenant's
// withdrawal, are NotFound. A withdrawal that no system had to hear of is
// complete, with no task.
func TestFanoutOfAnUnknownOrForeignCauseIsNotFound(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.tenant(t, "cleura")
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	withdrawal := f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	cause := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: withdrawal.RecordId}

	p, err := f.consent.GetFanout(f.ctx, &consentv1.GetFanoutRequest{TenantId: "clio", Cause: cause})
	if err != nil || !p.Complete || len(p.Tasks) != 0 {
		t.Fatalf("fan-out of a withdrawal no system processes = %v, %v; want complete, no task", p, err)
	}
	for name, req := range map[string]*consentv1.GetFanoutRequest{
		"unknown cause": {TenantId: "clio", Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: "no-such-record"}},
		"another kind":  {TenantId: "clio", Cause: &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_OBJECTION, Id: withdrawal.RecordId}},
		"other tenant":  {TenantId: "cleura", Cause: cause},
	} {
		if p, err := f.consent.GetFanout(f.ctx, req); status.Code(err) != codes.NotFound {
			t.Errorf("%s: fan-out = %v, %v; want NotFound", name, p, err)
		}
	}
}

// TestWatchResumesWithoutGaps: a watcher that disconnects and reconnects
// from the last revision it saw receives every change it missed, once, in
// order.
func TestWatchResumesWithoutGaps(t *testing.T) {
	f := start(t)
	clio(t, f)
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := f.consent.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio"})
	if err != nil {
		t.Fatal(err)
	}
	var seen []uint64
	for len(seen) < 6 { // the six purposes of clio()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Changes {
			seen = append(seen, c.Revision)
		}
	}
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	resp, err := stream.Recv()
	if err != nil || resp.Changes[0].Kind != consentv1.ChangeKind_CHANGE_KIND_CONSENT_RECORDED {
		t.Fatalf("live change = %v, %v", resp, err)
	}
	last := resp.Changes[0].Revision
	cancel()

	// Changes while disconnected.
	f.record(t, "clio", "bob", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.record(t, "clio", "bob", "marketing", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)

	stream, err = f.consent.Watch(f.ctx, &consentv1.WatchRequest{TenantId: "clio", AfterRevision: last})
	if err != nil {
		t.Fatal(err)
	}
	var resumed []uint64
	for len(resumed) < 3 {
		if len(resumed) == 2 {
			f.record(t, "clio", "cy", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range resp.Changes {
			resumed = append(resumed, c.Revision)
		}
	}
	if resumed[0] != last+1 || resumed[1] != last+2 || resumed[2] != last+3 {
		t.Fatalf("resumed with revisions %v after %d, want the next three in order", resumed, last)
	}
}

func TestTenantsAreIsolatedAndBadInputIsRefused(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.tenant(t, "cleura")
	f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)

	// Cleura sees neither Clio's purposes nor its subjects.
	expect(t, f.check(t, "cleura", "ada", "marketing", nil), false, consentv1.Reason_REASON_UNKNOWN_PURPOSE)
	list, err := f.consent.ListPurposes(f.ctx, &consentv1.ListPurposesRequest{TenantId: "cleura"})
	if err != nil || len(list.Purposes) != 0 {
		t.Fatalf("cleura's purposes = %v, %v", list, err)
	}

	if _, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "nobody", SubjectId: "ada", PurposeId: "marketing"}); status.Code(err) != codes.NotFound {
		t.Fatalf("check for an unknown tenant = %v, want NotFound", err)
	}
	for name, tc := range map[string]struct {
		call  func() error
		field string
	}{
		"empty subject": {func() error {
			_, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", PurposeId: "marketing"})
			return err
		}, "subject_id"},
		"malformed attributes": {func() error {
			_, err := f.consent.Check(f.ctx, &consentv1.CheckRequest{TenantId: "clio", SubjectId: "ada", PurposeId: "marketing",
				Attributes: &consentv1.SubjectAttributes{Country: "denmark"}})
			return err
		}, "attributes.country"},
		"oversized user agent": {func() error {
			_, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
				PurposeId: "marketing", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_API,
				Evidence: &consentv1.EvidenceInput{UserAgent: strings.Repeat("x", 5000)}})
			return err
		}, "evidence.user_agent"},
		"unknown purpose in a banner": {func() error {
			_, err := f.consent.RecordBannerDecision(f.ctx, &consentv1.RecordBannerDecisionRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
				Choice: consentv1.BannerChoice_BANNER_CHOICE_REJECT_ALL, ShownPurposeIds: []string{"marketing", "telepathy"}})
			return err
		}, "shown_purpose_ids[1]"},
		"unknown notice version": {func() error {
			_, err := f.consent.RecordConsent(f.ctx, &consentv1.RecordConsentRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "ada",
				PurposeId: "marketing", Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, NoticeVersion: "1999",
				Method: consentv1.CollectionMethod_COLLECTION_METHOD_API})
			return err
		}, "notice_version"},
	} {
		t.Run(name, func(t *testing.T) {
			if fields := violations(t, tc.call()); strings.Join(fields, ",") != tc.field {
				t.Fatalf("violations name %v, want %s", fields, tc.field)
			}
		})
	}

	history, err := f.consent.ListConsentHistory(f.ctx, &consentv1.ListConsentHistoryRequest{TenantId: "clio", SubjectId: "ada"})
	if err != nil || len(history.Records) != 1 {
		t.Fatalf("history after refused calls = %v, %v; want the one grant", history, err)
	}
	r := history.Records[0]
	if len(r.Evidence.Fingerprint) != 32 || r.Evidence.KeyId == "" || strings.Contains(fmt.Sprint(r), "192.0.2.7") {
		t.Fatalf("evidence = %v; want a keyed hash and no address", r.Evidence)
	}

	// Destroying the evidence key leaves the records; later evidence is
	// hashed under a new key, so old and new fingerprints cannot be linked.
	destroyed, err := f.consent.DestroyEvidenceKey(f.ctx, &consentv1.DestroyEvidenceKeyRequest{RequestId: f.id(), TenantId: "clio"})
	if err != nil || destroyed.KeyId != r.Evidence.KeyId {
		t.Fatalf("destroy = %v, %v; want key %s", destroyed, err, r.Evidence.KeyId)
	}
	after := f.record(t, "clio", "ada", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	if after.Evidence.KeyId == r.Evidence.KeyId || string(after.Evidence.Fingerprint) == string(r.Evidence.Fingerprint) {
		t.Fatalf("evidence after destruction = %v; want a new key and an unlinkable fingerprint", after.Evidence)
	}

	// Idempotent: the same request id and body returns the first record.
	req := &consentv1.RecordConsentRequest{RequestId: "once", TenantId: "clio", SubjectId: "dan", PurposeId: "marketing",
		Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM}
	first, err := f.consent.RecordConsent(f.ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := f.consent.RecordConsent(f.ctx, req)
	if err != nil || again.Record.RecordId != first.Record.RecordId {
		t.Fatalf("replay = %v, %v; want the first record", again, err)
	}
}

// FuzzCheck asks arbitrary questions through the whole chain: the answer is
// a decision or InvalidArgument, never a crash or an internal error.
func FuzzCheck(f *testing.F) {
	fx := start(f)
	clio(f, fx)
	f.Add("ada", "marketing", "student", int32(14), "DE", true)
	f.Add("", "", "", int32(-1), "dk", false)
	f.Add("x\x00y", "cookies.necessary", "teacher", int32(200), "ZZ", false)
	f.Fuzz(func(t *testing.T, subject, purpose, role string, age int32, country string, gpc bool) {
		_, err := fx.consent.Check(context.Background(), &consentv1.CheckRequest{TenantId: "clio", SubjectId: subject, PurposeId: purpose,
			Attributes: &consentv1.SubjectAttributes{Role: role, Age: age, Country: country, Gpc: gpc}})
		if c := status.Code(err); c != codes.OK && c != codes.InvalidArgument {
			t.Fatalf("Check = %v", err)
		}
	})
}

// TestExpiryIsEmittedWhenItOccurs: a grant whose lifetime runs out becomes
// a CONSENT_EXPIRED change for watchers and a consent.withdrawn limit for
// the systems processing for the purpose; a renewed grant does not expire.
func TestExpiryIsEmittedWhenItOccurs(t *testing.T) {
	f := start(t)
	clio(t, f)
	_, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: &registryv1.System{
		SystemId: "analytics", Name: "Analytics", Kind: commonv1.SystemKind_SYSTEM_KIND_INTERNAL, Country: "DK",
		Categories: []*commonv1.DataCategory{{Id: "user.behavior"}}, PurposeIds: []string{"cookies.statistics"},
		AnswerMode: commonv1.AnswerMode_ANSWER_MODE_SDK}})
	if err != nil {
		t.Fatal(err)
	}
	var applied atomic.Int64
	f.subscribe(t, "analytics", &applied)

	lapsing := f.record(t, "clio", "ada", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.record(t, "clio", "bob", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	f.clock.Advance(200 * 24 * time.Hour)
	f.record(t, "clio", "bob", "cookies.statistics", consentv1.ConsentAction_CONSENT_ACTION_RENEW)
	f.clock.Advance(200 * 24 * time.Hour)

	n, err := f.svc.ExpireDue(f.ctx)
	if err != nil || n != 1 {
		t.Fatalf("ExpireDue = %d, %v; want ada's grant only", n, err)
	}
	if n, err := f.svc.ExpireDue(f.ctx); err != nil || n != 0 {
		t.Fatalf("a second sweep = %d, %v; want nothing", n, err)
	}
	f.waitFanout(t, &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: lapsing.RecordId}, "analytics=APPLIED")

	ctx, cancel := context.WithTimeout(f.ctx, 10*time.Second)
	defer cancel()
	stream, err := f.consent.Watch(ctx, &consentv1.WatchRequest{TenantId: "clio"})
	if err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("no CONSENT_EXPIRED change: %v", err)
		}
		for _, c := range resp.Changes {
			if c.Kind == consentv1.ChangeKind_CHANGE_KIND_CONSENT_EXPIRED {
				if c.SubjectId != "ada" || c.BasisId != lapsing.RecordId {
					t.Fatalf("expired change = %v, want ada's grant", c)
				}
				return
			}
		}
	}
}

// TestANoticeScheduledAheadTakesEffectOnItsDate: a material notice version
// published in advance asks for consent again from its effective date, not
// from the next restart.
func TestANoticeScheduledAheadTakesEffectOnItsDate(t *testing.T) {
	f := start(t)
	f.tenant(t, "clio")
	now := f.clock.Now()
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "marketing", Name: "Marketing", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT,
		NoticeVersions: []*consentv1.NoticeVersion{
			notice("v1", now.Add(-24*time.Hour), true),
			notice("v2", now.Add(10*24*time.Hour), true),
		}})
	r := f.record(t, "clio", "ada", "marketing", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	if r.NoticeVersion != "v1" {
		t.Fatalf("recorded under notice %q, want the one in effect, v1", r.NoticeVersion)
	}
	expect(t, f.check(t, "clio", "ada", "marketing", nil), true, consentv1.Reason_REASON_GRANTED)

	f.clock.Advance(9 * 24 * time.Hour)
	if n, err := f.svc.ApplyDueNotices(f.ctx); err != nil || n != 0 {
		t.Fatalf("ApplyDueNotices before v2 = %d, %v", n, err)
	}
	expect(t, f.check(t, "clio", "ada", "marketing", nil), true, consentv1.Reason_REASON_GRANTED)

	f.clock.Advance(2 * 24 * time.Hour)
	if n, err := f.svc.ApplyDueNotices(f.ctx); err != nil || n != 1 {
		t.Fatalf("ApplyDueNotices after v2 = %d, %v; want the purpose recompiled", n, err)
	}
	expect(t, f.check(t, "clio", "ada", "marketing", nil), false, consentv1.Reason_REASON_RECONSENT_REQUIRED)
	if n, err := f.svc.ApplyDueNotices(f.ctx); err != nil || n != 0 {
		t.Fatalf("a second ApplyDueNotices = %d, %v; want nothing left", n, err)
	}
}

// A system that answers by hand has its answer to a limit recorded by an
// operator; the fan-out completes only then.
func TestOperatorAnswersForAManualSystem(t *testing.T) {
	f := start(t)
	clio(t, f)
	f.purpose(t, "clio", &consentv1.Purpose{PurposeId: "newsletter", Name: "Newsletter", DirectMarketing: true,
		LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT})
	for _, sys := range []struct {
		id   string
		mode commonv1.AnswerMode
	}{{"newsletter", commonv1.AnswerMode_ANSWER_MODE_SDK}, {"newsletter-sender", commonv1.AnswerMode_ANSWER_MODE_MANUAL}} {
		_, err := f.registry.RegisterSystem(f.ctx, &registryv1.RegisterSystemRequest{RequestId: f.id(), TenantId: "clio", System: &registryv1.System{
			SystemId: sys.id, Name: sys.id, Kind: commonv1.SystemKind_SYSTEM_KIND_PROCESSOR, Country: "DK",
			Categories: []*commonv1.DataCategory{{Id: "user.contact.email"}}, PurposeIds: []string{"newsletter"},
			AnswerMode: sys.mode, DpaSignedAt: timestamppb.Now()}})
		if err != nil {
			t.Fatal(err)
		}
	}
	var applied atomic.Int64
	f.subscribe(t, "newsletter", &applied)
	f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_GRANT)
	withdrawal := f.record(t, "clio", "ada", "newsletter", consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW)
	cause := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: withdrawal.RecordId}

	// The SDK system answers itself; the manual one waits for its operator.
	eventually.Succeeds(t, "the SDK system answers", func() error {
		p, err := f.consent.GetFanout(f.ctx, &consentv1.GetFanoutRequest{TenantId: "clio", Cause: cause})
		if err != nil {
			t.Fatal(err)
		}
		if len(p.Tasks) != 2 || p.Tasks[0].State != commonv1.TaskState_TASK_STATE_FINAL {
			return fmt.Errorf("fan-out %v", p)
		}
		if p.Complete || p.Tasks[1].State == commonv1.TaskState_TASK_STATE_FINAL {
			t.Fatalf("the manual system's task closed by itself: %v", p)
		}
		return nil
	})

	complete := func(system string, outcome eventsv1.OutcomeKind, reason string) error {
		_, err := f.consent.CompleteTask(f.ctx, &consentv1.CompleteTaskRequest{RequestId: f.id(), TenantId: "clio", Cause: cause,
			SystemId: system, Outcome: outcome, Reason: reason})
		return err
	}
	for _, tc := range []struct {
		name string
		err  error
		code codes.Code
	}{
		{"an SDK system answers itself", complete("newsletter", eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED, ""), codes.FailedPrecondition},
		{"no task for the system", complete("crm", eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED, ""), codes.NotFound},
		{"a failure needs its reason", complete("newsletter-sender", eventsv1.OutcomeKind_OUTCOME_KIND_FAILED, ""), codes.InvalidArgument},
		{"a limit is not erased", complete("newsletter-sender", eventsv1.OutcomeKind_OUTCOME_KIND_ERASED, ""), codes.InvalidArgument},
	} {
		if status.Code(tc.err) != tc.code {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.code)
		}
	}
	if err := complete("newsletter-sender", eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED, ""); err != nil {
		t.Fatal(err)
	}
	f.waitFanout(t, cause, "newsletter=APPLIED,newsletter-sender=APPLIED")
	if err := complete("newsletter-sender", eventsv1.OutcomeKind_OUTCOME_KIND_APPLIED, ""); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("answering a final task again: %v, want FailedPrecondition", err)
	}
}
