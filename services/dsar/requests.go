package dsar

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/period"
	"github.com/lethe-privacy/lethe/platform/store"
)

// mutate runs a mutation through the kit (idempotency, validate-only,
// audit in the same transaction) and names the request it acts on in the
// audit entry.
func mutate[Resp proto.Message](ctx context.Context, s *Service, req mutation.Request, fn func(tx *bolt.Tx) (Resp, error)) (Resp, error) {
	if named, ok := req.(interface{ GetDsarId() string }); ok {
		if _, call, ok := audit.FromContext(ctx); ok {
			call.Target = named.GetDsarId()
		}
	}
	return mutation.Apply(ctx, s.Mutator, req, fn)
}

func causeOf(id string) *commonv1.Cause {
	return &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST, Id: id}
}

// typeOf returns a create request's type and its details as stored. The
// corrected values of a rectification are identifiers: the stored details
// keep only their categories.
func typeOf(req *dsarv1.CreateRequestRequest, r *dsarv1.Request) error {
	switch {
	case req.Access != nil:
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_ACCESS, &dsarv1.Request_Access{Access: req.Access}
	case req.Rectification != nil:
		kept := &dsarv1.RectificationDetails{}
		for _, c := range req.Rectification.Corrections {
			kept.Corrections = append(kept.Corrections, &dsarv1.Correction{Category: c.Category})
		}
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_RECTIFICATION, &dsarv1.Request_Rectification{Rectification: kept}
	case req.Erasure != nil:
		e := proto.Clone(req.Erasure).(*dsarv1.ErasureDetails)
		if e.Action == eventsv1.ErasureAction_ERASURE_ACTION_UNSPECIFIED {
			e.Action = eventsv1.ErasureAction_ERASURE_ACTION_ERASE
		}
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_ERASURE, &dsarv1.Request_Erasure{Erasure: e}
	case req.Restriction != nil:
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_RESTRICTION, &dsarv1.Request_Restriction{Restriction: req.Restriction}
	case req.Portability != nil:
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_PORTABILITY, &dsarv1.Request_Portability{Portability: req.Portability}
	case req.Objection != nil:
		o := req.Objection
		switch {
		case o.Scope == eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES && len(o.PurposeIds) == 0:
			return apierror.Invalid("objection.purpose_ids", "name the purposes objected to")
		case o.Scope != eventsv1.ObjectionScope_OBJECTION_SCOPE_PURPOSES && len(o.PurposeIds) > 0:
			return apierror.Invalid("objection.purpose_ids", "only an objection to named purposes lists purposes")
		}
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_OBJECTION, &dsarv1.Request_Objection{Objection: o}
	case req.Withdrawal != nil:
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_CONSENT_WITHDRAWAL, &dsarv1.Request_Withdrawal{Withdrawal: req.Withdrawal}
	case req.AutomatedDecision != nil:
		r.Type, r.Details = dsarv1.RequestType_REQUEST_TYPE_AUTOMATED_DECISION_REVIEW, &dsarv1.Request_AutomatedDecision{AutomatedDecision: req.AutomatedDecision}
	default:
		return apierror.Invalid("details", "set exactly one request type: access, rectification, erasure, restriction, portability, objection, withdrawal or automated_decision")
	}
	return nil
}

