package main

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
)

// The consent banner in a real browser: headless Chromium (Debian's
// package) driven over the DevTools protocol, against `lethe dev` started
// as the README starts it — the public consent endpoint on its own
// listener and the demo pages (examples/web) on theirs — with Clio's tenant
// file applied. Each test opens the demo page in a browser context of its
// own (its own cookies: a new visitor) and ends in what a backend sees
// over gRPC: Check for visitor:<id>, the id read from the page's cookie.

// chromium returns the browser's path. Without it the browser tests skip,
// except under CI, where they fail: CI must not pass without running them
// (.ci/run installs the package).
func chromium(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "" {
			t.Skip("chromium is not installed (apt-get install chromium); the browser tests run in CI")
		}
		t.Fatalf("CI=%s and chromium is not installed: %v", os.Getenv("CI"), err)
	}
	return path
}

// web is lethe dev serving the public endpoint and the demo pages, one
// browser, and the gRPC client a backend would use.
type web struct {
	consent consentv1.ConsentServiceClient
	// public is the public endpoint's base, demo the demo site's.
	public, demo string
	// key signs subject tokens; it is registered for Clio as keyID.
	key     ed25519.PrivateKey
	browser context.Context
}

const tokenKeyID = "clio-web-1"

func startWeb(t *testing.T) *web {
	t.Helper()
	path := chromium(t)
	bin := buildBinaries(t, ".")["."]
	grpcAddr, natsAddr, publicAddr, demoAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	demoDir, err := filepath.Abs("../../examples/web")
	if err != nil {
		t.Fatal(err)
	}
	// The README's command, on free ports.
	proc := startProcess(t, bin, "dev", "--data", t.TempDir(), "--addr", grpcAddr, "--nats-addr", natsAddr,
		"--metrics-addr", "", "--http-addr", "", "--public-addr", publicAddr, "--replica-addr", "off", "--demo", demoDir, "--demo-addr", demoAddr)
	t.Cleanup(func() { proc.stop(t) })
	conn := waitServing(t, grpcAddr, healthNames, proc)
	if out := proc.output.String(); !strings.Contains(out, "http://"+demoAddr+"/clio/") {
		t.Errorf("lethe dev does not print the demo page's address:\n%s", out)
	}

	config := filepath.Join(t.TempDir(), "config")
	if err := os.WriteFile(config, fmt.Appendf(nil, "currentContext: dev\ncontexts:\n  - name: dev\n    address: %s\n    nats: nats://%s\n", grpcAddr, natsAddr), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("LETHE_CONFIG", config)
	runOK(t, "apply", "-f", "../../examples/tenants/clio.yaml")

	w := &web{consent: consentv1.NewConsentServiceClient(conn), public: "http://" + publicAddr, demo: "http://" + demoAddr}
	w.registerOriginAndKey(t, conn)

	alloc, cancel := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(path), chromedp.WindowSize(1280, 900))...)
	t.Cleanup(cancel)
	browser, cancel := chromedp.NewContext(alloc)
	t.Cleanup(cancel)
	// The first run starts the browser, on a context without a timeout.
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	w.browser = browser
	return w
}

// registerOriginAndKey adds the demo site's origin (a free port here, not
// the README's 7412) to Clio's web settings, and a key the test signs
// subject tokens with, as Clio's backend would.
func (w *web) registerOriginAndKey(t *testing.T, conn grpc.ClientConnInterface) {
	t.Helper()
	ctx := context.Background()
	got, err := w.consent.GetWebSettings(ctx, &consentv1.GetWebSettingsRequest{TenantId: "clio"})
	if err != nil {
		t.Fatalf("GetWebSettings(clio), from examples/tenants/clio.yaml: %v", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	w.key = priv
	s := got.GetSettings()
	s.AllowedOrigins = append(s.AllowedOrigins, w.demo)
	s.SubjectTokenKeys = append(s.SubjectTokenKeys, &consentv1.SubjectTokenKey{KeyId: tokenKeyID,
		PublicKeyPem: string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}))})
	if _, err := w.consent.PutWebSettings(ctx, &consentv1.PutWebSettingsRequest{RequestId: "browser-test-web", TenantId: "clio", Settings: s}); err != nil {
		t.Fatalf("PutWebSettings: %v", err)
	}
}

