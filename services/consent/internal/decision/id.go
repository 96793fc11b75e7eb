package decision

import "encoding/hex"

// ID is the id of a consent record, objection or restriction as the engine
// keeps it. The service's ids are UUIDs in their canonical text form (36
// characters, lower-case hex, as outbox.NewEventID makes them); those are
// kept as their 16 bytes, 20 fewer than the text and no pointer for the
// garbage collector to follow. Any other id (an imported one, or a test's
// "g1") is kept as text. The zero ID is the empty id.
//
// An ID compares with == as its text does: ParseID keeps a canonical UUID
// only in its binary form, so two IDs of the same text are equal.
type ID struct {
	// uuid holds a canonical UUID when isUUID is set.
	uuid   [16]byte
	isUUID bool
	// text holds any other id.
	text string
}

// ParseID returns the ID of the text s. It never fails: text that is not a
// canonical lower-case UUID is kept as it is.
func ParseID(s string) ID {
	if u, ok := parseUUID(s); ok {
		return ID{uuid: u, isUUID: true}
	}
	return ID{text: s}
}

// String returns the id's text. A UUID is formatted afresh, so the call
// allocates; Check's callers do it once per answer they send.
func (id ID) String() string {
	if !id.isUUID {
		return id.text
	}
	var b [36]byte
	formatUUID(&b, &id.uuid)
	return string(b[:])
}

// IsZero reports whether the id is empty.
func (id ID) IsZero() bool { return !id.isUUID && id.text == "" }

// uuidDashes are the positions of the dashes in a UUID's text.
var uuidDashes = [4]int{8, 13, 18, 23}

// parseUUID parses the canonical text form of a UUID, lower-case only, so
// that formatUUID gives back exactly s.
func parseUUID(s string) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	j := 0
	for i := 0; i < 36; {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			i++
			continue
		}
		hi, ok1 := unhex(s[i])
		lo, ok2 := unhex(s[i+1])
		if !ok1 || !ok2 {
			return u, false
		}
		u[j] = hi<<4 | lo
		j++
		i += 2
	}
	return u, true
}

// unhex decodes one lower-case hex digit.
func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

// formatUUID writes u's canonical text into b.
func formatUUID(b *[36]byte, u *[16]byte) {
	hex.Encode(b[0:8], u[0:4])
	hex.Encode(b[9:13], u[4:6])
	hex.Encode(b[14:18], u[6:8])
	hex.Encode(b[19:23], u[8:10])
	hex.Encode(b[24:36], u[10:16])
	for _, i := range uuidDashes {
		b[i] = '-'
	}
}
