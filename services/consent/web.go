package consent

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/mutation"
	"github.com/lethe-privacy/lethe/platform/tasks"
	"github.com/lethe-privacy/lethe/sdk/connect/webhook"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// The web settings of a tenant: what its public consent endpoint
// (public.go) serves, and to whom. They are checked when put, compiled and
// kept in memory, so the endpoint reads no file to answer a preflight.

// webConfig is a tenant's web settings as the public endpoint reads them.
type webConfig struct {
	settings *consentv1.WebSettings
	origins  map[string]bool
	// keys maps a key id to its public key (ed25519.PublicKey or
	// *ecdsa.PublicKey on P-256).
	keys map[string]crypto.PublicKey
}

// webConfigs holds every tenant's compiled web settings.
type webConfigs struct {
	mu sync.RWMutex
	m  map[string]*webConfig
}

func (w *webConfigs) get(tenant string) (*webConfig, bool) {
	w.mu.RLock()
	defer w.mu.RUnlock()
	c, ok := w.m[tenant]
	return c, ok
}

func (w *webConfigs) put(tenant string, c *webConfig) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.m == nil {
		w.m = map[string]*webConfig{}
	}
	w.m[tenant] = c
}

// compileWeb checks web settings that the proto's rules cannot and
// compiles them; every violation names its field.
func compileWeb(w *consentv1.WebSettings) (*webConfig, []apierror.FieldViolation) {
	c := &webConfig{settings: w, origins: map[string]bool{}, keys: map[string]crypto.PublicKey{}}
	var v []apierror.FieldViolation
	for i, o := range w.AllowedOrigins {
		if err := checkOrigin(o); err != nil {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.allowed_origins[%d]", i), Description: err.Error()})
		}
		c.origins[o] = true
	}
	for i, k := range w.SubjectTokenKeys {
		if _, dup := c.keys[k.KeyId]; dup {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.subject_token_keys[%d].key_id", i), Description: "listed twice"})
		}
		pub, err := parseTokenKey(k.PublicKeyPem)
		if err != nil {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.subject_token_keys[%d].public_key_pem", i), Description: err.Error()})
		}
		c.keys[k.KeyId] = pub
	}
	if _, ok := w.Texts[w.DefaultLanguage]; !ok {
		v = append(v, apierror.FieldViolation{Field: "settings.default_language", Description: fmt.Sprintf("%q has no texts", w.DefaultLanguage)})
	}
	for _, lang := range slices.Sorted(maps.Keys(w.Texts)) {
		if u := w.Texts[lang].PolicyUrl; u == "" {
			continue
		} else if err := checkPageURL(u); err != nil {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.texts[%q].policy_url", lang), Description: err.Error()})
		}
	}
	seen := map[string]bool{}
	for i, id := range w.ShownPurposeIds {
		if seen[id] {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.shown_purpose_ids[%d]", i), Description: "listed twice"})
		}
		seen[id] = true
	}
	return c, v
}

// checkOrigin accepts exactly "https://host[:port]", or "http://" for a
// loopback host (a developer's page), as a browser's Origin header spells
// it: lower case, no path, no user, no wildcard.
func checkOrigin(o string) error {
	u, err := url.Parse(o)
	if err != nil || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("%q is not an origin: give scheme://host[:port] and nothing else", o)
	}
	if o != strings.ToLower(o) || strings.Contains(o, "*") {
		return fmt.Errorf("%q: an origin is lower case, without wildcards, as browsers send it", o)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if webhook.IsLoopbackHost(u.Hostname()) {
			return nil
		}
		return fmt.Errorf("%q: http:// only for a loopback host (development); a site is https://", o)
	}
	return fmt.Errorf("%q: the scheme must be https", o)
}

// checkPageURL accepts an https address, or http on a loopback host.
func checkPageURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute address", s)
	}
	if u.Scheme == "https" || (u.Scheme == "http" && webhook.IsLoopbackHost(u.Hostname())) {
		return nil
	}
	return fmt.Errorf("%q: the address must be https", s)
}

// parseTokenKey reads a subject-token key: one PEM PUBLIC KEY block of an
// Ed25519 key or an ECDSA key on P-256, the two algorithms subject tokens
// may use (EdDSA, ES256).
func parseTokenKey(s string) (crypto.PublicKey, error) {
	block, rest := pem.Decode([]byte(s))
	if block == nil || strings.TrimSpace(string(rest)) != "" {
		return nil, fmt.Errorf("give exactly one PEM PUBLIC KEY block")
	}
	if block.Type != "PUBLIC KEY" {
		return nil, fmt.Errorf("PEM block %q: give a PUBLIC KEY block, never a private key", block.Type)
	}
	pub, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("PEM public key: %v", err)
	}
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return k, nil
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return k, nil
		}
		return nil, fmt.Errorf("ECDSA key on %s; subject tokens use P-256 (ES256)", k.Curve.Params().Name)
	}
	return nil, fmt.Errorf("a %T key; subject tokens are signed with Ed25519 (EdDSA) or ECDSA P-256 (ES256)", pub)
}