// CreateRequest implements DsarService. The tenant's settings (SLA,
// whether verification pauses the clock, time zone and country) are read
// from the registry (or kept from the last read, tenantSettings) before
// the write and recorded on the request, so a
// later change of settings does not move a running deadline. A time of
// receipt earlier than now is checked against the clock inside the write,
// so that a replay of the same request id returns the request filed, not a
// refusal once the receipt has grown too old. Identifiers and corrected
// values are sealed under a fresh key of the request; the response never
// holds them.
func (s *Service) CreateRequest(ctx context.Context, req *dsarv1.CreateRequestRequest) (*dsarv1.CreateRequestResponse, error) {
	f := &filing{r: &dsarv1.Request{TenantId: req.TenantId, SubjectId: req.SubjectId, Requester: req.Requester}}
	if err := typeOf(req, f.r); err != nil {
		return nil, err
	}
	if req.Requester.Kind == dsarv1.RequesterKind_REQUESTER_KIND_AGENT && req.Requester.AuthorityReference == "" {
		return nil, apierror.Invalid("requester.authority_reference", "an agent names the authority it acts under")
	}
	if err := s.tenantRules(ctx, req.TenantId, f); err != nil {
		return nil, err
	}
	if err := s.knownPurposes(ctx, req); err != nil {
		return nil, err
	}
	if req.ReceivedAt != nil {
		if err := req.ReceivedAt.CheckValid(); err != nil {
			return nil, apierror.Invalid("received_at", err.Error())
		}
	}
	for _, id := range req.Identifiers {
		f.r.IdentifierTypes = append(f.r.IdentifierTypes, id.Type)
	}
	// The key is made and synced before the request that needs it
	// commits; a request that does not commit (refused, a dry run, a
	// replay) has its key destroyed again below.
	if err := s.sealIdentifiers(req, f); err != nil {
		return nil, err
	}
	resp, err := mutate(ctx, s, req, func(tx *bolt.Tx) (*dsarv1.CreateRequestResponse, error) {
		return s.fileTx(ctx, tx, req, f)
	})
	if err != nil || req.ValidateOnly || resp.GetRequest().GetDsarId() != f.id {
		if derr := s.keys.Destroy(f.ref); derr != nil {
			s.Logger.Error("dsar: destroying the key of a request that was not filed", "error", derr)
		}
	}
	return resp, err
}

// purposeCheckTimeout bounds the question CreateRequest asks the consent
// service about a request's purposes (knownPurposes).
const purposeCheckTimeout = 2 * time.Second

// knownPurposes refuses a withdrawal, an objection or a restriction that
// names a purpose its tenant's consent service does not declare: the
// consent service would refuse its fan-out at every attempt until its
// deadline. When the consent service cannot be asked (no connection,
// down, slower than purposeCheckTimeout), the request is filed anyway,
// since intake must not wait on a neighbour, and a purpose it does not
// know shows as the fan-out's problem (Request.fanout_problem).
func (s *Service) knownPurposes(ctx context.Context, req *dsarv1.CreateRequestRequest) error {
	var field string
	var ids []string
	switch {
	case req.Withdrawal != nil:
		field, ids = "withdrawal.purpose_ids", req.Withdrawal.PurposeIds
	case req.Objection != nil:
		field, ids = "objection.purpose_ids", req.Objection.PurposeIds
	case req.Restriction != nil:
		field, ids = "restriction.purpose_ids", req.Restriction.PurposeIds
	}
	if len(ids) == 0 || s.consent == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, purposeCheckTimeout)
	defer cancel()
	declared := map[string]bool{}
	for token := ""; ; {
		resp, err := s.consent.ListPurposes(ctx, &consentv1.ListPurposesRequest{TenantId: req.TenantId, PageSize: 1000, PageToken: token})
		if err != nil {
			s.Logger.Info("dsar: could not ask the consent service for the tenant's purposes; filing the request unchecked",
				"tenant", req.TenantId, "error", err)
			return nil
		}
		for _, p := range resp.Purposes {
			declared[p.PurposeId] = true
		}
		if token = resp.NextPageToken; token == "" {
			break
		}
	}
	for i, id := range ids {
		if !declared[id] {
			return apierror.Invalid(fmt.Sprintf("%s[%d]", field, i), fmt.Sprintf("the tenant has no purpose %q", id))
		}
	}
	return nil
}

// filing is what CreateRequest prepares before its write.
type filing struct {
	r        *dsarv1.Request // the fields the call sets
	settings *registryv1.TenantSettings
	zone     string  // the tenant's time zone, which deadlines are counted in
	id       string  // the new request's id
	ref      slotRef // its key
	sealed   []byte  // its identifiers and corrections, sealed under the key
}

// tenantRules reads the settings of tenant, which must be known (the
// tenant directory refuses it otherwise), and the time zone its deadlines
// are counted in, into f.
func (s *Service) tenantRules(ctx context.Context, tenant string, f *filing) error {
	settings, err := s.tenantSettings(ctx, tenant)
	if err != nil {
		return err
	}
	zone := settings.GetTimeZone()
	if zone == "" {
		zone = period.DefaultZone(settings.GetCountry())
	}
	if _, err := period.LoadZone(zone); err != nil {
		return fmt.Errorf("dsar: the time zone of tenant %s: %w", tenant, err)
	}
	f.settings, f.zone = settings, zone
	return nil
}

