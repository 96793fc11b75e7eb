package decision

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"
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
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	for _, s := range states {
		byCountry[s.Country] = s
		for _, r := range s.Ages {
			// A state that made no provision has Art. 8(1)'s default.
			if strings.HasPrefix(r.Source, "None") && r.Age != defaultConsentAge {
				t.Errorf("%s: no national provision, yet age %d", s.Country, r.Age)
			}
			// Each age is the one in force from its date.
			from, _ := time.Parse(time.RFC3339, r.EffectiveFrom)
			if got, ok := DigitalConsentAge(s.Country, from, from); !ok || got != r.Age {
				t.Errorf("DigitalConsentAge(%s) from %s = %d, %v; want %d", s.Country, r.EffectiveFrom, got, ok, r.Age)
			}
		}
		last := s.Ages[len(s.Ages)-1]
		if got, ok := DigitalConsentAge(s.Country, now, now); !ok || got != last.Age {
			t.Errorf("DigitalConsentAge(%s) now = %d, %v; want %d", s.Country, got, ok, last.Age)
		}
	}
	got := slices.Sorted(maps.Keys(byCountry))
	want := slices.Sorted(slices.Values(eea))
	if !slices.Equal(got, want) {
		t.Errorf("states = %v, want %v", got, want)
	}
}

func TestDigitalConsentAge(t *testing.T) {
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		country string
		age     int32
		ok      bool
	}{
		{"DE", 16, true},
		{"DK", 15, true}, // 13 until 31 December 2023 (TestDenmarkRaisedTheAgeIn2024)
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
		age, ok := DigitalConsentAge(tc.country, now, now)
		if age != tc.age || ok != tc.ok {
			t.Errorf("DigitalConsentAge(%q) = %d, %v; want %d, %v", tc.country, age, ok, tc.age, tc.ok)
		}
	}
}

// TestDenmarkRaisedTheAgeIn2024: Art. 8(1) GDPR; Databeskyttelsesloven
// § 6, stk. 2: 13 (LOV nr 502 af 23/05/2018) until LOV nr 1783 af
// 28/12/2023 raised it to 15 from 1 January 2024 (LBK nr 289 af
// 08/03/2024, § 6, stk. 2), keeping consent given before under 13.
func TestDenmarkRaisedTheAgeIn2024(t *testing.T) {
	cph := time.FixedZone("CET", 3600)
	newYear := time.Date(2024, 1, 1, 0, 0, 0, 0, cph)
	now := time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		given, now time.Time
		want       int32
	}{
		{"consent given 2023-12-15, judged now", time.Date(2023, 12, 15, 0, 0, 0, 0, cph), now, 13},
		{"consent given 2024-01-02, judged now", time.Date(2024, 1, 2, 0, 0, 0, 0, cph), now, 15},
		{"consent given the last instant of 2023 in Copenhagen", newYear.Add(-time.Nanosecond), now, 13},
		{"consent given at midnight in Copenhagen (23:00 UTC)", newYear, now, 15},
		{"judged in 2023", time.Date(2023, 6, 1, 0, 0, 0, 0, cph), time.Date(2023, 6, 1, 0, 0, 0, 0, cph), 13},
		{"no consent concerned, judged now", now, now, 15},
		{"consent given before the GDPR applied keeps the first age", time.Date(2017, 1, 1, 0, 0, 0, 0, cph), now, 13},
	}
	for _, tc := range tests {
		if got, ok := DigitalConsentAge("DK", tc.given, tc.now); !ok || got != tc.want {
			t.Errorf("%s: DigitalConsentAge(DK) = %d, %v; want %d", tc.name, got, ok, tc.want)
		}
	}
	// The file cites the enacted act and the consolidated text.
	states, err := parseConsentAges(digitalConsentAgeJSON)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(states, func(s consentAgeState) bool { return s.Country == "DK" })
	dk := states[i].Ages[len(states[i].Ages)-1]
	for _, eli := range []string{"https://www.retsinformation.dk/eli/lta/2023/1783", "https://www.retsinformation.dk/eli/lta/2024/289"} {
		if !slices.Contains(dk.ELI, eli) {
			t.Errorf("Denmark's 2024 age does not cite %s: %v", eli, dk.ELI)
		}
	}
	if dk.EarlierConsent != earlierConsentPreviousAge {
		t.Errorf("Denmark's 2024 change: earlier_consent %q, want %q", dk.EarlierConsent, earlierConsentPreviousAge)
	}
}

