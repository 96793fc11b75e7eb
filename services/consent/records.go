package consent

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"maps"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/paging"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// consentAction is one record to make.
type consentAction struct {
	purpose string
	action  consentv1.ConsentAction
	notice  string
	// given is when the subject gave it; zero for now.
	given time.Time
	// linked, for a record made by linking a visitor's decision to a
	// subject, names the visitor's record; evidence is then that record's.
	linked   *consentv1.LinkedFrom
	evidence *consentv1.Evidence
}

// liveGrant reports whether the subject's latest consent to a purpose is a
// grant still in force, so that a refusal ends it.
func (s *Service) liveGrant(tenant, subject, purpose string, now time.Time) bool {
	c, ok := s.index.Consent(tenant, subject, purpose)
	live := c.Action == consentv1.ConsentAction_CONSENT_ACTION_GRANT || c.Action == consentv1.ConsentAction_CONSENT_ACTION_RENEW
	return ok && live && (c.ExpiresAt.IsZero() || now.Before(c.ExpiresAt))
}

// recordTx makes consent records for one subject in the caller's
// transaction and, for every purpose whose live grant they end, publishes
// one consent.withdrawn event with the first such record as its cause.
// expect lists the systems that must honour the withdrawal.
func (s *Service) recordTx(ctx context.Context, tx *bolt.Tx, tenant, subject string, method consentv1.CollectionMethod,
	evidence *consentv1.EvidenceInput, actions []consentAction, withdrawn []string, expect []tasks.Expect) ([]*consentv1.ConsentRecord, error) {
	if err := s.requireTenantTx(tx, tenant); err != nil {
		return nil, err
	}
	ev, err := fingerprintTx(tx, tenant, evidence)
	if err != nil {
		return nil, err
	}
	actor, _ := auth.FromContext(ctx)
	rc := &recording{tenant: tenant, subject: subject, method: method, evidence: ev, actor: actor.Name, now: s.Clock.Now()}
	var records []*consentv1.ConsentRecord
	for _, a := range actions {
		r, err := s.recordOneTx(tx, rc, a)
		if err != nil {
			return nil, err
		}
		records = append(records, r)
	}
	if len(withdrawn) > 0 {
		if err := s.publishWithdrawalTx(ctx, tx, tenant, subject, records, withdrawn, expect); err != nil {
			return nil, err
		}
	}
	return records, nil
}

// recording is what every record of one recordTx call shares.
type recording struct {
	tenant, subject string
	method          consentv1.CollectionMethod
	evidence        *consentv1.Evidence
	actor           string
	now             time.Time
}

// recordOneTx makes the record of one action: checks its purpose and
// notice, schedules its expiry, stores it and updates the decision index
// when the transaction commits.
func (s *Service) recordOneTx(tx *bolt.Tx, rc *recording, a consentAction) (*consentv1.ConsentRecord, error) {
	p, ok, err := storage.PurposeTx(tx, rc.tenant, a.purpose)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, apierror.NotFound("purpose", a.purpose)
	}
	given := a.given
	if given.IsZero() {
		given = rc.now
	}
	// The evidence keeps both times: when the subject gave it and when
	// Lethe recorded it.
	r := &consentv1.ConsentRecord{
		RecordId: outbox.NewEventID(), TenantId: rc.tenant, SubjectId: rc.subject, PurposeId: a.purpose,
		Action: a.action, NoticeVersion: a.notice, Method: rc.method, RecordedAt: timestamppb.New(rc.now),
		Actor: rc.actor, Evidence: rc.evidence, GivenAt: timestamppb.New(given), LinkedFrom: a.linked,
	}
	if a.evidence != nil {
		r.Evidence = a.evidence
	}
	if r.NoticeVersion == "" {
		// The notice in effect when the subject gave it.
		r.NoticeVersion = compile(p, given).CurrentNotice
	} else if !slices.ContainsFunc(p.NoticeVersions, func(v *consentv1.NoticeVersion) bool { return v.Version == a.notice }) {
		return nil, apierror.Invalid("notice_version", fmt.Sprintf("purpose %q has no notice version %q", a.purpose, a.notice))
	}
	if err := scheduleExpiryTx(tx, r, p, given, rc.now); err != nil {
		return nil, err
	}
	if err := storage.AddRecordTx(tx, r); err != nil {
		return nil, err
	}
	return r, s.changeTx(tx, rc.tenant, &consentv1.Change{
		Kind: consentv1.ChangeKind_CHANGE_KIND_CONSENT_RECORDED, SubjectId: rc.subject, PurposeIds: []string{a.purpose},
		BasisId: r.RecordId, At: r.RecordedAt,
	}, consentEntry(r))
}

