package period

import (
	"slices"
	"time"
)

// Regulation 1182/71, Art. 3(4): "Where the last day of a period expressed
// otherwise than in hours is a public holiday, Sunday or Saturday, the
// period shall end with the expiry of the last hour of the following
// working day." Art. 2(1): public holidays are "all days designated as
// such in the Member State ... in which action is to be taken", here the
// controller's.
//
// Each country's holidays are rules with their sources, and movable feasts
// are computed from Easter. A day is listed only when the cited act makes
// it a public holiday: counting a day that is not one would end a
// deadline later than the law, while leaving one out ends it earlier.
// Days that are off by custom or collective agreement but not public
// holidays (Christmas Eve, Midsummer Eve, New Year's Eve; in Denmark
// Grundlovsdag) are therefore not listed, although Finland's and Sweden's
// acts on national time limits (Laki säädettyjen määräaikain laskemisesta
// 150/1930 5 §; lag (1930:173) om beräkning av lagstadgad tid 2 §) also
// spare some of them: those acts count national time limits, not the
// GDPR's.

// Holiday is a public holiday on a date, with the act that makes it one.
type Holiday struct {
	Date Date
	// Name is the holiday's name in the country's language and English.
	Name string
	// Source is the provision that makes the day a public holiday.
	Source string
}

// rule is one public holiday of a country: how its date falls in a year,
// and the days between which the rule was in force.
type rule struct {
	name, source string
	date         func(year int) Date
	// from and until bound the days the rule was in force (inclusive);
	// the zero Date is unbounded.
	from, until Date
}

func fixed(m time.Month, d int) func(int) Date {
	return func(y int) Date { return Date{y, m, d} }
}

// easter returns a day counted from Easter Sunday.
func easter(offset int) func(int) Date {
	return func(y int) Date { return EasterSunday(y).AddDays(offset) }
}

// saturdayFrom returns the Saturday in the seven days starting m-d.
func saturdayFrom(m time.Month, d int) func(int) Date {
	return func(y int) Date {
		first := Date{y, m, d}
		return first.AddDays((int(time.Saturday) - int(first.Weekday()) + 7) % 7)
	}
}

// EasterSunday returns Easter Sunday of the Gregorian calendar in year y
// (the anonymous Gregorian algorithm, Meeus/Jones/Butcher): "the Sunday
// after the full moon on or after 21 March", as lag (1989:253) 2 § puts it.
func EasterSunday(y int) Date {
	a := y % 19
	b, c := y/100, y%100
	d, e := b/4, b%4
	f := (b + 8) / 25
	g := (b - f + 1) / 3
	h := (19*a + b - d - g + 15) % 30
	i, k := c/4, c%4
	l := (32 + 2*e + 2*i - h - k) % 7
	m := (a + 11*h + 22*l) / 451
	month := (h + l - 7*m + 114) / 31
	day := (h+l-7*m+114)%31 + 1
	return Date{y, time.Month(month), day}
}

