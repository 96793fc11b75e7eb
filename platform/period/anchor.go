package period

import (
	"fmt"
	"time"
)

// Accounting acts count their retention periods from the end of a year,
// not from the record's date:
//
//   - Swedish Bokföringslag (1999:1078) 7 kap. 2 §: records are kept "till
//     och med det sjunde året efter utgången av det kalenderår då
//     räkenskapsåret avslutades", through the seventh year after the end of
//     the calendar year in which the financial year ended;
//   - Finnish Kirjanpitolaki (1336/1997) 2 luku 10 §: books
//     (kirjanpitokirjat) ten years "tilikauden päättymisestä", from the end
//     of the financial year; vouchers (tositteet) six years "sen vuoden
//     lopusta, jonka aikana tilikausi on päättynyt", from the end of the
//     year in which the financial year ended.
//
// A period counted "after the fact" is therefore wrong by up to a year for
// a calendar financial year and by up to two for a broken one (an invoice
// of July 2024 in a financial year ending 30 June 2025 is kept through
// 2032, not until July 2031). Anchor moves the fact to the end of its year
// before the period is added.

// Anchor is the instant a period counts from.
type Anchor int

const (
	// AtFact counts from the fact itself.
	AtFact Anchor = iota
	// EndOfFinancialYear counts from the end of the financial year the
	// fact falls in.
	EndOfFinancialYear
	// EndOfCalendarYearOfFinancialYearEnd counts from the end of the
	// calendar year in which that financial year ended.
	EndOfCalendarYearOfFinancialYearEnd
)

// String names the anchor as explanations word it.
func (a Anchor) String() string {
	switch a {
	case AtFact:
		return "the fact"
	case EndOfFinancialYear:
		return "the end of its financial year"
	case EndOfCalendarYearOfFinancialYearEnd:
		return "the end of the calendar year in which its financial year ended"
	}
	return fmt.Sprintf("Anchor(%d)", int(a))
}

// Known reports whether a is one of the anchors above.
func (a Anchor) Known() bool { return a >= AtFact && a <= EndOfCalendarYearOfFinancialYearEnd }

// YearEnd is the last day of a financial year, as month and day. The zero
// value is the calendar year (31 December), which is also what an unset
// tenant setting means.
type YearEnd struct {
	Month time.Month
	Day   int
}

// CalendarYear is the financial year that is the calendar year.
var CalendarYear = YearEnd{Month: time.December, Day: 31}

// ParseYearEnd reads "MM-DD" ("06-30"); the empty string is CalendarYear.
// A day past the end of the month ("02-29", "04-31") means the month's
// last day, which is how a financial year "ending in February" ends in
// every year.
func ParseYearEnd(s string) (YearEnd, error) {
	if s == "" {
		return CalendarYear, nil
	}
	var m, d int
	if len(s) != 5 || s[2] != '-' {
		return YearEnd{}, fmt.Errorf("period: financial year end %q is not MM-DD", s)
	}
	if _, err := fmt.Sscanf(s, "%02d-%02d", &m, &d); err != nil || m < 1 || m > 12 || d < 1 || d > 31 {
		return YearEnd{}, fmt.Errorf("period: financial year end %q is not MM-DD with a month 01-12 and a day 01-31", s)
	}
	return YearEnd{Month: time.Month(m), Day: d}, nil
}

// String returns the year end as "MM-DD".
func (y YearEnd) String() string {
	y = y.normal()
	return fmt.Sprintf("%02d-%02d", int(y.Month), y.Day)
}

func (y YearEnd) normal() YearEnd {
	if y.Month == 0 {
		return CalendarYear
	}
	return y
}

// endIn returns the instant the financial year ending in calendar year
// year ends: midnight after its last day, in loc.
func (y YearEnd) endIn(year int, loc *time.Location) time.Time {
	y = y.normal()
	d := y.Day
	if last := daysIn(year, y.Month); d > last {
		d = last
	}
	return time.Date(year, y.Month, d+1, 0, 0, 0, 0, loc)
}

// FinancialYearEnd returns the instant the financial year containing t
// ends (exclusive: the first instant of the next financial year), at
// midnight in t's location.
func (y YearEnd) FinancialYearEnd(t time.Time) time.Time {
	end := y.endIn(t.Year(), t.Location())
	if !t.Before(end) {
		end = y.endIn(t.Year()+1, t.Location())
	}
	return end
}

// Anchor returns the instant a period anchored at a counts from, for a
// fact at t.
func (y YearEnd) Anchor(a Anchor, t time.Time) time.Time {
	switch a {
	case EndOfFinancialYear:
		return y.FinancialYearEnd(t)
	case EndOfCalendarYearOfFinancialYearEnd:
		// The financial year's last day is the day before its exclusive
		// end; the calendar year of that day ends at the next 1 January.
		last := y.FinancialYearEnd(t).AddDate(0, 0, -1)
		return time.Date(last.Year()+1, time.January, 1, 0, 0, 0, 0, t.Location())
	}
	return t
}
