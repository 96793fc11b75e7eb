package auth

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/big"
	"slices"
	"strings"
	"time"

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
// "jwt:<iss>/<sub>", for example "jwt:https://idp.lethe.example/alice".
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

type jwtHeader struct {
	Alg  string   `json:"alg"`
	Kid  string   `json:"kid"`
	Crit []string `json:"crit"`
}

type jwtClaims struct {
	Issuer    string          `json:"iss"`
	Subject   string          `json:"sub"`
	Audience  json.RawMessage `json:"aud"`
	Expiry    *json.Number    `json:"exp"`
	NotBefore *json.Number    `json:"nbf"`
}

// Verify checks token's signature, expiry, not-before, issuer and audience
// and returns the identity name it proves.
func (a *JWTAuthenticator) Verify(token string) (string, error) {
	if len(token) > maxTokenBytes {
		return "", errors.New("too long")
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return "", errors.New("not a signed JWT (three base64url parts)")
	}
	var header jwtHeader
	if err := decodePart(parts[0], &header); err != nil {
		return "", fmt.Errorf("header: %w", err)
	}
	switch header.Alg {
	case AlgES256, AlgEdDSA, AlgRS256:
	default:
		return "", fmt.Errorf("algorithm %q is not accepted (ES256, EdDSA or RS256)", header.Alg)
	}
	if len(header.Crit) > 0 {
		return "", fmt.Errorf("critical header extensions %q are not supported", header.Crit)
	}
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return "", errors.New("signature is not base64url")
	}
	signed := []byte(parts[0] + "." + parts[1])
	if !a.verifySignature(header, signed, sig) {
		return "", errors.New("signature does not verify with any key of its algorithm")
	}

	var claims jwtClaims
	if err := decodePart(parts[1], &claims); err != nil {
		return "", fmt.Errorf("claims: %w", err)
	}
	now := a.now()
	if claims.Expiry == nil {
		return "", errors.New("no exp claim")
	}
	exp, err := numericDate(*claims.Expiry)
	if err != nil {
		return "", fmt.Errorf("exp: %w", err)
	}
	if !now.Before(exp.Add(a.leeway)) {
		return "", errors.New("expired")
	}
	if claims.NotBefore != nil {
		nbf, err := numericDate(*claims.NotBefore)
		if err != nil {
			return "", fmt.Errorf("nbf: %w", err)
		}
		if now.Add(a.leeway).Before(nbf) {
			return "", errors.New("not valid yet (nbf)")
		}
	}
	if claims.Issuer != a.issuer {
		return "", fmt.Errorf("issuer %q is not %q", claims.Issuer, a.issuer)
	}
	auds, err := audiences(claims.Audience)
	if err != nil {
		return "", err
	}
	if !slices.Contains(auds, a.audience) {
		return "", fmt.Errorf("audience %q does not include %q", auds, a.audience)
	}
	if claims.Subject == "" {
		return "", errors.New("no sub claim")
	}
	return "jwt:" + claims.Issuer + "/" + claims.Subject, nil
}

func (a *JWTAuthenticator) verifySignature(h jwtHeader, signed, sig []byte) bool {
	digest := sha256.Sum256(signed)
	for _, k := range a.keys.Get() {
		if k.alg != h.Alg || (h.Kid != "" && k.kid != "" && k.kid != h.Kid) {
			continue
		}
		switch pub := k.pub.(type) {
		case *ecdsa.PublicKey:
			// JWS carries r||s, 32 bytes each (RFC 7518 section 3.4), not ASN.1.
			if len(sig) == 64 && ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
				return true
			}
		case ed25519.PublicKey:
			if ed25519.Verify(pub, signed, sig) {
				return true
			}
		case *rsa.PublicKey:
			if rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig) == nil {
				return true
			}
		}
	}
	return false
}

func decodePart(part string, v any) error {
	data, err := base64.RawURLEncoding.DecodeString(part)
	if err != nil {
		return errors.New("not base64url")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return errors.New("not a JSON object")
	}
	return nil
}