// sealIdentifiers makes the request's id and key and seals the
// identifiers and corrections under it, into f.
func (s *Service) sealIdentifiers(req *dsarv1.CreateRequestRequest, f *filing) error {
	plain, err := proto.Marshal(&dsarv1.GetIdentifiersResponse{Identifiers: req.Identifiers, Corrections: req.GetRectification().GetCorrections()})
	if err != nil {
		return err
	}
	ref, key, err := s.keys.New()
	if err != nil {
		return err
	}
	f.ref, f.id = ref, outbox.NewEventID()
	f.sealed, err = seal(key, plain, aad(f.id, "identifiers"))
	return err
}

// fileTx writes the request f prepared, received now or at the time
// given, with its deadline, its first transition, its key and sealed
// identifiers, and its audit entry.
func (s *Service) fileTx(ctx context.Context, tx *bolt.Tx, req *dsarv1.CreateRequestRequest, f *filing) (*dsarv1.CreateRequestResponse, error) {
	if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
		return nil, err
	}
	now := s.Clock.Now()
	received, err := receivedAt(req, f.settings, now)
	if err != nil {
		return nil, err
	}
	r := proto.Clone(f.r).(*dsarv1.Request)
	r.DsarId, r.State = f.id, dsarv1.RequestState_REQUEST_STATE_RECEIVED
	r.Deadline = newDeadline(f.settings, f.zone, received, now)
	r.Verification = &dsarv1.Verification{Method: methodOf(f.settings.GetVerificationMethod())}
	// Who entered the request and when is its first transition and
	// its audit entry; a time of receipt given names both times.
	note, method := "received", "transition -> "+r.State.String()
	if !received.Equal(now) {
		note = fmt.Sprintf("received %s, entered %s", received.UTC().Format(time.RFC3339Nano), now.UTC().Format(time.RFC3339Nano))
		method += " received_at=" + received.UTC().Format(time.RFC3339Nano)
	}
	r.History = []*dsarv1.Transition{{To: r.State, At: timestamppb.New(now), Actor: actorOf(ctx), Note: note}}
	r.Result = &dsarv1.Result{}
	if err := s.putRequestTx(tx, r); err != nil {
		return nil, err
	}
	if err := putSecretsTx(tx, f.id, &secrets{Key: &f.ref}); err != nil {
		return nil, err
	}
	if err := store.BucketTx(tx, bucketSealed).Put([]byte(f.id), f.sealed); err != nil {
		return nil, err
	}
	if err := s.Audit.AppendTx(tx, audit.Entry{Actor: actorOf(ctx), Method: method,
		TenantID: r.TenantId, Target: f.id, Code: "OK"}); err != nil {
		return nil, err
	}
	return &dsarv1.CreateRequestResponse{Request: s.viewAt(r, now)}, nil
}

// newDeadline is a new request's deadline under the tenant's settings,
// received at received and entered now: its SLA, whether verification
// pauses it (from now), its time zone and holiday calendar.
func newDeadline(settings *registryv1.TenantSettings, zone string, received, now time.Time) *dsarv1.Deadline {
	d := &dsarv1.Deadline{ReceivedAt: timestamppb.New(received), EnteredAt: timestamppb.New(now),
		VerificationPausesDeadline: settings.GetVerificationPausesDeadline(),
		TimeZone:                   zone, HolidayCalendar: period.CalendarOf(settings.GetCountry()).Country()}
	if settings.GetDsarSla() != nil {
		d.Sla = durationpb.New(settings.DsarSla.AsDuration())
	}
	if d.VerificationPausesDeadline {
		d.PausedSince = timestamppb.New(now)
	}
	computeDeadlines(d, now)
	return d
}

