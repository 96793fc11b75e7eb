package transfer

import (
	"testing"
)

func TestCountries(t *testing.T) {
	if n := len(countries()); n != 249 {
		t.Errorf("%d officially assigned codes, want 249", n)
	}
	tests := []struct {
		code  string
		valid bool
		name  string
	}{
		{"US", true, "United States"},
		{"GB", true, "United Kingdom"},
		{"KR", true, "Republic of Korea"},
		{"GR", true, "Greece"},
		{"AX", true, "Åland Islands"},
		{"SS", true, "South Sudan"},
		{"UK", false, ""}, // exceptionally reserved, not assigned
		{"EU", false, ""},
		{"EL", false, ""},
		{"XK", false, ""}, // user-assigned (Kosovo)
		{"us", false, ""},
		{"USA", false, ""},
		{"U", false, ""},
		{"", false, ""},
	}
	for _, tt := range tests {
		if got := ValidCountry(tt.code); got != tt.valid {
			t.Errorf("ValidCountry(%q) = %v, want %v", tt.code, got, tt.valid)
		}
		if got := CountryName(tt.code); got != tt.name {
			t.Errorf("CountryName(%q) = %q, want %q", tt.code, got, tt.name)
		}
	}
}

func TestParseCountriesRejects(t *testing.T) {
	for _, in := range []string{"US United States\n", "usa\tUnited States\n", "US\t\n", "US\tA\nUS\tB\n"} {
		if _, err := parseCountries([]byte(in)); err == nil {
			t.Errorf("parseCountries(%q) succeeded", in)
		}
	}
}

// FuzzValidCountry checks that ValidCountry never panics and accepts only
// two upper-case ASCII letters that have a name.
func FuzzValidCountry(f *testing.F) {
	for _, s := range []string{"US", "DK", "UK", "EU", "us", "", "XXX", "Ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if !ValidCountry(s) {
			return
		}
		if !isTwoUpper(s) {
			t.Fatalf("ValidCountry(%q) = true for a string that is not two upper-case letters", s)
		}
		if CountryName(s) == "" {
			t.Fatalf("ValidCountry(%q) = true but it has no name", s)
		}
	})
}
