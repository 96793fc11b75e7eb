// Package webhook delivers a system's Lethe events to its HTTPS endpoint,
// for a system registered with ANSWER_MODE_WEBHOOK: any program in any
// language that can answer an HTTP request answers Lethe.
//
// [Handler] is a [subscriber.Handler]: the runner (package
// github.com/lethe-privacy/lethe/sdk/connect) runs it from the system's
// own durable consumer, so a receiver that is down for a day gets every
// event when it returns, and the subscriber's ledger answers duplicates.
//
// Each delivery is one POST of the event as a CloudEvents 1.0 JSON object
// (structured mode, Content-Type application/cloudevents+json) whose data
// is the event's protojson: the same fields as on the stream, no contact
// identifiers. It is signed as the Standard Webhooks specification says:
// webhook-id is the event id (the same on every delivery),
// webhook-timestamp the attempt's Unix time, webhook-signature
// "v1,<base64 HMAC-SHA256 of id.timestamp.body>" with the system's secret,
// and with the previous secret too during a rotation.
//
// The receiver answers in the response body, {"outcome": "ERASED"} (or
// NOT_FOUND, ANONYMISED, RECTIFIED, RETAINED with "retained", APPLIED,
// NOT_APPLICABLE, FAILED; "reason" for the last two), or 202 Accepted
// while it is still at work. Where the runner serves the signed callback
// ([CallbackHandler], Config.CallbackBaseURL) the receiver then POSTs its
// outcome there, signed like a delivery, by a deadline; otherwise the
// event is delivered again, with the same webhook-id, until it answers an
// outcome. A 429 or 503 with
// Retry-After is retried after that delay; 410 Gone ends the task FAILED;
// any other failure is retried with the subscriber's back-off, and after
// its last delivery the task ends FAILED, visible in GetRequest.
package webhook

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/metric/noop"
	"google.golang.org/protobuf/encoding/protojson"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// ContentType is the request's media type: a CloudEvent in structured
// mode, JSON format.
const ContentType = "application/cloudevents+json"

// DefaultTimeout bounds one delivery when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// maxResponse bounds the response body read: an outcome is small.
const maxResponse = 64 << 10

// Config configures the deliveries to one system's endpoint.
type Config struct {
	// URL is the system's registered webhook URL.
	URL string
	// Tenant and SystemID name the system; its secrets are in
	// SecretsDir/<Tenant>/<SystemID>/signing-secret (and
	// signing-secret.previous during a rotation).
	Tenant, SystemID string
	SecretsDir       string
	// AllowPrivate lets the endpoint be on a private, loopback or
	// link-local address: the tenant's webhook_private_networks.
	AllowPrivate bool
	// AllowHTTP accepts an http:// URL to a loopback host: the development
	// profile. Otherwise only https is delivered to.
	AllowHTTP bool
	// TLS configures the client's TLS (its root CAs, for a private CA);
	// the system's roots when nil. At least TLS 1.2.
	TLS *tls.Config
	// Timeout bounds one delivery; DefaultTimeout when zero.
	Timeout time.Duration
	// Clock gives the webhook-timestamp; time.Now when nil.
	Clock func() time.Time
	// Logger receives the deliveries' logs (never a subject id);
	// slog.Default() when nil.
	Logger *slog.Logger
	// Meter counts deliveries (lethe.webhook.deliveries, by result); none
	// when nil.
	Meter metric.Meter
	// ClaimBaseURL is where the runner serves the claim check
	// ([ClaimHandler]); with ClaimKey, each event caused by a
	// data-subject request carries the URL and a fresh token in the
	// extensions letheclaimurl and letheclaimtoken. Empty: no claim check
	// is offered.
	ClaimBaseURL string
	// ClaimKey signs the claim tokens: the runner's own key, which the
	// receiver never holds, so it cannot mint a token itself.
	ClaimKey []byte
	// CallbackBaseURL is where the runner serves the signed callback
	// ([CallbackHandler]). When set, each event carries its callback URL
	// in the extension lethecallbackurl, and a 202 Accepted is final for
	// the delivery: the event is acknowledged and waits for the
	// receiver's callback until CallbackDeadline, then ends FAILED
	// (subscriber.AnswerLater). Empty: a 202 is delivered again until the
	// receiver answers an outcome.
	CallbackBaseURL string
	// CallbackDeadline is how long an accepted event waits for its
	// callback; DefaultCallbackDeadline when zero.
	CallbackDeadline time.Duration
}