// scheduleExpiryTx gives a grant or renewal of purpose p its expiry, when
// p has a lifetime, and schedules it unless it has passed.
func scheduleExpiryTx(tx *bolt.Tx, r *consentv1.ConsentRecord, p *consentv1.Purpose, given, now time.Time) error {
	grant := r.Action == consentv1.ConsentAction_CONSENT_ACTION_GRANT || r.Action == consentv1.ConsentAction_CONSENT_ACTION_RENEW
	if !grant || p.DefaultLifetime == nil {
		return nil
	}
	// The lifetime counts from when the subject gave it, not from when an
	// import or a paper form reached Lethe.
	expires := given.Add(p.DefaultLifetime.AsDuration())
	r.ExpiresAt = timestamppb.New(expires)
	// A consent imported after its lifetime ran out is history, never live
	// here: there is nothing to expire.
	if expires.After(now) {
		return storage.ScheduleExpiryTx(tx, r)
	}
	return nil
}

// publishWithdrawalTx publishes one consent.withdrawn event for the
// purposes whose live grant records end, caused by the first record of a
// withdrawn purpose.
func (s *Service) publishWithdrawalTx(ctx context.Context, tx *bolt.Tx, tenant, subject string, records []*consentv1.ConsentRecord,
	withdrawn []string, expect []tasks.Expect) error {
	cause := &commonv1.Cause{Kind: commonv1.CauseKind_CAUSE_KIND_CONSENT_RECORD, Id: records[0].RecordId}
	for _, r := range records {
		if slices.Contains(withdrawn, r.PurposeId) {
			cause.Id = r.RecordId
			break
		}
	}
	return s.publishLimitTx(ctx, tx, tenant, subject, cause, expect, &eventsv1.Event{
		Body: &eventsv1.Event_ConsentWithdrawn{ConsentWithdrawn: &eventsv1.ConsentWithdrawn{PurposeIds: withdrawn}},
	})
}

// givenAt checks when a consent was given, as the request names it: an
// import must say (its consent was collected elsewhere, earlier), a form
// may (a paper form entered later), and the methods that record as the
// subject acts may not. It returns the zero time for "now".
func (s *Service) givenAt(req *consentv1.RecordConsentRequest, now time.Time) (time.Time, error) {
	switch m := req.Method; {
	case req.GivenAt == nil && m == consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT:
		return time.Time{}, apierror.Invalid("given_at", "required for an imported consent: when the subject gave it")
	case req.GivenAt == nil:
		return time.Time{}, nil
	case m != consentv1.CollectionMethod_COLLECTION_METHOD_IMPORT && m != consentv1.CollectionMethod_COLLECTION_METHOD_FORM:
		return time.Time{}, apierror.Invalid("given_at", fmt.Sprintf("only an imported consent or a form names when it was given; %s records as the subject acts", m))
	}
	given := req.GivenAt.AsTime()
	if given.After(now) {
		return time.Time{}, apierror.Invalid("given_at", fmt.Sprintf("%s is in the future (now %s): a consent is recorded after it is given", given.Format(time.RFC3339), now.Format(time.RFC3339)))
	}
	return given, nil
}

// inOrder keeps history in the order it happened: the engine folds records
// in the order they are committed, so a record given before the subject's
// latest one for the purpose would overtake it (an old grant undoing a
// later withdrawal). It runs inside the mutation, so that a repeated
// request gets its first answer.
func (s *Service) inOrder(req *consentv1.RecordConsentRequest, given time.Time) error {
	if c, ok := s.index.Consent(req.TenantId, req.SubjectId, req.PurposeId); ok && !given.IsZero() && given.Before(c.GivenAt) {
		return apierror.FailedPrecondition(apierror.ReasonHistoryOrder, fmt.Sprintf(
			"given_at %s precedes the subject's latest record for purpose %q, given %s: record earlier consents first",
			given.Format(time.RFC3339), req.PurposeId, c.GivenAt.Format(time.RFC3339)))
	}
	return nil
}

