package contract

import "testing"

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
