package consent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	bolt "go.etcd.io/bbolt"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/internal/storage"
)

// currentChoices reads a visitor's or subject's current choices of the
// purposes the banner shows them: whether Check would allow each (with the
// token's roles, and no other attribute), when they last decided, when
// their first grant expires, and whether the banner must ask: a shown
// optional purpose never decided, decided under a notice version that is
// no longer current, or granted and expired since.
func (s *Service) currentChoices(tenant, subject string, shown []decision.Purpose, roles []string) (*choices, bool, error) {
	var latest map[string]*consentv1.ConsentRecord
	err := s.DB.View(func(tx *bolt.Tx) error {
		var err error
		latest, err = storage.LatestRecordsTx(tx, tenant, subject)
		return err
	})
	if err != nil {
		return nil, false, err
	}
	now := s.Clock.Now()
	ch := &choices{Purposes: make(map[string]bool, len(shown))}
	ask := false
	var decided, expires time.Time
	for _, p := range shown {
		ch.Purposes[p.ID] = s.allowedFor(tenant, subject, p.ID, roles, now)
		if p.Necessary {
			continue
		}
		r := latest[p.ID]
		if r == nil {
			ask = true
			continue
		}
		if g := r.GivenAt.AsTime(); g.After(decided) {
			decided = g
		}
		if r.NoticeVersion != p.CurrentNotice {
			ask = true
		}
		grant := r.Action == consentv1.ConsentAction_CONSENT_ACTION_GRANT || r.Action == consentv1.ConsentAction_CONSENT_ACTION_RENEW
		if grant && r.ExpiresAt != nil {
			at := r.ExpiresAt.AsTime()
			if !at.After(now) {
				ask = true // Clio's cookies: asked again after 730 days
			} else if expires.IsZero() || at.Before(expires) {
				expires = at
			}
		}
	}
	if !decided.IsZero() {
		ch.DecidedAt = decided.UTC().Format(time.RFC3339)
	}
	if !expires.IsZero() {
		ch.ExpiresAt = expires.UTC().Format(time.RFC3339)
	}
	return ch, ask, nil
}

// allowedFor is Check's answer for a subject with the given roles: allowed
// only if allowed under every role (no role: no role rule applies).
func (s *Service) allowedFor(tenant, subject, purpose string, roles []string, now time.Time) bool {
	if len(roles) == 0 {
		return s.index.Check(tenant, subject, purpose, decision.Attributes{}, now).Allowed
	}
	for _, r := range roles {
		if !s.index.Check(tenant, subject, purpose, decision.Attributes{Role: r}, now).Allowed {
			return false
		}
	}
	return true
}

// languages returns the languages of the banner's texts, sorted.
func languages(w *consentv1.WebSettings) []string {
	return slices.Sorted(maps.Keys(w.Texts))
}

// pickLanguage chooses the banner's language: the best match of the lang
// parameter, else of Accept-Language (by quality), else the tenant's
// default. A tag matches a language with the same tag, or the same primary
// language ("da-DK" → "da", "sv" → "sv-FI").
func pickLanguage(w *consentv1.WebSettings, lang, acceptLanguage string) string {
	var wanted []string
	if lang != "" {
		wanted = []string{lang}
	} else {
		wanted = acceptedLanguages(acceptLanguage)
	}
	have := languages(w)
	for _, tag := range wanted {
		if l, ok := matchLanguage(have, tag); ok {
			return l
		}
	}
	return w.DefaultLanguage
}

// matchLanguage finds tag among have: exactly (ignoring case), else the
// language that is tag's primary language alone, else one that shares it.
func matchLanguage(have []string, tag string) (string, bool) {
	for _, h := range have {
		if strings.EqualFold(h, tag) {
			return h, true
		}
	}
	primary, _, _ := strings.Cut(tag, "-")
	var share string
	for _, h := range have {
		hp, _, _ := strings.Cut(h, "-")
		switch {
		case strings.EqualFold(h, primary):
			return h, true
		case share == "" && strings.EqualFold(hp, primary):
			share = h
		}
	}
	return share, share != ""
}

// acceptedLanguages returns the tags of an Accept-Language header, best
// first (RFC 9110 § 12.5.4), without "*" and refused (q=0) ones.
func acceptedLanguages(header string) []string {
	type weighted struct {
		tag string
		q   float64
	}
	var tags []weighted
	for _, part := range strings.Split(header, ",") {
		tag, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		tag = strings.TrimSpace(tag)
		q := 1.0
		if v, ok := strings.CutPrefix(strings.TrimSpace(params), "q="); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				continue
			}
			q = f
		}
		if tag == "" || tag == "*" || q <= 0 || len(tag) > 35 {
			continue
		}
		tags = append(tags, weighted{tag, q})
	}
	slices.SortStableFunc(tags, func(a, b weighted) int { return cmp.Compare(b.q, a.q) })
	out := make([]string, len(tags))
	for i, t := range tags {
		out[i] = t.tag
	}
	return out
}

// addrText is an address as evidence keeps it; empty for none.
func addrText(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// truncate cuts s to at most n bytes.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// public is the public endpoint's server while the service runs.
type public struct {
	handler *publicServer
	lis     net.Listener
	srv     *http.Server
}

// openPublic builds the public endpoint and binds its listener, so that a
// taken port fails the start.
func (s *Service) openPublic() error {
	if !s.opts.Public.enabled() {
		return nil
	}
	h := s.newPublicServer(s.opts.Public)
	lis := s.opts.Public.Listener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", s.opts.Public.Addr); err != nil {
			return fmt.Errorf("listen for the public consent endpoint on %s: %w", s.opts.Public.Addr, err)
		}
	}
	s.public = &public{handler: h, lis: lis, srv: &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    32 << 10,
	}}
	return nil
}

// PublicAddr returns the public endpoint's bound address; empty when it
// is off.
func (s *Service) PublicAddr() string {
	if s.public == nil {
		return ""
	}
	return s.public.lis.Addr().String()
}

// servePublic serves the public endpoint until ctx ends, then lets the
// requests in flight finish for a few seconds.
func (s *Service) servePublic(ctx context.Context) error {
	if s.public == nil {
		return nil
	}
	s.Logger.Info("public consent endpoint", "addr", s.public.lis.Addr().String())
	served := make(chan error, 1)
	go func() { served <- s.public.srv.Serve(s.public.lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("public consent endpoint: %w", err)
	case <-ctx.Done():
	}
	stop, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	err := s.public.srv.Shutdown(stop)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}