// receivedAt is a new request's time of receipt: now, or the time given,
// which must not be in the future nor older than the tenant allows.
func receivedAt(req *dsarv1.CreateRequestRequest, settings *registryv1.TenantSettings, now time.Time) (time.Time, error) {
	if req.ReceivedAt == nil {
		return now, nil
	}
	received := req.ReceivedAt.AsTime()
	maxAge := defaultMaxReceiptAge
	if settings.GetMaxReceiptAge() != nil {
		maxAge = settings.MaxReceiptAge.AsDuration()
	}
	switch {
	case received.After(now):
		return time.Time{}, apierror.Invalid("received_at", fmt.Sprintf("%s is in the future (now is %s)",
			received.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339)))
	case now.Sub(received) > maxAge:
		return time.Time{}, apierror.Invalid("received_at", fmt.Sprintf("%s is more than the tenant's max_receipt_age (%s) ago",
			received.UTC().Format(time.RFC3339), maxAge))
	}
	return received, nil
}

// viewAt is view for a request not committed yet: it has no tasks.
func (s *Service) viewAt(r *dsarv1.Request, now time.Time) *dsarv1.Request {
	out := proto.Clone(r).(*dsarv1.Request)
	computeDeadlines(out.Deadline, now)
	return out
}

// aad binds a sealed value to its request and its role, so that a value
// copied to another request or role does not decrypt.
func aad(id, role string) []byte { return []byte(id + "\x00" + role) }

// tenantSettings reads the tenant's settings from the registry, or from
// the copy read last while the tenant directory's version of the tenant
// has not moved (settingsCache). A tenant the directory does not know is
// refused NotFound, as tenants.Require refuses it. The settings returned
// are shared: callers must not change them.
func (s *Service) tenantSettings(ctx context.Context, tenant string) (*registryv1.TenantSettings, error) {
	if s.registry == nil {
		return nil, fmt.Errorf("dsar: no registry connection")
	}
	// The version is read before the registry, so settings read after a
	// change are never kept under the version from before it.
	version, err := s.tenants.Version(tenant)
	if err != nil {
		return nil, err
	}
	if settings, ok := s.settings.get(tenant, version); ok {
		return settings, nil
	}
	resp, err := s.registry.GetTenant(ctx, &registryv1.GetTenantRequest{TenantId: tenant})
	if err != nil {
		return nil, err
	}
	settings := resp.Tenant.GetSettings()
	s.settings.put(tenant, version, settings)
	return settings, nil
}

// settingsCache keeps each tenant's settings as the registry last gave
// them, under the tenant directory's version of the tenant when they were
// read. Filing a request read them from the registry each time: one call
// of the four a request cost the registry and retention before its
// directive existed (docs/benchmarks.md, DSAR erasures). A change reaches
// the DSAR service as the registry's tenant.changed event, which moves
// the version; until the directory has recorded it (milliseconds), a
// request is filed under the settings before the change, as one filed a
// moment earlier would have been.
type settingsCache struct {
	mu sync.Mutex
	m  map[string]cachedSettings
}

type cachedSettings struct {
	version  int64
	settings *registryv1.TenantSettings
}

func (c *settingsCache) get(tenant string, version int64) (*registryv1.TenantSettings, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[tenant]
	return e.settings, ok && e.version == version
}

func (c *settingsCache) put(tenant string, version int64, settings *registryv1.TenantSettings) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cachedSettings{}
	}
	c.m[tenant] = cachedSettings{version: version, settings: settings}
}

// methodOf is how a new request of the tenant is verified: the method
// its settings name, a one-time code by e-mail when they name none (or a
// value this version does not know).
func methodOf(m commonv1.VerificationMethod) commonv1.VerificationMethod {
	switch m {
	case commonv1.VerificationMethod_VERIFICATION_METHOD_SMS_CODE,
		commonv1.VerificationMethod_VERIFICATION_METHOD_LOGIN_ATTESTATION,
		commonv1.VerificationMethod_VERIFICATION_METHOD_MANUAL:
		return m
	}
	return commonv1.VerificationMethod_VERIFICATION_METHOD_EMAIL_CODE
}

// GetRequest implements DsarService.
func (s *Service) GetRequest(_ context.Context, req *dsarv1.GetRequestRequest) (*dsarv1.GetRequestResponse, error) {
	var r *dsarv1.Request
	var pending bool
	err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		r, err = s.loadTx(tx, req.TenantId, req.DsarId)
		pending = fanoutPendingTx(tx, req.DsarId)
		return err
	})
	if err != nil {
		return nil, err
	}
	return &dsarv1.GetRequestResponse{Request: s.view(r, pending)}, nil
}

