package decision

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

// eea is every EU member state and the three EEA states that apply the
// GDPR through the EEA Agreement.
var eea = []string{
	"AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
	"IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
	"IS", "LI", "NO",
}

// TestDigitalConsentAgeFile validates the embedded data: exactly the EU/EEA
// states, each once, each age within Art. 8(1)'s 13 to 16, each with its
// law, and the lookup agrees with the file.
func TestDigitalConsentAgeFile(t *testing.T) {
	states, err := parseConsentAges(digitalConsentAgeJSON)
	if err != nil {
		t.Fatal(err)
	}
	byCountry := make(map[string]consentAgeState, len(states))
	for _, s := range states {
		byCountry[s.Country] = s
		// A state that made no provision has Art. 8(1)'s default.
		if strings.HasPrefix(s.Law, "None") && s.Age != defaultConsentAge {
			t.Errorf("%s: no national provision, yet age %d", s.Country, s.Age)
		}
		if got, ok := DigitalConsentAge(s.Country); !ok || got != s.Age {
			t.Errorf("DigitalConsentAge(%s) = %d, %v; want %d", s.Country, got, ok, s.Age)
		}
	}
	got := slices.Sorted(maps.Keys(byCountry))
	want := slices.Sorted(slices.Values(eea))
	if !slices.Equal(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
}

func TestDigitalConsentAge(t *testing.T) {
	tests := []struct {
		country string
		age     int32
		ok      bool
	}{
		{"DE", 16, true},
		{"DK", 15, true}, // 13 until 31 December 2023
		{"SE", 13, true},
		{"AT", 14, true},
		{"FR", 15, true},
		{"GR", 15, true},
		{"NO", 13, true},
		{"de", 16, true}, // case does not matter
		{"EL", 0, false}, // Greece's EU code is not ISO 3166-1
		{"GB", 0, false}, // left the EU; UK GDPR is not decided here
		{"CH", 0, false},
		{"US", 0, false},
		{"", 0, false},
		{"D", 0, false},
		{"DEU", 0, false},
		{"1E", 0, false},
		{"D\xff", 0, false},
	}
	for _, tc := range tests {
		age, ok := DigitalConsentAge(tc.country)
		if age != tc.age || ok != tc.ok {
			t.Errorf("DigitalConsentAge(%q) = %d, %v; want %d, %v", tc.country, age, ok, tc.age, tc.ok)
		}
	}
}

func TestParseConsentAgesRejects(t *testing.T) {
	tests := map[string]string{
		"unknown field":  `{"default_age":16,"states":[],"extra":1}`,
		"wrong default":  `{"default_age":18,"states":[]}`,
		"below 13":       `{"default_age":16,"states":[{"country":"DK","name":"Denmark","age":12,"law":"x"}]}`,
		"above 16":       `{"default_age":16,"states":[{"country":"DK","name":"Denmark","age":18,"law":"x"}]}`,
		"lower case":     `{"default_age":16,"states":[{"country":"dk","name":"Denmark","age":13,"law":"x"}]}`,
		"three letters":  `{"default_age":16,"states":[{"country":"DNK","name":"Denmark","age":13,"law":"x"}]}`,
		"twice":          `{"default_age":16,"states":[{"country":"DK","name":"D","age":13,"law":"x"},{"country":"DK","name":"D","age":13,"law":"x"}]}`,
		"no law":         `{"default_age":16,"states":[{"country":"DK","name":"Denmark","age":13}]}`,
		"not json":       `{`,
		"wrong age type": `{"default_age":16,"states":[{"country":"DK","name":"Denmark","age":"13","law":"x"}]}`,
	}
	for name, data := range tests {
		if _, err := parseConsentAges([]byte(data)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}
