package connector

import (
	"slices"
	"strings"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
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

// encode writes a plain identifier value in form f with the contract's
// one encoding (the DSAR claim check uses the same); a plain value is
// trimmed, as a vendor's API would not match one with spaces.
func encode(t commonv1.IdentifierType, value string, f commonv1.IdentifierForm) string {
	return strings.TrimSpace(contract.EncodeIdentifier(t, value, f))
}
