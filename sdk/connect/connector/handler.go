package connector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/template"
	"time"
	"unicode"

	"golang.org/x/time/rate"

	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// Config is what a connector instance needs beyond its definition: the
// registered system's parameters and where its secrets are.
type Config struct {
	// Params are the system's non-secret parameters (an audience id, a
	// property id), checked against the definition's.
	Params map[string]string
	// SecretsDir holds the files the definition's auth section names,
	// <secrets-dir>/<tenant>/<system> at the runner.
	SecretsDir string
	// HTTPClient sends the requests; nil means a client with a 30 s
	// timeout, as does a client without one. Redirects are never
	// followed.
	HTTPClient *http.Client
	// Clock gives the time for request times, token expiry, Retry-After
	// and poll deadlines; nil means time.Now.
	Clock func() time.Time
	// Logger receives one line per vendor call at debug level, never
	// with an identifier or its hash; nil means slog.Default().
	Logger *slog.Logger
	// MaxRetryAfter is the longest a handler waits in process for a
	// vendor's Retry-After before it hands the event back for a later
	// delivery; zero means 30 s.
	MaxRetryAfter time.Duration
}

// Limits on what is read from a vendor.
const (
	maxResponseBytes = 64 << 10
	maxMessageRunes  = 300
	maxExtractRunes  = 256
	maxAttempts      = 3
	retryPause       = 200 * time.Millisecond
)

// instance is one connector for one registered system.
type instance struct {
	def      *Definition
	params   map[string]string
	client   *http.Client
	now      func() time.Time
	log      *slog.Logger
	maxWait  time.Duration
	auth     *authorizer
	limiter  *rate.Limiter
	mu       sync.Mutex
	notUntil time.Time
}

// errNoRedirect refuses redirects: a deletion API answers where it is
// called, and a redirect could carry credentials elsewhere.
var errNoRedirect = errors.New("the vendor answered with a redirect, which the connector does not follow")

// Handler returns the handler that answers the definition's event kinds
// ([Definition.Kinds]) for one registered system. It checks the
// parameters against the definition and that every secret file is
// readable, so that a misconfigured system fails at start, not at its
// first event. Each call builds a separate instance: its own token cache
// and its own rate limit.
func (d *Definition) Handler(cfg Config) (subscriber.Handler, error) {
	if err := d.check(cfg); err != nil {
		return nil, fmt.Errorf("connector %s: %w", d.Name(), err)
	}
	client := httpClient(cfg.HTTPClient)
	now := cfg.Clock
	if now == nil {
		now = time.Now
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	maxWait := cfg.MaxRetryAfter
	if maxWait <= 0 {
		maxWait = 30 * time.Second
	}
	params := map[string]string{}
	for _, p := range d.file.Params {
		params[p.Name] = cfg.Params[p.Name] // an absent optional one renders empty
	}
	in := &instance{
		def: d, params: params, client: client, now: now, maxWait: maxWait,
		log:     log.With("connector", d.Name()),
		auth:    &authorizer{spec: d.file.Auth, dir: cfg.SecretsDir, client: client, now: now},
		limiter: rate.NewLimiter(rate.Limit(d.file.RateLimit.PerSecond), d.file.RateLimit.Burst),
	}
	return in.handle, nil
}

// check reports every way cfg does not fit the definition: a parameter it
// does not take, one it requires and lacks, one that does not match its
// pattern, and each secret file that cannot be read.
func (d *Definition) check(cfg Config) error {
	var errs []error
	for name := range cfg.Params {
		if !slices.ContainsFunc(d.file.Params, func(p paramSpec) bool { return p.Name == name }) {
			errs = append(errs, fmt.Errorf("params.%s: connector %s takes no such parameter", name, d.Name()))
		}
	}
	for _, p := range d.file.Params {
		v, ok := cfg.Params[p.Name]
		switch {
		case !ok && !p.Optional:
			errs = append(errs, fmt.Errorf("params.%s: is required by connector %s (%s)", p.Name, d.Name(), p.Description))
		case ok && !regexp.MustCompile(p.Pattern).MatchString(v):
			errs = append(errs, fmt.Errorf("params.%s: %q does not match %s", p.Name, v, p.Pattern))
		}
	}
	if d.file.Auth.Type == "none" {
		return errors.Join(errs...)
	}
	if cfg.SecretsDir == "" {
		return errors.Join(append(errs, errors.New("SecretsDir: is required"))...)
	}
	for _, s := range d.Secrets() {
		if _, err := readSecret(cfg.SecretsDir, s); err != nil {
			errs = append(errs, fmt.Errorf("SecretsDir: %w", err))
		}
	}
	return errors.Join(errs...)
}

// httpClient returns a copy of base (a default client when nil) with a
// timeout and no redirects followed.
func httpClient(base *http.Client) *http.Client {
	client := &http.Client{Timeout: 30 * time.Second}
	if base != nil {
		c := *base
		if c.Timeout == 0 {
			// The subscriber's context has no deadline: a vendor that
			// never answers must not hold the event for ever.
			c.Timeout = 30 * time.Second
		}
		client = &c
	}
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return errNoRedirect }
	return client
}