// DefaultCallbackDeadline is how long an event a receiver accepted (202)
// waits for the receiver's callback when Config.CallbackDeadline is zero.
const DefaultCallbackDeadline = 7 * 24 * time.Hour

// The results a delivery is counted under.
const (
	ResultOutcome    = "outcome"     // the receiver answered an outcome
	ResultAccepted   = "accepted"    // 202: the receiver is still at work
	ResultRetryAfter = "retry_after" // 429 or 503 with Retry-After
	ResultError      = "error"       // any other failure: retried
	ResultRefused    = "refused"     // the URL or the address it resolved to is forbidden
	ResultGone       = "gone"        // 410: the endpoint is gone for good
)

// deliverer is one system's endpoint.
type deliverer struct {
	cfg      Config
	client   *http.Client
	secrets  *secrets
	log      *slog.Logger
	counter  metric.Int64Counter
	endpoint string
}

// Handler returns the handler that delivers the system's events to
// cfg.URL. It checks the URL as the registry does and refuses what the
// registry would.
func Handler(cfg Config) (subscriber.Handler, error) {
	if err := CheckURL(cfg.URL, URLPolicy{AllowHTTP: cfg.AllowHTTP, AllowPrivate: cfg.AllowPrivate}); err != nil {
		return nil, fmt.Errorf("webhook %s: url: %w", cfg.SystemID, err)
	}
	if !contract.ValidToken(cfg.Tenant) || !contract.ValidToken(cfg.SystemID) {
		return nil, fmt.Errorf("webhook: tenant %q and system %q must be lower-case tokens", cfg.Tenant, cfg.SystemID)
	}
	if cfg.SecretsDir == "" {
		return nil, errors.New("webhook: SecretsDir is required: requests are never sent unsigned")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.CallbackDeadline == 0 {
		cfg.CallbackDeadline = DefaultCallbackDeadline
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Meter == nil {
		cfg.Meter = noop.NewMeterProvider().Meter("")
	}
	counter, err := cfg.Meter.Int64Counter("lethe.webhook.deliveries",
		metric.WithDescription("Webhook deliveries by result: outcome, accepted, retry_after, error, refused, gone."))
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(cfg.URL) // checked above
	d := &deliverer{
		cfg:      cfg,
		client:   newClient(cfg),
		secrets:  &secrets{dir: filepath.Join(cfg.SecretsDir, cfg.Tenant, cfg.SystemID)},
		log:      cfg.Logger.With("system", cfg.SystemID, "tenant", cfg.Tenant),
		counter:  counter,
		endpoint: u.Scheme + "://" + u.Host,
	}
	return d.handle, nil
}

// newClient returns the HTTP client of one endpoint: it dials only
// addresses CheckAddr allows, checked on the address dialled, through no
// proxy, and follows no redirect.
func newClient(cfg Config) *http.Client {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLS != nil {
		tlsConfig = cfg.TLS.Clone()
		tlsConfig.MinVersion = max(tlsConfig.MinVersion, tls.VersionTLS12)
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: dialControl(cfg.AllowPrivate)}
	return &http.Client{
		Transport: &http.Transport{
			// No proxy: the address dialled is the one checked.
			Proxy:               nil,
			DialContext:         dialer.DialContext,
			TLSClientConfig:     tlsConfig,
			ForceAttemptHTTP2:   true,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
		},
		Timeout: cfg.Timeout,
		// A redirect could lead anywhere, the target of a 307 included;
		// the registered URL is the one that was checked.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// cloudEvent is the request body: CloudEvents 1.0, JSON format.
type cloudEvent struct {
	SpecVersion     string          `json:"specversion"`
	ID              string          `json:"id"`
	Source          string          `json:"source"`
	Type            string          `json:"type"`
	Subject         string          `json:"subject,omitempty"`
	Time            string          `json:"time"`
	DataContentType string          `json:"datacontenttype"`
	LetheTenant     string          `json:"lethetenant"`
	LetheSystem     string          `json:"lethesystem"`
	LetheKind       string          `json:"lethekind"`
	ClaimURL        string          `json:"letheclaimurl,omitempty"`
	ClaimToken      string          `json:"letheclaimtoken,omitempty"`
	CallbackURL     string          `json:"lethecallbackurl,omitempty"`
	Data            json.RawMessage `json:"data"`
}

// Body returns the CloudEvents JSON body delivered for ev to system: the
// attributes of the NATS headers (subject is the cause's id, never the
// data subject's) plus the extensions lethetenant, lethesystem and
// lethekind, and the event's protojson as data.
func Body(ev *eventsv1.Event, system string) ([]byte, error) {
	return body(ev, system, extensions{})
}

// extensions are the runner's optional CloudEvents extensions.
type extensions struct {
	claimURL, claimToken, callbackURL string
}

// body is Body with the runner's extensions: the claim check's, when
// claimURL is set, and the callback's, when callbackURL is.
func body(ev *eventsv1.Event, system string, ext extensions) ([]byte, error) {
	ceType, err := contract.TypeOf(ev)
	if err != nil {
		return nil, err
	}
	kind, err := contract.KindOf(ev)
	if err != nil {
		return nil, err
	}
	data, err := protojson.Marshal(ev)
	if err != nil {
		return nil, err
	}
	return json.Marshal(cloudEvent{
		SpecVersion: contract.SpecVersion, ID: ev.GetId(), Source: ev.GetSource(), Type: ceType,
		Subject: ev.GetCause().GetId(), Time: ev.GetOccurredAt().AsTime().UTC().Format(time.RFC3339Nano),
		DataContentType: "application/json", LetheTenant: ev.GetTenantId(), LetheSystem: system, LetheKind: string(kind),
		ClaimURL: ext.claimURL, ClaimToken: ext.claimToken, CallbackURL: ext.callbackURL, Data: data,
	})
}

// answer is the response body.
type answer struct {
	Outcome  string            `json:"outcome"`
	Reason   string            `json:"reason"`
	Retained []json.RawMessage `json:"retained"`
}

// handle delivers one event.
func (d *deliverer) handle(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, error) {
	out, result, err := d.deliver(ctx, ev)
	d.counter.Add(context.WithoutCancel(ctx), 1, metric.WithAttributes(attribute.String("result", result)))
	log := d.log.With("event_id", ev.ID(), "delivery", ev.Delivered(), "endpoint", d.endpoint, "result", result)
	switch {
	case result == ResultAccepted && d.cfg.CallbackBaseURL != "":
		log.Info("the webhook receiver accepted the event; waiting for its callback")
	case err != nil:
		log.Warn("webhook delivery did not give an outcome", "error", err)
	default:
		log.Debug("webhook answered", "outcome", out.Kind())
	}
	return out, err
}

func (d *deliverer) deliver(ctx context.Context, ev *subscriber.Event) (subscriber.Outcome, string, error) {
	keys, err := d.secrets.current()
	if err != nil {
		return subscriber.Outcome{}, ResultError, err
	}
	now := d.cfg.Clock()
	body, err := body(ev.Proto(), d.cfg.SystemID, d.extensions(ev, now))
	if err != nil {
		return subscriber.Failed("cannot encode the event: " + err.Error()), ResultError, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return subscriber.Outcome{}, ResultError, err
	}
	req.Header.Set("Content-Type", ContentType)
	req.Header.Set("User-Agent", "lethe-connect")
	req.Header.Set(HeaderID, ev.ID())
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	req.Header.Set(HeaderSignature, Sign(keys, ev.ID(), now, body))
	resp, err := d.client.Do(req)
	if err != nil {
		if errors.Is(err, ErrForbiddenAddress) {
			// The name resolved to an address the tenant does not allow:
			// a configuration to fix, not a blip; fail visibly now.
			return subscriber.Failed("webhook endpoint refused: " + err.Error()), ResultRefused, nil
		}
		return subscriber.Outcome{}, ResultError, fmt.Errorf("webhook: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return subscriber.Outcome{}, ResultError, fmt.Errorf("webhook: reading the response: %w", err)
	}
	status := fmt.Sprintf("the endpoint answered %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	switch {
	case resp.StatusCode == http.StatusAccepted && d.cfg.CallbackBaseURL != "":
		return subscriber.Outcome{}, ResultAccepted, subscriber.AnswerLater(now.Add(d.cfg.CallbackDeadline), "202 Accepted: the receiver answers by callback")
	case resp.StatusCode == http.StatusAccepted:
		return subscriber.Outcome{}, ResultAccepted, retryAfter(resp, now, errors.New("202 Accepted: the receiver is still at work"))
	case resp.StatusCode == http.StatusGone:
		return subscriber.Failed("webhook " + status + ": the endpoint is gone"), ResultGone, nil
	case resp.StatusCode == http.StatusTooManyRequests, resp.StatusCode == http.StatusServiceUnavailable:
		return subscriber.Outcome{}, ResultRetryAfter, retryAfter(resp, now, errors.New(status))
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return subscriber.Outcome{}, ResultError, errors.New(status)
	case len(raw) > maxResponse:
		return subscriber.Outcome{}, ResultError, fmt.Errorf("%s with a body over %d bytes", status, maxResponse)
	}
	out, err := parseAnswer(raw)
	if err != nil {
		// A receiver that answers 2xx without a readable outcome has a bug
		// a new version may fix before the deliveries run out.
		return subscriber.Outcome{}, ResultError, fmt.Errorf("%s: %w", status, err)
	}
	return out, ResultOutcome, nil
}

// extensions returns the extensions of ev's delivery at now: the claim
// check's, for an event caused by a data-subject request, and the
// callback's.
func (d *deliverer) extensions(ev *subscriber.Event, now time.Time) extensions {
	var ext extensions
	if cause := ev.Cause(); d.cfg.ClaimBaseURL != "" && len(d.cfg.ClaimKey) > 0 && cause.GetKind() == commonv1.CauseKind_CAUSE_KIND_DATA_SUBJECT_REQUEST {
		ext.claimURL = strings.TrimSuffix(d.cfg.ClaimBaseURL, "/") + ClaimPath(d.cfg.Tenant, d.cfg.SystemID, ev.ID(), cause.GetId())
		ext.claimToken = ClaimToken(d.cfg.ClaimKey, d.cfg.Tenant, d.cfg.SystemID, ev.ID(), cause.GetId(), now.Add(ClaimTTL))
	}
	if d.cfg.CallbackBaseURL != "" {
		ext.callbackURL = strings.TrimSuffix(d.cfg.CallbackBaseURL, "/") + CallbackPath(d.cfg.Tenant, d.cfg.SystemID, ev.ID())
	}
	return ext
}

// parseAnswer reads the receiver's outcome.
func parseAnswer(raw []byte) (subscriber.Outcome, error) {
	var a answer
	if err := json.Unmarshal(raw, &a); err != nil {
		return subscriber.Outcome{}, errors.New(`the body is not {"outcome": ...} JSON`)
	}
	switch strings.ToUpper(strings.TrimPrefix(strings.ToUpper(a.Outcome), "OUTCOME_KIND_")) {
	case "ERASED":
		return subscriber.Erased(), nil
	case "ANONYMISED":
		return subscriber.Anonymised(), nil
	case "RECTIFIED":
		return subscriber.Rectified(), nil
	case "NOT_FOUND":
		return subscriber.NotFound(), nil
	case "APPLIED":
		return subscriber.Applied(), nil
	case "NOT_APPLICABLE":
		return subscriber.NotApplicable(a.Reason), nil
	case "FAILED":
		if a.Reason == "" {
			a.Reason = "the webhook receiver answered FAILED without a reason"
		}
		return subscriber.Failed("webhook receiver: " + a.Reason), nil
	case "RETAINED":
		kept := make([]*eventsv1.Retention, len(a.Retained))
		for i, r := range a.Retained {
			kept[i] = &eventsv1.Retention{}
			if err := protojson.Unmarshal(r, kept[i]); err != nil {
				return subscriber.Outcome{}, fmt.Errorf("retained[%d]: %w", i, err)
			}
		}
		return subscriber.Retained(kept...), nil
	case "":
		return subscriber.Outcome{}, errors.New(`the body has no "outcome"`)
	}
	return subscriber.Outcome{}, fmt.Errorf("outcome %q is not one Lethe knows", a.Outcome)
}

// retryAfter wraps err with the delay the response's Retry-After asks for
// (seconds or an HTTP date), if it has one.
func retryAfter(resp *http.Response, now time.Time, err error) error {
	v := strings.TrimSpace(resp.Header.Get("Retry-After"))
	if v == "" {
		return err
	}
	if secs, perr := strconv.Atoi(v); perr == nil && secs >= 0 {
		return subscriber.RetryAfter(time.Duration(secs)*time.Second, err)
	}
	if t, perr := http.ParseTime(v); perr == nil {
		return subscriber.RetryAfter(t.Sub(now), err)
	}
	return err
}
