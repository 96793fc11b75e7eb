package consent

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Subject tokens prove to the public endpoint that a visitor is a known
// subject: a short-lived JWT the tenant's own backend signs with a key
// registered in the tenant's web settings (docs/web-consent.md).

const (
	// maxSubjectTokenLifetime bounds exp − iat: a token a page holds is
	// worth little to whoever copies it.
	maxSubjectTokenLifetime = 15 * time.Minute
	// subjectTokenLeeway is how far the backend's clock may be off.
	subjectTokenLeeway = 30 * time.Second
	// maxSubjectTokenBytes bounds the work an anonymous caller can cause.
	maxSubjectTokenBytes = 4 << 10
	// visitorPrefix starts the subject id of an anonymous visitor.
	visitorPrefix = "visitor:"
)

// visitorID is what the banner script keeps in its first-party cookie: 16
// random bytes in base64url make 22 characters.
var visitorID = regexp.MustCompile(`^[A-Za-z0-9_-]{22,64}$`)

// subjectID is the pattern of a subject id the consent API takes.
var subjectID = regexp.MustCompile(`^[!-~]{1,256}$`)

// subjectClaims are a subject token's claims.
type subjectClaims struct {
	jwt.Claims
	// Roles are the subject's roles ("student"), which eligibility reads.
	Roles []string `json:"roles,omitempty"`
}

// tokenSubject is what a valid subject token proves.
type tokenSubject struct {
	subject string
	roles   []string
}

// verifySubjectToken checks a subject token for tenant against its web
// settings' keys at now, and says why it is refused.
func verifySubjectToken(token, tenant string, c *webConfig, now time.Time) (tokenSubject, error) {
	if len(token) > maxSubjectTokenBytes {
		return tokenSubject{}, errors.New("the token is too long")
	}
	if strings.Count(token, ".") != 2 {
		return tokenSubject{}, errors.New("not a signed JWT (three base64url parts)")
	}
	tok, err := jwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256})
	if err != nil {
		return tokenSubject{}, errors.New("not a JWT signed with EdDSA or ES256")
	}
	h := tok.Headers[0]
	if _, ok := h.ExtraHeaders[jose.HeaderKey("crit")]; ok {
		return tokenSubject{}, errors.New("critical header extensions are not supported")
	}
	if h.KeyID == "" {
		return tokenSubject{}, errors.New("no kid header: name the tenant's key that signed it")
	}
	key, ok := c.keys[h.KeyID]
	if !ok {
		return tokenSubject{}, fmt.Errorf("unknown key id %q", h.KeyID)
	}
	// One algorithm per key type, so a token cannot choose how its
	// signature is checked (RFC 8725 § 2.1).
	switch key.(type) {
	case ed25519.PublicKey:
		ok = h.Algorithm == string(jose.EdDSA)
	case *ecdsa.PublicKey:
		ok = h.Algorithm == string(jose.ES256)
	}
	if !ok {
		return tokenSubject{}, fmt.Errorf("algorithm %s does not fit key %q", h.Algorithm, h.KeyID)
	}
	var claims subjectClaims
	if err := tok.Claims(key, &claims); err != nil {
		return tokenSubject{}, errors.New("the signature does not verify with the key its kid names")
	}
	return checkSubjectClaims(claims, tenant, now)
}

// checkSubjectClaims checks the claims of a token whose signature
// verified.
func checkSubjectClaims(claims subjectClaims, tenant string, now time.Time) (tokenSubject, error) {
	switch {
	case claims.Subject == "":
		return tokenSubject{}, errors.New("no sub claim")
	case !subjectID.MatchString(claims.Subject):
		return tokenSubject{}, errors.New("sub is not a subject id (1 to 256 printable ASCII characters)")
	case strings.HasPrefix(claims.Subject, visitorPrefix):
		return tokenSubject{}, fmt.Errorf("sub may not start with %q: those are anonymous visitors", visitorPrefix)
	case claims.IssuedAt == nil:
		return tokenSubject{}, errors.New("no iat claim")
	case claims.Expiry == nil:
		return tokenSubject{}, errors.New("no exp claim")
	case claims.Expiry.Time().Sub(claims.IssuedAt.Time()) > maxSubjectTokenLifetime:
		return tokenSubject{}, fmt.Errorf("exp is more than %s after iat", maxSubjectTokenLifetime)
	}
	want := "lethe:" + tenant
	err := claims.ValidateWithLeeway(jwt.Expected{AnyAudience: jwt.Audience{want}, Time: now}, subjectTokenLeeway)
	switch {
	case err == nil:
	case errors.Is(err, jwt.ErrExpired):
		return tokenSubject{}, errors.New("expired")
	case errors.Is(err, jwt.ErrNotValidYet):
		return tokenSubject{}, errors.New("not valid yet (nbf)")
	case errors.Is(err, jwt.ErrIssuedInTheFuture):
		return tokenSubject{}, errors.New("issued in the future (iat)")
	case errors.Is(err, jwt.ErrInvalidAudience):
		return tokenSubject{}, fmt.Errorf("aud does not include %q", want)
	default:
		return tokenSubject{}, errors.New("claims are not valid")
	}
	for _, r := range claims.Roles {
		if r == "" || len(r) > 64 {
			return tokenSubject{}, errors.New("roles: each role is 1 to 64 characters")
		}
	}
	return tokenSubject{subject: claims.Subject, roles: claims.Roles}, nil
}