// token signs a subject token (EdDSA) for Clio, as Clio's backend would
// after a login.
func (w *web) token(t *testing.T, subject string, roles ...string) string {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	now := time.Now()
	claims := map[string]any{"sub": subject, "aud": "lethe:clio", "iat": now.Unix(), "exp": now.Add(10 * time.Minute).Unix()}
	if len(roles) > 0 {
		claims["roles"] = roles
	}
	signed := enc(map[string]string{"alg": "EdDSA", "typ": "JWT", "kid": tokenKeyID}) + "." + enc(claims)
	return signed + "." + base64.RawURLEncoding.EncodeToString(ed25519.Sign(w.key, []byte(signed)))
}

// tab is one page in a browser context of its own.
type tab struct {
	t   *testing.T
	w   *web
	ctx context.Context
	mu  sync.Mutex
	// requests are the URLs the page asked for.
	requests []string
}

// pageProbe records the banner's events for the test to wait on.
const pageProbe = `window.__lethe = {changes: [], errors: []};
document.addEventListener('lethe:change', e => window.__lethe.changes.push(e.detail));
document.addEventListener('lethe:error', e => window.__lethe.errors.push(e.detail));`

func (w *web) newTab(t *testing.T, setup ...chromedp.Action[chromedp.Void]) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(w.browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{t: t, w: w, ctx: ctx}
	if err := chromedp.Listen(ctx, func(ev any) {
		if e, ok := ev.(*network.EventRequestWillBeSent); ok {
			tb.mu.Lock()
			tb.requests = append(tb.requests, e.Request.URL)
			tb.mu.Unlock()
		}
	}); err != nil {
		t.Fatal(err)
	}
	steps := append([]chromedp.Action[chromedp.Void]{
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, network.Enable, network.EnableParams{})
			return err
		}),
		chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: pageProbe})
			return err
		}),
	}, setup...)
	tb.do(steps...)
	return tb
}

func (tb *tab) do(steps ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		tb.t.Fatal(err)
	}
}

// eval evaluates a JavaScript expression, awaiting a promise it returns.
func eval[T any](tb *tab, expr string) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		tb.t.Fatalf("%s: %v", expr, err)
	}
	return v
}

// waitFor polls a JavaScript condition in the page until it holds (ten
// seconds at most).
func (tb *tab) waitFor(cond string) {
	tb.t.Helper()
	eval[bool](tb, `new Promise((resolve, reject) => {
		const end = Date.now() + 10000;
		(function tick() {
			let v = false;
			try { v = (`+cond+`); } catch (e) {}
			if (v) return resolve(true);
			if (Date.now() > end) return reject(new Error('timed out waiting for: `+strings.ReplaceAll(cond, "'", `\'`)+`'));
			setTimeout(tick, 20);
		})();
	})`)
}

// open loads the Clio demo page at the origin given (the demo site's when
// empty) and waits for the banner script to have asked the endpoint.
func (tb *tab) open(origin string) {
	tb.t.Helper()
	if origin == "" {
		origin = tb.w.demo
	}
	tb.do(chromedp.Navigate(origin + "/clio/"))
	tb.waitFor(`window.lethe && window.lethe.ready`)
	eval[bool](tb, `window.lethe.ready.then(() => true, () => true)`)
}

// bannerShown reports whether the banner is on the page.
func (tb *tab) bannerShown() bool {
	return eval[bool](tb, `!!document.getElementById('lethe-consent')`)
}

// shadow is the expression of an element of the banner by selector.
func shadow(sel string) string {
	return fmt.Sprintf(`document.getElementById('lethe-consent').shadowRoot.querySelector(%q)`, sel)
}

// click clicks an element of the banner with the mouse, at its centre,
// once the banner has stopped moving (it slides in).
func (tb *tab) click(sel string) {
	tb.t.Helper()
	r := eval[struct{ X, Y float64 }](tb, `(async () => {
		const root = document.getElementById('lethe-consent').shadowRoot;
		await Promise.all(root.getAnimations().map(a => a.finished));
		const e = `+shadow(sel)+`;
		e.scrollIntoView({block: 'nearest'});
		const r = e.getBoundingClientRect();
		return {x: r.x + r.width/2, y: r.y + r.height/2};
	})()`)
	tb.do(chromedp.MouseClickXY(r.X, r.Y))
}