// handle answers one event.
func (in *instance) handle(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
	d := in.def
	kind := ev.Kind()
	limit := slices.Contains(contract.Limits, kind)
	if !slices.Contains(d.kinds, kind) {
		if limit {
			return subscriber.NotApplicable("connector " + d.Name() + " does not answer " + string(kind)), nil
		}
		return subscriber.Failed("connector " + d.Name() + " does not answer " + string(kind)), nil
	}
	if kind == contract.KindConsentWithdrawn {
		purpose := in.params[d.file.Consent.PurposeParam]
		if purpose == "" || !slices.Contains(ev.Proto().GetConsentWithdrawn().GetPurposeIds(), purpose) {
			return subscriber.NotApplicable("the withdrawn purposes do not include the one this system serves"), nil
		}
	}
	ids, err := ev.Identifiers(ctx)
	if err != nil {
		return subscriber.Outcome{}, fmt.Errorf("fetching the identifiers: %w", err)
	}
	values := d.values(ids)
	if len(values) == 0 {
		reason := fmt.Sprintf("the request carries no %s identifier, which connector %s needs", d.file.Identifier.Type, d.Name())
		in.log.Info("no identifier of the needed kind", "event_id", ev.ID())
		switch {
		case limit:
			return subscriber.NotApplicable(reason), nil
		case d.failMissing:
			return subscriber.Failed(reason + "; erase at the vendor by hand"), nil
		}
		return subscriber.NotFound(), nil
	}
	found := false
	for _, v := range values {
		out, err := in.call(ctx, ev, v)
		if err != nil {
			return subscriber.Outcome{}, err
		}
		switch out.verdict {
		case verdictFailed:
			return subscriber.Failed(out.reason), nil
		case verdictDone:
			found = true
		}
	}
	switch {
	case limit:
		return subscriber.Applied(), nil
	case found:
		return subscriber.Erased(), nil
	}
	return subscriber.NotFound(), nil
}

// answer is what one vendor exchange concluded.
type answer struct {
	verdict verdict
	reason  string
}

