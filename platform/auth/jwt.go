package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"google.golang.org/grpc/metadata"

	"github.com/lethe-privacy/lethe/platform/apierror"
	"github.com/lethe-privacy/lethe/platform/internal/livefile"
)

// The algorithms a JWT may be signed with. Each belongs to one key type,
// and a token is checked only against keys of its algorithm's type, so a
// token cannot choose how its signature is checked (RFC 8725 section 2.1:
// "none", and HS256 keyed with an RSA public key, are refused).
const (
	AlgES256 = "ES256" // ECDSA P-256 with SHA-256
	AlgEdDSA = "EdDSA" // Ed25519
	AlgRS256 = "RS256" // RSASSA-PKCS1-v1_5 with SHA-256, keys of 2048 bits or more
)

// DefaultLeeway is how far a token's exp and nbf may be off the server's
// clock: clocks of different machines drift by seconds, not minutes.
const DefaultLeeway = 30 * time.Second

// maxTokenBytes bounds the work an unauthenticated caller can cause.
const maxTokenBytes = 8 << 10

// minRSABits is the smallest RSA key accepted (NIST SP 800-131A).
const minRSABits = 2048

// JWTConfig configures a JWTAuthenticator.
type JWTConfig struct {
	// KeysFile holds the public keys tokens are signed with: a JWKS
	// ({"keys": [...]}, RFC 7517) or PEM public keys or certificates. It
	// is reloaded when it changes, so signing keys rotate without a
	// restart.
	KeysFile string
	// Issuer is the required iss claim.
	Issuer string
	// Audience must be one of the aud claim's values.
	Audience string
	// Leeway is the allowed clock skew; DefaultLeeway when zero.
	Leeway time.Duration
	// Now is the clock; time.Now when nil.
	Now func() time.Time
	// Logger receives key reloads; slog.Default() when nil.
	Logger *slog.Logger
}

// JWTAuthenticator identifies a caller by a signed JWT in the call's
// "authorization: Bearer <token>" metadata. The identity is
// "jwt:<iss>/<sub>" (the issuer and the token subject), for example
// "jwt:https://idp.lethe.example/alice".
type JWTAuthenticator struct {
	keys     *livefile.File[[]verificationKey]
	issuer   string
	audience string
	leeway   time.Duration
	now      func() time.Time
}

// verificationKey is one public key of the keys file.
type verificationKey struct {
	kid string
	alg string // the algorithm its type implies
	pub crypto.PublicKey
}

