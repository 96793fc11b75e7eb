package webhook

import (
	"errors"
	"testing"
	"time"
)

// A claim token opens the claim check of one event of one system, for one
// request, until it expires, and only under the runner's key.
func TestClaimTokenIsScopedAndShortLived(t *testing.T) {
	key, other := []byte("the runner's claim key, 32 bytes"), []byte("a receiver's guess at a key.....")
	now := time.Unix(1_800_000_000, 0)
	tok := ClaimToken(key, "acme", "crm", "ev-1", "dsar-1", now.Add(ClaimTTL))
	if err := CheckClaimToken([][]byte{key}, tok, "acme", "crm", "ev-1", "dsar-1", now); err != nil {
		t.Fatalf("a fresh token is refused: %v", err)
	}
	for name, check := range map[string]func() error{
		"another system":  func() error { return CheckClaimToken([][]byte{key}, tok, "acme", "billing", "ev-1", "dsar-1", now) },
		"another event":   func() error { return CheckClaimToken([][]byte{key}, tok, "acme", "crm", "ev-2", "dsar-1", now) },
		"another request": func() error { return CheckClaimToken([][]byte{key}, tok, "acme", "crm", "ev-1", "dsar-2", now) },
		"another tenant":  func() error { return CheckClaimToken([][]byte{key}, tok, "other", "crm", "ev-1", "dsar-1", now) },
		"another key":     func() error { return CheckClaimToken([][]byte{other}, tok, "acme", "crm", "ev-1", "dsar-1", now) },
		"garbage":         func() error { return CheckClaimToken([][]byte{key}, "v1.1.x", "acme", "crm", "ev-1", "dsar-1", now) },
	} {
		if err := check(); !errors.Is(err, ErrClaimInvalid) {
			t.Errorf("%s: %v, want ErrClaimInvalid", name, err)
		}
	}
	if err := CheckClaimToken([][]byte{key}, tok, "acme", "crm", "ev-1", "dsar-1", now.Add(ClaimTTL)); !errors.Is(err, ErrClaimExpired) {
		t.Errorf("after %s: %v, want ErrClaimExpired", ClaimTTL, err)
	}
}
