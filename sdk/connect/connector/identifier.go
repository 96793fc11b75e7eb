package connector

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"slices"
	"strings"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
)

// values returns the distinct values, in the connector's form, of the
// identifiers of its type. A plain identifier is encoded; one the claim
// check already gave in the connector's form is taken as it is (a system
// registered as holding only the hash never receives the address); one in
// another form cannot be converted and is skipped.
func (d *Definition) values(ids []*commonv1.Identifier) []string {
	var out []string
	for _, id := range ids {
		if id.GetType() != d.idType || id.GetValue() == "" {
			continue
		}
		var v string
		switch id.GetForm() {
		case commonv1.IdentifierForm_IDENTIFIER_FORM_UNSPECIFIED, commonv1.IdentifierForm_IDENTIFIER_FORM_PLAIN:
			v = encode(id.GetType(), id.GetValue(), d.idForm)
		case d.idForm:
			v = strings.ToLower(strings.TrimSpace(id.GetValue()))
		default:
			continue
		}
		if !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	return out
}

// encode writes a plain identifier value in form f, exactly as
// common.proto's IdentifierForm defines it and as the DSAR service's claim
// check encodes it (services/dsar, which the SDK may not import), so that
// a hash computed here and one handed out there agree:
//
//   - SHA256_NORMALISED: lower-case hex SHA-256 of the normalised value;
//     an e-mail address trimmed and lower-cased (Meta's "Hashing and
//     Normalizing Data" and LinkedIn's SHA256_EMAIL ask the same: trim
//     leading and trailing spaces, lower-case, then hash), a phone number
//     as E.164 ("+" and digits), anything else trimmed and lower-cased;
//   - MD5_LOWERCASE: lower-case hex MD5 of the value trimmed and
//     lower-cased (Mailchimp's subscriber hash);
//   - PLAIN: the value trimmed.
func encode(t commonv1.IdentifierType, value string, f commonv1.IdentifierForm) string {
	switch f {
	case commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED:
		sum := sha256.Sum256([]byte(normalise(t, value)))
		return hex.EncodeToString(sum[:])
	case commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE:
		sum := md5.Sum([]byte(strings.ToLower(strings.TrimSpace(value))))
		return hex.EncodeToString(sum[:])
	}
	return strings.TrimSpace(value)
}

// normalise is the value SHA256_NORMALISED hashes.
func normalise(t commonv1.IdentifierType, value string) string {
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
