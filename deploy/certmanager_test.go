package deploy_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/lethe-privacy/lethe/deploy"
	"github.com/lethe-privacy/lethe/platform/auth"
)

// certManagerOverlay is production with the cert-manager component.
const certManagerOverlay = "overlays/production-cert-manager"

// certificate is the part of cert-manager.io/v1 Certificate that Lethe
// uses. cert-manager's types are not in k8s.io/api; decoding strictly into
// this rejects a misspelt field as the CRD's schema would.
type certificate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SecretName     string `json:"secretName"`
		SecretTemplate *struct {
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"secretTemplate,omitempty"`
		CommonName  string   `json:"commonName,omitempty"`
		IsCA        bool     `json:"isCA,omitempty"`
		DNSNames    []string `json:"dnsNames,omitempty"`
		URIs        []string `json:"uris,omitempty"`
		Usages      []string `json:"usages,omitempty"`
		Duration    string   `json:"duration,omitempty"`
		RenewBefore string   `json:"renewBefore,omitempty"`
		PrivateKey  *struct {
			Algorithm      string `json:"algorithm,omitempty"`
			Size           int    `json:"size,omitempty"`
			Encoding       string `json:"encoding,omitempty"`
			RotationPolicy string `json:"rotationPolicy,omitempty"`
		} `json:"privateKey,omitempty"`
		RevisionHistoryLimit *int32 `json:"revisionHistoryLimit,omitempty"`
		IssuerRef            struct {
			Group string `json:"group,omitempty"`
			Kind  string `json:"kind,omitempty"`
			Name  string `json:"name"`
		} `json:"issuerRef"`
	} `json:"spec"`
}

// issuer is the part of cert-manager.io/v1 Issuer that Lethe uses.
type issuer struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		SelfSigned *struct{} `json:"selfSigned,omitempty"`
		CA         *struct {
			SecretName string `json:"secretName"`
		} `json:"ca,omitempty"`
	} `json:"spec"`
}

// certificateExpiryAlert is the threshold of the certificate-expiry alert
// in docs/operations.md: a healthy renewal must happen before it.
const certificateExpiryAlert = 14 * 24 * time.Hour

// The files every Lethe pod reads from its TLS Secret, and the keys
// cert-manager writes: tls.crt and tls.key always, ca.crt when the issuer
// knows its CA (the CA issuer does).
var certManagerKeys = map[string]string{
	"LETHE_TLS_CERT": "tls.crt", "LETHE_TLS_KEY": "tls.key",
	"LETHE_TLS_CLIENT_CA": "ca.crt", "LETHE_TLS_CA": "ca.crt",
}

// TestCertManagerComponentChangesNothingElse: the cert-manager overlay is
// the production overlay plus Issuers and Certificates, byte for byte, so
// every check of production (the binaries' own production checks
// included) holds for it too.
func TestCertManagerComponentChangesNothingElse(t *testing.T) {
	objects := func(overlay string) map[string][]byte {
		rendered, err := deploy.Render(overlay)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string][]byte{}
		for _, o := range rendered {
			m[o.Kind+" "+o.Name] = o.JSON
		}
		return m
	}
	prod, cm := objects("overlays/production"), objects(certManagerOverlay)
	for key, want := range prod {
		if got, ok := cm[key]; !ok {
			t.Errorf("%s: %s is missing", certManagerOverlay, key)
		} else if !bytes.Equal(got, want) {
			t.Errorf("%s: %s differs from production's", certManagerOverlay, key)
		}
	}
	added := 0
	for key := range cm {
		if _, ok := prod[key]; ok {
			continue
		}
		added++
		if !strings.HasPrefix(key, "Issuer ") && !strings.HasPrefix(key, "Certificate ") {
			t.Errorf("%s: adds %s; the component should add only Issuers and Certificates", certManagerOverlay, key)
		}
	}
	if added == 0 {
		t.Errorf("%s: adds nothing to production", certManagerOverlay)
	}
}

// TestCertManagerCertificates checks the cert-manager component against
// the manifests it serves:
//   - every Secret a pod mounts is filled by exactly one Certificate
//     (lethe-nats-users, passwords, excepted), and every Certificate fills
//     a mounted Secret or the CA's;
//   - the leaves come from a CA issuer (which writes ca.crt beside tls.crt
//     and tls.key, the three files the pods read) whose CA is bootstrapped
//     by a self-signed issuer and mounted by no pod;
//   - a certificate issued as each Certificate says, signed by a CA as the
//     CA Certificate says, verifies for server and client use under the
//     names its callers dial (the services' -addr variables, NATS's URL and
//     its routes in nats.conf, wildcards resolved by crypto/x509), and its
//     SPIFFE id, as platform/auth reads it with the overlay's trust domain,
//     is spiffe://<trust domain>/ns/<namespace>/sa/<service account>;
//   - every identity of that trust domain in policy.json is one of them;
//   - leaves get a new key at every renewal and renew before the expiry
//     alert; the CA keeps its key and renews more than a leaf's lifetime
//     before its end.
func TestCertManagerCertificates(t *testing.T) {
	const operatorSecret = "lethe-operator-tls"
	// lethe-connect's key pair: a client certificate for the registry,
	// DSAR and NATS, and the claim check's server certificate.
	const connectSecret = "lethe-connect-tls"
	r := render(t, certManagerOverlay)
	certs := map[string]*certificate{} // by secret name
	for i := range r.certificates {
		c := &r.certificates[i]
		if certs[c.Spec.SecretName] != nil {
			t.Errorf("Secret %s is filled by two Certificates", c.Spec.SecretName)
		}
		certs[c.Spec.SecretName] = c
	}
	issuers := map[string]*issuer{}
	for i := range r.issuers {
		issuers[r.issuers[i].Name] = &r.issuers[i]
	}

	// The CA the leaves are signed with, and the issuer it bootstraps from.
	issuerOf := func(c *certificate) *issuer {
		ref := c.Spec.IssuerRef
		if ref.Kind != "Issuer" || ref.Group != "cert-manager.io" || issuers[ref.Name] == nil {
			t.Fatalf("Certificate %s: issuerRef %+v is no rendered Issuer", c.Name, ref)
		}
		return issuers[ref.Name]
	}
	var ca *certificate
	for _, c := range r.certificates {
		if !c.Spec.IsCA {
			iss := issuerOf(&c)
			if iss.Spec.CA == nil {
				t.Fatalf("Certificate %s: issuer %s is not a CA issuer, which writes ca.crt", c.Name, iss.Name)
			}
			if ca == nil {
				ca = certs[iss.Spec.CA.SecretName]
			}
			if ca == nil || ca.Spec.SecretName != iss.Spec.CA.SecretName || !ca.Spec.IsCA {
				t.Fatalf("Certificate %s: issuer %s signs with Secret %s, which no CA Certificate fills", c.Name, iss.Name, iss.Spec.CA.SecretName)
			}
		}
	}
	if ca == nil {
		t.Fatal("no leaf Certificates")
	}
	if iss := issuerOf(ca); iss.Spec.SelfSigned == nil {
		t.Errorf("CA Certificate %s: issuer %s is not the self-signed bootstrap", ca.Name, iss.Name)
	}
	if ca.Spec.PrivateKey == nil || ca.Spec.PrivateKey.RotationPolicy != "Never" {
		t.Errorf("CA Certificate %s: privateKey.rotationPolicy is not Never: a renewal would change the key every leaf is signed with", ca.Name)
	}
	caCert, caKey := issueAsSpecified(t, ca, nil, nil)
	roots := x509.NewCertPool()
	roots.AddCert(caCert)

	// Secrets the pods mount, and by whom.
	mountedBy := map[string]string{}
	for name, pod := range r.pods() {
		for _, v := range pod.Spec.Volumes {
			if v.Secret != nil {
				mountedBy[v.Secret.SecretName] = name
			}
		}
	}
	if mountedBy[ca.Spec.SecretName] != "" {
		t.Errorf("the CA's Secret %s (its private key) is mounted by %s", ca.Spec.SecretName, mountedBy[ca.Spec.SecretName])
	}
	for secret, sts := range mountedBy {
		// Passwords and lethe-connect's secrets, which are no certificates.
		if certs[secret] == nil && !slices.Contains([]string{"lethe-nats-users", "lethe-connect-systems", "lethe-connect-claims"}, secret) {
			t.Errorf("%s mounts Secret %s, which no Certificate fills", sts, secret)
		}
	}
	for secret, c := range certs {
		if c != ca && secret != operatorSecret && mountedBy[secret] == "" {
			t.Errorf("Certificate %s fills Secret %s, which no pod mounts", c.Name, secret)
		}
	}

	// Who dials whom, by host name: the services' addresses, NATS's URL,
	// and the routes between the NATS nodes, each attributed to the
	// StatefulSet whose pods the named Service selects.
	dialled := map[string][]string{} // StatefulSet -> hosts its callers use
	addHost := func(where, host string) {
		labelsOf := strings.Split(host, ".")
		for _, candidate := range labelsOf[:min(2, len(labelsOf))] {
			for _, s := range r.services {
				if s.Name != candidate {
					continue
				}
				for _, sts := range r.statefulSets {
					if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(sts.Spec.Template.Labels)) {
						dialled[sts.Name] = append(dialled[sts.Name], host)
					}
				}
				return
			}
		}
		t.Errorf("%s dials %s, which names no rendered Service", where, host)
	}
	for svc := range services {
		env := containerEnv(&r.statefulSet(t, "lethe-"+svc).Spec.Template.Spec.Containers[0])
		for name, value := range env {
			if host, _, err := net.SplitHostPort(value); err == nil && strings.HasSuffix(name, "_ADDR") && host != "" {
				addHost("lethe-"+svc+" "+name, host)
			}
		}
		for _, u := range strings.Split(env["LETHE_NATS_URL"], ",") {
			parsed, err := url.Parse(strings.TrimSpace(u))
			if err != nil {
				t.Fatalf("lethe-%s: LETHE_NATS_URL %q: %v", svc, u, err)
			}
			addHost("lethe-"+svc+" LETHE_NATS_URL", parsed.Hostname())
		}
	}
	natsConf := r.configMap(t, "nats-config").Data["nats.conf"]
	routes := regexp.MustCompile(`nats-route://([^:\s]+):\d+`).FindAllStringSubmatch(natsConf, -1)
	if len(routes) == 0 {
		t.Fatal("nats.conf lists no routes")
	}
	for _, m := range routes {
		addHost("a NATS route", m[1])
	}

	policyIdentities := policySPIFFEIdentities(t, r)
	identities := map[string]bool{}
	for _, sts := range r.statefulSets {
		pod := &sts.Spec.Template.Spec
		c := &pod.Containers[0]
		where := certManagerOverlay + ": " + sts.Name
		var secret string
		for _, v := range pod.Volumes {
			if v.Secret != nil && certs[v.Secret.SecretName] != nil {
				secret = v.Secret.SecretName
			}
		}
		cert := certs[secret]
		if cert == nil {
			t.Errorf("%s: mounts no Secret a Certificate fills", where)
			continue
		}
		where += " (Certificate " + cert.Name + ")"
		checkLeafLifetime(t, where, cert, ca)
		leaf, _ := issueAsSpecified(t, cert, caCert, caKey)
		// The names deploy/README.md's Secrets table gives, and every
		// name callers dial.
		wantDNS := []string{sts.Spec.ServiceName, sts.Spec.ServiceName + "." + sts.Namespace + ".svc"}
		if sts.Name == "lethe-consent" {
			// The read Service selects the writer and its replicas, which
			// present the writer's key pair (consent-replica.yaml).
			wantDNS = append(wantDNS, "lethe-consent-read", "lethe-consent-read."+sts.Namespace+".svc")
		}
		if sts.Name == "nats" {
			wantDNS = []string{"nats", "nats." + sts.Namespace + ".svc",
				"*." + sts.Spec.ServiceName, "*." + sts.Spec.ServiceName + "." + sts.Namespace + ".svc"}
		}
		if !slices.Equal(cert.Spec.DNSNames, wantDNS) {
			t.Errorf("%s: DNS names %v, want %v (deploy/README.md, Secrets you create)", where, cert.Spec.DNSNames, wantDNS)
		}
		hosts := slices.Concat(dialled[sts.Name], wantDNS[1:2])
		if sts.Name == "nats" && len(dialled[sts.Name]) == 0 {
			t.Errorf("%s: nobody dials NATS", where)
		}
		for _, host := range hosts {
			if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				t.Errorf("%s: callers dial %s, and a certificate issued as specified does not verify for it: %v", where, host, err)
			}
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: the certificate does not verify as a client certificate: %v", where, err)
		}
		if sts.Name == "nats" {
			if len(cert.Spec.URIs) != 0 {
				t.Errorf("%s: NATS certificate with URI SANs %v", where, cert.Spec.URIs)
			}
			continue
		}

		// A Lethe service: its files are the Secret's keys, and its
		// SPIFFE id is its service account's in the overlay's trust domain.
		env := containerEnv(c)
		for variable, key := range certManagerKeys {
			if got := secretFileKey(pod, c, env[variable], secret); got != key {
				t.Errorf("%s: %s=%q is key %q of Secret %s, want %s, which cert-manager writes", where, variable, env[variable], got, secret, key)
			}
		}
		td := env["LETHE_TRUST_DOMAIN"]
		id, err := auth.SPIFFEID(leaf, td)
		want := "spiffe://" + td + "/ns/" + sts.Namespace + "/sa/" + pod.ServiceAccountName
		if err != nil || id != want {
			t.Errorf("%s: SPIFFE id %q (%v), want %s", where, id, err, want)
		}
		identities[id] = true
	}
	// The operator's certificate: mounted by no pod, a client certificate
	// only, with the operator identity of the policy.
	if op := certs[operatorSecret]; op == nil {
		t.Errorf("no Certificate fills %s, the operator's credential", operatorSecret)
	} else {
		where := certManagerOverlay + ": Certificate " + op.Name
		checkLeafLifetime(t, where, op, ca)
		leaf, _ := issueAsSpecified(t, op, caCert, caKey)
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
			t.Errorf("%s: does not verify as a client certificate: %v", where, err)
		}
		if slices.Contains(op.Spec.Usages, "server auth") || len(op.Spec.DNSNames) > 0 {
			t.Errorf("%s: a person's credential that could serve as a server (usages %v, DNS names %v)", where, op.Spec.Usages, op.Spec.DNSNames)
		}
		var td string // the services' trust domain
		for _, sts := range r.statefulSets {
			if d := containerEnv(&sts.Spec.Template.Spec.Containers[0])["LETHE_TRUST_DOMAIN"]; d != "" {
				td = d
			}
		}
		id, err := auth.SPIFFEID(leaf, td)
		if want := "spiffe://" + td + "/ns/lethe/sa/lethe-operator"; err != nil || id != want {
			t.Errorf("%s: SPIFFE id %q (%v), want %s", where, id, err, want)
		}
		identities[id] = true
	}
	if c := certs[connectSecret]; c == nil {
		t.Errorf("no Certificate fills %s, lethe-connect's key pair", connectSecret)
	} else {
		where := certManagerOverlay + ": Certificate " + c.Name
		checkLeafLifetime(t, where, c, ca)
		leaf, _ := issueAsSpecified(t, c, caCert, caKey)
		for _, usage := range []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth} {
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
				t.Errorf("%s: does not verify for usage %v: %v", where, usage, err)
			}
		}
		var td string
		for _, sts := range r.statefulSets {
			if d := containerEnv(&sts.Spec.Template.Spec.Containers[0])["LETHE_TRUST_DOMAIN"]; d != "" {
				td = d
			}
		}
		id, err := auth.SPIFFEID(leaf, td)
		if want := "spiffe://" + td + "/ns/lethe/sa/lethe-connect"; err != nil || id != want {
			t.Errorf("%s: SPIFFE id %q (%v), want %s", where, id, err, want)
		}
		identities[id] = true
	}
	for _, id := range policyIdentities {
		if !identities[id] {
			t.Errorf("policy.json allows %s, which no Certificate gives", id)
		}
	}
	if len(policyIdentities) == 0 {
		t.Error("policy.json names no identity of the trust domain")
	}
}

