package period

import (
	"fmt"
	"sync"
	"time"
	// Zones are compiled in: a deadline must not depend on whether the
	// host that runs Lethe has a zoneinfo database.
	_ "time/tzdata"
)

// Date is a calendar day without a time or a zone: the unit in which
// Regulation 1182/71 counts periods of days, weeks, months and years.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// DateOf returns the day t falls on in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// NewDate returns the date y-m-d, normalised as time.Date normalises
// (the 32nd of January is the 1st of February).
func NewDate(y int, m time.Month, d int) Date {
	return DateOf(time.Date(y, m, d, 12, 0, 0, 0, time.UTC))
}

// AddDays returns the date n days later (earlier when n < 0).
func (d Date) AddDays(n int) Date { return NewDate(d.Year, d.Month, d.Day+n) }

// Weekday returns the day of the week.
func (d Date) Weekday() time.Weekday {
	return time.Date(d.Year, d.Month, d.Day, 12, 0, 0, 0, time.UTC).Weekday()
}

// Before reports whether d is earlier than e.
func (d Date) Before(e Date) bool {
	if d.Year != e.Year {
		return d.Year < e.Year
	}
	if d.Month != e.Month {
		return d.Month < e.Month
	}
	return d.Day < e.Day
}

// String returns the date as YYYY-MM-DD.
func (d Date) String() string { return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day) }

// EndIn returns the last instant of the day in loc: the expiry of its last
// hour (Art. 3(2)), one nanosecond before the next day begins. It is
// counted from the next midnight, so a day of 23 or 25 hours (a change of
// summer time) ends when it ends.
func (d Date) EndIn(loc *time.Location) time.Time {
	return time.Date(d.Year, d.Month, d.Day+1, 0, 0, 0, 0, loc).Add(-time.Nanosecond)
}

// LastDay returns the last day of period p running from an event on day
// from, as Regulation 1182/71 counts it: the day of the event is not
// counted (Art. 3(1)); a period of days ends on the last of them (Art.
// 3(2)(b)); a period of weeks, months or years ends on the day of the last
// week with the same weekday, or in the last month with the same date, or
// on the last day of that month when it has no such date (Art. 3(2)(c)).
// Months and years are counted before weeks and days. The exact part
// (hours) is not a count of days and is ignored: callers count periods of
// days, weeks, months or years.
func (p Period) LastDay(from Date) Date {
	months := int(from.Month) - 1 + p.Months + 12*p.Years
	y := from.Year + months/12
	m := time.Month(months%12 + 1)
	d := min(from.Day, daysIn(y, m))
	return NewDate(y, m, d+7*p.Weeks+p.Days)
}

// Due is the end of a statutory period as Regulation 1182/71 ends it.
type Due struct {
	// Counted is the last day of the period before Art. 3(4).
	Counted Date
	// LastDay is the day the period ends: Counted, or the first working
	// day after it when Counted is a Saturday, a Sunday or a public
	// holiday (Art. 3(4)).
	LastDay Date
	// At is the end of LastDay in the zone the period is counted in.
	At time.Time
	// Skipped are the public holidays from Counted to the day before
	// LastDay (a holiday on a Sunday too; plain Saturdays and Sundays are
	// not listed).
	Skipped []Holiday
}

// DueIn returns the end of period p running from the event at t, counted
// in loc with the public holidays of cal: the last day by Art. 3(1) and
// 3(2), moved past Saturdays, Sundays and public holidays by Art. 3(4), and
// ending with the expiry of its last hour in loc.
func DueIn(t time.Time, p Period, loc *time.Location, cal Calendar) Due {
	counted := p.LastDay(DateOf(t.In(loc)))
	last, skipped := cal.NextWorkingDay(counted)
	return Due{Counted: counted, LastDay: last, At: last.EndIn(loc), Skipped: skipped}
}

// zones caches loaded locations: time.LoadLocation reads and parses the
// zone's data on every call.
var zones sync.Map

// LoadZone returns the location of an IANA time zone name ("Europe/Oslo",
// "UTC"). "Local" (the host's zone) and the empty name are refused: a
// deadline must not depend on where Lethe runs.
func LoadZone(name string) (*time.Location, error) {
	if name == "" || name == "Local" {
		return nil, fmt.Errorf("%q is not an IANA time zone name (examples: Europe/Copenhagen, UTC)", name)
	}
	if loc, ok := zones.Load(name); ok {
		return loc.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("%q is not an IANA time zone name (examples: Europe/Copenhagen, UTC): %w", name, err)
	}
	zones.Store(name, loc)
	return loc, nil
}

// capitalZones is the zone of each EEA state's capital (IANA tz database,
// zone1970.tab). A controller established elsewhere in its country (the
// Azores, the Canaries, an outermost region) sets its zone.
var capitalZones = map[string]string{
	"AT": "Europe/Vienna", "BE": "Europe/Brussels", "BG": "Europe/Sofia", "CY": "Asia/Nicosia",
	"CZ": "Europe/Prague", "DE": "Europe/Berlin", "DK": "Europe/Copenhagen", "EE": "Europe/Tallinn",
	"ES": "Europe/Madrid", "FI": "Europe/Helsinki", "FR": "Europe/Paris", "GR": "Europe/Athens",
	"HR": "Europe/Zagreb", "HU": "Europe/Budapest", "IE": "Europe/Dublin", "IS": "Atlantic/Reykjavik",
	"IT": "Europe/Rome", "LI": "Europe/Vaduz", "LT": "Europe/Vilnius", "LU": "Europe/Luxembourg",
	"LV": "Europe/Riga", "MT": "Europe/Malta", "NL": "Europe/Amsterdam", "NO": "Europe/Oslo",
	"PL": "Europe/Warsaw", "PT": "Europe/Lisbon", "RO": "Europe/Bucharest", "SE": "Europe/Stockholm",
	"SI": "Europe/Ljubljana", "SK": "Europe/Bratislava",
}

// DefaultZone returns the zone a controller established in country counts
// time in when it names none: its capital's zone for an EEA state, UTC for
// any other country or none. UTC is late for a controller east of it
// (the end of a day in UTC is after the end of that day in Helsinki), so
// such a controller outside the EEA sets its zone.
func DefaultZone(country string) string {
	if z, ok := capitalZones[country]; ok {
		return z
	}
	return "UTC"
}