const (
	// dkSource: the Danish public holidays are the folkekirke's
	// helligdage; statute lists them in lov om detailsalg fra butikker
	// m.v. (lukkeloven) § 2, stk. 1, as worded by LOV nr 182 af
	// 28/02/2023. Grundlovsdag and juleaftensdag, listed there as closing
	// days, are not helligdage.
	dkSource = "DK: folkekirkens helligdage, lov om detailsalg fra butikker m.v. § 2, stk. 1 (LOV nr 182 af 28/02/2023)"
	// dkBededag: store bededag, the fourth Friday after Easter, was a
	// helligdag until LOV nr 182 af 28/02/2023 (lov om
	// konsekvenser ved afskaffelsen af store bededag som helligdag)
	// abolished it from 2024: 5 May 2023 was a holiday, 26 April 2024 not.
	dkBededag = "DK: store bededag, abolished as a helligdag from 2024 by LOV nr 182 af 28/02/2023"
	// fiChurch: the church holidays of Kirkkolaki (1054/1993) 4 luku 3 §,
	// kept by kirkkolaki (652/2023); Midsummer Day is the Saturday after
	// 19 June, All Saints' the Saturday after 30 October.
	fiChurch = "FI: kirkolliset juhlapäivät, kirkkolaki 1054/1993 4:3 § (kirkkolaki 652/2023)"
	// fiVappu: 1 May, a day on which a time limit ends on the next
	// working day (laki säädettyjen määräaikain laskemisesta 150/1930
	// 5 §) and a general paid holiday.
	fiVappu = "FI: vapunpäivä, laki säädettyjen määräaikain laskemisesta 150/1930 5 §"
	// fiIndependence: laki itsenäisyyspäivän viettämisestä yleisenä
	// juhla- ja vapaapäivänä (388/1937) 1 §.
	fiIndependence = "FI: itsenäisyyspäivä, laki 388/1937 1 §"
	// seSource: lag (1989:253) om allmänna helgdagar 1-2 §§ as worded by
	// lag (2004:1320), in force 1 April 2005, which added nationaldagen
	// and removed annandag pingst.
	seSource = "SE: lag (1989:253) om allmänna helgdagar 1-2 §§ (SFS 2004:1320)"
	seBefore = "SE: lag (1989:253) om allmänna helgdagar 1-2 §§ in its original wording, until 31 March 2005 (SFS 2004:1320)"
)

// calendars holds the public holidays Lethe knows, by ISO 3166-1 country.
var calendars = map[string][]rule{
	"DK": {
		{name: "nytårsdag (New Year's Day)", source: dkSource, date: fixed(time.January, 1)},
		{name: "skærtorsdag (Maundy Thursday)", source: dkSource, date: easter(-3)},
		{name: "langfredag (Good Friday)", source: dkSource, date: easter(-2)},
		{name: "påskedag (Easter Sunday)", source: dkSource, date: easter(0)},
		{name: "2. påskedag (Easter Monday)", source: dkSource, date: easter(1)},
		{name: "store bededag (General Prayer Day)", source: dkBededag, date: easter(26), until: Date{2023, time.December, 31}},
		{name: "Kristi himmelfartsdag (Ascension Day)", source: dkSource, date: easter(39)},
		{name: "pinsedag (Whit Sunday)", source: dkSource, date: easter(49)},
		{name: "2. pinsedag (Whit Monday)", source: dkSource, date: easter(50)},
		{name: "juledag (Christmas Day)", source: dkSource, date: fixed(time.December, 25)},
		{name: "2. juledag (Boxing Day)", source: dkSource, date: fixed(time.December, 26)},
	},
	"FI": {
		{name: "uudenvuodenpäivä (New Year's Day)", source: fiChurch, date: fixed(time.January, 1)},
		{name: "loppiainen (Epiphany)", source: fiChurch, date: fixed(time.January, 6)},
		{name: "pitkäperjantai (Good Friday)", source: fiChurch, date: easter(-2)},
		{name: "pääsiäispäivä (Easter Sunday)", source: fiChurch, date: easter(0)},
		{name: "toinen pääsiäispäivä (Easter Monday)", source: fiChurch, date: easter(1)},
		{name: "vapunpäivä (May Day)", source: fiVappu, date: fixed(time.May, 1)},
		{name: "helatorstai (Ascension Day)", source: fiChurch, date: easter(39)},
		{name: "helluntai (Whit Sunday)", source: fiChurch, date: easter(49)},
		{name: "juhannuspäivä (Midsummer Day)", source: fiChurch, date: saturdayFrom(time.June, 20)},
		{name: "pyhäinpäivä (All Saints' Day)", source: fiChurch, date: saturdayFrom(time.October, 31)},
		{name: "itsenäisyyspäivä (Independence Day)", source: fiIndependence, date: fixed(time.December, 6)},
		{name: "joulupäivä (Christmas Day)", source: fiChurch, date: fixed(time.December, 25)},
		{name: "toinen joulupäivä, tapaninpäivä (St Stephen's Day)", source: fiChurch, date: fixed(time.December, 26)},
	},
	"SE": {
		{name: "nyårsdagen (New Year's Day)", source: seSource, date: fixed(time.January, 1)},
		{name: "trettondedag jul (Epiphany)", source: seSource, date: fixed(time.January, 6)},
		{name: "långfredagen (Good Friday)", source: seSource, date: easter(-2)},
		{name: "påskdagen (Easter Sunday)", source: seSource, date: easter(0)},
		{name: "annandag påsk (Easter Monday)", source: seSource, date: easter(1)},
		{name: "första maj (May Day)", source: seSource, date: fixed(time.May, 1)},
		{name: "Kristi himmelsfärdsdag (Ascension Day)", source: seSource, date: easter(39)},
		{name: "pingstdagen (Whit Sunday)", source: seSource, date: easter(49)},
		{name: "annandag pingst (Whit Monday)", source: seBefore, date: easter(50), until: Date{2005, time.March, 31}},
		{name: "nationaldagen (National Day)", source: seSource, date: fixed(time.June, 6), from: Date{2005, time.April, 1}},
		{name: "midsommardagen (Midsummer Day)", source: seSource, date: saturdayFrom(time.June, 20)},
		{name: "alla helgons dag (All Saints' Day)", source: seSource, date: saturdayFrom(time.October, 31)},
		{name: "juldagen (Christmas Day)", source: seSource, date: fixed(time.December, 25)},
		{name: "annandag jul (Boxing Day)", source: seSource, date: fixed(time.December, 26)},
	},
}

