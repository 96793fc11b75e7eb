package consent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	grpccodes "google.golang.org/grpc/codes"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/audit"
	"github.com/lethe-privacy/lethe/platform/auth"
	"github.com/lethe-privacy/lethe/services/consent/internal/decision"
	"github.com/lethe-privacy/lethe/services/consent/web"
)

// The public consent endpoint (docs/web-consent.md): a listener of its own,
// separate from the operator API, that browsers call directly. It records
// banner decisions and reads a visitor's current choices, and nothing
// else, through the service's own code paths (RecordBannerDecision,
// LinkVisitor, the decision index). No operator credential reaches it: a
// visitor is anonymous (a random id the banner script keeps in a
// first-party cookie) or proves to be a subject with a token the tenant's
// backend signs.

// PublicOptions configure the public endpoint; it is off unless Addr or
// Listener is set.
type PublicOptions struct {
	// Addr is the address to listen on ("" for none).
	Addr string
	// Listener, when set, is served instead of listening on Addr.
	Listener net.Listener
	// TrustedProxies are the addresses whose X-Forwarded-For is believed:
	// the company's ingress. A request from anywhere else is known by its
	// connection's address.
	TrustedProxies []netip.Prefix
	// DecisionsPerMinute bounds the decisions and links of one visitor or
	// subject. Default 20.
	DecisionsPerMinute int
	// RequestsPerMinute bounds the requests of one client address (an
	// IPv6 client by its /64). Default 300.
	RequestsPerMinute int
	// MaxTracked bounds the rate-limit buckets kept per limit. Default
	// 100,000.
	MaxTracked int
	// Assets serves the banner script: mounted at /v1/banner.js and
	// /v1/assets/. Default Lethe's own (package web).
	Assets http.Handler
}

// RegisterFlags binds the public endpoint's flags to o.
func (o *PublicOptions) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Addr, "public-addr", "", "public consent endpoint for browsers (banner decisions, a visitor's choices; no operator API) listen address; empty disables")
	fs.Func("public-trusted-proxies", "comma-separated addresses or CIDR prefixes of the proxies (ingress) whose X-Forwarded-For the public endpoint believes", func(v string) error {
		prefixes, err := parsePrefixes(v)
		o.TrustedProxies = prefixes
		return err
	})
	fs.IntVar(&o.DecisionsPerMinute, "public-decisions-per-minute", defaultDecisionsPerMinute, "banner decisions and links one visitor or subject may make a minute on the public endpoint")
	fs.IntVar(&o.RequestsPerMinute, "public-requests-per-minute", defaultRequestsPerMinute, "requests one client address (IPv6: its /64) may make a minute on the public endpoint")
}

