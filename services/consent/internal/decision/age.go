package decision

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
)

// digitalConsentAgeJSON is the age of digital consent of every EU/EEA
// state, with the national law that sets it. It is data, not code, so that
// a state changing its age (Denmark went from 13 to 15 in 2024) is a
// reviewed one-line change with its source beside it.
//
//go:embed digital_consent_age.json
var digitalConsentAgeJSON []byte

// consentAgeFile is the layout of digital_consent_age.json.
type consentAgeFile struct {
	Description string `json:"description"`
	// DefaultAge is Art. 8(1)'s age where a state set none.
	DefaultAge int32             `json:"default_age"`
	States     []consentAgeState `json:"states"`
}

// consentAgeState is one state's entry.
type consentAgeState struct {
	// Country is the ISO 3166-1 alpha-2 code (Greece is GR, not EL).
	Country string `json:"country"`
	Name    string `json:"name"`
	Age     int32  `json:"age"`
	// Law cites the national provision, or says none was made.
	Law string `json:"law"`
	// Note says what is unverified or about to change.
	Note string `json:"note,omitempty"`
}

// Art. 8(1) bounds: 16 unless a state provides by law for a lower age, not
// below 13.
const (
	lowestConsentAge  = 13
	defaultConsentAge = 16
)

// consentAges holds each state's age at the index of its two-letter code,
// 0 outside the EU/EEA: a lookup is two subtractions and a load, with no
// hashing and no allocation, since every Check with digital consent age
// reads it.
var consentAges [26 * 26]int8

func init() {
	states, err := parseConsentAges(digitalConsentAgeJSON)
	if err != nil {
		// The file is compiled in and validated by the tests; a broken one
		// must stop the service rather than let it answer without Art. 8.
		panic("decision: " + err.Error())
	}
	for _, s := range states {
		i, _ := countryIndex(s.Country)
		consentAges[i] = int8(s.Age)
	}
}

// parseConsentAges parses and checks digital_consent_age.json.
func parseConsentAges(data []byte) ([]consentAgeState, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var f consentAgeFile
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("digital_consent_age.json: %w", err)
	}
	if f.DefaultAge != defaultConsentAge {
		return nil, fmt.Errorf("digital_consent_age.json: default_age %d, Art. 8(1) says %d", f.DefaultAge, defaultConsentAge)
	}
	seen := make(map[string]bool, len(f.States))
	for _, s := range f.States {
		if _, ok := countryIndex(s.Country); !ok || s.Country[0] > 'Z' || s.Country[1] > 'Z' {
			return nil, fmt.Errorf("digital_consent_age.json: %q is not an upper-case ISO 3166-1 alpha-2 code", s.Country)
		}
		if seen[s.Country] {
			return nil, fmt.Errorf("digital_consent_age.json: %s listed twice", s.Country)
		}
		seen[s.Country] = true
		if s.Age < lowestConsentAge || s.Age > defaultConsentAge {
			return nil, fmt.Errorf("digital_consent_age.json: %s age %d outside Art. 8(1)'s %d to %d", s.Country, s.Age, lowestConsentAge, defaultConsentAge)
		}
		if s.Name == "" || s.Law == "" {
			return nil, fmt.Errorf("digital_consent_age.json: %s needs a name and a law", s.Country)
		}
	}
	return f.States, nil
}

// countryIndex maps a two-letter code, either case, to its slot in
// consentAges.
func countryIndex(country string) (int, bool) {
	if len(country) != 2 {
		return 0, false
	}
	a, b := country[0]|0x20, country[1]|0x20 // ASCII lower case
	if a < 'a' || a > 'z' || b < 'a' || b > 'z' {
		return 0, false
	}
	return int(a-'a')*26 + int(b-'a'), true
}

// DigitalConsentAge returns the age of digital consent of a country, given
// as an ISO 3166-1 alpha-2 code: the age from which a child may consent
// alone to an information society service (GDPR Art. 8(1)). It reports
// false outside the EU and EEA, where no Art. 8 age applies, and for an
// empty or malformed code.
func DigitalConsentAge(country string) (int32, bool) {
	i, ok := countryIndex(country)
	if !ok || consentAges[i] == 0 {
		return 0, false
	}
	return int32(consentAges[i]), true
}