// TestAChangeThatAppliesToEarlierConsent: a change whose transitional rule
// does not keep earlier consent applies to every consent from its date.
func TestAChangeThatAppliesToEarlierConsent(t *testing.T) {
	steps := []ageStep{{from: 0, age: 13}, {from: 100, age: 15}, {from: 200, age: 16, keepsEarlier: true}}
	for _, tc := range []struct {
		given, now int64
		want       int32
	}{
		{50, 150, 15},  // the change at 100 reaches back
		{50, 250, 15},  // the change at 200 keeps it under 15
		{150, 250, 15}, // likewise
		{250, 250, 16},
		{-10, 50, 13}, // before the first step: the first
	} {
		if got, _ := consentAgeAt(steps, tc.given, tc.now); got != tc.want {
			t.Errorf("given %d, now %d: age %d, want %d", tc.given, tc.now, got, tc.want)
		}
	}
}

func TestParseConsentAgesRejects(t *testing.T) {
	const rule = `"effective_from":"2018-05-25T00:00:00+02:00","source":"x"`
	tests := map[string]string{
		"unknown field":   `{"default_age":16,"states":[],"extra":1}`,
		"wrong default":   `{"default_age":18,"states":[]}`,
		"below 13":        `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":12,` + rule + `}]}]}`,
		"above 16":        `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":18,` + rule + `}]}]}`,
		"lower case":      `{"default_age":16,"states":[{"country":"dk","name":"Denmark","ages":[{"age":13,` + rule + `}]}]}`,
		"three letters":   `{"default_age":16,"states":[{"country":"DNK","name":"Denmark","ages":[{"age":13,` + rule + `}]}]}`,
		"twice":           `{"default_age":16,"states":[{"country":"DK","name":"D","ages":[{"age":13,` + rule + `}]},{"country":"DK","name":"D","ages":[{"age":13,` + rule + `}]}]}`,
		"no source":       `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,"effective_from":"2018-05-25T00:00:00+02:00"}]}]}`,
		"no ages":         `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[]}]}`,
		"no date":         `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,"source":"x"}]}]}`,
		"date without tz": `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,"effective_from":"2018-05-25","source":"x"}]}]}`,
		"out of order":    `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,` + rule + `},{"age":15,` + rule + `,"earlier_consent":"this_age","transitional_source":"y"}]}]}`,
		"change without transitional rule": `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,` + rule + `},` +
			`{"age":15,"effective_from":"2024-01-01T00:00:00+01:00","source":"y"}]}]}`,
		"transitional rule without source": `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,` + rule + `},` +
			`{"age":15,"effective_from":"2024-01-01T00:00:00+01:00","source":"y","earlier_consent":"previous_age"}]}]}`,
		"first rule keeps nothing": `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,` + rule + `,"earlier_consent":"previous_age","transitional_source":"y"}]}]}`,
		"eli not https":            `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,` + rule + `,"eli":["retsinformation.dk"]}]}]}`,
		"not json":                 `{`,
		"wrong age type":           `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":"13",` + rule + `}]}]}`,
	}
	for name, data := range tests {
		if _, err := parseConsentAges([]byte(data)); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
	// And the shape they vary parses.
	ok := `{"default_age":16,"states":[{"country":"DK","name":"Denmark","ages":[{"age":13,` + rule + `},` +
		`{"age":15,"effective_from":"2024-01-01T00:00:00+01:00","source":"y","earlier_consent":"previous_age","transitional_source":"z"}]}]}`
	if _, err := parseConsentAges([]byte(ok)); err != nil {
		t.Errorf("a valid file: %v", err)
	}
}