// call makes the vendor request for one identifier value, then polls its
// job if the answer says it is pending.
func (in *instance) call(ctx context.Context, ev *subscriber.Event, value string) (answer, error) {
	d := in.def
	data := &tmplData{
		Params: in.params, Identifier: value, EventID: ev.ID(), Tenant: ev.Tenant(),
		RequestTime: in.now().UTC().Format(time.RFC3339), Extract: map[string]string{},
	}
	started := in.now()
	resp, err := in.exchange(ctx, ev, d.file.Request.Method, d.url, d.headers, d.body, data, d.rules, value)
	if err != nil || resp.verdict != verdictPending {
		return resp.answer, err
	}
	p := d.poll
	for name, sel := range p.extract {
		v, ok := lookupString(resp.json, sel)
		if !ok || v == "" || len([]rune(v)) > maxExtractRunes {
			return answer{verdict: verdictFailed, reason: fmt.Sprintf("connector %s: the vendor's answer has no usable %s to poll with", d.Name(), name)}, nil
		}
		data.Extract[name] = v
	}
	wait := p.interval
	for {
		if in.now().Sub(started) >= p.deadline {
			return answer{}, fmt.Errorf("connector %s: the vendor's job did not finish within %v", d.Name(), p.deadline)
		}
		if err := sleep(ctx, wait); err != nil {
			return answer{}, err
		}
		wait = min(2*wait, p.maxInterval)
		r, err := in.exchange(ctx, ev, p.method, p.url, p.headers, nil, data, p.rules, value)
		if err != nil {
			return answer{}, err
		}
		if r.verdict != verdictPending {
			return r.answer, nil
		}
	}
}

// response is a classified vendor answer.
type response struct {
	answer
	json any
}

// exchange sends one request, waiting for the rate limit and any
// Retry-After first, and classifies the answer. A retry verdict is tried
// again in process while the wait is short; otherwise it becomes an error,
// and the subscriber delivers the event again later.
func (in *instance) exchange(ctx context.Context, ev *subscriber.Event, method string, urlT *template.Template, headerT map[string]*template.Template, bodyT *template.Template, data *tmplData, rules []rule, secret string) (response, error) {
	name := in.def.Name()
	refreshed := false
	for attempt := 1; ; attempt++ {
		if err := in.waitTurn(ctx); err != nil {
			return response{}, err
		}
		req, err := in.request(ctx, method, urlT, headerT, bodyT, data)
		if err != nil {
			return response{}, fmt.Errorf("connector %s: %w", name, err)
		}
		status, header, body, err := in.send(req)
		if err != nil {
			return response{}, fmt.Errorf("connector %s: %w", name, err)
		}
		r := classify(rules, status, body)
		r.reason = in.failure(status, r.json, secret)
		in.log.Debug("vendor answered", "event_id", ev.ID(), "status", status, "verdict", r.verdict, "attempt", attempt)
		if status == http.StatusUnauthorized && in.def.file.Auth.Type == "oauth2_client_credentials" && !refreshed {
			// The cached token may have been revoked before its expiry.
			in.auth.forget()
			refreshed = true
			continue
		}
		if r.verdict != verdictRetry {
			return r, nil
		}
		delay := retryAfter(header.Get("Retry-After"), in.now())
		if delay > 0 {
			in.mu.Lock()
			in.notUntil = in.now().Add(delay)
			in.mu.Unlock()
		}
		if attempt >= maxAttempts || delay > in.maxWait {
			return response{}, fmt.Errorf("connector %s: the vendor answered HTTP %d; trying again later", name, status)
		}
		if delay == 0 {
			// No Retry-After: a short pause before the next attempt,
			// longer each time.
			if err := sleep(ctx, time.Duration(attempt)*retryPause); err != nil {
				return response{}, err
			}
		}
	}
}

// waitTurn waits until a vendor's Retry-After has passed and the rate
// limit allows a request.
func (in *instance) waitTurn(ctx context.Context) error {
	in.mu.Lock()
	until := in.notUntil
	in.mu.Unlock()
	if d := until.Sub(in.now()); d > 0 {
		if d > in.maxWait {
			return fmt.Errorf("connector %s: the vendor asked to wait until %s", in.def.Name(), until.UTC().Format(time.RFC3339))
		}
		if err := sleep(ctx, d); err != nil {
			return err
		}
	}
	return in.limiter.Wait(ctx)
}