// decide clicks a banner button and waits until the page has the choices
// the endpoint answered and the banner is gone.
func (tb *tab) decide(sel string) map[string]bool {
	tb.t.Helper()
	n := eval[int](tb, `window.__lethe.changes.length`)
	tb.click(sel)
	tb.waitFor(fmt.Sprintf(`window.__lethe.changes.length > %d && !document.getElementById('lethe-consent')`, n))
	return eval[map[string]bool](tb, `window.lethe.choices()`)
}

// visitor is the visitor id from the page's first-party cookie.
func (tb *tab) visitor() string {
	tb.t.Helper()
	for _, c := range strings.Split(eval[string](tb, `document.cookie`), "; ") {
		if v, ok := strings.CutPrefix(c, "lethe_visitor="); ok {
			return v
		}
	}
	tb.t.Fatal("no lethe_visitor cookie")
	return ""
}

// check asks Check over gRPC, as a backend would.
func (w *web) check(t *testing.T, subject, purpose string, attrs *consentv1.SubjectAttributes) bool {
	t.Helper()
	resp, err := w.consent.Check(context.Background(), &consentv1.CheckRequest{TenantId: "clio", SubjectId: subject, PurposeId: purpose, Attributes: attrs})
	if err != nil {
		t.Fatalf("Check(%s, %s): %v", subject, purpose, err)
	}
	return resp.GetDecision().GetAllowed()
}

// wantChecks checks each purpose for the subject over gRPC.
func (w *web) wantChecks(t *testing.T, subject string, want map[string]bool) {
	t.Helper()
	for purpose, allowed := range want {
		if got := w.check(t, subject, purpose, nil); got != allowed {
			t.Errorf("Check(%s, %s) allowed = %t, want %t", subject, purpose, got, allowed)
		}
	}
}

func (w *web) history(t *testing.T, subject string) []*consentv1.ConsentRecord {
	t.Helper()
	resp, err := w.consent.ListConsentHistory(context.Background(), &consentv1.ListConsentHistoryRequest{TenantId: "clio", SubjectId: subject})
	if err != nil {
		t.Fatalf("ListConsentHistory(%s): %v", subject, err)
	}
	return resp.GetRecords()
}

// Clio's banner purposes (its privacy policy §2.2).
const (
	functional  = "cookies.functional"
	statistical = "cookies.statistical"
	marketing   = "cookies.marketing"
)