// parsePrefixes parses a comma-separated list of addresses and prefixes.
func parsePrefixes(v string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range strings.Split(v, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if !strings.Contains(part, "/") {
			a, err := netip.ParseAddr(part)
			if err != nil {
				return nil, fmt.Errorf("%q is not an address or CIDR prefix", part)
			}
			out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not an address or CIDR prefix", part)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

const (
	defaultDecisionsPerMinute = 20
	defaultRequestsPerMinute  = 300
	defaultMaxTracked         = 100_000
	// maxPublicBody bounds a request body: a decision over 50 purposes
	// fits in a few KiB.
	maxPublicBody = 8 << 10
	// corsMaxAge is how long a browser may keep a preflight's answer.
	corsMaxAge = "600"
)

func (o *PublicOptions) complete() {
	if o.DecisionsPerMinute <= 0 {
		o.DecisionsPerMinute = defaultDecisionsPerMinute
	}
	if o.RequestsPerMinute <= 0 {
		o.RequestsPerMinute = defaultRequestsPerMinute
	}
	if o.MaxTracked <= 0 {
		o.MaxTracked = defaultMaxTracked
	}
	if o.Assets == nil {
		o.Assets = web.Handler()
	}
}

// enabled reports whether the endpoint is to be served.
func (o *PublicOptions) enabled() bool { return o.Addr != "" || o.Listener != nil }

// publicServer is the endpoint's handler.
type publicServer struct {
	s         *Service
	opts      PublicOptions
	visitors  *limiter
	addresses *limiter
	requests  metric.Int64Counter
	tracer    trace.Tracer
	mux       *http.ServeMux
}

// The routes, as metrics and spans name them.
const (
	routeBanner    = "banner"
	routeDecisions = "decisions"
	routeLink      = "link"
	routePreflight = "preflight"
	routeAssets    = "assets"
	routeHealth    = "healthz"
	routeOther     = "other"
)

func (s *Service) newPublicServer(opts PublicOptions) *publicServer {
	opts.complete()
	p := &publicServer{s: s, opts: opts, visitors: newLimiter(opts.DecisionsPerMinute, opts.MaxTracked),
		addresses: newLimiter(opts.RequestsPerMinute, opts.MaxTracked), tracer: noop.NewTracerProvider().Tracer(""),
		requests: s.publicRequests}
	if t := s.deps.Telemetry; t != nil && t.Tracer != nil {
		p.tracer = t.Tracer.Tracer("github.com/lethe-privacy/lethe/services/consent/public")
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", p.observe(routeHealth, func(w http.ResponseWriter, _ *http.Request) (int, error) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "ok\n")
		return http.StatusOK, nil
	}))
	assets := p.observe(routeAssets, p.serveAssets)
	mux.HandleFunc("GET /v1/banner.js", assets)
	mux.HandleFunc("GET /v1/assets/", assets)
	mux.HandleFunc("GET /v1/tenants/{tenant}/banner", p.observe(routeBanner, p.tenantRoute(p.banner)))
	mux.HandleFunc("POST /v1/tenants/{tenant}/decisions", p.observe(routeDecisions, p.tenantRoute(p.decisions)))
	mux.HandleFunc("POST /v1/tenants/{tenant}/link", p.observe(routeLink, p.tenantRoute(p.link)))
	mux.HandleFunc("OPTIONS /v1/tenants/{tenant}/{route}", p.observe(routePreflight, p.preflight))
	mux.HandleFunc("/", p.observe(routeOther, func(http.ResponseWriter, *http.Request) (int, error) {
		return 0, publicError{status: http.StatusNotFound, code: codeNotFound, message: "no such route"}
	}))
	p.mux = mux
	return p
}

// ServeHTTP implements http.Handler.
func (p *publicServer) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.mux.ServeHTTP(w, r) }

// publicHandler answers a request and returns its status, or an error
// that writeError turns into the answer.
type publicHandler func(w http.ResponseWriter, r *http.Request) (int, error)

// observe wraps a handler with its span, metric and log line, none of
// which carries a visitor id, an address or a token: the route, the
// tenant and the outcome only.
func (p *publicServer) observe(route string, h publicHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		ctx, span := p.tracer.Start(r.Context(), "public "+route, trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		r = r.WithContext(ctx)
		status, err := h(w, r)
		if err != nil {
			status = p.writeError(w, r, err)
		}
		tenant := r.PathValue("tenant")
		if !tenantPattern.MatchString(tenant) {
			tenant = ""
		}
		span.SetAttributes(attribute.String("lethe.route", route), attribute.String("lethe.tenant", tenant), attribute.Int("http.response.status_code", status))
		if status >= 500 {
			span.SetStatus(codes.Error, http.StatusText(status))
		}
		p.requests.Add(ctx, 1, metric.WithAttributes(attribute.String("route", route), attribute.String("code", strconv.Itoa(status))))
		level := slog.LevelDebug
		if status >= 500 {
			level = slog.LevelError
		}
		p.s.Logger.Log(ctx, level, "public request", "route", route, "tenant", tenant, "method", r.Method, "status", status,
			"duration", time.Since(start))
	}
}

