package period

import (
	"testing"
	"time"
)

func date(y int, m time.Month, d int) Date { return Date{y, m, d} }

// TestEasterSunday against the dates the almanacs publish, the earliest
// (22 March) and the latest (25 April) possible included.
func TestEasterSunday(t *testing.T) {
	for _, want := range []Date{
		date(2023, 4, 9), date(2024, 3, 31), date(2025, 4, 20), date(2026, 4, 5), date(2027, 3, 28),
		date(2028, 4, 16), date(2038, 4, 25), date(1943, 4, 25), date(1818, 3, 22), date(2285, 3, 22),
	} {
		if got := EasterSunday(want.Year); got != want {
			t.Errorf("Easter %d = %s, want %s", want.Year, got, want)
		}
	}
}

// TestLastDayRegulation1182Art3 checks Art. 3(1) and 3(2): the day of the
// event is not counted, a period of months ends on the same date or the
// last day of a shorter month, a period of days on its last day.
func TestLastDayRegulation1182Art3(t *testing.T) {
	month, fortnight := Period{Months: 1}, Period{Days: 14}
	for _, tc := range []struct {
		p          Period
		from, want Date
	}{
		{month, date(2026, 1, 31), date(2026, 2, 28)},
		{month, date(2028, 1, 31), date(2028, 2, 29)},
		{month, date(2026, 1, 15), date(2026, 2, 15)},
		{month, date(2026, 12, 31), date(2027, 1, 31)},
		{Period{Months: 3}, date(2026, 1, 31), date(2026, 4, 30)},
		{fortnight, date(2026, 1, 31), date(2026, 2, 14)},
		{Period{Weeks: 1}, date(2026, 12, 29), date(2027, 1, 5)},
	} {
		if got := tc.p.LastDay(tc.from); got != tc.want {
			t.Errorf("%s from %s ends on %s, want %s", tc.p, tc.from, got, tc.want)
		}
	}
}

// TestDueInMovesPastWeekendsAndHolidays: Art. 3(4) of Regulation 1182/71
// moves a last day on a Saturday, Sunday or public holiday to the end of
// the next working day, with each country's holidays.
func TestDueInMovesPastWeekendsAndHolidays(t *testing.T) {
	month := Period{Months: 1}
	for _, tc := range []struct {
		name, country string
		received      Date
		want          Date
		skipped       int
	}{
		// 31 January 2026 + one month = Saturday 28 February → Monday 2 March.
		{"Saturday", "DK", date(2026, 1, 31), date(2026, 3, 2), 0},
		{"Sunday", "", date(2027, 1, 28), date(2027, 3, 1), 0},
		// Easter Monday 2026 is 6 April in all three.
		{"Easter Monday DK", "DK", date(2026, 3, 6), date(2026, 4, 7), 1},
		{"Easter Monday FI", "FI", date(2026, 3, 6), date(2026, 4, 7), 1},
		{"Easter Monday SE", "SE", date(2026, 3, 6), date(2026, 4, 7), 1},
		// Maundy Thursday 2 April 2026 is a holiday in Denmark only; the
		// next day is Good Friday everywhere, then Easter.
		{"Maundy Thursday DK", "DK", date(2026, 3, 2), date(2026, 4, 7), 4},
		{"Maundy Thursday SE", "SE", date(2026, 3, 2), date(2026, 4, 2), 0},
		// Christmas Day 2026 is a Friday: Boxing Day, then the weekend.
		{"Christmas DK", "DK", date(2026, 11, 25), date(2026, 12, 28), 2},
		{"Christmas FI", "FI", date(2026, 11, 25), date(2026, 12, 28), 2},
		{"Christmas SE", "SE", date(2026, 11, 25), date(2026, 12, 28), 2},
		// Christmas Eve is no public holiday under any of the acts.
		{"Christmas Eve", "FI", date(2026, 11, 24), date(2026, 12, 24), 0},
		// A country whose holidays Lethe does not know: Saturdays and
		// Sundays only, so the deadline ends on the holiday, earlier.
		{"unknown country", "DE", date(2026, 11, 25), date(2026, 12, 25), 0},
		{"no country", "", date(2026, 3, 6), date(2026, 4, 6), 0},
		// Store bededag: 5 May 2023 was a holiday (→ Monday 8 May);
		// 26 April 2024 was not (LOV nr 182 af 28/02/2023).
		{"store bededag 2023", "DK", date(2023, 4, 5), date(2023, 5, 8), 1},
		{"store bededag 2024", "DK", date(2024, 3, 26), date(2024, 4, 26), 0},
		// Finland's independence day and May Day; Sweden's national day.
		{"itsenäisyyspäivä", "FI", date(2027, 11, 6), date(2027, 12, 7), 1},
		{"vappu", "FI", date(2026, 4, 1), date(2026, 5, 4), 1},
		{"nationaldagen", "SE", date(2029, 5, 6), date(2029, 6, 7), 1},
		{"not DK's national day", "DK", date(2029, 5, 5), date(2029, 6, 5), 0},
	} {
		received := time.Date(tc.received.Year, tc.received.Month, tc.received.Day, 10, 0, 0, 0, time.UTC)
		due := DueIn(received, month, time.UTC, CalendarOf(tc.country))
		if due.LastDay != tc.want || len(due.Skipped) != tc.skipped {
			t.Errorf("%s: received %s, due %s (skipping %v), want %s skipping %d holidays", tc.name, tc.received, due.LastDay, due.Skipped, tc.want, tc.skipped)
		}
		if want := time.Date(tc.want.Year, tc.want.Month, tc.want.Day, 23, 59, 59, 999_999_999, time.UTC); !due.At.Equal(want) {
			t.Errorf("%s: ends at %s, want the end of the day %s", tc.name, due.At, want)
		}
	}
}

