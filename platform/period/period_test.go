package period

import (
	"errors"
	"testing"
	"time"
)

func day(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 9, 30, 0, 0, time.UTC) }

func TestAddToCountsAsEULawDoes(t *testing.T) {
	for _, tc := range []struct {
		period string
		from   time.Time
		want   time.Time
	}{
		{"P1M", day(2026, 1, 31), day(2026, 2, 28)},   // 31 January + one month: the last day of February
		{"P1M", day(2028, 1, 31), day(2028, 2, 29)},   // in a leap year
		{"P1M", day(2026, 1, 15), day(2026, 2, 15)},   // the same date
		{"P3M", day(2026, 11, 30), day(2027, 2, 28)},  // across a year
		{"P1Y", day(2028, 2, 29), day(2029, 2, 28)},   // 29 February + one year
		{"P7Y", day(2024, 12, 31), day(2031, 12, 31)}, // Cleura's accounting minimum
		{"P18M", day(2026, 8, 31), day(2028, 2, 29)},
		{"P30D", day(2026, 2, 1), day(2026, 3, 3)},
		{"P2W", day(2026, 12, 25), day(2027, 1, 8)},
		{"P0D", day(2026, 5, 5), day(2026, 5, 5)},
		{"PT12H", day(2026, 5, 5), day(2026, 5, 5).Add(12 * time.Hour)},
		{"P1Y2M3DT4H5M6S", day(2026, 1, 31), time.Date(2027, 4, 3, 13, 35, 6, 0, time.UTC)}, // 31 March 2027, then 3 days
	} {
		p, err := Parse(tc.period)
		if err != nil {
			t.Fatalf("Parse(%q): %v", tc.period, err)
		}
		if got := p.AddTo(tc.from); !got.Equal(tc.want) {
			t.Errorf("%s after %s = %s, want %s", tc.period, tc.from.Format(time.DateOnly), got.Format(time.DateTime), tc.want.Format(time.DateTime))
		}
	}
}

func TestParseRefusesWhatIsNotADuration(t *testing.T) {
	for _, s := range []string{"", "P", "1Y", "PT", "P1", "P1.5Y", "P-1Y", "P1D1Y", "P1H", "PT1D", "P1Y1Y", "p1y", "P 1Y", "P99999999999999999999Y", "P4000000000Y", "P101Y", "PT999999999H"} {
		if _, err := Parse(s); !errors.Is(err, ErrSyntax) {
			t.Errorf("Parse(%q) = %v, want a syntax error", s, err)
		}
	}
}

func TestStringRoundTrips(t *testing.T) {
	for _, s := range []string{"P0D", "P1Y", "P3Y", "P18M", "P2W", "P30D", "PT12H", "P1Y2M3DT4H5M6S", "PT90M"} {
		p, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(p.String())
		if err != nil || again != p {
			t.Errorf("%s prints as %s, which reads back as %v, %v", s, p.String(), again, err)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"P1Y", "P0D", "PT12H", "P1Y2M3W4DT5H6M7S", "P", "P1.5Y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(p.String())
		if err != nil || again != p {
			t.Fatalf("%q parses to %v, printed %q, which reads back as %v, %v", s, p, p.String(), again, err)
		}
		from := time.Date(2026, 1, 31, 0, 0, 0, 0, time.UTC)
		if p.AddTo(from).Before(from) {
			t.Fatalf("%q moves time backwards", s)
		}
	})
}
