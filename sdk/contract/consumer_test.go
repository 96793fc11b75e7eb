package contract

import (
	"strings"
	"testing"
)

func TestConsumerName(t *testing.T) {
	for _, tc := range []struct {
		system, tenant, want string
	}{
		{"newsletter", "clio", "newsletter@clio"},
		{"newsletter", AllTenants, "newsletter@_all"},
		// A tenant that happens to be called "all" keeps its own consumer.
		{"newsletter", "all", "newsletter@all"},
		{"crm-eu", "click_learn", "crm-eu@click_learn"},
	} {
		got, err := ConsumerName(tc.system, tc.tenant)
		if err != nil || got != tc.want {
			t.Errorf("ConsumerName(%q, %q) = %q, %v; want %q", tc.system, tc.tenant, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ system, tenant string }{
		{"", "clio"},
		{"News", "clio"},
		{"newsletter", ""},
		{"newsletter", "_all"},
		{"newsletter", "clio.eu"},
		{"a@b", "clio"},
	} {
		if got, err := ConsumerName(tc.system, tc.tenant); err == nil {
			t.Errorf("ConsumerName(%q, %q) = %q, want an error", tc.system, tc.tenant, got)
		}
	}
}

func TestKindConsumerName(t *testing.T) {
	for _, tc := range []struct {
		system, tenant string
		kind           Kind
		want           string
	}{
		{"newsletter", "clio", KindErasureRequested, "newsletter@clio~erasure_requested"},
		{"newsletter", AllTenants, KindRestrictionLifted, "newsletter@_all~restriction_lifted"},
		{"crm-eu", "click_learn", KindConsentWithdrawn, "crm-eu@click_learn~consent_withdrawn"},
	} {
		got, err := KindConsumerName(tc.system, tc.tenant, tc.kind)
		if err != nil || got != tc.want {
			t.Errorf("KindConsumerName(%q, %q, %q) = %q, %v; want %q", tc.system, tc.tenant, tc.kind, got, err, tc.want)
		}
	}
	// Every answered kind gets its own name, and none is a NATS subject
	// wildcard or contains a token separator.
	seen := map[string]bool{}
	for _, kind := range append(append([]Kind{}, Directives...), Limits...) {
		name, err := KindConsumerName("newsletter", "clio", kind)
		if err != nil {
			t.Fatal(err)
		}
		if seen[name] || strings.ContainsAny(name, " .*>/\\") {
			t.Errorf("consumer name %q is a duplicate or not a valid NATS consumer name", name)
		}
		seen[name] = true
	}
	for _, tc := range []struct {
		system, tenant string
		kind           Kind
	}{
		{"newsletter", "clio", KindSystemRegistered}, // not answered by systems
		{"newsletter", "clio", "erasure"},
		{"News", "clio", KindErasureRequested},
		{"newsletter", "clio.eu", KindErasureRequested},
	} {
		if got, err := KindConsumerName(tc.system, tc.tenant, tc.kind); err == nil {
			t.Errorf("KindConsumerName(%q, %q, %q) = %q, want an error", tc.system, tc.tenant, tc.kind, got)
		}
	}
}

// TestReplayConsumerName: the replay consumer's name is the system's for
// its tenant, and no kind's consumer has it.
func TestReplayConsumerName(t *testing.T) {
	for _, tc := range []struct{ system, tenant, want string }{
		{"newsletter", "clio", "newsletter@clio~erasure_replay"},
		{"newsletter", AllTenants, "newsletter@_all~erasure_replay"},
	} {
		got, err := ReplayConsumerName(tc.system, tc.tenant)
		if err != nil || got != tc.want {
			t.Errorf("ReplayConsumerName(%q, %q) = %q, %v; want %q", tc.system, tc.tenant, got, err, tc.want)
		}
		for _, kind := range append(append([]Kind{}, Directives...), Limits...) {
			if name, _ := KindConsumerName(tc.system, tc.tenant, kind); name == got {
				t.Errorf("the replay consumer shares its name with the %s consumer", kind)
			}
		}
	}
	if got, err := ReplayConsumerName("News", "clio"); err == nil {
		t.Errorf("ReplayConsumerName of an invalid system = %q, want an error", got)
	}
}