func (in *instance) request(ctx context.Context, method string, urlT *template.Template, headerT map[string]*template.Template, bodyT *template.Template, data *tmplData) (*http.Request, error) {
	u, err := renderURL(urlT, data)
	if err != nil {
		return nil, err
	}
	var body io.Reader
	if bodyT != nil {
		b, err := renderBody(bodyT, data)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, errors.New("the request URL does not parse") // the error would quote it
	}
	if bodyT != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, t := range headerT {
		v, err := renderHeader(t, data)
		if err != nil {
			return nil, fmt.Errorf("header %s: %w", k, err)
		}
		req.Header.Set(k, v)
	}
	if err := in.auth.apply(ctx, req); err != nil {
		return nil, err
	}
	return req, nil
}

// send sends req and reads at most maxResponseBytes of the answer.
func (in *instance) send(req *http.Request) (int, http.Header, []byte, error) {
	resp, err := in.client.Do(req)
	if err != nil {
		// A *url.Error quotes the whole URL, which may carry the
		// identifier (an e-mail address in a query); name the host only.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = fmt.Errorf("%s %s: %w", req.Method, req.URL.Host, ue.Err)
		}
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return 0, nil, nil, err
	}
	return resp.StatusCode, resp.Header, body, nil
}

// classify applies the first rule that matches; without one, 429 and 5xx
// mean retry and anything else failed (unknown answers fail closed).
func classify(rules []rule, status int, body []byte) response {
	var doc any
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if dec.Decode(&doc) != nil {
		doc = nil
	}
	r := response{json: doc}
	for _, ru := range rules {
		if !slices.Contains(ru.status, status) {
			continue
		}
		if !slices.ContainsFunc(ru.match, func(m match) bool {
			v, ok := lookupString(doc, m.path)
			return !ok || !slices.Contains(m.equals, v)
		}) {
			r.verdict = ru.verdict
			return r
		}
	}
	if status == http.StatusTooManyRequests || status >= 500 {
		r.verdict = verdictRetry
	} else {
		r.verdict = verdictFailed
	}
	return r
}

// failure words a failed answer: the status and the vendor's own message,
// bounded, with control characters and the identifier value removed.
func (in *instance) failure(status int, doc any, secret string) string {
	s := fmt.Sprintf("connector %s: the vendor answered HTTP %d", in.def.Name(), status)
	if in.def.message == nil {
		return s
	}
	msg, ok := lookupString(doc, in.def.message)
	if !ok || msg == "" {
		return s
	}
	if secret != "" {
		msg = strings.ReplaceAll(msg, secret, "[identifier]")
	}
	return s + ": " + bounded(msg)
}

// bounded returns s without control characters, cut to maxMessageRunes.
func bounded(s string) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
	if r := []rune(s); len(r) > maxMessageRunes {
		return string(r[:maxMessageRunes]) + "…"
	}
	return s
}

// lookupString follows a selector through decoded JSON and returns the
// value it reaches as text: a string as it is, a number as written, true,
// false or null.
func lookupString(doc any, path []string) (string, bool) {
	cur := doc
	for _, p := range path {
		switch c := cur.(type) {
		case map[string]any:
			v, ok := c[p]
			if !ok {
				return "", false
			}
			cur = v
		case []any:
			i, err := strconv.Atoi(p)
			if err != nil || i < 0 || i >= len(c) {
				return "", false
			}
			cur = c[i]
		default:
			return "", false
		}
	}
	switch v := cur.(type) {
	case string:
		return v, true
	case json.Number:
		return v.String(), true
	case bool:
		return strconv.FormatBool(v), true
	case nil:
		return "null", true
	}
	return "", false
}

// retryAfter reads a Retry-After header (RFC 9110 section 10.2.3):
// seconds or an HTTP date. It returns zero when there is none, and at
// most a day.
func retryAfter(h string, now time.Time) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.Atoi(strings.TrimSpace(h)); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), 24*time.Hour)
}

// sleep waits for d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