// Calendar is the working days of one country under Art. 3(4): every day
// but Saturdays, Sundays and the country's public holidays.
type Calendar struct {
	country string
	rules   []rule
}

// CalendarOf returns the calendar of an ISO 3166-1 alpha-2 country. For a
// country whose holidays Lethe does not know (or none), only Saturdays
// and Sundays are not working days: a period ending on a public holiday
// of that country then ends on the holiday itself, earlier than the law
// would end it and never later.
func CalendarOf(country string) Calendar {
	rules, ok := calendars[country]
	if !ok {
		return Calendar{}
	}
	return Calendar{country: country, rules: rules}
}

// Country returns the country whose holidays the calendar knows; empty
// when it knows only Saturdays and Sundays.
func (c Calendar) Country() string { return c.country }

// Holiday returns the public holiday on d, if d is one.
func (c Calendar) Holiday(d Date) (Holiday, bool) {
	for _, r := range c.rules {
		if r.date(d.Year) == d && r.inForce(d) {
			return Holiday{Date: d, Name: r.name, Source: r.source}, true
		}
	}
	return Holiday{}, false
}

// Holidays returns the public holidays of year y, in date order.
func (c Calendar) Holidays(y int) []Holiday {
	var out []Holiday
	for _, r := range c.rules {
		if d := r.date(y); r.inForce(d) {
			out = append(out, Holiday{Date: d, Name: r.name, Source: r.source})
		}
	}
	slices.SortStableFunc(out, func(a, b Holiday) int {
		switch {
		case a.Date.Before(b.Date):
			return -1
		case b.Date.Before(a.Date):
			return 1
		}
		return 0
	})
	return out
}

func (r rule) inForce(d Date) bool {
	return (r.from == Date{} || !d.Before(r.from)) && (r.until == Date{} || !r.until.Before(d))
}

// IsWorkingDay reports whether d is neither a Saturday, a Sunday nor a
// public holiday.
func (c Calendar) IsWorkingDay(d Date) bool {
	if wd := d.Weekday(); wd == time.Saturday || wd == time.Sunday {
		return false
	}
	_, holiday := c.Holiday(d)
	return !holiday
}

// NextWorkingDay returns d when it is a working day, else the working day
// that follows it (Art. 3(4)), with the public holidays passed over.
func (c Calendar) NextWorkingDay(d Date) (Date, []Holiday) {
	var skipped []Holiday
	for !c.IsWorkingDay(d) {
		if h, ok := c.Holiday(d); ok {
			skipped = append(skipped, h)
		}
		d = d.AddDays(1)
	}
	return d, skipped
}
