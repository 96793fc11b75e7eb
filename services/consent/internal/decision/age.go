package decision

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// digitalConsentAgeJSON is the age of digital consent of every EU/EEA
// state, effective-dated, with the national law that sets each age. It is
// data, not code, so that a state changing its age (Denmark went from 13 to
// 15 on 1 January 2024) is a reviewed change with its source and its
// transitional rule beside it.
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
	// Ages are the ages the state's law set, oldest first, each from its
	// effective date.
	Ages []consentAgeRule `json:"ages"`
}

// consentAgeRule is one age and the time from which it applies.
type consentAgeRule struct {
	Age int32 `json:"age"`
	// EffectiveFrom is when the age took effect, RFC 3339 with the state's
	// offset (a Danish act in force "1 January 2024" starts at
	// 2024-01-01T00:00:00+01:00). The first rule also covers consents given
	// before it (GDPR Recital 171: earlier consent counts if it meets the
	// GDPR's conditions).
	EffectiveFrom string `json:"effective_from"`
	// Source cites the provision, or says none was made.
	Source string `json:"source"`
	// ELI are the official addresses (European Legislation Identifier) of
	// the texts Source cites, where the state publishes them.
	ELI []string `json:"eli,omitempty"`
	// EarlierConsent is the transitional rule of a change, required on
	// every rule but the first: "previous_age" when a consent given before
	// EffectiveFrom stays under the age in force when it was given,
	// "this_age" when the new age applies to it too.
	EarlierConsent string `json:"earlier_consent,omitempty"`
	// TransitionalSource cites the provision EarlierConsent encodes.
	TransitionalSource string `json:"transitional_source,omitempty"`
	// Note says what is unverified or about to change.
	Note string `json:"note,omitempty"`
}

// The values of consentAgeRule.EarlierConsent.
const (
	earlierConsentPreviousAge = "previous_age"
	earlierConsentThisAge     = "this_age"
)

// Art. 8(1) bounds: 16 unless a state provides by law for a lower age, not
// below 13. No state's age exceeds defaultConsentAge, so an age that meets
// it meets every state's.
const (
	lowestConsentAge  = 13
	defaultConsentAge = 16
)

// ageStep is a consentAgeRule as the engine reads it.
type ageStep struct {
	// from is EffectiveFrom in Unix nanoseconds.
	from int64
	age  int32
	// keepsEarlier: a consent given before from stays under the previous
	// step.
	keepsEarlier bool
}

// consentAges holds each state's steps, oldest first, at the index of its
// two-letter code, none outside the EU/EEA: a lookup is two subtractions,
// a load and a walk over one or two steps, with no hashing and no
// allocation, since every Check with digital consent age reads it.
var consentAges [26 * 26][]ageStep

// consentAgeMax holds each state's highest age over time: an age that
// meets it meets the state's age whenever the consent was given, which
// spares Decide the look-up of when that was.
var consentAgeMax [26 * 26]int32

func init() {
	states, err := parseConsentAges(digitalConsentAgeJSON)
	if err != nil {
		// The file is compiled in and validated by the tests; a broken one
		// must stop the service rather than let it answer without Art. 8.
		panic("decision: " + err.Error())
	}
	for _, s := range states {
		i, _ := countryIndex(s.Country)
		steps := make([]ageStep, len(s.Ages))
		for j, r := range s.Ages {
			from, _ := time.Parse(time.RFC3339, r.EffectiveFrom)
			steps[j] = ageStep{from: unixNano(from, beforeAll), age: r.Age, keepsEarlier: r.EarlierConsent == earlierConsentPreviousAge}
			consentAgeMax[i] = max(consentAgeMax[i], r.Age)
		}
		consentAges[i] = steps
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
		if s.Name == "" || len(s.Ages) == 0 {
			return nil, fmt.Errorf("digital_consent_age.json: %s needs a name and at least one age", s.Country)
		}
		var prev time.Time
		for j, r := range s.Ages {
			if err := checkAgeRule(r, j, prev); err != nil {
				return nil, fmt.Errorf("digital_consent_age.json: %s ages[%d]: %w", s.Country, j, err)
			}
			prev, _ = time.Parse(time.RFC3339, r.EffectiveFrom)
		}
	}
	return f.States, nil
}

// checkAgeRule checks the j-th rule of a state, whose previous rule took
// effect at prev.
func checkAgeRule(r consentAgeRule, j int, prev time.Time) error {
	if r.Age < lowestConsentAge || r.Age > defaultConsentAge {
		return fmt.Errorf("age %d outside Art. 8(1)'s %d to %d", r.Age, lowestConsentAge, defaultConsentAge)
	}
	if r.Source == "" {
		return fmt.Errorf("needs a source")
	}
	from, err := time.Parse(time.RFC3339, r.EffectiveFrom)
	if err != nil {
		return fmt.Errorf("effective_from: %w", err)
	}
	if j > 0 && !from.After(prev) {
		return fmt.Errorf("effective_from %s does not follow the previous rule's", r.EffectiveFrom)
	}
	for _, eli := range r.ELI {
		if !strings.HasPrefix(eli, "https://") {
			return fmt.Errorf("eli %q is not an https address", eli)
		}
	}
	switch {
	case j == 0 && (r.EarlierConsent != "" || r.TransitionalSource != ""):
		return fmt.Errorf("the first rule has no earlier one to keep")
	case j > 0 && r.EarlierConsent != earlierConsentPreviousAge && r.EarlierConsent != earlierConsentThisAge:
		return fmt.Errorf("earlier_consent %q: a change must say whether earlier consent keeps the previous age (%q) or not (%q)",
			r.EarlierConsent, earlierConsentPreviousAge, earlierConsentThisAge)
	case j > 0 && r.TransitionalSource == "":
		return fmt.Errorf("a change needs the transitional_source its earlier_consent comes from")
	}
	return nil
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
// alone to an information society service (GDPR Art. 8(1)). The age is the
// one in force at now, unless the change that set it keeps consents given
// before it under the earlier age (Denmark's 2024 change does): then a
// consent given at given is judged by the age in force then. Pass now as
// given when no consent is concerned. It reports false outside the EU and
// EEA, where no Art. 8 age applies, and for an empty or malformed code.
func DigitalConsentAge(country string, given, now time.Time) (int32, bool) {
	i, ok := countryIndex(country)
	if !ok {
		return 0, false
	}
	return consentAgeAt(consentAges[i], unixNano(given, beforeAll), unixNano(now, beforeAll))
}

// consentAgeAt is DigitalConsentAge on one state's steps, with times in
// Unix nanoseconds. It does not allocate.
func consentAgeAt(steps []ageStep, given, now int64) (int32, bool) {
	if len(steps) == 0 {
		return 0, false
	}
	j := len(steps) - 1
	for j > 0 && steps[j].from > now {
		j--
	}
	for j > 0 && steps[j].keepsEarlier && given < steps[j].from {
		j--
	}
	return steps[j].age, true
}