// tenantPattern is the consent API's tenant id pattern.
var tenantPattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// The codes of the public endpoint's error answers (docs/web-consent.md):
// the gRPC code names where one fits, so that a caller of both APIs reads
// one vocabulary, and the consent API's ErrorInfo reason for a failed
// precondition (NOTICE_CHANGED).
const (
	codeInvalid            = "INVALID_ARGUMENT"
	codeUnauthenticated    = "UNAUTHENTICATED"
	codeNotFound           = "NOT_FOUND"
	codeForbiddenOrigin    = "FORBIDDEN_ORIGIN"
	codeTooLarge           = "TOO_LARGE"
	codeRateLimited        = "RESOURCE_EXHAUSTED"
	codeFailedPrecondition = "FAILED_PRECONDITION"
	codeUnavailable        = "UNAVAILABLE"
	codeInternal           = "INTERNAL"
)

// publicError is an answer other than success.
type publicError struct {
	status     int
	code       string
	field      string
	message    string
	retryAfter time.Duration
}

func (e publicError) Error() string { return e.message }

func invalid(field, message string) publicError {
	return publicError{status: http.StatusBadRequest, code: codeInvalid, field: field, message: message}
}

func unauthenticated(message string) publicError {
	return publicError{status: http.StatusUnauthorized, code: codeUnauthenticated, message: "subject token: " + message}
}

// errNoTenant is the answer for a tenant that does not exist and for one
// without web settings alike, so that tenants cannot be enumerated.
var errNoTenant = publicError{status: http.StatusNotFound, code: codeNotFound, message: "no consent endpoint for this tenant"}

// writeError answers err as JSON and returns the status.
func (p *publicServer) writeError(w http.ResponseWriter, r *http.Request, err error) int {
	var pe publicError
	if !errors.As(err, &pe) {
		pe = p.fromAPI(r, err)
	}
	if pe.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int((pe.retryAfter+time.Second-1)/time.Second)))
	}
	body := map[string]any{"code": pe.code, "message": pe.message}
	if pe.field != "" {
		body["field"] = pe.field
	}
	writeJSON(w, pe.status, map[string]any{"error": body})
	return pe.status
}

// apiFields maps the consent API's field names to the public contract's.
var apiFields = map[string]string{"request_id": "requestId", "selected_purpose_ids": "selected", "shown_purpose_ids": "shown"}