func TestBannerInChromium(t *testing.T) {
	w := startWeb(t)

	// docs/banner.png: Clio's banner as a new visitor sees it, in Danish.
	// Written only when asked (LETHE_BANNER_SCREENSHOT=1), so that the
	// test suite never rewrites a checked-in file.
	t.Run("screenshot", func(t *testing.T) {
		if os.Getenv("LETHE_BANNER_SCREENSHOT") == "" {
			t.Skip("LETHE_BANNER_SCREENSHOT=1 writes docs/banner.png")
		}
		tb := w.newTab(t, reducedMotion)
		tb.open("")
		r := eval[struct{ X, Y, W, H float64 }](tb, `(() => { const r = `+shadow(".b")+`.getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}; })()`)
		const margin = 12 // the shadow around the banner
		shot, err := chromedp.Run(tb.ctx, func(ctx context.Context, _ *chromedp.Target) (page.CaptureScreenshotResult, error) {
			return chromedp.Call(ctx, page.CaptureScreenshot, page.CaptureScreenshotParams{Format: page.CaptureScreenshotFormatPng,
				Clip: &page.Viewport{X: r.X - margin, Y: r.Y - margin, Width: r.W + 2*margin, Height: r.H + 2*margin, Scale: 1}})
		})
		if err != nil {
			t.Fatal(err)
		}
		png := shot.Data
		if err := os.WriteFile("../../docs/banner.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote docs/banner.png, %d bytes", len(png))
	})

	t.Run("accept all", func(t *testing.T) {
		tb := w.newTab(t)
		tb.open("")
		if !tb.bannerShown() {
			t.Fatal("a new visitor sees no banner")
		}
		// Danish, from Clio's tenant file.
		if title := eval[string](tb, shadow("h2")+`.textContent`); !strings.Contains(strings.ToLower(title), "cookie") {
			t.Errorf("banner title %q", title)
		}
		if got := eval[string](tb, shadow("[role=dialog]")+`.lang`); got != "da" {
			t.Errorf("banner language %q, want da", got)
		}
		// Strictly necessary: shown as always on, not a choice.
		necessary := eval[[]bool](tb, `Array.from(`+shadow("ul")+`.querySelectorAll('input[value="cookies.necessary"]')).map(i => i.checked && i.disabled)`)
		if !slices.Equal(necessary, []bool{true}) {
			t.Errorf("necessary cookies' checkbox checked and disabled: %v", necessary)
		}
		// Nothing tagged ran before a choice.
		if got := eval[string](tb, `document.getElementById('statistics').textContent`); got != "statistics not loaded" {
			t.Errorf("before any choice the statistics script ran: %q", got)
		}
		choices := tb.decide("[data-act=accept]")
		if !choices[functional] || !choices[statistical] || !choices[marketing] {
			t.Errorf("lethe.choices() after accept all: %v", choices)
		}
		v := tb.visitor()
		w.wantChecks(t, "visitor:"+v, map[string]bool{functional: true, statistical: true, marketing: true})
		tb.waitFor(`document.getElementById('statistics').textContent === 'statistics loaded' && document.getElementById('marketing').textContent === 'marketing loaded'`)

		// The record is the Art. 7(1) evidence: method, notice version,
		// the page's origin.
		for _, r := range w.history(t, "visitor:"+v) {
			if r.GetMethod() != consentv1.CollectionMethod_COLLECTION_METHOD_BANNER || r.GetNoticeVersion() == "" || r.GetEvidence().GetOrigin() != w.demo {
				t.Errorf("record %s: method %s, notice %q, origin %q", r.GetPurposeId(), r.GetMethod(), r.GetNoticeVersion(), r.GetEvidence().GetOrigin())
			}
		}
		// The cookie: first party, two years, SameSite=Lax.
		cookies, err := chromedp.Run(tb.ctx, func(ctx context.Context, _ *chromedp.Target) (network.GetCookiesResult, error) {
			return chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{w.demo + "/clio/"}})
		})
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cookies.Cookies {
			if c.Name != "lethe_visitor" {
				continue
			}
			// The script asks for two years; Chromium keeps no cookie
			// longer than 400 days, and the script renews it each visit.
			if days := (c.Expires - float64(time.Now().Unix())) / 86400; c.SameSite != network.CookieSameSiteLax || days < 399 || days > 731 {
				t.Errorf("lethe_visitor cookie: SameSite %q, expires in %.0f days", c.SameSite, days)
			}
		}
		// No third-party request: the page's own files and the endpoint.
		tb.mu.Lock()
		defer tb.mu.Unlock()
		for _, u := range tb.requests {
			if !strings.HasPrefix(u, w.demo+"/") && !strings.HasPrefix(u, w.public+"/") {
				t.Errorf("the page asked a third party: %s", u)
			}
		}
	})

	t.Run("reject all", func(t *testing.T) {
		tb := w.newTab(t)
		tb.open("")
		choices := tb.decide("[data-act=reject]")
		if choices[functional] || choices[statistical] || choices[marketing] || !choices["cookies.necessary"] {
			t.Errorf("lethe.choices() after reject all: %v", choices)
		}
		w.wantChecks(t, "visitor:"+tb.visitor(), map[string]bool{functional: false, statistical: false, marketing: false})
		// The choices are known (the change event above): no tagged
		// script may run on them.
		if n := eval[int](tb, `document.querySelectorAll('script[data-lethe-done]').length`); n != 0 {
			t.Errorf("%d tagged scripts activated after reject all", n)
		}
	})

	t.Run("a selection, kept across a reload and withdrawn as easily (Art. 7(3))", func(t *testing.T) {
		tb := w.newTab(t)
		tb.open("")
		tb.click("[data-act=customise]")
		// Nothing is pre-ticked (CJEU C-673/17 Planet49).
		if n := eval[int](tb, shadow("ul")+`.querySelectorAll('input:checked:not([disabled])').length`); n != 0 {
			t.Errorf("%d optional purposes pre-ticked", n)
		}
		tb.click(`input[value="` + statistical + `"]`)
		choices := tb.decide("[data-act=save]")
		if !choices[statistical] || choices[functional] || choices[marketing] {
			t.Errorf("lethe.choices() after selecting statistics: %v", choices)
		}
		v := tb.visitor()
		w.wantChecks(t, "visitor:"+v, map[string]bool{functional: false, statistical: true, marketing: false})
		tb.waitFor(`document.getElementById('statistics').textContent === 'statistics loaded'`)
		if n := eval[int](tb, `window.statisticsRuns`); n != 1 {
			t.Errorf("the statistics script ran %d times, want once", n)
		}

		// A reload: no banner, the same choices, and the allowed script
		// runs again, the other not.
		tb.open("")
		if tb.bannerShown() {
			t.Error("the banner shows again after a decision")
		}
		if got := eval[map[string]bool](tb, `window.lethe.choices()`); !got[statistical] || got[functional] || got[marketing] {
			t.Errorf("choices after a reload: %v", got)
		}
		tb.waitFor(`document.getElementById('statistics').textContent === 'statistics loaded'`)
		if got := eval[string](tb, `document.getElementById('marketing').textContent`); got != "marketing not loaded" {
			t.Errorf("marketing script ran without consent: %q", got)
		}
		if tb.visitor() != v {
			t.Error("the visitor id changed across a reload")
		}

		// "Cookieindstillinger" opens the choices as they stand; one
		// click withdraws.
		tb.do(chromedp.Click(`#cookie-settings`))
		tb.waitFor(`document.getElementById('lethe-consent')`)
		if !eval[bool](tb, shadow(`input[value="`+statistical+`"]`)+`.checked`) {
			t.Error("the reopened banner does not show statistics as chosen")
		}
		tb.click(`input[value="` + statistical + `"]`)
		if choices := tb.decide("[data-act=save]"); choices[statistical] {
			t.Errorf("choices after withdrawing statistics: %v", choices)
		}
		// Focus returns to the link that opened the banner.
		if got := eval[string](tb, `document.activeElement.id`); got != "cookie-settings" {
			t.Errorf("focus on %q after the banner closed, want the cookie settings link", got)
		}
		w.wantChecks(t, "visitor:"+v, map[string]bool{statistical: false})
	})

	t.Run("keyboard: Escape is no choice, Tab reaches both buttons, Enter on reject all", func(t *testing.T) {
		tb := w.newTab(t)
		tb.open("")
		// Focus is in the banner, on the labelled dialog.
		if got := eval[string](tb, `(() => { const a = document.getElementById('lethe-consent').shadowRoot.activeElement; return a ? a.getAttribute('role') : ''; })()`); got != "dialog" {
			t.Errorf("focus on %q when the banner opens, want the dialog", got)
		}
		if got := eval[[]string](tb, `(() => { const d = `+shadow("[role=dialog]")+`; const r = d.getRootNode(); return [r.getElementById(d.getAttribute('aria-labelledby')).textContent, r.getElementById(d.getAttribute('aria-describedby')).textContent]; })()`); len(got) != 2 || got[0] == "" || got[1] == "" {
			t.Errorf("dialog label and description: %q", got)
		}
		tb.do(chromedp.KeyEvent(kb.Escape))
		reached := map[string]bool{}
		for i := 0; i < 6 && !reached["reject"]; i++ {
			tb.do(chromedp.KeyEvent(kb.Tab))
			act := eval[string](tb, `(() => { const a = document.getElementById('lethe-consent').shadowRoot.activeElement; return a ? (a.dataset.act || a.tagName) : ''; })()`)
			reached[act] = true
			if act == "reject" {
				// A visible focus indicator.
				if o := eval[string](tb, `getComputedStyle(`+shadow("[data-act=reject]")+`).outlineStyle`); o == "none" {
					t.Error("the focused reject button has no outline")
				}
			}
		}
		if !reached["reject"] {
			t.Fatalf("Tab reached %v, not the reject button", reached)
		}
		tb.do(chromedp.KeyEvent(kb.Tab))
		if act := eval[string](tb, `document.getElementById('lethe-consent').shadowRoot.activeElement.dataset.act`); act != "accept" {
			t.Errorf("Tab after reject reaches %q, want accept", act)
		}
		tb.do(chromedp.KeyEvent(kb.Tab, chromedp.KeyModifiers(chromedp.ModifierShift)))
		n := eval[int](tb, `window.__lethe.changes.length`)
		tb.do(chromedp.KeyEvent(kb.Enter))
		tb.waitFor(fmt.Sprintf(`window.__lethe.changes.length > %d && !document.getElementById('lethe-consent')`, n))
		// Escape recorded nothing: the only records are the rejection.
		records := w.history(t, "visitor:"+tb.visitor())
		if len(records) == 0 {
			t.Fatal("Enter on reject all recorded nothing")
		}
		for _, r := range records {
			if r.GetAction() != consentv1.ConsentAction_CONSENT_ACTION_DENY {
				t.Errorf("record %s: %s, want only denials", r.GetPurposeId(), r.GetAction())
			}
		}
	})

	t.Run("reject all as prominent as accept all", func(t *testing.T) {
		tb := w.newTab(t, reducedMotion)
		tb.open("")
		props := []string{"width", "height", "background-color", "color", "font-size", "font-weight", "font-family",
			"border-top-width", "border-top-color", "border-top-style", "padding-top", "padding-left", "border-radius", "opacity", "text-decoration-line"}
		styles := eval[map[string][]string](tb, fmt.Sprintf(`(() => {
			const props = %s, out = {};
			for (const act of ['accept', 'reject']) {
				const b = document.getElementById('lethe-consent').shadowRoot.querySelector('[data-act=' + act + ']');
				const s = getComputedStyle(b);
				out[act] = [b.tagName, b.className].concat(props.map(p => s.getPropertyValue(p)));
			}
			return out;
		})()`, mustJSON(t, props)))
		if !slices.Equal(styles["accept"], styles["reject"]) {
			t.Errorf("accept and reject differ:\naccept %q\nreject %q", styles["accept"], styles["reject"])
		}
		// The page's CSS (examples/web/clio/site.css styles every button
		// red on yellow) does not reach the banner.
		if styles["accept"][5] == "rgb(255, 0, 0)" || styles["accept"][6] == "30px" {
			t.Errorf("the page's CSS reached the banner: %q", styles["accept"])
		}
		if !eval[bool](tb, shadow("[data-act=reject]")+`.nextElementSibling === `+shadow("[data-act=accept]")) {
			t.Error("reject all and accept all are not side by side")
		}
		if got := eval[string](tb, `getComputedStyle(`+shadow(".b")+`).animationName`); got != "none" {
			t.Errorf("animation %q under prefers-reduced-motion: reduce", got)
		}
	})

	t.Run("a student never gets marketing", func(t *testing.T) {
		tb := w.newTab(t)
		tb.open("")
		// The page logs a student in: its backend signs a token, the page
		// hands it to the banner.
		tok := w.token(t, "clio-student-1", "student")
		eval[bool](tb, fmt.Sprintf(`window.lethe.setSubjectToken(%q).then(() => true)`, tok))
		tb.waitFor(`document.getElementById('lethe-consent')`)
		if eval[bool](tb, shadow(`input[value="`+marketing+`"]`)+` !== null`) {
			t.Error("the banner asks a student about marketing")
		}
		choices := tb.decide("[data-act=accept]")
		if choices[marketing] || !choices[statistical] {
			t.Errorf("a student's choices after accept all: %v", choices)
		}
		w.wantChecks(t, "clio-student-1", map[string]bool{statistical: true, marketing: false})
		if w.check(t, "clio-student-1", marketing, &consentv1.SubjectAttributes{Role: "teacher"}) {
			t.Error("a marketing consent was recorded for the student")
		}
		if got := eval[string](tb, `document.getElementById('marketing').textContent`); got != "marketing not loaded" {
			t.Errorf("the marketing script ran for a student: %q", got)
		}
	})

	t.Run("a foreign origin is refused by CORS", func(t *testing.T) {
		tb := w.newTab(t)
		// The same page from another origin: localhost is not 127.0.0.1.
		foreign := strings.Replace(w.demo, "127.0.0.1", "localhost", 1)
		tb.open(foreign)
		tb.waitFor(`window.__lethe.errors.length > 0`)
		if tb.bannerShown() {
			t.Error("a page from a foreign origin shows the banner")
		}
		// The page tries to record directly: the browser refuses.
		msg := eval[string](tb, fmt.Sprintf(`fetch(%q, {method: 'POST', headers: {'Content-Type': 'application/json', 'Lethe-Visitor': %q},
			body: JSON.stringify({requestId: 'foreign-1', choice: 'accept_all', selected: [], shown: []})}).then(r => 'status ' + r.status, e => e.name)`,
			w.public+"/v1/tenants/clio/decisions", tb.visitor()))
		if msg != "TypeError" {
			t.Errorf("a POST from a foreign origin: %s, want a CORS failure (TypeError)", msg)
		}
		if records := w.history(t, "visitor:"+tb.visitor()); len(records) != 0 {
			t.Errorf("a foreign origin recorded %d records", len(records))
		}
	})

	// The next two change Clio's purposes; they run last.
	t.Run("GPC denies the purposes that opt in to it", func(t *testing.T) {
		restore := w.changePurpose(t, marketing, func(p *consentv1.Purpose) { p.GpcOptOut = true })
		defer restore()
		tb := w.newTab(t, chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
			// What a browser with Global Privacy Control on does: the
			// header on every request, and the property for scripts.
			if _, err := chromedp.Call(ctx, network.SetExtraHTTPHeaders, network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Sec-GPC": "1"}}); err != nil {
				return err
			}
			_, err := chromedp.Call(ctx, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{
				Source: `Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', {get: () => true});`})
			return err
		}))
		tb.open("")
		choices := tb.decide("[data-act=accept]")
		if choices[marketing] || !choices[statistical] {
			t.Errorf("choices after accept all with GPC on: %v", choices)
		}
		v := "visitor:" + tb.visitor()
		w.wantChecks(t, v, map[string]bool{marketing: false, statistical: true, functional: true})
		records := w.history(t, v)
		for _, r := range records {
			if !r.GetEvidence().GetGpc() {
				t.Errorf("record %s does not keep the GPC signal", r.GetPurposeId())
			}
		}
		if got := eval[string](tb, `document.getElementById('marketing').textContent`); got != "marketing not loaded" {
			t.Errorf("the marketing script ran under GPC: %q", got)
		}
	})

	t.Run("a new notice version shows the banner again", func(t *testing.T) {
		tb := w.newTab(t)
		tb.open("")
		tb.decide("[data-act=accept]")
		v := "visitor:" + tb.visitor()
		w.wantChecks(t, v, map[string]bool{statistical: true})
		w.changePurpose(t, statistical, func(p *consentv1.Purpose) {
			p.NoticeVersions = append(p.NoticeVersions, &consentv1.NoticeVersion{Version: "2026-12-07", EffectiveAt: timestamppb.New(time.Now().Add(-time.Second)), Material: true})
		})
		tb.open("")
		if !tb.bannerShown() {
			t.Fatal("no banner after statistics' notice changed")
		}
		tb.decide("[data-act=accept]")
		w.wantChecks(t, v, map[string]bool{statistical: true})
		if !slices.ContainsFunc(w.history(t, v), func(r *consentv1.ConsentRecord) bool {
			return r.GetPurposeId() == statistical && r.GetNoticeVersion() == "2026-12-07"
		}) {
			t.Errorf("no record of statistics under the new notice version")
		}
	})
}