// policySPIFFEIdentities returns the SPIFFE identities that the rendered
// policy file of r names in its services' trust domain.
func policySPIFFEIdentities(t *testing.T, r *rendered) []string {
	t.Helper()
	var env map[string]string
	for svc := range services {
		env = containerEnv(&r.statefulSet(t, "lethe-"+svc).Spec.Template.Spec.Containers[0])
		break
	}
	cm := r.configMap(t, "lethe-authz-policy")
	var policy struct {
		Rules []struct {
			Identities []string `json:"identities"`
		} `json:"rules"`
	}
	if err := json.Unmarshal([]byte(cm.Data["policy.json"]), &policy); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, rule := range policy.Rules {
		for _, id := range rule.Identities {
			if strings.HasPrefix(id, "spiffe://"+env["LETHE_TRUST_DOMAIN"]+"/") && !slices.Contains(ids, id) {
				ids = append(ids, id)
			}
		}
	}
	return ids
}

// checkLeafLifetime checks a leaf's renewal: a new key each time, renewed
// before the expiry alert could fire, and re-issued, with the renewed CA
// certificate as its ca.crt, before the CA certificate it was issued
// under expires (the CA renews more than a leaf's lifetime before its
// end; it keeps its key, checked once by the caller, so old and new CA
// certificates verify the same leaves).
func checkLeafLifetime(t *testing.T, where string, leaf, ca *certificate) {
	t.Helper()
	duration, renew := lifetime(t, leaf)
	caDuration, caRenew := lifetime(t, ca)
	if leaf.Spec.PrivateKey == nil || leaf.Spec.PrivateKey.RotationPolicy != "Always" {
		t.Errorf("%s: privateKey.rotationPolicy is not Always: a renewal would keep the old key", where)
	}
	if renew <= certificateExpiryAlert || renew >= duration {
		t.Errorf("%s: renewBefore %v, want more than the expiry alert's %v and less than the duration %v", where, renew, certificateExpiryAlert, duration)
	}
	if caRenew <= duration || caRenew >= caDuration {
		t.Errorf("%s: the CA renews %v before its end; want more than a leaf's lifetime (%v) and less than its own (%v)", where, caRenew, duration, caDuration)
	}
}