// fromAPI turns an error of the service's own methods into the public
// answer: the same conditions, the contract's names.
func (p *publicServer) fromAPI(r *http.Request, err error) publicError {
	st := apierror.ToStatus(err)
	switch st.Code() {
	case grpccodes.InvalidArgument:
		field := ""
		if v := apierror.Violations(err); len(v) > 0 {
			field = v[0].Field
			for api, public := range apiFields {
				if strings.HasPrefix(field, api) {
					field = public + strings.TrimPrefix(field, api)
				}
			}
		}
		return invalid(field, st.Message())
	case grpccodes.FailedPrecondition:
		code := codeFailedPrecondition
		for _, d := range st.Details() {
			if info, ok := d.(*errdetails.ErrorInfo); ok && info.Reason != "" {
				code = info.Reason
			}
		}
		return publicError{status: http.StatusConflict, code: code, message: st.Message()}
	case grpccodes.NotFound:
		return errNoTenant
	case grpccodes.Unavailable:
		return publicError{status: http.StatusServiceUnavailable, code: codeUnavailable, message: "try again shortly", retryAfter: time.Second}
	}
	p.s.Logger.ErrorContext(r.Context(), "public endpoint: the consent service failed", "route", r.URL.Path, "error", err)
	return publicError{status: http.StatusInternalServerError, code: codeInternal, message: "the consent service failed; try again"}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// serveAssets serves the banner script through Options.Assets.
func (p *publicServer) serveAssets(w http.ResponseWriter, r *http.Request) (int, error) {
	if p.opts.Assets == nil {
		return 0, publicError{status: http.StatusNotFound, code: codeNotFound, message: "no assets are served here"}
	}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	p.opts.Assets.ServeHTTP(rec, r)
	return rec.status, nil
}

// statusRecorder remembers the status a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

// caller is who a tenant request comes from.
type caller struct {
	tenant string
	web    *webConfig
	// visitor is the anonymous visitor's id ("" for none).
	visitor string
	// token is the subject a token proved (subject "" for none).
	token tokenSubject
	// origin is the page's origin, allowed for the tenant ("" for a
	// request without one).
	origin string
	addr   netip.Addr
	gpc    bool
	// userAgent is the browser's User-Agent, hashed before it is stored.
	userAgent string
}

// subject is whom the request concerns: the known subject when a token
// proves one, otherwise the visitor.
func (c *caller) subject() string {
	if c.token.subject != "" {
		return c.token.subject
	}
	if c.visitor != "" {
		return visitorPrefix + c.visitor
	}
	return ""
}

// tenantHandler serves a tenant route for a caller that passed the checks.
type tenantHandler func(w http.ResponseWriter, r *http.Request, c *caller) (int, error)

// tenantRoute runs the checks every tenant route shares: the tenant, the
// origin (CORS), the address's rate, the visitor id and the token. The
// first two are map lookups; the rate is checked after the CORS headers
// are set, so that a page can read a 429's Retry-After.
func (p *publicServer) tenantRoute(h tenantHandler) publicHandler {
	return func(w http.ResponseWriter, r *http.Request) (int, error) {
		w.Header().Set("Vary", "Origin")
		c := &caller{tenant: r.PathValue("tenant"), addr: p.clientAddr(r), gpc: r.Header.Get("Sec-GPC") == "1",
			userAgent: truncate(r.Header.Get("User-Agent"), 1024)}
		web, ok := p.s.web.get(c.tenant)
		if !ok {
			return 0, errNoTenant
		}
		c.web = web
		if err := p.checkOrigin(w, r, c); err != nil {
			return 0, err
		}
		// After the CORS headers, so that the page can read Retry-After;
		// before the token, whose signature is the costly check.
		if ok, wait := p.addresses.take(addrKey(c.addr), p.s.Clock.Now()); !ok {
			return 0, tooMany(wait)
		}
		if err := p.identify(r, c); err != nil {
			return 0, err
		}
		return h(w, r, c)
	}
}

func tooMany(wait time.Duration) publicError {
	return publicError{status: http.StatusTooManyRequests, code: codeRateLimited, message: "too many requests; retry after the time Retry-After gives",
		retryAfter: max(wait, time.Second)}
}

// checkOrigin admits a request from an allowed origin, with the CORS
// headers that let the page read the answer, and a request without Origin
// (a server, curl) only to read the banner. Anything else is refused
// before it is read.
func (p *publicServer) checkOrigin(w http.ResponseWriter, r *http.Request, c *caller) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/banner") {
			return nil
		}
		return publicError{status: http.StatusForbidden, code: codeForbiddenOrigin, message: "a request that records must come from a page of an allowed origin"}
	}
	if !c.web.origins[origin] {
		return publicError{status: http.StatusForbidden, code: codeForbiddenOrigin, message: "this origin may not use the tenant's consent endpoint"}
	}
	c.origin = origin
	setCORS(w.Header(), origin)
	return nil
}

// setCORS allows origin to read the answer. No credentials: the script
// sends no cookies to Lethe.
func setCORS(h http.Header, origin string) {
	h.Set("Access-Control-Allow-Origin", origin)
	h.Set("Access-Control-Allow-Methods", "GET, POST, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Content-Type, Authorization, Lethe-Visitor")
	h.Set("Access-Control-Max-Age", corsMaxAge)
}