// reducedMotion makes the tab prefer reduced motion, as a visitor's
// system setting does.
var reducedMotion = chromedp.Func(func(ctx context.Context, _ *chromedp.Target) error {
	_, err := chromedp.Call(ctx, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-reduced-motion", Value: "reduce"}}})
	return err
})

// changePurpose changes one of Clio's purposes and returns a function
// that puts it back.
func (w *web) changePurpose(t *testing.T, id string, change func(*consentv1.Purpose)) func() {
	t.Helper()
	ctx := context.Background()
	resp, err := w.consent.ListPurposes(ctx, &consentv1.ListPurposesRequest{TenantId: "clio"})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(resp.GetPurposes(), func(p *consentv1.Purpose) bool { return p.GetPurposeId() == id })
	if i < 0 {
		t.Fatalf("clio has no purpose %s", id)
	}
	old := resp.GetPurposes()[i]
	p := proto.Clone(old).(*consentv1.Purpose)
	change(p)
	if _, err := w.consent.PutPurpose(ctx, &consentv1.PutPurposeRequest{RequestId: "browser-" + id + "-" + url.PathEscape(t.Name()), TenantId: "clio", Purpose: p}); err != nil {
		t.Fatal(err)
	}
	return func() {
		if _, err := w.consent.PutPurpose(ctx, &consentv1.PutPurposeRequest{RequestId: "browser-restore-" + id + "-" + url.PathEscape(t.Name()), TenantId: "clio", Purpose: old}); err != nil {
			t.Error(err)
		}
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
