package contract

import (
	"crypto/md5" // a form some recipients hold (Mailchimp's subscriber hash), not a security measure
	"crypto/sha256"
	"encoding/hex"
	"strings"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
)

// EncodeIdentifier writes value, a plain identifier of type t, in form f,
// exactly as common.proto's IdentifierForm defines it. It is the one
// encoding: the DSAR service's claim check hands identifiers out in it and
// a connector computes it from a plain value, so a hash computed on one
// side and one handed out on the other agree.
//
//   - SHA256_NORMALISED: lower-case hex SHA-256 of the normalised value;
//     an e-mail address trimmed and lower-cased (Meta's "Hashing and
//     Normalizing Data" and LinkedIn's SHA256_EMAIL ask the same: trim
//     leading and trailing spaces, lower-case, then hash), a phone number
//     as E.164 ("+" and digits), anything else trimmed and lower-cased;
//   - MD5_LOWERCASE: lower-case hex MD5 of the value trimmed and
//     lower-cased (Mailchimp's subscriber hash);
//   - PLAIN or unspecified: the value as it is.
func EncodeIdentifier(t commonv1.IdentifierType, value string, f commonv1.IdentifierForm) string {
	switch f {
	case commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED:
		sum := sha256.Sum256([]byte(NormaliseIdentifier(t, value)))
		return hex.EncodeToString(sum[:])
	case commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE:
		sum := md5.Sum([]byte(strings.ToLower(strings.TrimSpace(value))))
		return hex.EncodeToString(sum[:])
	}
	return value
}

// NormaliseIdentifier is the value SHA256_NORMALISED hashes: a phone
// number as E.164 ("+" and digits), anything else trimmed and lower-cased.
func NormaliseIdentifier(t commonv1.IdentifierType, value string) string {
	v := strings.TrimSpace(value)
	if t != commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE {
		return strings.ToLower(v)
	}
	var b strings.Builder
	b.WriteByte('+')
	for _, r := range v {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}
