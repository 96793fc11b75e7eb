/*
 * Lethe consent banner (services/consent/web/banner.js).
 *
 * Served as written by Lethe's public consent endpoint at /v1/banner.js:
 * no framework, no build step, no third-party request. A page includes it
 * with
 *
 *   <script src="https://consent.example/v1/banner.js" data-tenant="clio" async></script>
 *
 * Attributes: data-tenant (required); data-endpoint (the public endpoint's
 * base, default the script's own origin); data-lang (the banner's language,
 * default the page's <html lang>, else the browser's languages);
 * data-subject-token (a subject token the site's backend signed for a
 * logged-in visitor); data-cookie-domain (to share the visitor cookie with
 * subdomains).
 *
 * The page's API is window.lethe (choices, allowed, on, open,
 * setSubjectToken, ready) and a "lethe:change" event on document.
 * docs/web-consent.md describes both and the JSON the endpoint speaks.
 */
(function () {
  'use strict';
  if (window.lethe && window.lethe.version) return; // included twice

  var script = document.currentScript ||
    document.querySelector('script[data-tenant][src*="banner.js"]');
  var ds = (script && script.dataset) || {};
  var tenant = ds.tenant || '';
  var base = (ds.endpoint || (script && script.src ? new URL(script.src, location.href).origin : '')).replace(/\/+$/, '');
  var api = base + '/v1/tenants/' + encodeURIComponent(tenant);
  var lang = ds.lang || document.documentElement.lang || '';
  var token = ds.subjectToken || '';

  // ---- the visitor id: a first-party cookie, sent as Lethe-Visitor ----
  // Keeping the id that records a consent choice is strictly necessary
  // for the service the visitor asked for (their choice), so it needs no
  // consent of its own (ePrivacy Directive Art. 5(3)).
  var COOKIE = 'lethe_visitor';
  var VISITOR_RE = /^[A-Za-z0-9_-]{22,64}$/;
  var visitor = readCookie();
  if (!visitor) {
    visitor = newVisitorId();
  }
  // Written on every visit: the two years run from the last visit.
  writeCookie(visitor);

  function readCookie() {
    var parts = document.cookie ? document.cookie.split('; ') : [];
    for (var i = 0; i < parts.length; i++) {
      var eq = parts[i].indexOf('=');
      if (parts[i].slice(0, eq) === COOKIE) {
        var v = parts[i].slice(eq + 1);
        return VISITOR_RE.test(v) ? v : '';
      }
    }
    return '';
  }

  function writeCookie(id) {
    document.cookie = COOKIE + '=' + id + '; Path=/; Max-Age=63072000; SameSite=Lax' +
      (ds.cookieDomain ? '; Domain=' + ds.cookieDomain : '') +
      (location.protocol === 'https:' ? '; Secure' : '');
  }

  function newVisitorId() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    return btoa(String.fromCharCode.apply(null, b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  }

  function requestId() {
    var b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40; // a version 4 UUID
    b[8] = (b[8] & 0x3f) | 0x80;
    var h = Array.prototype.map.call(b, function (x) { return (x + 0x100).toString(16).slice(1); }).join('');
    return h.slice(0, 8) + '-' + h.slice(8, 12) + '-' + h.slice(12, 16) + '-' + h.slice(16, 20) + '-' + h.slice(20);
  }

  // ---- talking to the public endpoint ----
  // No cookies go to Lethe (credentials: omit): the visitor is named by the
  // header alone, and the Sec-GPC header is the browser's own.
  function call(method, path, body) {
    var headers = { 'Lethe-Visitor': visitor };
    if (token) headers.Authorization = 'Bearer ' + token;
    if (body) headers['Content-Type'] = 'application/json';
    return fetch(api + path, {
      method: method, headers: headers, mode: 'cors', credentials: 'omit', cache: 'no-store',
      body: body ? JSON.stringify(body) : undefined
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (r.ok) return j;
        var e = new Error((j.error && j.error.message) || ('HTTP ' + r.status));
        e.status = r.status;
        e.code = j.error && j.error.code;
        throw e;
      });
    });
  }

  // A decision is retried under the same request id after a network
  // failure: the endpoint is idempotent under it, so a retry never records
  // twice.
  function post(path, body, tries) {
    return call('POST', path, body).catch(function (e) {
      if (e.status || tries <= 1) throw e;
      return new Promise(function (ok) { setTimeout(ok, 700); }).then(function () { return post(path, body, tries - 1); });
    });
  }

  // ---- state ----
  var banner = null;     // the last GET banner answer
  var choices = {};      // purpose id -> allowed
  var listeners = [];
  var ui = null;         // the rendered banner, when open
  var pending = false;   // a decision is on its way
  var returnFocus = null;

  function load() {
    return call('GET', '/banner' + (lang ? '?lang=' + encodeURIComponent(lang) : '')).then(function (b) {
      banner = b;
      setChoices(b.choices && b.choices.purposes);
      if (b.ask) show(false);
      else if (ui) hide();
      return api_.choices();
    });
  }

  // setChoices takes the choices the endpoint answered; the page hears
  // of them when they changed, and after every decision (decided), which
  // states them anew even when they stay the same.
  function setChoices(purposes, decided) {
    var next = {};
    (banner.purposes || []).forEach(function (p) {
      next[p.id] = p.necessary ? true : !!(purposes && purposes[p.id]);
    });
    var changed = JSON.stringify(next) !== JSON.stringify(choices);
    choices = next;
    activateScripts();
    if (changed || decided) {
      var copy = api_.choices();
      listeners.slice().forEach(function (fn) {
        try { fn(copy); } catch (e) { setTimeout(function () { throw e; }); }
      });
      document.dispatchEvent(new CustomEvent('lethe:change', { detail: api_.choices() }));
    }
  }

  function decide(choice, selected) {
    if (pending) return Promise.resolve();
    var shown = banner.purposes.map(function (p) { return { id: p.id, noticeVersion: p.noticeVersion }; });
    var body = { requestId: requestId(), choice: choice, selected: selected || [], shown: shown };
    busy(true);
    return post('/decisions', body, 3).then(function (r) {
      busy(false);
      hide();
      setChoices(r.choices && r.choices.purposes, true);
    }, function (e) {
      busy(false);
      // A notice that changed while the banner was open: show the new one.
      if (e.status === 409) return load();
      if (ui) ui.error.hidden = false;
      throw e;
    });
  }

  // ---- tagged scripts: <script type="text/plain" data-lethe-purpose="id ..."> ----
  // A tagged script runs once, when every purpose it names is allowed,
  // as a real script in its place; never before.
  function activateScripts() {
    var tagged = document.querySelectorAll('script[type="text/plain"][data-lethe-purpose]:not([data-lethe-done])');
    Array.prototype.forEach.call(tagged, function (old) {
      var ids = old.getAttribute('data-lethe-purpose').split(/\s+/).filter(Boolean);
      if (!ids.length || !ids.every(allowed)) return;
      var s = document.createElement('script');
      Array.prototype.forEach.call(old.attributes, function (a) {
        if (a.name !== 'type') s.setAttribute(a.name, a.value);
      });
      if (old.dataset.letheType) s.type = old.dataset.letheType;
      s.async = false; // activated scripts run in document order
      s.text = old.text;
      old.setAttribute('data-lethe-done', '');
      s.setAttribute('data-lethe-done', '');
      old.parentNode.insertBefore(s, old.nextSibling);
    });
  }

  function allowed(id) {
    return choices[id] === true;
  }

  // ---- the banner ----
  var CSS =
    ':host{all:initial;position:fixed;z-index:2147483000;left:0;right:0;bottom:0;display:block;' +
    'font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Arial,sans-serif;color:#1b1b1b}' +
    '.b{box-sizing:border-box;max-width:44rem;margin:0 auto 1rem;padding:1.25rem 1.5rem;background:#fff;' +
    'border:1px solid #8a8a8a;border-radius:10px;box-shadow:0 6px 28px rgba(0,0,0,.28);max-height:90vh;overflow:auto;' +
    'animation:in .25s ease-out}' +
    '@keyframes in{from{transform:translateY(1.5rem);opacity:0}to{transform:none;opacity:1}}' +
    '@media (prefers-reduced-motion:reduce){.b{animation:none}}' +
    'h2{font-size:1.15rem;margin:0 0 .5rem;line-height:1.3}' +
    'p{margin:0 0 .75rem}' +
    'a{color:#0b4f9c}' +
    '.row{display:grid;grid-template-columns:1fr 1fr;gap:.75rem;margin-top:1rem}' +
    'button{font:inherit;font-weight:600;cursor:pointer;border-radius:6px;min-height:2.75rem;padding:.55rem 1rem}' +
    '.c{background:var(--lethe-accent,#0b4f9c);color:#fff;border:2px solid var(--lethe-accent,#0b4f9c)}' +
    '.s{background:#fff;color:#0b4f9c;border:2px solid #0b4f9c;margin-top:.75rem;width:100%}' +
    'button:focus-visible,a:focus-visible,input:focus-visible{outline:3px solid #e07a00;outline-offset:2px}' +
    '.b:focus{outline:none}' + // focused only to be announced; its controls show focus
    'button[aria-disabled=true]{opacity:.6;cursor:progress}' +
    'ul{list-style:none;margin:1rem 0 0;padding:0}' +
    'li{padding:.6rem 0;border-top:1px solid #ddd}' +
    'label{display:flex;gap:.6rem;align-items:center;font-weight:600}' +
    'input{width:1.25rem;height:1.25rem;margin:0;accent-color:#0b4f9c}' +
    'li p{margin:.25rem 0 0 1.85rem;font-size:.93rem;color:#3d3d3d}' +
    '.n{font-weight:400;color:#3d3d3d}' +
    '.e{color:#a4000f;font-weight:600}' +
    '[hidden]{display:none!important}';

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    for (var k in attrs) e.setAttribute(k, attrs[k]);
    if (text) e.textContent = text;
    return e;
  }

  // show renders the banner; customise opens the per-purpose choices
  // (lethe.open()).
  function show(customise) {
    if (!banner) return;
    if (!ui) {
      var active = document.activeElement;
      returnFocus = active && active !== document.body ? active : null;
    } else {
      ui.host.remove();
    }
    var t = banner.texts || {};
    var host = el('div', { id: 'lethe-consent', 'data-lethe': '' });
    var root = host.attachShadow({ mode: 'open' });
    var style = el('style');
    style.textContent = CSS;
    var box = el('section', { 'class': 'b', role: 'dialog', 'aria-modal': 'false', 'aria-labelledby': 'lt', 'aria-describedby': 'ld', tabindex: '-1', lang: banner.language || '' });
    box.appendChild(el('h2', { id: 'lt' }, t.title));
    var body = el('p', { id: 'ld' }, t.body);
    box.appendChild(body);
    if (t.policyUrl) {
      var link = el('a', { href: t.policyUrl, target: '_blank', rel: 'noopener' }, policyLabel(banner.language));
      box.appendChild(el('p')).appendChild(link);
    }

    // The per-purpose choices: the necessary ones checked and disabled
    // ("always on"), the others unchecked until chosen (no pre-ticked
    // boxes: CJEU C-673/17 Planet49).
    var list = el('ul', { id: 'lp', hidden: '' });
    var boxes = [];
    banner.purposes.forEach(function (p, i) {
      var li = el('li');
      var label = el('label', { 'for': 'lp' + i });
      var cb = el('input', { type: 'checkbox', id: 'lp' + i, 'aria-describedby': 'lpd' + i });
      cb.checked = p.necessary || allowed(p.id);
      cb.disabled = !!p.necessary;
      cb.value = p.id;
      if (!p.necessary) boxes.push(cb);
      label.appendChild(cb);
      label.appendChild(document.createTextNode(p.name + ' '));
      if (p.necessary) label.appendChild(el('span', { 'class': 'n' }, '(' + (t.necessaryLabel || '') + ')'));
      li.appendChild(label);
      li.appendChild(el('p', { id: 'lpd' + i }, p.description || ''));
      list.appendChild(li);
    });
    box.appendChild(list);

    var err = el('p', { 'class': 'e', role: 'alert', hidden: '' }, errorText(banner.language));
    box.appendChild(err);

    // "Reject all" and "Accept all": the same element, class, size and
    // colours, side by side, so neither is more prominent (EDPB cookie
    // banner taskforce report, 2023, "reject button"). Reject comes first
    // in the Tab order.
    var row = el('div', { 'class': 'row' });
    var reject = el('button', { type: 'button', 'class': 'c', 'data-act': 'reject' }, t.rejectAll);
    var accept = el('button', { type: 'button', 'class': 'c', 'data-act': 'accept' }, t.acceptAll);
    row.appendChild(reject);
    row.appendChild(accept);
    box.appendChild(row);
    var more = el('button', { type: 'button', 'class': 's', 'data-act': 'customise', 'aria-expanded': 'false', 'aria-controls': 'lp' }, t.customise);
    var save = el('button', { type: 'button', 'class': 's', 'data-act': 'save', hidden: '' }, t.save);
    box.appendChild(more);
    box.appendChild(save);

    function expand(open) {
      list.hidden = !open;
      save.hidden = !open;
      more.hidden = open;
      more.setAttribute('aria-expanded', String(open));
    }
    reject.onclick = function () { decide('reject_all').catch(warn); };
    accept.onclick = function () { decide('accept_all').catch(warn); };
    save.onclick = function () {
      decide('accept_selected', boxes.filter(function (c) { return c.checked; }).map(function (c) { return c.value; })).catch(warn);
    };
    more.onclick = function () {
      expand(true);
      if (boxes[0]) boxes[0].focus(); else save.focus();
    };
    // Escape is never a choice: it folds the details away and keeps the
    // banner, so nothing is recorded and nothing allowed.
    box.addEventListener('keydown', function (e) {
      if (e.key === 'Escape' && !list.hidden) {
        e.stopPropagation();
        expand(false);
        more.focus();
      }
    });

    root.appendChild(style);
    root.appendChild(box);
    document.body.appendChild(host);
    ui = { host: host, box: box, error: err, buttons: [reject, accept, more, save] };
    expand(!!customise);
    // Focus moves into the banner: to the dialog itself, so a screen
    // reader reads its title and text and no button is the default.
    if (customise && boxes[0]) boxes[0].focus(); else box.focus();
  }

  // hide removes the banner; focus goes back where it was before it
  // opened, unless the visitor has moved it elsewhere on the page.
  function hide() {
    if (!ui) return;
    var a = document.activeElement;
    var inside = !a || a === document.body || a === ui.host;
    ui.host.remove();
    ui = null;
    if (inside && returnFocus && returnFocus.isConnected) returnFocus.focus();
    returnFocus = null;
  }

  // busy marks the buttons while a decision is on its way. They stay
  // focusable (aria-disabled, not disabled): a disabled button would drop
  // the keyboard's focus to the page.
  function busy(on) {
    pending = on;
    if (!ui) return;
    ui.buttons.forEach(function (b) { b.setAttribute('aria-disabled', String(on)); });
    ui.box.setAttribute('aria-busy', String(on));
    if (!on) return;
    ui.error.hidden = true;
  }

  // The few words the tenant's texts do not carry, in the banner's
  // languages; English otherwise.
  var WORDS = {
    da: ['Privatlivspolitik', 'Dit valg kunne ikke gemmes. Prøv igen.'],
    sv: ['Integritetspolicy', 'Ditt val kunde inte sparas. Försök igen.'],
    fi: ['Tietosuojaseloste', 'Valintaasi ei voitu tallentaa. Yritä uudelleen.'],
    en: ['Privacy policy', 'Your choice could not be saved. Please try again.']
  };
  function words(language) {
    return WORDS[String(language || '').slice(0, 2).toLowerCase()] || WORDS.en;
  }
  function policyLabel(language) { return words(language)[0]; }
  function errorText(language) { return words(language)[1]; }

  function warn(e) {
    if (window.console) console.warn('lethe:', e && e.message);
  }

  // ---- the page's API ----
  var ready;
  var api_ = {
    version: 1,
    // choices returns every purpose the banner shows, allowed or not.
    choices: function () {
      var c = {};
      for (var k in choices) c[k] = choices[k];
      return c;
    },
    allowed: allowed,
    // on('change', fn) calls fn with the choices whenever they change; it
    // returns a function that removes fn.
    on: function (name, fn) {
      if (name !== 'change' || typeof fn !== 'function') return function () {};
      listeners.push(fn);
      return function () { listeners = listeners.filter(function (f) { return f !== fn; }); };
    },
    // open shows the choices again, so that withdrawing a consent is as
    // easy as giving it (GDPR Art. 7(3)).
    open: function () {
      return ready.then(function () { show(true); });
    },
    // setSubjectToken names the logged-in subject (a token the site's
    // backend signed); the visitor's choices are linked to the subject as
    // evidence, and the subject's own are loaded. null forgets it.
    setSubjectToken: function (t) {
      token = t || '';
      ready = ready.catch(function () {}).then(function () {
        return token ? call('POST', '/link', {}).catch(warn) : null;
      }).then(load);
      api_.ready = ready;
      return ready;
    },
    ready: null
  };
  window.lethe = api_;

  function start() {
    ready = load();
    ready.catch(function (e) {
      warn(e);
      document.dispatchEvent(new CustomEvent('lethe:error', { detail: { status: e.status || 0, code: e.code || '' } }));
    });
    api_.ready = ready;
    // Tagged scripts the page adds later are activated as they come.
    new MutationObserver(function () { if (banner) activateScripts(); })
      .observe(document.documentElement, { childList: true, subtree: true });
  }

  if (!tenant) {
    warn(new Error('data-tenant is missing'));
    return;
  }
  if (document.body) start();
  else document.addEventListener('DOMContentLoaded', start);
})();
