package connector

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"text/template"
	"text/template/parse"
	"time"

	"go.yaml.in/yaml/v3"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// Definition is a loaded, validated connector file. It is immutable; every
// [Definition.Handler] builds an instance with its own parameters, secrets,
// token cache and rate limiter.
type Definition struct {
	file fileSpec

	kinds       []contract.Kind
	idType      commonv1.IdentifierType
	idForm      commonv1.IdentifierForm
	failMissing bool
	url         *template.Template
	headers     map[string]*template.Template
	body        *template.Template
	rules       []rule
	message     []string
	poll        *pollDef
}

// pollDef is the validated poll section.
type pollDef struct {
	extract     map[string][]string
	url         *template.Template
	headers     map[string]*template.Template
	method      string
	interval    time.Duration
	maxInterval time.Duration
	deadline    time.Duration
	rules       []rule
}

// fileSpec is the connector file as written; see the package doc.
type fileSpec struct {
	Name        string       `yaml:"name"`
	Description string       `yaml:"description"`
	Document    documentSpec `yaml:"document"`
	Answers     []string     `yaml:"answers"`
	Params      []paramSpec  `yaml:"params"`
	Identifier  identSpec    `yaml:"identifier"`
	Auth        authSpec     `yaml:"auth"`
	RateLimit   rateSpec     `yaml:"rate_limit"`
	Request     requestSpec  `yaml:"request"`
	Responses   []ruleSpec   `yaml:"responses"`
	Message     string       `yaml:"message"`
	Poll        *pollSpec    `yaml:"poll"`
	Consent     *consentSpec `yaml:"consent"`
}

type documentSpec struct {
	URL     string `yaml:"url"`
	Version string `yaml:"version"`
}

type paramSpec struct {
	Name        string `yaml:"name"`
	Description string `yaml:"description"`
	Pattern     string `yaml:"pattern"`
	Optional    bool   `yaml:"optional"`
}

type identSpec struct {
	Type        string `yaml:"type"`
	Form        string `yaml:"form"`
	WhenMissing string `yaml:"when_missing"`
}

type authSpec struct {
	Type             string   `yaml:"type"`
	TokenFile        string   `yaml:"token_file"`
	UsernameFile     string   `yaml:"username_file"`
	PasswordFile     string   `yaml:"password_file"`
	TokenURL         string   `yaml:"token_url"`
	ClientIDFile     string   `yaml:"client_id_file"`
	ClientSecretFile string   `yaml:"client_secret_file"`
	Scopes           []string `yaml:"scopes"`
}

type rateSpec struct {
	PerSecond float64 `yaml:"per_second"`
	Burst     int     `yaml:"burst"`
}

type requestSpec struct {
	Method  string            `yaml:"method"`
	URL     string            `yaml:"url"`
	Headers map[string]string `yaml:"headers"`
	Body    string            `yaml:"body"`
}

type ruleSpec struct {
	Status  []int       `yaml:"status"`
	Match   []matchSpec `yaml:"match"`
	Outcome string      `yaml:"outcome"`
}

type matchSpec struct {
	Path   string   `yaml:"path"`
	Equals []string `yaml:"equals"`
}

type pollSpec struct {
	Extract     map[string]string `yaml:"extract"`
	Request     requestSpec       `yaml:"request"`
	Interval    string            `yaml:"interval"`
	MaxInterval string            `yaml:"max_interval"`
	Deadline    string            `yaml:"deadline"`
	Responses   []ruleSpec        `yaml:"responses"`
}

// consentSpec says which consent withdrawals the connector answers: those
// that withdraw the purpose named by the parameter purpose_param.
type consentSpec struct {
	PurposeParam string `yaml:"purpose_param"`
}

// verdict is what a response rule concludes.
type verdict int

const (
	verdictDone verdict = iota + 1
	verdictNotFound
	verdictRetry
	verdictFailed
	verdictPending
)