// NewJWTAuthenticator loads the keys file.
func NewJWTAuthenticator(cfg JWTConfig) (*JWTAuthenticator, error) {
	var errs []error
	if cfg.KeysFile == "" {
		errs = append(errs, errors.New("JWT keys file is required"))
	}
	if cfg.Issuer == "" {
		errs = append(errs, errors.New("JWT issuer is required"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("JWT audience is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = DefaultLeeway
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	keys, err := livefile.Load([]string{cfg.KeysFile}, func(c [][]byte) ([]verificationKey, error) {
		return parseKeys(c[0])
	}, livefile.Options{Logger: cfg.Logger})
	if err != nil {
		return nil, fmt.Errorf("JWT keys: %w", err)
	}
	return &JWTAuthenticator{keys: keys, issuer: cfg.Issuer, audience: cfg.Audience, leeway: cfg.Leeway, now: cfg.Now}, nil
}

func (*JWTAuthenticator) readsBearerToken() {}

// Authenticate implements Authenticator.
func (a *JWTAuthenticator) Authenticate(ctx context.Context) (Identity, error) {
	token, ok, err := bearerToken(ctx)
	if err != nil {
		return Identity{}, err
	}
	if !ok {
		return Identity{}, ErrNoCredentials
	}
	name, err := a.Verify(token)
	if err != nil {
		return Identity{}, apierror.Unauthenticated("bearer token: " + err.Error())
	}
	return Identity{Name: name}, nil
}

// bearerToken returns the token of the call's "authorization: Bearer"
// metadata; an authorization of another scheme, or more than one, is an
// error rather than no credentials, so that it is not silently ignored.
func bearerToken(ctx context.Context) (string, bool, error) {
	values := metadata.ValueFromIncomingContext(ctx, "authorization")
	switch len(values) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, apierror.Unauthenticated("more than one authorization value")
	}
	scheme, token, ok := strings.Cut(values[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return "", false, apierror.Unauthenticated("authorization is not a bearer token")
	}
	return strings.TrimSpace(token), true, nil
}

// acceptedAlgorithms are the algorithms go-jose may parse a token under;
// any other, "none" and the HMAC family included, is refused before a key
// is looked at.
var acceptedAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.EdDSA, jose.RS256}

// Verify checks token's signature, expiry, not-before, issuer and audience
// and returns the identity name it proves.
//
// Parsing and the claims' checks are go-jose's (strict JSON: exact member
// names, no duplicates, NumericDates that are numbers); Lethe adds what a
// JWT library leaves to policy: the token's size, one algorithm per key
// type, no critical extensions, and exp and sub required.
func (a *JWTAuthenticator) Verify(token string) (string, error) {
	if len(token) > maxTokenBytes {
		return "", errors.New("too long")
	}
	if strings.Count(token, ".") != 2 {
		return "", errors.New("not a signed JWT (three base64url parts)")
	}
	tok, err := jwt.ParseSigned(token, acceptedAlgorithms)
	if err != nil {
		msg := joseMessage(err)
		if rest, ok := strings.CutPrefix(msg, "unexpected signature algorithm "); ok {
			alg, _, _ := strings.Cut(rest, ";")
			return "", fmt.Errorf("algorithm %s is not accepted (ES256, EdDSA or RS256)", alg)
		}
		return "", fmt.Errorf("not a signed JWT: %s", msg)
	}
	header := tok.Headers[0]
	if _, ok := header.ExtraHeaders[jose.HeaderKey("crit")]; ok {
		// go-jose understands "b64" (RFC 7797); a bearer token has no
		// use for an unencoded payload, and a critical extension this
		// code did not ask for is refused (RFC 7515 section 4.1.11).
		return "", errors.New("critical header extensions are not supported")
	}
	key, ok := a.signedBy(tok, header)
	if !ok {
		return "", errors.New("signature does not verify with any key of its algorithm")
	}
	var claims jwt.Claims
	if err := tok.Claims(key, &claims); err != nil {
		return "", fmt.Errorf("claims: %s", joseMessage(err))
	}
	switch {
	case claims.Expiry == nil:
		return "", errors.New("no exp claim")
	case len(claims.Audience) == 0:
		return "", errors.New("no aud claim")
	case claims.Subject == "":
		return "", errors.New("no sub claim")
	}
	expected := jwt.Expected{Issuer: a.issuer, AnyAudience: jwt.Audience{a.audience}, Time: a.now()}
	if err := claims.ValidateWithLeeway(expected, a.leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrExpired):
			return "", errors.New("expired")
		case errors.Is(err, jwt.ErrNotValidYet):
			return "", errors.New("not valid yet (nbf)")
		case errors.Is(err, jwt.ErrIssuedInTheFuture):
			return "", errors.New("issued in the future (iat)")
		case errors.Is(err, jwt.ErrInvalidIssuer):
			return "", fmt.Errorf("issuer %q is not %q", claims.Issuer, a.issuer)
		case errors.Is(err, jwt.ErrInvalidAudience):
			return "", fmt.Errorf("audience %q does not include %q", []string(claims.Audience), a.audience)
		}
		return "", errors.New(joseMessage(err))
	}
	return "jwt:" + claims.Issuer + "/" + claims.Subject, nil
}

// signedBy returns the key of the file whose signature tok carries: a key
// of the header's algorithm, and of its kid when both name one.
func (a *JWTAuthenticator) signedBy(tok *jwt.JSONWebToken, h jose.Header) (crypto.PublicKey, bool) {
	for _, k := range a.keys.Get() {
		if k.alg != h.Algorithm || (h.KeyID != "" && k.kid != "" && k.kid != h.KeyID) {
			continue
		}
		if tok.Claims(k.pub) == nil {
			return k.pub, true
		}
	}
	return nil, false
}

// joseMessage is err's text without the library's prefix: a caller is told
// what is wrong with the token, not which package found it.
func joseMessage(err error) string {
	msg := err.Error()
	for _, prefix := range []string{"go-jose/go-jose/jwt: ", "go-jose/go-jose: "} {
		msg = strings.TrimPrefix(msg, prefix)
	}
	return msg
}

// parseKeys reads verification keys from a JWKS document or from PEM
// blocks (PUBLIC KEY or CERTIFICATE). Private keys are refused: the file
// is read by every service and needs only public keys. Keys whose type no
// accepted algorithm uses (symmetric "oct" keys among them) are left out;
// a file with no usable key at all is an error.
func parseKeys(data []byte) ([]verificationKey, error) {
	trimmed := bytes.TrimSpace(data)
	var keys []verificationKey
	var err error
	if bytes.HasPrefix(trimmed, []byte("{")) {
		keys, err = parseJWKS(trimmed)
	} else {
		keys, err = parsePEMKeys(trimmed)
	}
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no ES256, EdDSA or RS256 public key in the file")
	}
	return keys, nil
}

