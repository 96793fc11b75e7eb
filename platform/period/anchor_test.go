package period

import (
	"testing"
	"time"
)

func utcDate(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }

// The worked examples of the two accounting acts, as the instant the
// obligation ends (exclusive): "through 31 December 2031" ends at
// 2032-01-01T00:00.
func TestAnchorsCountAsTheAccountingActsDo(t *testing.T) {
	june, err := ParseYearEnd("06-30")
	if err != nil {
		t.Fatal(err)
	}
	p7, p6, p10 := Period{Years: 7}, Period{Years: 6}, Period{Years: 10}
	for _, tc := range []struct {
		name   string
		ye     YearEnd
		anchor Anchor
		period Period
		fact   time.Time
		want   time.Time
	}{
		// Bokföringslag (1999:1078) 7 kap. 2 §: an invoice of 15 March 2024,
		// calendar financial year, is kept through 31 December 2031.
		{"BFL 7:2 calendar year", CalendarYear, EndOfCalendarYearOfFinancialYearEnd, p7, utcDate(2024, 3, 15).Add(14 * time.Hour), utcDate(2032, 1, 1)},
		// ... and with a financial year ending 30 June 2025, through 31
		// December 2032.
		{"BFL 7:2 financial year to 30 June 2025", june, EndOfCalendarYearOfFinancialYearEnd, p7, utcDate(2025, 3, 15), utcDate(2033, 1, 1)},
		// The same invoice date a year earlier falls in the financial year
		// ending 30 June 2024: through 31 December 2031.
		{"BFL 7:2 financial year to 30 June 2024", june, EndOfCalendarYearOfFinancialYearEnd, p7, utcDate(2024, 3, 15), utcDate(2032, 1, 1)},
		// The last day of a financial year is still in it.
		{"BFL 7:2 on the year's last day", june, EndOfCalendarYearOfFinancialYearEnd, p7, utcDate(2025, 6, 30).Add(23 * time.Hour), utcDate(2033, 1, 1)},
		{"BFL 7:2 on the next year's first day", june, EndOfCalendarYearOfFinancialYearEnd, p7, utcDate(2025, 7, 1), utcDate(2034, 1, 1)},
		// Kirjanpitolaki (1336/1997) 2 luku 10 §: a voucher (tosite) six
		// years from the end of the year in which the financial year ended;
		// books (kirjanpitokirjat) ten years from the end of the financial
		// year.
		{"KPL 2:10 voucher", CalendarYear, EndOfCalendarYearOfFinancialYearEnd, p6, utcDate(2024, 3, 15), utcDate(2031, 1, 1)},
		{"KPL 2:10 book", CalendarYear, EndOfFinancialYear, p10, utcDate(2024, 3, 15), utcDate(2035, 1, 1)},
		// A financial year ending 30 April 2017: vouchers until 31 December
		// 2023, books until 30 April 2027.
		{"KPL 2:10 voucher, year to 30 April", YearEnd{time.April, 30}, EndOfCalendarYearOfFinancialYearEnd, p6, utcDate(2016, 9, 1), utcDate(2024, 1, 1)},
		{"KPL 2:10 book, year to 30 April", YearEnd{time.April, 30}, EndOfFinancialYear, p10, utcDate(2016, 9, 1), utcDate(2027, 5, 1)},
		// A financial year ending in February ends on its last day.
		{"year to February, leap year", YearEnd{time.February, 29}, EndOfFinancialYear, Period{}, utcDate(2028, 2, 29), utcDate(2028, 3, 1)},
		{"year to February, common year", YearEnd{time.February, 29}, EndOfFinancialYear, Period{}, utcDate(2027, 2, 28), utcDate(2027, 3, 1)},
		{"at the fact", june, AtFact, p7, utcDate(2024, 3, 15), utcDate(2031, 3, 15)},
		{"zero year end is the calendar year", YearEnd{}, EndOfFinancialYear, Period{}, utcDate(2024, 3, 15), utcDate(2025, 1, 1)},
	} {
		if got := tc.period.AddTo(tc.ye.Anchor(tc.anchor, tc.fact)); !got.Equal(tc.want) {
			t.Errorf("%s: %s from %s = %s, want %s", tc.name, tc.period, tc.fact, got, tc.want)
		}
	}
}

func TestParseYearEnd(t *testing.T) {
	for s, want := range map[string]YearEnd{"": CalendarYear, "12-31": CalendarYear, "06-30": {time.June, 30}, "02-29": {time.February, 29}} {
		got, err := ParseYearEnd(s)
		if err != nil || got != want {
			t.Errorf("ParseYearEnd(%q) = %v, %v; want %v", s, got, err, want)
		}
	}
	for _, bad := range []string{"6-30", "13-01", "00-10", "06-00", "06-32", "0630", "06/30", "ab-cd"} {
		if _, err := ParseYearEnd(bad); err == nil {
			t.Errorf("ParseYearEnd(%q) accepted", bad)
		}
	}
	if s := (YearEnd{}).String(); s != "12-31" {
		t.Errorf("zero YearEnd = %q, want 12-31", s)
	}
}