// preflight answers a CORS preflight: with the CORS headers for an allowed
// origin, without them (so the browser refuses) for any other.
func (p *publicServer) preflight(w http.ResponseWriter, r *http.Request) (int, error) {
	w.Header().Set("Vary", "Origin")
	web, ok := p.s.web.get(r.PathValue("tenant"))
	if !ok {
		return 0, errNoTenant
	}
	origin := r.Header.Get("Origin")
	if origin == "" || !web.origins[origin] {
		return 0, publicError{status: http.StatusForbidden, code: codeForbiddenOrigin, message: "this origin may not use the tenant's consent endpoint"}
	}
	setCORS(w.Header(), origin)
	if ok, wait := p.addresses.take(addrKey(p.clientAddr(r)), p.s.Clock.Now()); !ok {
		return 0, tooMany(wait)
	}
	w.WriteHeader(http.StatusNoContent)
	return http.StatusNoContent, nil
}

// identify reads the visitor id and the subject token.
func (p *publicServer) identify(r *http.Request, c *caller) error {
	if v := r.Header.Get("Lethe-Visitor"); v != "" {
		if !visitorID.MatchString(v) {
			return invalid("Lethe-Visitor", "a visitor id is 22 to 64 characters of A-Z, a-z, 0-9, '-' and '_'")
		}
		c.visitor = v
	}
	authz := r.Header.Get("Authorization")
	if authz == "" {
		return nil
	}
	token, ok := strings.CutPrefix(authz, "Bearer ")
	if !ok {
		return unauthenticated("give it as Authorization: Bearer <token>")
	}
	sub, err := verifySubjectToken(token, c.tenant, c.web, p.s.Clock.Now())
	if err != nil {
		return unauthenticated(err.Error())
	}
	c.token = sub
	return nil
}

// clientAddr is the client's address: the connection's, or, from a
// trusted proxy, the last address of X-Forwarded-For that is not itself a
// trusted proxy.
func (p *publicServer) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	if !p.trusted(addr) {
		return addr
	}
	hops := strings.Split(strings.Join(r.Header.Values("X-Forwarded-For"), ","), ",")
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr
		}
		addr = a.Unmap()
		if !p.trusted(addr) {
			return addr
		}
	}
	return addr
}

func (p *publicServer) trusted(a netip.Addr) bool {
	return slices.ContainsFunc(p.opts.TrustedProxies, func(pr netip.Prefix) bool { return pr.Contains(a) })
}