// RecordConsent implements ConsentService.
func (s *Service) RecordConsent(ctx context.Context, req *consentv1.RecordConsentRequest) (*consentv1.RecordConsentResponse, error) {
	given, err := s.givenAt(req, s.Clock.Now())
	if err != nil {
		return nil, err
	}
	p, ok := s.index.Purpose(req.TenantId, req.PurposeId)
	if ok && p.Necessary && (req.Action == consentv1.ConsentAction_CONSENT_ACTION_DENY || req.Action == consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW) {
		return nil, apierror.Invalid("action", fmt.Sprintf("purpose %q is strictly necessary: it cannot be refused or withdrawn", req.PurposeId))
	}
	var withdrawn []string
	var expect []tasks.Expect
	if req.Action == consentv1.ConsentAction_CONSENT_ACTION_DENY || req.Action == consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW {
		if req.Action == consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW || s.liveGrant(req.TenantId, req.SubjectId, req.PurposeId, s.Clock.Now()) {
			withdrawn = []string{req.PurposeId}
			var err error
			if expect, err = s.expect(ctx, req.TenantId, withdrawn); err != nil {
				return nil, err
			}
		}
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.RecordConsentResponse, error) {
		if err := s.inOrder(req, given); err != nil {
			return nil, err
		}
		records, err := s.recordTx(ctx, tx, req.TenantId, req.SubjectId, req.Method, req.Evidence,
			[]consentAction{{purpose: req.PurposeId, action: req.Action, notice: req.NoticeVersion, given: given}}, withdrawn, expect)
		if err != nil {
			return nil, err
		}
		return &consentv1.RecordConsentResponse{Record: records[0], Revision: revisionTx(tx, req.TenantId)}, nil
	})
}

// RecordBannerDecision implements ConsentService: one record per optional
// purpose shown, all in one transaction. Strictly necessary purposes are
// not recorded: they were never the subject's to refuse.
func (s *Service) RecordBannerDecision(ctx context.Context, req *consentv1.RecordBannerDecisionRequest) (*consentv1.RecordBannerDecisionResponse, error) {
	for i, id := range req.SelectedPurposeIds {
		if !slices.Contains(req.ShownPurposeIds, id) {
			return nil, apierror.Invalid(fmt.Sprintf("selected_purpose_ids[%d]", i), fmt.Sprintf("purpose %q was not shown", id))
		}
	}
	if req.Choice != consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED && len(req.SelectedPurposeIds) > 0 {
		return nil, apierror.Invalid("selected_purpose_ids", "only an ACCEPT_SELECTED decision selects purposes")
	}
	for _, id := range slices.Sorted(maps.Keys(req.ShownNoticeVersions)) {
		if !slices.Contains(req.ShownPurposeIds, id) {
			return nil, apierror.Invalid(fmt.Sprintf("shown_notice_versions[%q]", id), fmt.Sprintf("purpose %q was not shown", id))
		}
	}
	now := s.Clock.Now()
	var actions []consentAction
	var withdrawn []string
	for i, id := range req.ShownPurposeIds {
		p, ok := s.index.Purpose(req.TenantId, id)
		if !ok {
			if err := s.tenants.Require(req.TenantId); err != nil {
				return nil, err
			}
			return nil, unknownPurpose(fmt.Sprintf("shown_purpose_ids[%d]", i), id)
		}
		if p.Necessary {
			continue
		}
		grant := req.Choice == consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL ||
			(req.Choice == consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED && slices.Contains(req.SelectedPurposeIds, id))
		action := consentv1.ConsentAction_CONSENT_ACTION_DENY
		if grant {
			action = consentv1.ConsentAction_CONSENT_ACTION_GRANT
		} else if s.liveGrant(req.TenantId, req.SubjectId, id, now) {
			withdrawn = append(withdrawn, id)
		}
		actions = append(actions, consentAction{purpose: id, action: action, notice: req.ShownNoticeVersions[id]})
	}
	var expect []tasks.Expect
	if len(withdrawn) > 0 {
		var err error
		if expect, err = s.expect(ctx, req.TenantId, withdrawn); err != nil {
			return nil, err
		}
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.RecordBannerDecisionResponse, error) {
		// Inside the mutation, so that a repeated request gets its first
		// answer even after the notice changed.
		if err := s.noticesCurrent(req); err != nil {
			return nil, err
		}
		records, err := s.recordTx(ctx, tx, req.TenantId, req.SubjectId, consentv1.CollectionMethod_COLLECTION_METHOD_BANNER,
			req.Evidence, actions, withdrawn, expect)
		return &consentv1.RecordBannerDecisionResponse{Records: records, Revision: revisionTx(tx, req.TenantId)}, err
	})
}

