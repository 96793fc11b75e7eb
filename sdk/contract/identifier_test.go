package contract_test

import (
	"testing"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	"github.com/lethe-privacy/lethe/sdk/contract"
)

// The forms are those of common.proto's IdentifierForm; the expected
// values were computed outside Go (Python's hashlib), so the DSAR claim
// check and the connectors, which both encode with EncodeIdentifier, hand
// vendors the hashes the vendors compute themselves.
func TestEncodeIdentifier(t *testing.T) {
	email := commonv1.IdentifierType_IDENTIFIER_TYPE_EMAIL
	phone := commonv1.IdentifierType_IDENTIFIER_TYPE_PHONE
	tests := []struct {
		typ   commonv1.IdentifierType
		value string
		form  commonv1.IdentifierForm
		want  string
	}{
		{email, " Ada@Example.COM\t", commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED, "b5fc85e55755f9e0d030a10ab4429b6b2944855f9a0d60077fe832becbc41d72"},
		{email, "ADA@example.com", commonv1.IdentifierForm_IDENTIFIER_FORM_MD5_LOWERCASE, "3e3417d7ef77d5932a6734b916515ed5"},
		{phone, "+44 (20) 7946-0018", commonv1.IdentifierForm_IDENTIFIER_FORM_SHA256_NORMALISED, "faad3b10918e39b5f4d5334f1e1e128719608e8bd3ad3b963dc30187b4518e23"},
		{email, " Ada@Example.COM ", commonv1.IdentifierForm_IDENTIFIER_FORM_PLAIN, " Ada@Example.COM "},
		{email, " Ada@Example.COM ", commonv1.IdentifierForm_IDENTIFIER_FORM_UNSPECIFIED, " Ada@Example.COM "},
	}
	for _, tt := range tests {
		if got := contract.EncodeIdentifier(tt.typ, tt.value, tt.form); got != tt.want {
			t.Errorf("EncodeIdentifier(%v, %q, %v) = %s, want %s", tt.typ, tt.value, tt.form, got, tt.want)
		}
	}
	for _, tt := range []struct {
		typ         commonv1.IdentifierType
		value, want string
	}{
		{email, " Ada@Example.COM\t", "ada@example.com"},
		{phone, " +44 (20) 7946-0018 ", "+442079460018"},
		{phone, "0044 20 7946 0018", "+00442079460018"}, // digits kept as given: no country inference
	} {
		if got := contract.NormaliseIdentifier(tt.typ, tt.value); got != tt.want {
			t.Errorf("NormaliseIdentifier(%v, %q) = %q, want %q", tt.typ, tt.value, got, tt.want)
		}
	}
}