// ListRequests implements DsarService. States and deadline filters are
// evaluated at the service's clock, or as of a past time; a request whose
// clock is paused for verification is never overdue.
func (s *Service) ListRequests(_ context.Context, req *dsarv1.ListRequestsRequest) (*dsarv1.ListRequestsResponse, error) {
	filter, err := newRequestFilter(req, s.Clock.Now())
	if err != nil {
		return nil, err
	}
	resp := &dsarv1.ListRequestsResponse{}
	var pending []bool
	err = s.DB.View(func(tx *bolt.Tx) error {
		if err := s.tenants.RequireTx(tx, req.TenantId); err != nil {
			return err
		}
		// Filters are applied before paging, so a page is full of matches.
		prefix := store.Key(req.TenantId)
		var keys []string
		c := store.BucketTx(tx, bucketRequests).Cursor()
		for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			r := &dsarv1.Request{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			if filter.match(r) {
				keys = append(keys, string(k))
				resp.Requests = append(resp.Requests, r)
			}
		}
		start, end, next, err := paging.Slice(keys, req, req.TenantId, filter.fingerprint)
		if err != nil {
			return err
		}
		resp.Requests, resp.NextPageToken = resp.Requests[start:end], next
		pending = make([]bool, len(resp.Requests))
		for i, r := range resp.Requests {
			pending[i] = fanoutPendingTx(tx, r.DsarId)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Outside the read transaction: view reads the task tracker's file.
	for i, r := range resp.Requests {
		resp.Requests[i] = s.view(r, pending[i])
	}
	return resp, nil
}

// requestFilter is ListRequests' filters, at its clock or as of a past
// time.
type requestFilter struct {
	req    *dsarv1.ListRequestsRequest
	now    time.Time     // the clock, or as_of
	within time.Duration // how far ahead DUE_SOON looks
	// fingerprint names the filters in page tokens, so a token is not
	// used with other filters.
	fingerprint string
}

// newRequestFilter reads req's filters at now, refusing an as_of that is
// invalid or in the future.
func newRequestFilter(req *dsarv1.ListRequestsRequest, now time.Time) (*requestFilter, error) {
	f := &requestFilter{req: req, now: now, within: 7 * 24 * time.Hour}
	if req.DueWithin != nil {
		f.within = req.DueWithin.AsDuration()
	}
	f.fingerprint = fmt.Sprint(req.States, req.Deadline, f.within)
	if req.AsOf != nil {
		if err := req.AsOf.CheckValid(); err != nil {
			return nil, apierror.Invalid("as_of", err.Error())
		}
		if req.AsOf.AsTime().After(now) {
			return nil, apierror.Invalid("as_of", "must not be in the future; DEADLINE_FILTER_DUE_SOON with due_within looks ahead")
		}
		f.now = req.AsOf.AsTime()
		f.fingerprint += " as of " + f.now.UTC().Format(time.RFC3339Nano)
	}
	return f, nil
}

// at returns r's state and deadlines at f.now (as of as_of), or false
// when it had not been received then.
func (f *requestFilter) at(r *dsarv1.Request) (dsarv1.RequestState, *dsarv1.Deadline, bool) {
	if f.req.AsOf != nil {
		return asOf(r, f.now)
	}
	computeDeadlines(r.Deadline, f.now)
	return r.State, r.Deadline, true
}

// match reports whether r passes the state and deadline filters; a
// request whose clock is paused for verification is never overdue nor
// due soon.
func (f *requestFilter) match(r *dsarv1.Request) bool {
	state, d, received := f.at(r)
	if !received {
		return false
	}
	if len(f.req.States) > 0 && !containsState(f.req.States, state) {
		return false
	}
	if f.req.Deadline == dsarv1.DeadlineFilter_DEADLINE_FILTER_UNSPECIFIED {
		return true
	}
	if !isOpen(state) || d.PausedSince != nil {
		return false
	}
	due := earliestDue(d)
	overdue := f.now.After(due)
	if f.req.Deadline == dsarv1.DeadlineFilter_DEADLINE_FILTER_OVERDUE {
		return overdue
	}
	return !overdue && !due.After(f.now.Add(f.within))
}

func containsState(states []dsarv1.RequestState, st dsarv1.RequestState) bool {
	for _, s := range states {
		if s == st {
			return true
		}
	}
	return false
}