// shownPurposes returns the purposes the banner shows: the settings' list,
// or every purpose based on consent and every strictly necessary one, by
// id.
func (s *Service) shownPurposes(tenant string, w *consentv1.WebSettings) []decision.Purpose {
	if len(w.ShownPurposeIds) > 0 {
		out := make([]decision.Purpose, 0, len(w.ShownPurposeIds))
		for _, id := range w.ShownPurposeIds {
			if p, ok := s.index.Purpose(tenant, id); ok {
				out = append(out, p)
			}
		}
		return out
	}
	var out []decision.Purpose
	for _, p := range s.index.Purposes(tenant) {
		if p.Necessary || p.Basis == commonv1.LegalBasis_LEGAL_BASIS_CONSENT {
			out = append(out, p)
		}
	}
	return out
}

// checkWebPurposes checks, against the tenant's purposes, that every purpose
// the banner is to show exists and has a name in every language.
func (s *Service) checkWebPurposes(tenant string, w *consentv1.WebSettings) []apierror.FieldViolation {
	var v []apierror.FieldViolation
	for i, id := range w.ShownPurposeIds {
		if _, ok := s.index.Purpose(tenant, id); !ok {
			v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.shown_purpose_ids[%d]", i), Description: fmt.Sprintf("the tenant has no purpose %q", id)})
		}
	}
	shown := s.shownPurposes(tenant, w)
	for _, lang := range slices.Sorted(maps.Keys(w.Texts)) {
		t := w.Texts[lang]
		for _, p := range shown {
			if _, ok := t.Purposes[p.ID]; !ok {
				v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.texts[%q].purposes[%q]", lang, p.ID),
					Description: "the banner shows this purpose: give its name and description in every language"})
			}
		}
		for _, id := range slices.Sorted(maps.Keys(t.Purposes)) {
			if !slices.ContainsFunc(shown, func(p decision.Purpose) bool { return p.ID == id }) {
				v = append(v, apierror.FieldViolation{Field: fmt.Sprintf("settings.texts[%q].purposes[%q]", lang, id), Description: "the banner does not show this purpose"})
			}
		}
	}
	return v
}

// PutWebSettings implements ConsentService.
func (s *Service) PutWebSettings(ctx context.Context, req *consentv1.PutWebSettingsRequest) (*consentv1.PutWebSettingsResponse, error) {
	w := proto.Clone(req.Settings).(*consentv1.WebSettings)
	c, v := compileWeb(w)
	v = append(v, s.checkWebPurposes(req.TenantId, w)...)
	if len(v) > 0 {
		if err := s.tenants.Require(req.TenantId); err != nil {
			return nil, err
		}
		return nil, apierror.InvalidArgument(v...)
	}
	return mutation.Apply(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.PutWebSettingsResponse, error) {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return nil, err
		}
		if err := storage.PutWebSettingsTx(tx, req.TenantId, w); err != nil {
			return nil, err
		}
		tx.OnCommit(func() { s.web.put(req.TenantId, c) })
		return &consentv1.PutWebSettingsResponse{Settings: w}, nil
	})
}

// GetWebSettings implements ConsentService.
func (s *Service) GetWebSettings(_ context.Context, req *consentv1.GetWebSettingsRequest) (*consentv1.GetWebSettingsResponse, error) {
	var resp *consentv1.GetWebSettingsResponse
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return err
		}
		w, ok, err := storage.WebSettingsTx(tx, req.TenantId)
		if err != nil {
			return err
		}
		if !ok {
			return apierror.NotFound("web settings", req.TenantId)
		}
		resp = &consentv1.GetWebSettingsResponse{Settings: w}
		return nil
	})
	return resp, err
}

// loadWeb compiles every tenant's stored web settings at start. Settings
// that cannot be read or no longer compile (a rule tightened since) are
// left out and logged: that tenant's endpoint answers as if it had none,
// closed, and the others' open.
func (s *Service) loadWeb() error {
	return s.DB.View(func(tx *bolt.Tx) error {
		return storage.Each(tx, storage.BucketWebSettings, nil, func(k, v []byte) error {
			tenant := tenantOfKey(k)
			w := &consentv1.WebSettings{}
			if err := proto.Unmarshal(v, w); err != nil {
				// One tenant's damaged settings close its endpoint only.
				s.Logger.Error("web settings unreadable; the tenant's public endpoint is closed until they are put again",
					"tenant", tenant, "error", err)
				return nil
			}
			c, bad := compileWeb(w)
			if len(bad) > 0 {
				s.Logger.Error("web settings no longer valid; the tenant's public endpoint is closed until they are put again",
					"tenant", tenant, "field", bad[0].Field, "problem", bad[0].Description)
				return nil
			}
			s.web.put(tenant, c)
			return nil
		})
	})
}