func parseJWKS(data []byte) ([]verificationKey, error) {
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %s", joseMessage(err))
	}
	var keys []verificationKey
	for i, k := range set.Keys {
		if !k.IsPublic() {
			if _, symmetric := k.Key.([]byte); symmetric {
				continue // an "oct" key: no accepted algorithm uses one
			}
			return nil, fmt.Errorf("JWKS keys[%d] is a private key; give public keys only", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if err := checkPublicKey(k.Key); err != nil {
			return nil, fmt.Errorf("JWKS keys[%d] (kid %q): %w", i, k.KeyID, err)
		}
		alg := algorithmOf(k.Key)
		if alg == "" {
			continue // a key type no accepted algorithm uses (X25519)
		}
		if k.Algorithm != "" && k.Algorithm != string(alg) {
			return nil, fmt.Errorf("JWKS keys[%d] (kid %q): alg %q does not fit a %T key", i, k.KeyID, k.Algorithm, k.Key)
		}
		keys = append(keys, verificationKey{kid: k.KeyID, alg: alg, pub: k.Key})
	}
	return keys, nil
}

// checkPublicKey refuses the keys Lethe does not trust for signatures: EC
// keys on other curves than P-256 (ES256 is defined on P-256 only), and
// RSA keys under 2048 bits or with an unusual exponent.
func checkPublicKey(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() {
			return fmt.Errorf("ECDSA key on %s; only P-256 (ES256) is accepted", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if k.N.BitLen() < minRSABits {
			return fmt.Errorf("RSA key of %d bits; %d or more are required", k.N.BitLen(), minRSABits)
		}
		if k.E < 3 || k.E%2 == 0 {
			return errors.New("RSA exponent is not an odd number of 3 or more")
		}
	}
	return nil
}

func parsePEMKeys(data []byte) ([]verificationKey, error) {
	var keys []verificationKey
	for len(bytes.TrimSpace(data)) > 0 {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("neither a JWKS document nor PEM")
		}
		var pub crypto.PublicKey
		switch block.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM public key: %w", err)
			}
			pub = k
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM certificate: %w", err)
			}
			pub = c.PublicKey
		default:
			return nil, fmt.Errorf("PEM block %q: give PUBLIC KEY or CERTIFICATE blocks only", block.Type)
		}
		if err := checkPublicKey(pub); err != nil {
			return nil, err
		}
		alg := algorithmOf(pub)
		if alg == "" {
			return nil, fmt.Errorf("PEM key of type %T is not an ES256, EdDSA or RS256 key", pub)
		}
		keys = append(keys, verificationKey{alg: alg, pub: pub})
	}
	return keys, nil
}

// algorithmOf is the one algorithm a key may verify.
func algorithmOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return AlgES256
		}
	case ed25519.PublicKey:
		return AlgEdDSA
	case *rsa.PublicKey:
		return AlgRS256
	}
	return ""
}
