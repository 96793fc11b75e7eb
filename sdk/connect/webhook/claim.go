package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// ClaimTTL is how long a claim token is good for: long enough for a
// receiver to look the subject up while it handles the delivery, short
// enough that a token copied into a log is soon worthless. Each delivery
// carries a fresh one.
const ClaimTTL = 15 * time.Minute

// The CloudEvents extensions that offer the claim check: the URL to GET
// the subject's identifiers from, and the bearer token for it. Present
// only for events caused by a data-subject request, and only when the
// runner serves the claim check.
const (
	ExtClaimURL   = "letheclaimurl"
	ExtClaimToken = "letheclaimtoken"
)

// ClaimPath is the claim check's path for an event, under the runner's
// base URL: /v1/claims/<tenant>/<system>/<event id>/<request id>.
func ClaimPath(tenant, system, eventID, dsarID string) string {
	return "/v1/claims/" + tenant + "/" + system + "/" + eventID + "/" + dsarID
}

// ClaimToken returns a token that opens the claim check of one event for
// one system until expires: "v1.<unix expiry>.<base64url HMAC-SHA256>"
// over the tenant, system, event, request and expiry, with the system's
// signing key, so a token is good for that task only.
func ClaimToken(key []byte, tenant, system, eventID, dsarID string, expires time.Time) string {
	exp := strconv.FormatInt(expires.Unix(), 10)
	return "v1." + exp + "." + base64.RawURLEncoding.EncodeToString(claimMAC(key, tenant, system, eventID, dsarID, exp))
}

func claimMAC(key []byte, tenant, system, eventID, dsarID, exp string) []byte {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(strings.Join([]string{"lethe-claim", tenant, system, eventID, dsarID, exp}, "\n")))
	return mac.Sum(nil)
}

// Errors of CheckClaimToken.
var (
	ErrClaimExpired = errors.New("the claim token has expired")
	ErrClaimInvalid = errors.New("the claim token is not valid for this event")
)

// CheckClaimToken checks a token ClaimToken made with one of keys, for the
// same event and request, not expired at now.
func CheckClaimToken(keys [][]byte, token, tenant, system, eventID, dsarID string, now time.Time) error {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != "v1" {
		return ErrClaimInvalid
	}
	got, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil {
		return ErrClaimInvalid
	}
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if err != nil {
		return ErrClaimInvalid
	}
	for _, k := range keys {
		if hmac.Equal(got, claimMAC(k, tenant, system, eventID, dsarID, parts[1])) {
			if !now.Before(time.Unix(exp, 0)) {
				return ErrClaimExpired
			}
			return nil
		}
	}
	return ErrClaimInvalid
}