// linkable reports whether a visitor's latest record of a purpose is still
// the visitor's decision: a grant that has not expired, or a refusal.
func linkable(r *consentv1.ConsentRecord, now int64) bool {
	switch r.Action {
	case consentv1.ConsentAction_CONSENT_ACTION_GRANT, consentv1.ConsentAction_CONSENT_ACTION_RENEW:
		return r.ExpiresAt == nil || r.ExpiresAt.AsTime().UnixNano() > now
	case consentv1.ConsentAction_CONSENT_ACTION_DENY, consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW:
		return r.RecoveredFrom == nil
	}
	return false
}

// linkActions returns the records to make for the subject from the
// visitor's latest records: one per purpose whose decision the subject has
// not made (or changed) since the visitor made it, own being the subject's
// latest records. A grant or renewal is linked as a grant, a refusal or
// withdrawal as a refusal, each as given then, under the notice shown
// then, with the evidence of its collection. withdrawn are the purposes
// whose live grant of the subject's a linked refusal ends.
func linkActions(visitor, own map[string]*consentv1.ConsentRecord, now time.Time) (actions []consentAction, withdrawn []string) {
	for _, id := range slices.Sorted(maps.Keys(visitor)) {
		r := visitor[id]
		if !linkable(r, now.UnixNano()) {
			continue
		}
		given := r.GivenAt.AsTime()
		mine := own[id]
		if mine != nil && !mine.GivenAt.AsTime().Before(given) {
			continue
		}
		action := consentv1.ConsentAction_CONSENT_ACTION_GRANT
		if r.Action == consentv1.ConsentAction_CONSENT_ACTION_DENY || r.Action == consentv1.ConsentAction_CONSENT_ACTION_WITHDRAW {
			action = consentv1.ConsentAction_CONSENT_ACTION_DENY
			if mine != nil && linkable(mine, now.UnixNano()) && (mine.Action == consentv1.ConsentAction_CONSENT_ACTION_GRANT ||
				mine.Action == consentv1.ConsentAction_CONSENT_ACTION_RENEW) {
				withdrawn = append(withdrawn, id)
			}
		}
		actions = append(actions, consentAction{purpose: id, action: action, notice: r.NoticeVersion, given: given,
			linked: &consentv1.LinkedFrom{SubjectId: r.SubjectId, RecordId: r.RecordId}, evidence: r.Evidence})
	}
	return actions, withdrawn
}

// LinkVisitor implements ConsentService. It is idempotent by its content:
// once linked, the subject's records are newer than the visitor's, so a
// second call links nothing (mutation.ApplyFact).
func (s *Service) LinkVisitor(ctx context.Context, req *consentv1.LinkVisitorRequest) (*consentv1.LinkVisitorResponse, error) {
	if req.VisitorSubjectId == req.SubjectId {
		return nil, apierror.Invalid("subject_id", "a visitor is linked to another subject, not to itself")
	}
	var withdrawn []string
	err := s.DB.View(func(tx *bolt.Tx) error {
		if err := s.requireTenantTx(tx, req.TenantId); err != nil {
			return err
		}
		var err error
		_, withdrawn, err = s.linkTx(tx, req)
		return err
	})
	if err != nil {
		return nil, err
	}
	var expect []tasks.Expect
	if len(withdrawn) > 0 {
		if expect, err = s.expect(ctx, req.TenantId, withdrawn); err != nil {
			return nil, err
		}
	}
	return mutation.ApplyFact(ctx, s.Mutator, req, func(tx *bolt.Tx) (*consentv1.LinkVisitorResponse, error) {
		// Decided again inside the transaction, so that two links at once
		// do not both record.
		actions, withdrawnNow, err := s.linkTx(tx, req)
		if err != nil || len(actions) == 0 {
			return &consentv1.LinkVisitorResponse{}, err
		}
		if !slices.Equal(withdrawn, withdrawnNow) {
			return nil, apierror.Unavailable(apierror.ReasonConcurrentChange, "the subject's consents changed while linking; retry", 0)
		}
		records, err := s.recordTx(ctx, tx, req.TenantId, req.SubjectId, consentv1.CollectionMethod_COLLECTION_METHOD_BANNER,
			nil, actions, withdrawn, expect)
		return &consentv1.LinkVisitorResponse{Records: records}, err
	})
}

// linkTx reads the visitor's and the subject's latest records in tx and
// returns what linking records.
func (s *Service) linkTx(tx *bolt.Tx, req *consentv1.LinkVisitorRequest) ([]consentAction, []string, error) {
	visitor, err := storage.LatestRecordsTx(tx, req.TenantId, req.VisitorSubjectId)
	if err != nil {
		return nil, nil, err
	}
	own, err := storage.LatestRecordsTx(tx, req.TenantId, req.SubjectId)
	if err != nil {
		return nil, nil, err
	}
	actions, withdrawn := linkActions(visitor, own, s.Clock.Now())
	return actions, withdrawn, nil
}
