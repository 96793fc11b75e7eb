package dsar_test

import (
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

func zone(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// endOfDay is the expiry of the last hour of a day in loc (Regulation
// 1182/71 Art. 3(2)).
func endOfDay(y int, m time.Month, d int, loc *time.Location) time.Time {
	return time.Date(y, m, d, 23, 59, 59, 999_999_999, loc)
}

func (f *fixture) access(t *testing.T, tenant string, received time.Time) *dsarv1.Request {
	t.Helper()
	req := &dsarv1.CreateRequestRequest{TenantId: tenant, Access: &dsarv1.AccessDetails{}}
	if !received.IsZero() {
		req.ReceivedAt = timestamppb.New(received)
	}
	return f.file(t, req)
}

func (f *fixture) list(t *testing.T, req *dsarv1.ListRequestsRequest) []string {
	t.Helper()
	resp, err := f.dsar.ListRequests(f.ctx, req)
	if err != nil {
		t.Fatalf("list %v: %v", req, err)
	}
	var ids []string
	for _, r := range resp.Requests {
		ids = append(ids, r.DsarId)
	}
	return ids
}

func (f *fixture) extend(id, tenant string) error {
	_, err := f.dsar.ExtendDeadline(f.ctx, &dsarv1.ExtendDeadlineRequest{RequestId: f.id(), TenantId: tenant, DsarId: id,
		Months: 1, Reason: "many systems"})
	return err
}

// TestTimeOfReceiptCountsTheDeadline: Art. 12(3) GDPR counts "one month of
// receipt of the request". A request received on Saturday 31 January 2026
// and entered on Tuesday 3 February is due one month after the receipt:
// 28 February is a Saturday, so by Regulation 1182/71 Art. 3(4) the last
// day is Monday 2 March, ending at 23:59:59 in Copenhagen (counted from
// its entry it would be 3 March). The SLA counts from receipt too; the
// time of receipt cannot be in the future or older than the tenant allows;
// who entered it is kept with both times; the extension's first month
// counts from receipt.
func TestTimeOfReceiptCountsTheDeadline(t *testing.T) {
	f := start(t)
	copenhagen, helsinki := zone(t, "Europe/Copenhagen"), zone(t, "Europe/Helsinki")
	f.tenant(t, "clio", &registryv1.TenantSettings{Country: "DK", MaxReceiptAge: durationpb.New(7 * 24 * time.Hour)})
	f.tenant(t, "clevenio", &registryv1.TenantSettings{Country: "FI", DsarSla: durationpb.New(14 * 24 * time.Hour)})
	entered := time.Date(2026, 2, 3, 9, 0, 0, 0, time.UTC)
	received := time.Date(2026, 1, 31, 10, 0, 0, 0, copenhagen)
	f.clock.Set(entered)

	letter := f.access(t, "clio", received)
	d := letter.Deadline
	if !d.ReceivedAt.AsTime().Equal(received) || !d.EnteredAt.AsTime().Equal(entered) {
		t.Fatalf("received %s, entered %s; want %s and %s", d.ReceivedAt.AsTime(), d.EnteredAt.AsTime(), received, entered)
	}
	if d.StatutoryDueDate != "2026-03-02" || !d.StatutoryDueAt.AsTime().Equal(endOfDay(2026, 3, 2, copenhagen)) {
		t.Fatalf("statutory due %s (%s), want the end of Monday 2026-03-02 in Copenhagen", d.StatutoryDueDate, d.StatutoryDueAt.AsTime())
	}
	if d.TimeZone != "Europe/Copenhagen" || d.HolidayCalendar != "DK" {
		t.Fatalf("a Danish tenant's deadline counts in %q with the holidays of %q", d.TimeZone, d.HolidayCalendar)
	}
	// Who entered it, and both times: on the request and in the audit log.
	if h := letter.History[0]; h.Actor != auth.DevIdentityName || !h.At.AsTime().Equal(entered) ||
		!strings.Contains(h.Note, "received 2026-01-31T09:00:00Z") || !strings.Contains(h.Note, "entered 2026-02-03T09:00:00Z") {
		t.Fatalf("the first transition = %v", h)
	}
	var logged *audit.Entry
	if err := f.svc.Audit.Range(0, func(_ uint64, e audit.Entry) error {
		if e.Target == letter.DsarId && strings.HasPrefix(e.Method, "transition") {
			logged = &e
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if logged == nil || logged.Actor != auth.DevIdentityName || !logged.Time.Equal(entered) ||
		!strings.Contains(logged.Method, "received_at=2026-01-31T09:00:00Z") {
		t.Fatalf("the audit entry of the receipt = %+v", logged)
	}

	// Entered now, the same day: due one month after 3 February.
	walkIn := f.access(t, "clio", time.Time{})
	if got := walkIn.Deadline.StatutoryDueDate; got != "2026-03-03" || !walkIn.Deadline.ReceivedAt.AsTime().Equal(entered) {
		t.Fatalf("a request received now is due %s, received %s", got, walkIn.Deadline.ReceivedAt.AsTime())
	}

	// Clevenio's 14-day SLA from the back-dated receipt: the end of
	// Saturday 14 February in Helsinki; a promise of days is not moved
	// past a weekend. The legal deadline beside it moves to Monday.
	sla := f.access(t, "clevenio", received).Deadline
	if sla.SlaDueDate != "2026-02-14" || !sla.SlaDueAt.AsTime().Equal(endOfDay(2026, 2, 14, helsinki)) {
		t.Fatalf("SLA due %s (%s), want the end of 2026-02-14 in Helsinki", sla.SlaDueDate, sla.SlaDueAt.AsTime())
	}
	if sla.StatutoryDueDate != "2026-03-02" || !sla.StatutoryDueAt.AsTime().Equal(endOfDay(2026, 3, 2, helsinki)) {
		t.Fatalf("statutory due %s (%s)", sla.StatutoryDueDate, sla.StatutoryDueAt.AsTime())
	}

	// Refused, naming the field, and nothing filed.
	create := func(tenant string, at time.Time) error {
		_, err := f.dsar.CreateRequest(f.ctx, &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: tenant, SubjectId: "subject-ada",
			Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{},
			ReceivedAt: timestamppb.New(at)})
		return err
	}
	for _, tc := range []struct {
		name, tenant string
		at           time.Time
	}{
		{"a receipt in the future", "clio", entered.Add(time.Minute)},
		{"a receipt older than the tenant's 7 days", "clio", entered.Add(-7*24*time.Hour - time.Minute)},
		{"a receipt older than the default 30 days", "clevenio", entered.Add(-30*24*time.Hour - time.Minute)},
	} {
		if err := create(tc.tenant, tc.at); code(err) != codes.InvalidArgument || fields(err) != "received_at" {
			t.Errorf("%s: %v, want INVALID_ARGUMENT naming received_at", tc.name, err)
		}
	}
	if err := create("clio", entered.Add(-7*24*time.Hour)); err != nil {
		t.Fatalf("a receipt exactly the tenant's 7 days ago: %v", err)
	}
	if n := len(f.list(t, &dsarv1.ListRequestsRequest{TenantId: "clio"})); n != 3 {
		t.Fatalf("clio has %d requests, want the 3 accepted", n)
	}

	// A replay (within the idempotency window) after the receipt has
	// grown older than the tenant allows returns the request filed, not a
	// refusal.
	replay := &dsarv1.CreateRequestRequest{RequestId: f.id(), TenantId: "clio", SubjectId: "subject-ada",
		Requester: &dsarv1.Requester{Kind: dsarv1.RequesterKind_REQUESTER_KIND_SUBJECT}, Access: &dsarv1.AccessDetails{},
		ReceivedAt: timestamppb.New(entered.Add(-7*24*time.Hour + time.Hour))}
	first, err := f.dsar.CreateRequest(f.ctx, replay)
	if err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(2 * time.Hour)
	again, err := f.dsar.CreateRequest(f.ctx, replay)
	if err != nil || again.Request.DsarId != first.Request.DsarId {
		t.Fatalf("replay = %v, %v; want request %s", again.GetRequest().GetDsarId(), err, first.Request.DsarId)
	}

	// 3 March, 09:00 in Copenhagen: the letter's first month ended with
	// 2 March, so it is overdue and can no longer be extended (Art.
	// 12(3)); the walk-in's runs until the end of today.
	f.clock.Set(time.Date(2026, 3, 3, 8, 0, 0, 0, time.UTC))
	overdue := f.list(t, &dsarv1.ListRequestsRequest{TenantId: "clio", Deadline: dsarv1.DeadlineFilter_DEADLINE_FILTER_OVERDUE})
	if len(overdue) != 3 || !contains(overdue, letter.DsarId) || contains(overdue, walkIn.DsarId) {
		t.Fatalf("overdue = %v, want the letter and the two older receipts, not the walk-in %s", overdue, walkIn.DsarId)
	}
	if err := f.extend(letter.DsarId, "clio"); code(err) != codes.FailedPrecondition || reasonOf(err) != "EXTENSION_REFUSED" {
		t.Fatalf("an extension after the first month counted from receipt = %v", err)
	}
	if err := f.extend(walkIn.DsarId, "clio"); err != nil {
		t.Fatalf("an extension within the first month: %v", err)
	}
}

func contains(ids []string, id string) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// TestListRequestsAsOf: which requests were open, overdue or due soon at a
// past time. A request counts from its receipt (Art. 12(3)) even when it
// was entered later, in the state its history shows then, with an
// extension only once granted and a verification pause as it stood.
func TestListRequestsAsOf(t *testing.T) {
	f := start(t)
	copenhagen := zone(t, "Europe/Copenhagen")
	f.tenant(t, "clio", &registryv1.TenantSettings{Country: "DK"})
	f.tenant(t, "clevio", &registryv1.TenantSettings{Country: "DK", VerificationPausesDeadline: true})
	asOf := func(at time.Time, filter dsarv1.DeadlineFilter, within time.Duration, states ...dsarv1.RequestState) []string {
		req := &dsarv1.ListRequestsRequest{TenantId: "clio", AsOf: timestamppb.New(at), Deadline: filter, States: states}
		if within > 0 {
			req.DueWithin = durationpb.New(within)
		}
		return f.list(t, req)
	}
	overdue, dueSoon := dsarv1.DeadlineFilter_DEADLINE_FILTER_OVERDUE, dsarv1.DeadlineFilter_DEADLINE_FILTER_DUE_SOON
	week := 7 * 24 * time.Hour

	// A letter received Saturday 31 January, entered 3 February: due at
	// the end of Monday 2 March in Copenhagen.
	f.clock.Set(time.Date(2026, 2, 3, 9, 0, 0, 0, time.UTC))
	letter := f.access(t, "clio", time.Date(2026, 1, 31, 10, 0, 0, 0, copenhagen))
	f.clock.Set(time.Date(2026, 2, 10, 9, 0, 0, 0, time.UTC))
	later := f.access(t, "clio", time.Time{}) // due Tuesday 10 March
	f.clock.Set(time.Date(2026, 3, 3, 12, 0, 0, 0, time.UTC))

	if got := asOf(time.Date(2026, 2, 1, 12, 0, 0, 0, time.UTC), 0, 0); len(got) != 1 || got[0] != letter.DsarId {
		t.Fatalf("as of 1 February (received, not yet entered): %v, want the letter", got)
	}
	if got := asOf(time.Date(2026, 2, 1, 12, 0, 0, 0, time.UTC), 0, 0, dsarv1.RequestState_REQUEST_STATE_RECEIVED); len(got) != 1 {
		t.Fatalf("received as of 1 February: %v", got)
	}
	// 23:00 in Copenhagen on 2 March: not yet overdue; an hour later it is.
	if got := asOf(time.Date(2026, 3, 2, 22, 0, 0, 0, time.UTC), overdue, 0); len(got) != 0 {
		t.Fatalf("overdue at 23:00 on the last day: %v", got)
	}
	if got := asOf(time.Date(2026, 3, 2, 23, 0, 0, 0, time.UTC), overdue, 0); len(got) != 1 || got[0] != letter.DsarId {
		t.Fatalf("overdue at midnight after the last day: %v, want the letter", got)
	}

	// The later request is extended on 8 March (within its first month):
	// as of 5 March it was still due within the week.
	f.clock.Set(time.Date(2026, 3, 8, 9, 0, 0, 0, time.UTC))
	if err := f.extend(later.DsarId, "clio"); err != nil {
		t.Fatal(err)
	}
	if got := asOf(time.Date(2026, 3, 5, 9, 0, 0, 0, time.UTC), dueSoon, week); len(got) != 1 || got[0] != later.DsarId {
		t.Fatalf("due within a week as of 5 March: %v, want the later request before its extension", got)
	}
	if got := f.list(t, &dsarv1.ListRequestsRequest{TenantId: "clio", Deadline: dueSoon, DueWithin: durationpb.New(week)}); len(got) != 0 {
		t.Fatalf("due within a week now, after the extension: %v", got)
	}

	// The letter is cancelled on 9 March: no longer overdue now, but it
	// was on 4 March, and open then.
	f.clock.Set(time.Date(2026, 3, 9, 9, 0, 0, 0, time.UTC))
	if _, err := f.dsar.CancelRequest(f.ctx, &dsarv1.CancelRequestRequest{RequestId: f.id(), TenantId: "clio", DsarId: letter.DsarId}); err != nil {
		t.Fatal(err)
	}
	if got := f.list(t, &dsarv1.ListRequestsRequest{TenantId: "clio", Deadline: overdue}); len(got) != 0 {
		t.Fatalf("overdue now: %v", got)
	}
	if got := asOf(time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC), overdue, 0); len(got) != 1 || got[0] != letter.DsarId {
		t.Fatalf("overdue as of 4 March: %v, want the letter cancelled since", got)
	}
	if got := asOf(time.Date(2026, 3, 4, 9, 0, 0, 0, time.UTC), 0, 0, dsarv1.RequestState_REQUEST_STATE_RECEIVED); len(got) != 2 {
		t.Fatalf("received (open) as of 4 March: %v, want both", got)
	}
	f.clock.Advance(time.Hour)
	if got := asOf(time.Date(2026, 3, 9, 9, 30, 0, 0, time.UTC), 0, 0, dsarv1.RequestState_REQUEST_STATE_CANCELLED); len(got) != 1 {
		t.Fatalf("cancelled as of half an hour after: %v", got)
	}

	// A request whose clock is paused for verification was never overdue
	// nor due soon while paused, as of any time inside the pause.
	// A system answered by hand keeps the request open after verification.
	f.system(t, "clevio", "crm", manual, nil, "user.contact")
	f.clock.Set(time.Date(2026, 3, 10, 9, 0, 0, 0, time.UTC))
	paused := f.access(t, "clevio", time.Time{})
	f.clock.Set(time.Date(2026, 4, 20, 9, 0, 0, 0, time.UTC))
	f.attest(t, "clevio", paused.DsarId) // 41 days of verification: due 20 May
	f.clock.Set(time.Date(2026, 4, 25, 9, 0, 0, 0, time.UTC))
	inside := &dsarv1.ListRequestsRequest{TenantId: "clevio", AsOf: timestamppb.New(time.Date(2026, 4, 15, 9, 0, 0, 0, time.UTC)),
		Deadline: dueSoon, DueWithin: durationpb.New(60 * 24 * time.Hour)}
	if got := f.list(t, inside); len(got) != 0 {
		t.Fatalf("due soon as of a day inside the pause: %v", got)
	}
	inside.AsOf = timestamppb.New(time.Date(2026, 4, 21, 9, 0, 0, 0, time.UTC))
	if got := f.list(t, inside); len(got) != 1 {
		t.Fatalf("due within 60 days as of the day after verification: %v", got)
	}

	if _, err := f.dsar.ListRequests(f.ctx, &dsarv1.ListRequestsRequest{TenantId: "clio", AsOf: timestamppb.New(f.clock.Now().Add(time.Hour))}); code(err) != codes.InvalidArgument || fields(err) != "as_of" {
		t.Fatalf("as of the future = %v, want INVALID_ARGUMENT naming as_of", err)
	}
}

// TestHelsinkiDeadlineEndsAtMidnightInHelsinki: a UTC date must never make
// a deadline late for a tenant east of UTC. Received at 23:30 UTC on 14
// January 2026, which is 01:30 on 15 January in Helsinki: one month later
// is Sunday 15 February, so the deadline ends with Monday 16 February at
// 23:59:59 Helsinki time, 21:59:59 UTC (Art. 12(3) GDPR; Regulation
// 1182/71 Art. 3(2)(c), 3(4)). Counted in UTC it would end two hours later.
func TestHelsinkiDeadlineEndsAtMidnightInHelsinki(t *testing.T) {
	f := start(t)
	helsinki := zone(t, "Europe/Helsinki")
	f.tenant(t, "clevenio", &registryv1.TenantSettings{Country: "FI"})
	f.tenant(t, "zoned", &registryv1.TenantSettings{TimeZone: "Europe/Helsinki"})
	f.tenant(t, "nowhere", &registryv1.TenantSettings{})
	f.clock.Set(time.Date(2026, 1, 14, 23, 30, 0, 0, time.UTC))
	want := time.Date(2026, 2, 16, 21, 59, 59, 999_999_999, time.UTC)
	for _, tenant := range []string{"clevenio", "zoned"} {
		d := f.access(t, tenant, time.Time{}).Deadline
		if !d.StatutoryDueAt.AsTime().Equal(want) || d.StatutoryDueDate != "2026-02-16" || d.TimeZone != "Europe/Helsinki" {
			t.Fatalf("%s: due %s (%s in %s), want %s", tenant, d.StatutoryDueAt.AsTime(), d.StatutoryDueDate, d.TimeZone, want)
		}
		if h, m, s := d.StatutoryDueAt.AsTime().In(helsinki).Clock(); h != 23 || m != 59 || s != 59 {
			t.Fatalf("%s: ends at %s in Helsinki", tenant, d.StatutoryDueAt.AsTime().In(helsinki))
		}
	}
	// Without a zone or a country: UTC, by its date (14 January → Saturday
	// 14 February → Monday 16 February), ending later than Helsinki's.
	if d := f.access(t, "nowhere", time.Time{}).Deadline; d.TimeZone != "UTC" || !d.StatutoryDueAt.AsTime().Equal(endOfDay(2026, 2, 16, time.UTC)) {
		t.Fatalf("a tenant without zone or country: due %s in %q", d.StatutoryDueAt.AsTime(), d.TimeZone)
	}
	// At 00:30 on 17 February in Helsinki the Finnish requests are overdue.
	f.clock.Set(time.Date(2026, 2, 16, 22, 30, 0, 0, time.UTC))
	if got := f.list(t, &dsarv1.ListRequestsRequest{TenantId: "clevenio", Deadline: dsarv1.DeadlineFilter_DEADLINE_FILTER_OVERDUE}); len(got) != 1 {
		t.Fatalf("overdue at 00:30 Helsinki time: %v", got)
	}
}

// TestPublicHolidaysMoveTheDeadline: Regulation 1182/71 Art. 3(4) moves a
// last day on a public holiday to the next working day, with the holidays
// of the tenant's country as its acts define them: Easter Monday 2026 and
// Christmas 2026 in Denmark, Finland and Sweden; store bededag in Denmark
// in 2023 but not in 2024 (LOV nr 182 af 28/02/2023). For a country whose
// holidays Lethe does not know (DE), only weekends move the last day, so
// the deadline ends on the holiday: earlier than the law, never later.
func TestPublicHolidaysMoveTheDeadline(t *testing.T) {
	f := start(t)
	for _, c := range []string{"dk", "fi", "se", "de"} {
		f.tenant(t, c, &registryv1.TenantSettings{Country: strings.ToUpper(c)})
	}
	for _, tc := range []struct {
		name     string
		received time.Time
		want     map[string]string
		passed   map[string]string
	}{
		{"Easter Monday 2026", time.Date(2026, 3, 6, 10, 0, 0, 0, time.UTC),
			map[string]string{"dk": "2026-04-07", "fi": "2026-04-07", "se": "2026-04-07", "de": "2026-04-06"},
			map[string]string{"dk": "2. påskedag", "fi": "toinen pääsiäispäivä", "se": "annandag påsk"}},
		{"Christmas 2026 (a Friday)", time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC),
			map[string]string{"dk": "2026-12-28", "fi": "2026-12-28", "se": "2026-12-28", "de": "2026-12-25"},
			map[string]string{"dk": "juledag", "fi": "joulupäivä", "se": "juldagen"}},
		{"store bededag 2023", time.Date(2023, 4, 5, 10, 0, 0, 0, time.UTC),
			map[string]string{"dk": "2023-05-08", "se": "2023-05-05"},
			map[string]string{"dk": "store bededag"}},
		{"no store bededag in 2024", time.Date(2024, 3, 26, 10, 0, 0, 0, time.UTC),
			map[string]string{"dk": "2024-04-26"}, nil},
	} {
		f.clock.Set(tc.received)
		for tenant, want := range tc.want {
			d := f.access(t, tenant, time.Time{}).Deadline
			if d.StatutoryDueDate != want {
				t.Errorf("%s, %s: due %s, want %s (passing %v)", tc.name, tenant, d.StatutoryDueDate, want, d.HolidaysPassed)
			}
			if h := tc.passed[tenant]; (h == "") != (len(d.HolidaysPassed) == 0) || h != "" && !strings.Contains(strings.Join(d.HolidaysPassed, ";"), h) {
				t.Errorf("%s, %s: holidays passed %v, want %q", tc.name, tenant, d.HolidaysPassed, h)
			}
		}
	}
	if d := f.access(t, "de", time.Time{}).Deadline; d.HolidayCalendar != "" || d.TimeZone != "Europe/Berlin" {
		t.Fatalf("a German tenant: calendar %q, zone %q; want none (weekends only) and Berlin", d.HolidayCalendar, d.TimeZone)
	}
}

// TestCodeVerificationPausesUntilVerified: with verification pausing the
// clock, the pause lasts until the code is entered, not until it is sent.
func TestCodeVerificationPausesUntilVerified(t *testing.T) {
	f := start(t)
	f.tenant(t, "clevenio", &registryv1.TenantSettings{VerificationPausesDeadline: true,
		VerificationMethod: commonv1.VerificationMethod_VERIFICATION_METHOD_EMAIL_CODE})
	r := f.access(t, "clevenio", time.Time{})
	send := func() {
		if _, err := f.dsar.StartVerification(f.ctx, &dsarv1.StartVerificationRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: r.DsarId}); err != nil {
			t.Fatal(err)
		}
	}
	f.clock.Advance(24 * time.Hour)
	send()
	if d := f.get(t, "clevenio", r.DsarId).Deadline; d.PausedSince == nil {
		t.Fatalf("sending the code ended the pause: %v", d)
	}
	// The first code expired unused; the subject asks for another.
	f.clock.Advance(48 * time.Hour)
	send()
	f.clock.Advance(10 * time.Minute)
	resp, err := f.dsar.VerifyIdentity(f.ctx, &dsarv1.VerifyIdentityRequest{RequestId: f.id(), TenantId: "clevenio", DsarId: r.DsarId, Code: f.codes.Last(r.DsarId)})
	if err != nil || !resp.Verified {
		t.Fatalf("verify = %v, %v", resp, err)
	}
	if d := resp.Request.Deadline; d.Paused.AsDuration() != 72*time.Hour+10*time.Minute || d.PausedSince != nil {
		t.Fatalf("paused %s, want the 72 hours 10 minutes verification took", d.Paused.AsDuration())
	}
}

// TestSettingsChangeReachesNewRequests: the DSAR service keeps a tenant's
// settings between filings, under the version the registry's tenant
// events give the tenant. A changed SLA reaches the requests filed once
// the tenant.changed event is recorded; a request filed before keeps the
// deadline it was filed with.
func TestSettingsChangeReachesNewRequests(t *testing.T) {
	f := start(t)
	helsinki := zone(t, "Europe/Helsinki")
	tenant := &registryv1.Tenant{TenantId: "clevenio", DisplayName: "clevenio",
		Settings: &registryv1.TenantSettings{Country: "FI", DsarSla: durationpb.New(14 * 24 * time.Hour)}}
	f.tenant(t, tenant.TenantId, tenant.Settings)
	f.clock.Set(time.Date(2027, 3, 10, 9, 30, 0, 0, time.UTC))
	access := func() *dsarv1.Request {
		return f.file(t, &dsarv1.CreateRequestRequest{TenantId: "clevenio", Access: &dsarv1.AccessDetails{}})
	}
	before := access()
	if got, want := before.Deadline.SlaDueAt.AsTime(), endOfDay(2027, 3, 24, helsinki); !got.Equal(want) {
		t.Fatalf("SLA due %s, want %s", got, want)
	}
	tenant.Settings.DsarSla = durationpb.New(7 * 24 * time.Hour)
	if _, err := f.registry.UpdateTenant(f.ctx, &registryv1.UpdateTenantRequest{RequestId: f.id(), Tenant: tenant}); err != nil {
		t.Fatal(err)
	}
	want := endOfDay(2027, 3, 17, helsinki)
	eventually.True(t, "a request filed after the change has the 7-day SLA", func() bool {
		return access().Deadline.SlaDueAt.AsTime().Equal(want)
	})
	got, err := f.dsar.GetRequest(f.ctx, &dsarv1.GetRequestRequest{TenantId: "clevenio", DsarId: before.DsarId})
	if err != nil {
		t.Fatal(err)
	}
	if got := got.Request.Deadline.SlaDueAt.AsTime(); !got.Equal(endOfDay(2027, 3, 24, helsinki)) {
		t.Errorf("the request filed before the change is due %s, want the 14-day SLA it was filed with", got)
	}
}