func lifetime(t *testing.T, c *certificate) (duration, renewBefore time.Duration) {
	t.Helper()
	var err error
	if duration, err = time.ParseDuration(c.Spec.Duration); err != nil {
		t.Fatalf("Certificate %s: duration: %v", c.Name, err)
	}
	if renewBefore, err = time.ParseDuration(c.Spec.RenewBefore); err != nil {
		t.Fatalf("Certificate %s: renewBefore: %v", c.Name, err)
	}
	return duration, renewBefore
}

// keyUsages and extKeyUsages translate cert-manager's usages into
// crypto/x509's; a usage missing here fails the test rather than being
// ignored.
var (
	keyUsages = map[string]x509.KeyUsage{
		"digital signature": x509.KeyUsageDigitalSignature, "key encipherment": x509.KeyUsageKeyEncipherment,
		"cert sign": x509.KeyUsageCertSign, "crl sign": x509.KeyUsageCRLSign,
	}
	extKeyUsages = map[string]x509.ExtKeyUsage{
		"server auth": x509.ExtKeyUsageServerAuth, "client auth": x509.ExtKeyUsageClientAuth,
	}
)

// issueAsSpecified makes the certificate c describes, as cert-manager
// would: its names, URIs, usages, CA flag and key algorithm, signed by
// parent (self-signed when parent is nil). It returns the certificate and
// its key.
func issueAsSpecified(t *testing.T, c *certificate, parent *x509.Certificate, parentKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	pk := c.Spec.PrivateKey
	if pk == nil || pk.Algorithm != "ECDSA" || pk.Size != 256 {
		t.Fatalf("Certificate %s: privateKey %+v, want ECDSA P-256", c.Name, pk)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: c.Spec.CommonName},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		DNSNames:              c.Spec.DNSNames,
		IsCA:                  c.Spec.IsCA,
		BasicConstraintsValid: true,
	}
	for _, u := range c.Spec.URIs {
		parsed, err := url.Parse(u)
		if err != nil {
			t.Fatalf("Certificate %s: URI %q: %v", c.Name, u, err)
		}
		tmpl.URIs = append(tmpl.URIs, parsed)
	}
	for _, u := range c.Spec.Usages {
		if k, ok := keyUsages[u]; ok {
			tmpl.KeyUsage |= k
		} else if e, ok := extKeyUsages[u]; ok {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, e)
		} else {
			t.Errorf("Certificate %s: usage %q is not one the test knows", c.Name, u)
		}
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent, parentKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, key.Public(), signerKey)
	if err != nil {
		t.Fatalf("Certificate %s: %v", c.Name, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

// TestCARenewalKeepingItsKeyNeedsNoOverlap shows, with crypto/x509 (what
// the services verify with), why the component's CA keeps its key
// (rotationPolicy: Never) and why its renewal needs no overlap: a leaf
// issued under the CA certificate before a renewal verifies against the
// renewed one alone, and a leaf issued after verifies against the old one
// alone, so services holding either ca.crt accept each other while their
// leaves are re-issued one by one. A CA with a new key verifies neither.
func TestCARenewalKeepingItsKeyNeedsNoOverlap(t *testing.T) {
	r := render(t, certManagerOverlay)
	var ca, leaf *certificate
	for i := range r.certificates {
		if r.certificates[i].Spec.IsCA {
			ca = &r.certificates[i]
		} else if leaf == nil {
			leaf = &r.certificates[i]
		}
	}
	if ca == nil || leaf == nil {
		t.Fatal("no CA or leaf Certificate")
	}
	before, key := issueAsSpecified(t, ca, nil, nil)
	// The renewal: the same key, a new serial and validity, self-signed again.
	renewed := reissueWithKey(t, before, key)
	rekeyed, _ := issueAsSpecified(t, ca, nil, nil)

	oldLeaf, _ := issueAsSpecified(t, leaf, before, key)
	newLeaf, _ := issueAsSpecified(t, leaf, renewed, key)
	verifies := func(l, root *x509.Certificate) bool {
		pool := x509.NewCertPool()
		pool.AddCert(root)
		_, err := l.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	if !verifies(oldLeaf, renewed) || !verifies(newLeaf, before) {
		t.Error("a CA renewed with its key does not verify the leaves of the other CA certificate")
	}
	if verifies(oldLeaf, rekeyed) {
		t.Error("a CA with a new key verifies a leaf of the old key: the test proves nothing")
	}
}

// reissueWithKey signs again, with key, a self-signed certificate like
// cert, with a new serial number and validity.
func reissueWithKey(t *testing.T, cert *x509.Certificate, key *ecdsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := *cert
	tmpl.SerialNumber = new(big.Int).Add(cert.SerialNumber, big.NewInt(1))
	tmpl.NotBefore, tmpl.NotAfter = time.Now().Add(-time.Second), time.Now().Add(2*time.Hour)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return renewed
}