// addrKey is the rate-limit key of an address: an IPv6 client by its /64,
// which one subscriber usually holds whole.
func addrKey(a netip.Addr) string {
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// shownPurpose is a purpose as the banner shows it.
type shownPurpose struct {
	ID            string `json:"id"`
	Name          string `json:"name"`
	Description   string `json:"description"`
	Necessary     bool   `json:"necessary"`
	NoticeVersion string `json:"noticeVersion"`
}

// bannerTexts are the banner's texts in one language.
type bannerTexts struct {
	Title          string `json:"title"`
	Body           string `json:"body"`
	AcceptAll      string `json:"acceptAll"`
	RejectAll      string `json:"rejectAll"`
	Save           string `json:"save"`
	Customise      string `json:"customise"`
	NecessaryLabel string `json:"necessaryLabel"`
	PolicyURL      string `json:"policyUrl"`
}

// choices are a visitor's current choices.
type choices struct {
	Purposes  map[string]bool `json:"purposes"`
	DecidedAt string          `json:"decidedAt,omitempty"`
	ExpiresAt string          `json:"expiresAt,omitempty"`
}

// bannerAnswer is the answer of GET banner.
type bannerAnswer struct {
	Tenant    string         `json:"tenant"`
	Language  string         `json:"language"`
	Languages []string       `json:"languages"`
	Texts     bannerTexts    `json:"texts"`
	Purposes  []shownPurpose `json:"purposes"`
	Choices   *choices       `json:"choices,omitempty"`
	Ask       bool           `json:"ask"`
	GPC       bool           `json:"gpc"`
}

// eligible returns the purposes the banner shows the caller: those the
// token's roles do not exclude (a student is never asked about
// marketing).
func (p *publicServer) eligible(c *caller) []decision.Purpose {
	shown := p.s.shownPurposes(c.tenant, c.web.settings)
	return slices.DeleteFunc(shown, func(pp decision.Purpose) bool {
		return slices.ContainsFunc(c.token.roles, func(r string) bool { return slices.Contains(pp.ExcludedRoles, r) })
	})
}

// banner answers GET /v1/tenants/{tenant}/banner.
func (p *publicServer) banner(w http.ResponseWriter, r *http.Request, c *caller) (int, error) {
	settings := c.web.settings
	lang := pickLanguage(settings, r.URL.Query().Get("lang"), r.Header.Get("Accept-Language"))
	t := settings.Texts[lang]
	shown := p.eligible(c)
	ans := bannerAnswer{Tenant: c.tenant, Language: lang, Languages: languages(settings), GPC: c.gpc, Ask: true,
		Texts: bannerTexts{Title: t.Title, Body: t.Body, AcceptAll: t.AcceptAll, RejectAll: t.RejectAll, Save: t.SaveSelection,
			Customise: t.Customise, NecessaryLabel: t.NecessaryLabel, PolicyURL: t.PolicyUrl},
		Purposes: make([]shownPurpose, 0, len(shown))}
	for _, pp := range shown {
		sp := shownPurpose{ID: pp.ID, Necessary: pp.Necessary, NoticeVersion: pp.CurrentNotice}
		if text, ok := t.Purposes[pp.ID]; ok {
			sp.Name, sp.Description = text.Name, text.Description
		} else {
			// A purpose the settings predate: its declared name, in the
			// operator's language, rather than a blank.
			sp.Name = pp.ID
		}
		ans.Purposes = append(ans.Purposes, sp)
	}
	if subject := c.subject(); subject != "" {
		ch, ask, err := p.s.currentChoices(c.tenant, subject, shown, c.token.roles)
		if err != nil {
			return 0, err
		}
		ans.Choices, ans.Ask = ch, ask
	}
	writeJSON(w, http.StatusOK, ans)
	return http.StatusOK, nil
}

// decisionBody is the body of POST decisions.
type decisionBody struct {
	RequestID string      `json:"requestId"`
	Choice    string      `json:"choice"`
	Selected  []string    `json:"selected"`
	Shown     []shownItem `json:"shown"`
}

type shownItem struct {
	ID            string `json:"id"`
	NoticeVersion string `json:"noticeVersion"`
}

// publicRequestID is the pattern of a requestId: a UUID or anything like
// it.
var publicRequestID = regexp.MustCompile(`^[A-Za-z0-9_-]{8,64}$`)

// readBody decodes a JSON body of at most maxPublicBody bytes into v,
// refusing unknown fields.
func readBody(w http.ResponseWriter, r *http.Request, v any) error {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPublicBody))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		return publicError{status: http.StatusRequestEntityTooLarge, code: codeTooLarge, message: fmt.Sprintf("the body is over %d bytes", maxPublicBody)}
	}
	if err != nil {
		return invalid("", "the body could not be read")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var typeErr *json.UnmarshalTypeError
		switch {
		case errors.As(err, &typeErr):
			return invalid(typeErr.Field, fmt.Sprintf("must be a JSON %s", typeErr.Type))
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			field := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
			return invalid(field, "unknown field")
		}
		return invalid("", "the body is not a JSON object")
	}
	if dec.More() {
		return invalid("", "the body holds more than one JSON value")
	}
	return nil
}

// scopedRequestID makes a requestId the idempotency key of one visitor or
// subject: two visitors who pick the same id do not share an answer.
func scopedRequestID(kind, subject, id string) string {
	h := sha256.Sum256([]byte(subject))
	return kind + ":" + hex.EncodeToString(h[:12]) + ":" + id
}

// publicActor is the identity the public endpoint's records and audit
// entries name.
func publicActor(tenant string) auth.Identity {
	return auth.Identity{Name: "web:" + tenant}
}