var verdictNames = map[string]verdict{
	"done":      verdictDone,
	"not_found": verdictNotFound,
	"retry":     verdictRetry,
	"failed":    verdictFailed,
	"pending":   verdictPending,
}

// rule is a validated response rule.
type rule struct {
	status  []int
	match   []match
	verdict verdict
}

type match struct {
	path   []string
	equals []string
}

// Limits of a connector file, so that a mistaken or hostile file cannot
// make the runner hold or send much.
const (
	maxFileBytes  = 64 << 10
	maxParams     = 16
	maxHeaders    = 16
	maxRules      = 32
	maxTemplate   = 8 << 10
	maxPollPeriod = 24 * time.Hour
)

var (
	nameRE      = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,62}$`)
	paramRE     = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	secretRE    = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)
	headerRE    = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$")
	methods     = []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	answerKinds = []contract.Kind{contract.KindErasureRequested, contract.KindConsentWithdrawn}
)

var identifierTypes = map[string]commonv1.IdentifierType{
	"email":           commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL,
	"phone":           commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE,
	"account_id":      commonv1.IdentifierType_IDENTIFIER_TYPE_ACCOUNT_ID,
	"customer_number": commonv1.IdentifierType_IDENTIFIER_TYPE_CUSTOMER_NUMBER,
	"device_id":       commonv1.IdentifierType_IDENTIFIER_TYPE_DEVICE_ID,
}

var identifierForms = map[string]commonv1.IdentifierForm{
	"plain":  commonv1.IdentifierForm_IDENTIFIER_FORM_PLAIN,
	"sha256": commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED,
	"md5":    commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE,
}

//go:embed builtin/*.yaml
var builtinFS embed.FS

// Builtin returns the builtin connector called name ("google-analytics",
// "campaign-monitor", "meta-custom-audiences",
// "linkedin-matched-audiences", "hotjar").
func Builtin(name string) (*Definition, error) {
	if !nameRE.MatchString(name) {
		return nil, fmt.Errorf("connector: %q is not a connector name", name)
	}
	d, err := Load(builtinFS, "builtin/"+name+".yaml")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("connector: no builtin connector %q (there are %s)", name, strings.Join(BuiltinNames(), ", "))
	}
	return d, err
}

// BuiltinNames returns the names of the builtin connectors, sorted.
func BuiltinNames() []string {
	entries, err := fs.ReadDir(builtinFS, "builtin")
	if err != nil {
		panic(err) // embedded at build time
	}
	var names []string
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(names)
	return names
}

// Load reads and validates the connector file name in fsys.
func Load(fsys fs.FS, name string) (*Definition, error) {
	f, err := fsys.Open(name)
	if err != nil {
		return nil, fmt.Errorf("connector: %w", err)
	}
	defer f.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(io.LimitReader(f, maxFileBytes+1)); err != nil {
		return nil, fmt.Errorf("connector: reading %s: %w", name, err)
	}
	d, err := Parse(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return d, nil
}

// LoadFile reads and validates the connector file at path.
func LoadFile(path string) (*Definition, error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	return Load(os.DirFS(dir), base)
}

// Parse validates a connector file's content. Unknown keys are refused;
// every error names the field.
func Parse(data []byte) (*Definition, error) {
	if len(data) > maxFileBytes {
		return nil, fmt.Errorf("connector: the file is larger than %d bytes", maxFileBytes)
	}
	var spec fileSpec
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&spec); err != nil {
		return nil, fmt.Errorf("connector: %w", err)
	}
	v := validator{}
	d := v.definition(spec)
	if err := errors.Join(v.errs...); err != nil {
		return nil, fmt.Errorf("connector %q: %w", spec.Name, err)
	}
	return d, nil
}

// Name returns the connector's name.
func (d *Definition) Name() string { return d.file.Name }

// Document returns the vendor API document the connector follows: its URL
// and version or date.
func (d *Definition) Document() (url, version string) {
	return d.file.Document.URL, d.file.Document.Version
}

// Kinds returns the event kinds the connector answers; a runner registers
// the handler for each.
func (d *Definition) Kinds() []contract.Kind { return slices.Clone(d.kinds) }

// Params returns the names of the parameters the connector takes, the
// required ones first.
func (d *Definition) Params() (required, optional []string) {
	for _, p := range d.file.Params {
		if p.Optional {
			optional = append(optional, p.Name)
		} else {
			required = append(required, p.Name)
		}
	}
	return required, optional
}

// Secrets returns the names of the secret files the connector reads from
// its secrets directory.
func (d *Definition) Secrets() []string {
	a := d.file.Auth
	var out []string
	for _, s := range []string{a.TokenFile, a.UsernameFile, a.PasswordFile, a.ClientIDFile, a.ClientSecretFile} {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

// validator collects every error in a file rather than the first.
type validator struct{ errs []error }

func (v *validator) bad(field, format string, args ...any) {
	v.errs = append(v.errs, fmt.Errorf("%s: %s", field, fmt.Sprintf(format, args...)))
}

func (v *validator) definition(s fileSpec) *Definition {
	d := &Definition{file: s}
	v.about(s)
	v.answers(d, s.Answers)
	params := v.params(s.Params)
	v.consent(d, s.Consent, params)
	v.identifier(d, s.Identifier)
	v.auth(s.Auth)
	v.rateLimit(s.RateLimit)
	sample := sampleData(params, nil)
	d.url, d.headers, d.body = v.request("request", s.Request, sample, true)
	d.rules = v.rules("responses", s.Responses, s.Poll != nil)
	if s.Message != "" {
		d.message = v.path("message", s.Message)
	}
	if s.Poll != nil {
		d.poll = v.poll(*s.Poll, params)
	} else if slices.ContainsFunc(d.rules, func(r rule) bool { return r.verdict == verdictPending }) {
		v.bad("responses", "an outcome is pending but there is no poll section")
	}
	return d
}

// about checks what names the file and the vendor document it follows.
func (v *validator) about(s fileSpec) {
	if !nameRE.MatchString(s.Name) {
		v.bad("name", "%q is not a lower-case name of letters, digits and dashes", s.Name)
	}
	if strings.TrimSpace(s.Description) == "" {
		v.bad("description", "is empty")
	}
	if u, err := url.Parse(s.Document.URL); err != nil || u.Scheme != "https" || u.Host == "" {
		v.bad("document.url", "%q is not an https URL", s.Document.URL)
	}
	if strings.TrimSpace(s.Document.Version) == "" {
		v.bad("document.version", "is empty: say which version or date of the document the connector follows")
	}
}

// answers checks the event kinds the connector answers and keeps them in d.
func (v *validator) answers(d *Definition, answers []string) {
	if len(answers) == 0 {
		v.bad("answers", "is empty")
	}
	for i, a := range answers {
		k := contract.Kind(a)
		if !slices.Contains(answerKinds, k) {
			v.bad(fmt.Sprintf("answers[%d]", i), "%q is not one of %v", a, answerKinds)
			continue
		}
		if slices.Contains(d.kinds, k) {
			v.bad(fmt.Sprintf("answers[%d]", i), "%q is listed twice", a)
		}
		d.kinds = append(d.kinds, k)
	}
}

// consent checks that a connector answering withdrawals names the
// parameter holding its purpose, and that only such a connector has a
// consent section.
func (v *validator) consent(d *Definition, c *consentSpec, params map[string]bool) {
	switch {
	case !slices.Contains(d.kinds, contract.KindConsentWithdrawn):
		if c != nil {
			v.bad("consent", "is set but answers does not list %s", contract.KindConsentWithdrawn)
		}
	case c == nil:
		v.bad("consent", "is required when answers lists %s", contract.KindConsentWithdrawn)
	case !params[c.PurposeParam]:
		v.bad("consent.purpose_param", "%q is not a declared parameter", c.PurposeParam)
	}
}

func (v *validator) rateLimit(r rateSpec) {
	if r.PerSecond <= 0 || r.PerSecond > 1000 {
		v.bad("rate_limit.per_second", "%v is not in (0, 1000]", r.PerSecond)
	}
	if r.Burst < 1 || r.Burst > 1000 {
		v.bad("rate_limit.burst", "%d is not in [1, 1000]", r.Burst)
	}
}

func (v *validator) params(ps []paramSpec) map[string]bool {
	if len(ps) > maxParams {
		v.bad("params", "has %d entries, at most %d", len(ps), maxParams)
	}
	names := map[string]bool{}
	for i, p := range ps {
		f := fmt.Sprintf("params[%d]", i)
		if !paramRE.MatchString(p.Name) {
			v.bad(f+".name", "%q is not a lower-case name of letters, digits and underscores", p.Name)
		}
		if names[p.Name] {
			v.bad(f+".name", "%q is declared twice", p.Name)
		}
		names[p.Name] = true
		if strings.TrimSpace(p.Description) == "" {
			v.bad(f+".description", "is empty")
		}
		if p.Pattern == "" {
			v.bad(f+".pattern", "is empty: every parameter is checked against a pattern")
		} else if _, err := regexp.Compile(p.Pattern); err != nil {
			v.bad(f+".pattern", "%v", err)
		} else if !strings.HasPrefix(p.Pattern, "^") || !strings.HasSuffix(p.Pattern, "$") {
			v.bad(f+".pattern", "%q must be anchored with ^ and $", p.Pattern)
		}
	}
	return names
}

func (v *validator) identifier(d *Definition, s identSpec) {
	t, ok := identifierTypes[s.Type]
	if !ok {
		v.bad("identifier.type", "%q is not one of email, phone, account_id, customer_number, device_id", s.Type)
	}
	f, ok := identifierForms[s.Form]
	if !ok {
		v.bad("identifier.form", "%q is not one of plain, sha256, md5", s.Form)
	}
	if f == commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE && t != commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL {
		v.bad("identifier.form", "md5 is defined for e-mail addresses only")
	}
	switch s.WhenMissing {
	case "", "failed":
		d.failMissing = true
	case "not_found":
	default:
		v.bad("identifier.when_missing", "%q is not failed or not_found", s.WhenMissing)
	}
	d.idType, d.idForm = t, f
}

func (v *validator) auth(a authSpec) {
	want, allowed, ok := authFields(a.Type)
	if !ok {
		v.bad("auth.type", "%q is not one of bearer, basic, oauth2_client_credentials, none", a.Type)
		return
	}
	if u, err := url.Parse(a.TokenURL); a.Type == "oauth2_client_credentials" && a.TokenURL != "" && (err != nil || u.Scheme != "https" || u.Host == "") {
		v.bad("auth.token_url", "%q is not an https URL", a.TokenURL)
	}
	v.authFields(a, want, allowed)
	v.scopes(a)
}

// authFields are the fields an authentication type requires and those it
// also allows; ok is false for an unknown type.
func authFields(typ string) (want, allowed []string, ok bool) {
	switch typ {
	case "bearer":
		return []string{"token_file"}, nil, true
	case "basic":
		return []string{"username_file"}, []string{"password_file"}, true
	case "oauth2_client_credentials":
		return []string{"token_url", "client_id_file", "client_secret_file"}, nil, true
	case "none":
		return nil, nil, true
	}
	return nil, nil, false
}

// authFields checks that the fields a's type requires are set, that no
// other is, and that every secret is a plain file name.
func (v *validator) authFields(a authSpec, want, allowed []string) {
	set := map[string]string{
		"token_file": a.TokenFile, "username_file": a.UsernameFile, "password_file": a.PasswordFile,
		"token_url": a.TokenURL, "client_id_file": a.ClientIDFile, "client_secret_file": a.ClientSecretFile,
	}
	for _, k := range slices.Sorted(maps.Keys(set)) {
		val := set[k]
		switch {
		case slices.Contains(want, k) && val == "":
			v.bad("auth."+k, "is required for %s", a.Type)
		case val != "" && !slices.Contains(want, k) && !slices.Contains(allowed, k):
			v.bad("auth."+k, "is not used by %s", a.Type)
		case val != "" && strings.HasSuffix(k, "_file") && !secretRE.MatchString(val):
			v.bad("auth."+k, "%q is not a plain file name in the secrets directory", val)
		}
	}
}

func (v *validator) scopes(a authSpec) {
	if len(a.Scopes) > 0 && a.Type != "oauth2_client_credentials" {
		v.bad("auth.scopes", "is used by oauth2_client_credentials only")
	}
	for i, s := range a.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\r\n") {
			v.bad(fmt.Sprintf("auth.scopes[%d]", i), "%q is not a scope", s)
		}
	}
}

// request validates a request template by rendering it with sample values:
// a reference to an undeclared parameter or extracted value fails here,
// not at the first event.
func (v *validator) request(field string, r requestSpec, sample *tmplData, withBody bool) (*template.Template, map[string]*template.Template, *template.Template) {
	if !slices.Contains(methods, r.Method) {
		v.bad(field+".method", "%q is not one of %v", r.Method, methods)
	}
	u := v.requestURL(field+".url", r.URL, sample)
	headers := v.headers(field+".headers", r.Headers, sample)
	var body *template.Template
	if r.Body != "" {
		if !withBody {
			v.bad(field+".body", "a poll request has no body")
		} else if body = v.template(field+".body", r.Body); body != nil {
			if _, err := renderBody(body, sample); err != nil {
				v.bad(field+".body", "%v", err)
			}
		}
	}
	return u, headers, body
}

// requestURL checks that a URL template renders to an https URL whose host
// is fixed text, without user information.
func (v *validator) requestURL(field, text string, sample *tmplData) *template.Template {
	u := v.template(field, text)
	if u == nil {
		return nil
	}
	if s, err := renderURL(u, sample); err != nil {
		v.bad(field, "%v", err)
	} else if pu, err := url.Parse(s); err != nil || pu.Scheme != "https" || pu.Host == "" {
		v.bad(field, "%q does not render to an https URL", text)
	} else if strings.Contains(pu.Host, sampleValue) || pu.User != nil {
		v.bad(field, "the host may not come from a template value, nor carry user information")
	}
	return u
}

// headers checks header templates; the runner's own headers may not be set.
func (v *validator) headers(field string, hs map[string]string, sample *tmplData) map[string]*template.Template {
	if len(hs) > maxHeaders {
		v.bad(field, "has %d entries, at most %d", len(hs), maxHeaders)
	}
	headers := map[string]*template.Template{}
	for k, val := range hs {
		f := field + "." + k
		if !headerRE.MatchString(k) {
			v.bad(f, "is not a header name")
			continue
		}
		if strings.EqualFold(k, "Authorization") || strings.EqualFold(k, "Host") || strings.EqualFold(k, "Content-Length") {
			v.bad(f, "is set by the runner")
			continue
		}
		if t := v.template(f, val); t != nil {
			if _, err := renderHeader(t, sample); err != nil {
				v.bad(f, "%v", err)
			}
			headers[k] = t
		}
	}
	return headers
}

func (v *validator) template(field, text string) *template.Template {
	if text == "" {
		v.bad(field, "is empty")
		return nil
	}
	if len(text) > maxTemplate {
		v.bad(field, "is longer than %d bytes", maxTemplate)
		return nil
	}
	t, err := template.New(field).Option("missingkey=error").Parse(text)
	if err != nil {
		v.bad(field, "%v", err)
		return nil
	}
	for _, n := range t.Tree.Root.Nodes {
		if !plainNode(n) {
			v.bad(field, "%s: only values such as {{.Identifier}} or {{.Params.name}} may be used, no functions, conditions or loops", n)
			return nil
		}
	}
	return t
}

// plainNode reports whether n is text or a value printed as it is, such
// as {{.Params.audience_id}}: a template with nothing else cannot bypass
// the escaping of the values it prints, and says plainly what it sends.
func plainNode(n parse.Node) bool {
	switch n := n.(type) {
	case *parse.TextNode:
		return true
	case *parse.ActionNode:
		p := n.Pipe
		if len(p.Decl) > 0 || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
			return false
		}
		_, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
		return ok
	}
	return false
}

func (v *validator) rules(field string, rs []ruleSpec, polled bool) []rule {
	if len(rs) == 0 {
		v.bad(field, "is empty: say which answers mean done")
	}
	if len(rs) > maxRules {
		v.bad(field, "has %d entries, at most %d", len(rs), maxRules)
	}
	var out []rule
	done := false
	for i, r := range rs {
		f := fmt.Sprintf("%s[%d]", field, i)
		vd, ok := verdictNames[r.Outcome]
		if !ok {
			v.bad(f+".outcome", "%q is not one of done, not_found, retry, failed, pending", r.Outcome)
		}
		if vd == verdictPending && !polled {
			v.bad(f+".outcome", "pending needs a poll section")
		}
		if vd == verdictDone {
			done = true
		}
		if len(r.Status) == 0 {
			v.bad(f+".status", "is empty")
		}
		for j, s := range r.Status {
			if s < 100 || s > 599 {
				v.bad(fmt.Sprintf("%s.status[%d]", f, j), "%d is not an HTTP status", s)
			}
		}
		var ms []match
		for j, m := range r.Match {
			mf := fmt.Sprintf("%s.match[%d]", f, j)
			p := v.path(mf+".path", m.Path)
			if len(m.Equals) == 0 {
				v.bad(mf+".equals", "is empty")
			}
			ms = append(ms, match{path: p, equals: m.Equals})
		}
		out = append(out, rule{status: r.Status, match: ms, verdict: vd})
	}
	pending := slices.ContainsFunc(out, func(r rule) bool { return r.verdict == verdictPending })
	// A first request whose job is polled may reach done only by polling;
	// the poll's own rules must reach it.
	if len(rs) > 0 && !done && !(pending && field == "responses") {
		v.bad(field, "no rule has the outcome done")
	}
	return out
}

var pathRE = regexp.MustCompile(`^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+){0,7}$`)

// path validates a selector: names and array indices joined by dots
// ("error.code", "elements.0.status").
func (v *validator) path(field, p string) []string {
	if !pathRE.MatchString(p) {
		v.bad(field, "%q is not a selector of names and indices joined by dots", p)
		return nil
	}
	return strings.Split(p, ".")
}

func (v *validator) poll(p pollSpec, params map[string]bool) *pollDef {
	d := &pollDef{extract: map[string][]string{}, method: p.Request.Method}
	if len(p.Extract) == 0 {
		v.bad("poll.extract", "is empty: the poll request needs a value from the first response")
	}
	names := make([]string, 0, len(p.Extract))
	for name, sel := range p.Extract {
		if !paramRE.MatchString(name) {
			v.bad("poll.extract."+name, "is not a lower-case name")
			continue
		}
		d.extract[name] = v.path("poll.extract."+name, sel)
		names = append(names, name)
	}
	d.url, d.headers, _ = v.request("poll.request", p.Request, sampleData(params, names), false)
	d.interval = v.duration("poll.interval", p.Interval, 10*time.Minute)
	d.maxInterval = v.duration("poll.max_interval", p.MaxInterval, 10*time.Minute)
	d.deadline = v.duration("poll.deadline", p.Deadline, maxPollPeriod)
	if d.maxInterval < d.interval {
		v.bad("poll.max_interval", "is shorter than poll.interval")
	}
	d.rules = v.rules("poll.responses", p.Responses, true)
	return d
}

func (v *validator) duration(field, s string, max time.Duration) time.Duration {
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		v.bad(field, "%q is not a duration", s)
	case d <= 0 || d > max:
		v.bad(field, "%v is not in (0, %v]", d, max)
	}
	return d
}
