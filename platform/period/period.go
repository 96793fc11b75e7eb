// Package period reads retention periods and statutory time limits written
// as ISO 8601 durations ("P1Y", "P3Y", "P30D", "P0D" for at once, "PT12H")
// and adds them to instants the way EU law counts time limits.
//
// Regulation (EEC, Euratom) No 1182/71, Art. 3(2)(c), which the GDPR's
// "one month" (Art. 12(3)) follows: a period expressed in months or years
// ends on the same date in the last month, and when that date does not
// exist there (31 January plus one month), on the last day of that month.
// Go's time.AddDate normalises instead (31 January plus one month is 3
// March), which would move a legal deadline past its end. Days are
// calendar days in the instant's location; the time part is exact.
//
// Statutory deadlines end as the Regulation ends them (DueIn): on a day,
// not at an instant — the day of the event is not counted (Art. 3(1)), the
// period ends with the expiry of the last hour of its last day (Art.
// 3(2)), in the zone the controller counts time in, and a last day that
// is a Saturday, a Sunday or a public holiday gives way to the next
// working day (Art. 3(4)). Public holidays are data with their sources
// (Calendar), for Denmark, Finland and Sweden.
package period

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Period is an ISO 8601 duration split into calendar and exact parts.
type Period struct {
	Years, Months, Weeks, Days int
	// Time is the exact part (hours, minutes, seconds).
	Time time.Duration
}

// limits bound each part at about a century (the exact part too, so that
// hours, minutes and seconds together stay far inside time.Duration's 292
// years): beyond any retention period, and far from any overflow.
var limits = map[byte]int{
	'Y': 100, 'M': 1_200, 'W': 5_300, 'D': 36_600,
	'h': 876_600, 'm': 52_596_000, 's': 3_155_760_000,
}

// ErrSyntax is wrapped by every parse error.
var ErrSyntax = errors.New("not an ISO 8601 duration")

// Parse reads an ISO 8601 duration of the form PnYnMnWnDTnHnMnS, each part
// optional, with whole non-negative numbers. "P0D" is the zero period.
func Parse(s string) (Period, error) {
	var p Period
	fail := func(why string) (Period, error) {
		return Period{}, fmt.Errorf("%w: %q: %s (examples: P1Y, P18M, P30D, P0D, PT12H)", ErrSyntax, s, why)
	}
	rest, ok := strings.CutPrefix(s, "P")
	if !ok {
		return fail("must start with P")
	}
	date, clock, hasTime := strings.Cut(rest, "T")
	if date == "" && !hasTime {
		return fail("names no part")
	}
	if hasTime && clock == "" {
		return fail("T must be followed by hours, minutes or seconds")
	}
	if err := parseParts(date, "YMWD", "YMWD", func(unit byte, n int) {
		switch unit {
		case 'Y':
			p.Years = n
		case 'M':
			p.Months = n
		case 'W':
			p.Weeks = n
		case 'D':
			p.Days = n
		}
	}); err != nil {
		return fail(err.Error())
	}
	if err := parseParts(clock, "HMS", "hms", func(unit byte, n int) {
		switch unit {
		case 'H':
			p.Time += time.Duration(n) * time.Hour
		case 'M':
			p.Time += time.Duration(n) * time.Minute
		case 'S':
			p.Time += time.Duration(n) * time.Second
		}
	}); err != nil {
		return fail(err.Error())
	}
	return p, nil
}

// parseParts reads number-unit pairs whose units appear in order; keys
// names each unit's entry in limits.
func parseParts(s, units, keys string, set func(unit byte, n int)) error {
	next := 0
	for s != "" {
		i := 0
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		switch {
		case i == 0:
			return fmt.Errorf("expected a whole number at %q", s)
		case i == len(s):
			return fmt.Errorf("number %s has no unit", s)
		}
		u := strings.IndexByte(units[next:], s[i])
		if u < 0 {
			return fmt.Errorf("unit %q is unknown or out of order (want %s in that order)", s[i], units)
		}
		n, err := strconv.Atoi(s[:i])
		if limit := limits[keys[next+u]]; err != nil || n > limit {
			return fmt.Errorf("%s%c is beyond the %d%c Lethe accepts", s[:i], s[i], limit, s[i])
		}
		set(s[i], n)
		next += u + 1
		s = s[i+1:]
	}
	return nil
}

// IsZero reports whether p is the zero period ("at once").
func (p Period) IsZero() bool { return p == Period{} }

// String returns p in ISO 8601 form; the zero period is "P0D".
func (p Period) String() string {
	if p.IsZero() {
		return "P0D"
	}
	var b strings.Builder
	b.WriteByte('P')
	for _, part := range []struct {
		n    int
		unit byte
	}{{p.Years, 'Y'}, {p.Months, 'M'}, {p.Weeks, 'W'}, {p.Days, 'D'}} {
		if part.n != 0 {
			b.WriteString(strconv.Itoa(part.n))
			b.WriteByte(part.unit)
		}
	}
	if p.Time != 0 {
		b.WriteByte('T')
		h, m, sec := int(p.Time/time.Hour), int(p.Time%time.Hour/time.Minute), int(p.Time%time.Minute/time.Second)
		for _, part := range []struct {
			n    int
			unit byte
		}{{h, 'H'}, {m, 'M'}, {sec, 'S'}} {
			if part.n != 0 {
				b.WriteString(strconv.Itoa(part.n))
				b.WriteByte(part.unit)
			}
		}
	}
	return b.String()
}

// AddTo returns t moved forward by p: years and months first, ending on the
// same date or on the last day of a shorter month; then weeks and days as
// calendar days; then the exact time part.
func (p Period) AddTo(t time.Time) time.Time {
	y, m, d := t.Date()
	months := int(m) - 1 + p.Months + 12*p.Years
	y += months / 12
	m = time.Month(months%12 + 1)
	if last := daysIn(y, m); d > last {
		d = last
	}
	hh, mm, ss := t.Clock()
	moved := time.Date(y, m, d+7*p.Weeks+p.Days, hh, mm, ss, t.Nanosecond(), t.Location())
	return moved.Add(p.Time)
}

// daysIn returns the number of days of a month.
func daysIn(y int, m time.Month) int {
	return time.Date(y, m+1, 0, 0, 0, 0, 0, time.UTC).Day()
}