// decisions answers POST /v1/tenants/{tenant}/decisions.
func (p *publicServer) decisions(w http.ResponseWriter, r *http.Request, c *caller) (int, error) {
	subject := c.subject()
	if subject == "" {
		return 0, invalid("Lethe-Visitor", "required: a visitor id, or a subject token")
	}
	if ok, wait := p.visitors.take(c.tenant+"\x00"+subject, p.s.Clock.Now()); !ok {
		return 0, tooMany(wait)
	}
	var body decisionBody
	if err := readBody(w, r, &body); err != nil {
		return 0, err
	}
	req, err := p.bannerRequest(c, subject, &body)
	if err != nil {
		return 0, err
	}
	ctx := p.mutationContext(r.Context(), c.tenant, "/lethe.consent.v1.ConsentService/RecordBannerDecision", req.RequestId)
	if _, err := p.s.RecordBannerDecision(ctx, req); err != nil {
		return 0, err
	}
	ch, ask, err := p.s.currentChoices(c.tenant, subject, p.eligible(c), c.token.roles)
	if err != nil {
		return 0, err
	}
	writeJSON(w, http.StatusOK, map[string]any{"choices": ch, "ask": ask})
	return http.StatusOK, nil
}

// mutationContext is the context of a call the endpoint makes to the
// service's own methods: the public actor, and an audit entry that commits
// with the change, as the server's audit slot gives an API call.
func (p *publicServer) mutationContext(ctx context.Context, tenant, method, requestID string) context.Context {
	id := publicActor(tenant)
	ctx = auth.NewContext(ctx, id)
	call := &audit.Call{Entry: audit.Entry{Actor: id.Name, Method: method, TenantID: tenant, RequestID: requestID, Code: grpccodes.OK.String()}}
	return audit.NewContext(ctx, p.s.Audit, call)
}

// bannerRequest checks a decision's body and builds the consent API's
// request from it. Every field is checked here, each refusal naming it.
func (p *publicServer) bannerRequest(c *caller, subject string, body *decisionBody) (*consentv1.RecordBannerDecisionRequest, error) {
	if !publicRequestID.MatchString(body.RequestID) {
		return nil, invalid("requestId", "required: 8 to 64 characters of A-Z, a-z, 0-9, '-' and '_' (a UUID)")
	}
	choice, ok := map[string]consentv1.BannerChoice{
		"accept_all":      consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL,
		"reject_all":      consentv1.BannerChoice_BANNER_CHOICE_REJECT_ALL,
		"accept_selected": consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED,
	}[body.Choice]
	if !ok {
		return nil, invalid("choice", `one of "accept_all", "reject_all", "accept_selected"`)
	}
	if len(body.Shown) == 0 || len(body.Shown) > 50 {
		return nil, invalid("shown", "the purposes the banner showed: 1 to 50")
	}
	eligible := p.eligible(c)
	byID := map[string]decision.Purpose{}
	for _, pp := range eligible {
		byID[pp.ID] = pp
	}
	req := &consentv1.RecordBannerDecisionRequest{
		RequestId: scopedRequestID("web", subject, body.RequestID), TenantId: c.tenant, SubjectId: subject, Choice: choice,
		ShownNoticeVersions: map[string]string{},
		Evidence:            &consentv1.EvidenceInput{IpAddress: addrText(c.addr), UserAgent: c.userAgent, Gpc: c.gpc, Origin: c.origin},
	}
	if err := addShown(req, body.Shown, byID); err != nil {
		return nil, err
	}
	if choice != consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED && len(body.Selected) > 0 {
		return nil, invalid("selected", `only "accept_selected" selects purposes`)
	}
	for i, id := range body.Selected {
		if !slices.Contains(req.ShownPurposeIds, id) {
			return nil, invalid(fmt.Sprintf("selected[%d]", i), fmt.Sprintf("purpose %q was not shown", id))
		}
		if slices.Contains(req.SelectedPurposeIds, id) {
			return nil, invalid(fmt.Sprintf("selected[%d]", i), "listed twice")
		}
		req.SelectedPurposeIds = append(req.SelectedPurposeIds, id)
	}
	if c.gpc {
		honourGPC(req, byID)
	}
	return req, nil
}