// numericDate reads a JWT NumericDate: seconds since the epoch, possibly
// fractional.
func numericDate(n json.Number) (time.Time, error) {
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 || f > 1<<40 {
		return time.Time{}, errors.New("not a NumericDate")
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), nil
}

// audiences reads aud: one string or an array of strings (RFC 7519 section 4.1.3).
func audiences(raw json.RawMessage) ([]string, error) {
	if len(raw) == 0 {
		return nil, errors.New("no aud claim")
	}
	var one string
	if err := json.Unmarshal(raw, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(raw, &many); err != nil {
		return nil, errors.New("aud is neither a string nor an array of strings")
	}
	return many, nil
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

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	N   string `json:"n"`
	E   string `json:"e"`
	D   string `json:"d"`
}

func parseJWKS(data []byte) ([]verificationKey, error) {
	var set struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	var keys []verificationKey
	for i, k := range set.Keys {
		if k.D != "" {
			return nil, fmt.Errorf("JWKS keys[%d] is a private key; give public keys only", i)
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pub, err := k.publicKey()
		if err != nil {
			return nil, fmt.Errorf("JWKS keys[%d] (kid %q): %w", i, k.Kid, err)
		}
		if pub == nil {
			continue
		}
		alg := algorithmOf(pub)
		if k.Alg != "" && k.Alg != alg {
			return nil, fmt.Errorf("JWKS keys[%d] (kid %q): alg %q does not fit a %s key", i, k.Kid, k.Alg, k.Kty)
		}
		keys = append(keys, verificationKey{kid: k.Kid, alg: alg, pub: pub})
	}
	return keys, nil
}

// publicKey returns the key, or nil for a key type no accepted algorithm uses.
func (k jwk) publicKey() (crypto.PublicKey, error) {
	b64 := func(field, s string) ([]byte, error) {
		b, err := base64.RawURLEncoding.DecodeString(s)
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("%s is not base64url", field)
		}
		return b, nil
	}
	switch k.Kty {
	case "EC":
		if k.Crv != "P-256" {
			return nil, fmt.Errorf("curve %q is not P-256", k.Crv)
		}
		x, err := b64("x", k.X)
		if err != nil {
			return nil, err
		}
		y, err := b64("y", k.Y)
		if err != nil {
			return nil, err
		}
		if len(x) != 32 || len(y) != 32 {
			return nil, errors.New("x and y must be 32 bytes")
		}
		// ParseUncompressedPublicKey checks that the point is on the curve.
		return ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	case "OKP":
		if k.Crv != "Ed25519" {
			return nil, fmt.Errorf("curve %q is not Ed25519", k.Crv)
		}
		x, err := b64("x", k.X)
		if err != nil {
			return nil, err
		}
		if len(x) != ed25519.PublicKeySize {
			return nil, errors.New("x must be 32 bytes")
		}
		return ed25519.PublicKey(x), nil
	case "RSA":
		n, err := b64("n", k.N)
		if err != nil {
			return nil, err
		}
		e, err := b64("e", k.E)
		if err != nil {
			return nil, err
		}
		if len(e) > 4 {
			return nil, errors.New("e is too large")
		}
		exp := new(big.Int).SetBytes(e)
		if exp.Int64() < 3 || exp.Int64()%2 == 0 {
			return nil, errors.New("e is not an odd number of 3 or more")
		}
		pub := &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(exp.Int64())}
		if pub.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; %d or more are required", pub.N.BitLen(), minRSABits)
		}
		return pub, nil
	}
	return nil, nil
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
		if ec, ok := pub.(*ecdsa.PublicKey); ok && ec.Curve != elliptic.P256() {
			return nil, fmt.Errorf("ECDSA key on %s; only P-256 (ES256) is accepted", ec.Curve.Params().Name)
		}
		if r, ok := pub.(*rsa.PublicKey); ok && r.N.BitLen() < minRSABits {
			return nil, fmt.Errorf("RSA key of %d bits; %d or more are required", r.N.BitLen(), minRSABits)
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