// noticesCurrent refuses a banner decision made under a notice version
// that is no longer the purpose's current one: consent is informed only by
// the notice in force (Art. 4(11), Art. 7(1)), so the banner must show the
// current notice and ask again (NOTICE_CHANGED).
func (s *Service) noticesCurrent(req *consentv1.RecordBannerDecisionRequest) error {
	for _, id := range slices.Sorted(maps.Keys(req.ShownNoticeVersions)) {
		shown := req.ShownNoticeVersions[id]
		if p, ok := s.index.Purpose(req.TenantId, id); ok && p.CurrentNotice != shown {
			return apierror.FailedPrecondition(apierror.ReasonNoticeChanged, fmt.Sprintf(
				"purpose %q: the banner showed notice version %q, the current one is %q; show the current notice and ask again",
				id, shown, p.CurrentNotice))
		}
	}
	return nil
}

// ListConsentHistory implements ConsentService.
func (s *Service) ListConsentHistory(_ context.Context, req *consentv1.ListConsentHistoryRequest) (*consentv1.ListConsentHistoryResponse, error) {
	resp := &consentv1.ListConsentHistoryResponse{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return err
		}
		page, err := paging.Scan(store.BucketTx(tx, storage.BucketRecords), store.Key(req.TenantId, req.SubjectId), req, req.TenantId, req.SubjectId)
		if err != nil {
			return err
		}
		for _, v := range page.Values {
			r := &consentv1.ConsentRecord{}
			if err := proto.Unmarshal(v, r); err != nil {
				return err
			}
			resp.Records = append(resp.Records, r)
		}
		resp.NextPageToken = page.NextToken
		return nil
	})
	return resp, err
}

// DestroyEvidenceKey implements ConsentService. bbolt keeps the freed page
// that held the key until it is reused; compacting the file (or an
// encrypted volume) removes that last copy.
func (s *Service) DestroyEvidenceKey(ctx context.Context, req *consentv1.DestroyEvidenceKeyRequest) (*consentv1.DestroyEvidenceKeyResponse, error) {
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.DestroyEvidenceKeyResponse, error) {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		key, ok, err := storage.EvidenceKeyTx(tx, req.TenantId)
		if err != nil || !ok {
			return &consentv1.DestroyEvidenceKeyResponse{}, err
		}
		return &consentv1.DestroyEvidenceKeyResponse{KeyId: key.ID}, storage.DeleteEvidenceKeyTx(tx, req.TenantId)
	})
}

// fingerprintTx hashes what the caller saw under the tenant's evidence key,
// creating the key on first use.
func fingerprintTx(tx *bolt.Tx, tenant string, in *consentv1.EvidenceInput) (*consentv1.Evidence, error) {
	ev := &consentv1.Evidence{Gpc: in.GetGpc(), Origin: in.GetOrigin()}
	if in.GetIpAddress() == "" && in.GetUserAgent() == "" {
		return ev, nil
	}
	key, ok, err := storage.EvidenceKeyTx(tx, tenant)
	if err != nil {
		return nil, err
	}
	if !ok {
		key = storage.EvidenceKey{ID: outbox.NewEventID(), Key: make([]byte, 32)}
		if _, err := rand.Read(key.Key); err != nil {
			return nil, err
		}
		if err := storage.PutEvidenceKeyTx(tx, tenant, key); err != nil {
			return nil, err
		}
	}
	mac := hmac.New(sha256.New, key.Key)
	fmt.Fprintf(mac, "%d:%s|%d:%s", len(in.IpAddress), in.IpAddress, len(in.UserAgent), in.UserAgent)
	ev.Fingerprint, ev.KeyId = mac.Sum(nil), key.ID
	if in.UserAgent != "" {
		// The user agent alone, in a domain of its own, so that neither
		// hash can stand in for the other.
		mac = hmac.New(sha256.New, key.Key)
		fmt.Fprintf(mac, "user-agent|%d:%s", len(in.UserAgent), in.UserAgent)
		ev.UserAgentHash = mac.Sum(nil)
	}
	return ev, nil
}