// TestDueInCountsInTheControllersZone: a Helsinki controller's deadline is
// counted from the day of receipt in Helsinki and ends at 23:59:59 there,
// which is 21:59:59 UTC in winter; a date taken in UTC would end it two
// hours late, or a day late when the receipt fell before midnight UTC.
func TestDueInCountsInTheControllersZone(t *testing.T) {
	helsinki, err := LoadZone("Europe/Helsinki")
	if err != nil {
		t.Fatal(err)
	}
	// 23:30 UTC on 14 January is 01:30 on 15 January in Helsinki.
	received := time.Date(2026, 1, 14, 23, 30, 0, 0, time.UTC)
	due := DueIn(received, Period{Months: 1}, helsinki, CalendarOf("FI"))
	// 15 February 2026 is a Sunday: Monday 16 February, to 23:59:59 Helsinki.
	if due.Counted != date(2026, 2, 15) || due.LastDay != date(2026, 2, 16) {
		t.Fatalf("due = %+v", due)
	}
	if want := time.Date(2026, 2, 16, 21, 59, 59, 999_999_999, time.UTC); !due.At.Equal(want) {
		t.Fatalf("ends at %s, want %s (23:59:59.999999999 in Helsinki)", due.At.UTC(), want)
	}
	if h, m, s := due.At.In(helsinki).Clock(); h != 23 || m != 59 || s != 59 {
		t.Fatalf("ends at %s Helsinki time", due.At.In(helsinki))
	}
	// A day that loses an hour to summer time still ends at its end.
	spring := date(2026, 3, 29).EndIn(helsinki)
	if want := time.Date(2026, 3, 29, 20, 59, 59, 999_999_999, time.UTC); !spring.Equal(want) {
		t.Fatalf("29 March 2026 ends in Helsinki at %s, want %s", spring.UTC(), want)
	}
}

// TestHolidaysKeepTheirEffectiveDates: Sweden replaced annandag pingst by
// nationaldagen from 1 April 2005 (SFS 2004:1320); Denmark abolished store
// bededag from 2024 (LOV nr 182 af 28/02/2023).
func TestHolidaysKeepTheirEffectiveDates(t *testing.T) {
	se, dk := CalendarOf("SE"), CalendarOf("DK")
	for _, tc := range []struct {
		cal     Calendar
		d       Date
		holiday bool
	}{
		{se, date(2004, 5, 31), true},  // annandag pingst 2004
		{se, date(2005, 5, 16), false}, // no longer
		{se, date(2004, 6, 6), false},  // nationaldagen not yet a holiday
		{se, date(2005, 6, 6), true},
		{dk, date(2023, 5, 5), true}, // store bededag 2023
		{dk, date(2024, 4, 26), false},
		{dk, date(2026, 6, 5), false},               // grundlovsdag: a closing day, not a helligdag
		{dk, date(2026, 12, 24), false},             // juleaftensdag likewise
		{CalendarOf("FI"), date(2026, 6, 20), true}, // juhannuspäivä: the Saturday of 20-26 June
		{CalendarOf("FI"), date(2026, 6, 19), false},
		{CalendarOf("SE"), date(2026, 10, 31), true}, // alla helgons dag
	} {
		h, got := tc.cal.Holiday(tc.d)
		if got != tc.holiday {
			t.Errorf("%s %s: holiday = %v (%s), want %v", tc.cal.Country(), tc.d, got, h.Name, tc.holiday)
		}
		if got && h.Source == "" {
			t.Errorf("%s %s: %s has no source", tc.cal.Country(), tc.d, h.Name)
		}
	}
	if n := len(dk.Holidays(2023)); n != 11 {
		t.Errorf("Denmark had %d holidays in 2023, want 11", n)
	}
	if n := len(dk.Holidays(2024)); n != 10 {
		t.Errorf("Denmark had %d holidays in 2024, want 10", n)
	}
	hs := se.Holidays(2026)
	for i := 1; i < len(hs); i++ {
		if hs[i].Date.Before(hs[i-1].Date) {
			t.Fatalf("holidays out of order: %v", hs)
		}
	}
	if CalendarOf("DE").Country() != "" || CalendarOf("DE").IsWorkingDay(date(2026, 12, 26)) {
		t.Fatal("an unknown country's calendar knows only Saturdays and Sundays")
	}
}

func TestLoadZoneAndDefaults(t *testing.T) {
	for _, bad := range []string{"", "Local", "Europe/Atlantis", "../etc/passwd"} {
		if _, err := LoadZone(bad); err == nil {
			t.Errorf("LoadZone(%q) succeeded", bad)
		}
	}
	for country, want := range map[string]string{"DK": "Europe/Copenhagen", "FI": "Europe/Helsinki", "SE": "Europe/Stockholm", "US": "UTC", "": "UTC"} {
		if got := DefaultZone(country); got != want {
			t.Errorf("DefaultZone(%q) = %s, want %s", country, got, want)
		}
	}
	for country, zone := range capitalZones {
		if _, err := LoadZone(zone); err != nil {
			t.Errorf("%s: %v", country, err)
		}
	}
}
