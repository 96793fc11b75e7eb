package transfer

import (
	"bufio"
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"sync"
)

// countriesTSV lists every officially assigned ISO 3166-1 alpha-2 code with
// a name. Kept as data, not code, so that an ISO change is a one-line edit.
//
//go:embed countries.tsv
var countriesTSV []byte

// countries maps each code to its name; parsed once. A malformed file is a
// defect of the build, caught by the tests, so it panics.
var countries = sync.OnceValue(func() map[string]string {
	m, err := parseCountries(countriesTSV)
	if err != nil {
		panic(fmt.Sprintf("transfer: embedded countries.tsv: %v", err))
	}
	return m
})

func parseCountries(data []byte) (map[string]string, error) {
	m := make(map[string]string, 256)
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		code, name, ok := strings.Cut(line, "\t")
		if !ok || !isTwoUpper(code) || name == "" {
			return nil, fmt.Errorf("line %d: want CODE<tab>Name, got %q", n, line)
		}
		if _, dup := m[code]; dup {
			return nil, fmt.Errorf("line %d: %s listed twice", n, code)
		}
		m[code] = name
	}
	return m, sc.Err()
}

func isTwoUpper(s string) bool {
	return len(s) == 2 && 'A' <= s[0] && s[0] <= 'Z' && 'A' <= s[1] && s[1] <= 'Z'
}

// ValidCountry reports whether code is an officially assigned ISO 3166-1
// alpha-2 code, in upper case as the standard writes it ("US", not "us").
// Reserved and user-assigned codes ("EU", "UK", "EL", "XK") are not valid:
// a register must name where data is, in the one code everybody reads the
// same way.
func ValidCountry(code string) bool {
	_, ok := countries()[code]
	return ok
}

// CountryName returns the English short name of an ISO 3166-1 alpha-2 code
// ("United States" for "US"), or "" for a code that is not assigned.
func CountryName(code string) string {
	return countries()[code]
}