// addShown puts the purposes the banner showed, and the notice version of
// each, into req; byID are the purposes the banner shows the caller.
func addShown(req *consentv1.RecordBannerDecisionRequest, shown []shownItem, byID map[string]decision.Purpose) error {
	for i, s := range shown {
		pp, ok := byID[s.ID]
		switch {
		case !ok:
			return invalid(fmt.Sprintf("shown[%d].id", i), fmt.Sprintf("the banner shows no purpose %q", s.ID))
		case slices.Contains(req.ShownPurposeIds, s.ID):
			return invalid(fmt.Sprintf("shown[%d].id", i), "listed twice")
		case len(s.NoticeVersion) > 64:
			return invalid(fmt.Sprintf("shown[%d].noticeVersion", i), "the notice version the banner showed: at most 64 characters")
		case s.NoticeVersion == "" && pp.CurrentNotice != "":
			// The banner showed no version of a purpose that has one now.
			return publicError{status: http.StatusConflict, code: apierror.ReasonNoticeChanged,
				message: fmt.Sprintf("purpose %q: the current notice version is %q; show it and ask again", s.ID, pp.CurrentNotice)}
		}
		req.ShownPurposeIds = append(req.ShownPurposeIds, s.ID)
		if s.NoticeVersion != "" {
			// A purpose without notice versions (a necessary cookie) is
			// shown with none.
			req.ShownNoticeVersions[s.ID] = s.NoticeVersion
		}
	}
	return nil
}

// honourGPC makes a decision that came with a Global Privacy Control
// signal refuse every shown purpose that opts in to it, whatever the
// visitor chose: the decision becomes "accept selected" of the others.
func honourGPC(req *consentv1.RecordBannerDecisionRequest, byID map[string]decision.Purpose) {
	if req.Choice == consentv1.BannerChoice_BANNER_CHOICE_REJECT_ALL {
		return
	}
	if req.Choice == consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_ALL {
		req.SelectedPurposeIds = slices.Clone(req.ShownPurposeIds)
	}
	req.Choice = consentv1.BannerChoice_BANNER_CHOICE_ACCEPT_SELECTED
	req.SelectedPurposeIds = slices.DeleteFunc(req.SelectedPurposeIds, func(id string) bool { return byID[id].GPCOptOut })
}

// link answers POST /v1/tenants/{tenant}/link: the visitor's decisions are
// recorded for the subject the token proves.
func (p *publicServer) link(w http.ResponseWriter, r *http.Request, c *caller) (int, error) {
	if c.token.subject == "" {
		return 0, unauthenticated("required: linking needs a token that proves the subject")
	}
	if c.visitor == "" {
		return 0, invalid("Lethe-Visitor", "required: the visitor whose decisions to link")
	}
	if ok, wait := p.visitors.take(c.tenant+"\x00"+c.token.subject, p.s.Clock.Now()); !ok {
		return 0, tooMany(wait)
	}
	if _, err := io.Copy(io.Discard, http.MaxBytesReader(w, r.Body, maxPublicBody)); err != nil {
		return 0, publicError{status: http.StatusRequestEntityTooLarge, code: codeTooLarge, message: fmt.Sprintf("the body is over %d bytes", maxPublicBody)}
	}
	visitor := visitorPrefix + c.visitor
	req := &consentv1.LinkVisitorRequest{RequestId: scopedRequestID("web-link", visitor, c.token.subject), TenantId: c.tenant,
		VisitorSubjectId: visitor, SubjectId: c.token.subject}
	ctx := p.mutationContext(r.Context(), c.tenant, "/lethe.consent.v1.ConsentService/LinkVisitor", req.RequestId)
	resp, err := p.s.LinkVisitor(ctx, req)
	if err != nil {
		return 0, err
	}
	linked := make([]string, 0, len(resp.Records))
	for _, rec := range resp.Records {
		linked = append(linked, rec.PurposeId)
	}
	writeJSON(w, http.StatusOK, map[string]any{"linked": linked})
	return http.StatusOK, nil
}
