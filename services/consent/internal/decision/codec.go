package decision

import (
	"encoding/binary"
	"errors"
	"fmt"
	"unsafe"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// A subject's state is kept, in the Index and in a snapshot alike, as one
// byte string (its "blob"), laid out as follows; varint is
// encoding/binary's signed (zig-zag) varint and uvarint its unsigned one.
//
//	blob        = uvarint len(subject id), subject id,
//	              uvarint nrecords, [varint base], record*,
//	              uvarint nobjections, objection*,
//	              uvarint nrestrictions, restriction*
//	record      = uvarint purpose, uvarint len(body), body
//	body        = flags byte, [uvarint action], varint givenAt − base,
//	              [varint grantedAt − givenAt], [expiry], id
//	expiry      = uvarint seconds after givenAt (flagExpiresSecs)
//	            | varint expiresAt − givenAt in nanoseconds
//	id          = 16 bytes (flagIDUUID)
//	            | varint UUIDv7 milliseconds − givenAt's milliseconds,
//	              the UUID's last 10 bytes (flagIDUUIDv7)
//	            | uvarint len, text
//	objection   = idkind byte, id, uvarint scope, uvarint n, uvarint purpose*
//	restriction = idkind byte, id, uvarint n, uvarint purpose*
//
// base is the first record's givenAt. Each record carries its length, so a
// decision skips the records of other purposes by reading two bytes each
// and decodes only its own.
//
// A purpose is its index in the tenant's table of purpose ids (names), so
// a record costs one byte for it rather than a string. Times are Unix
// nanoseconds as record keeps them, with differences taken in wrapping
// int64 arithmetic so that beforeAll and never round-trip. The flags byte
// holds the id's kind in bits 0-1, flagGrantedIsGiven, flagNoExpiry and
// flagExpiresSecs, and the action in bits 5-7 (7: an uvarint follows).
// A typical record of a UUIDv7 id and a lifetime in whole seconds takes
// about 22 bytes.
const (
	idText   = 0
	idUUID   = 1
	idUUIDv7 = 2

	flagIDKind         = 0x03
	flagGrantedIsGiven = 0x04
	flagNoExpiry       = 0x08
	flagExpiresSecs    = 0x10
	actionShift        = 5
	actionEscape       = 7
)

// Limits that a blob must respect; they keep a corrupt length from asking
// for gigabytes and bound what one subject may hold.
const (
	maxIDLen      = 1 << 10
	maxBlobLen    = 1 << 20
	maxListLength = 1 << 12
)

// errCorrupt is returned, wrapped, for a blob that does not decode.
var errCorrupt = errors.New("corrupt subject state")

// encoder appends a blob to buf.
type encoder struct{ buf []byte }

func (e *encoder) uvarint(v uint64) { e.buf = binary.AppendUvarint(e.buf, v) }
func (e *encoder) varint(v int64)   { e.buf = binary.AppendVarint(e.buf, v) }
func (e *encoder) str(s string)     { e.uvarint(uint64(len(s))); e.buf = append(e.buf, s...) }

// id appends an id of an objection or restriction: its kind, then its
// bytes.
func (e *encoder) id(id ID) {
	if id.isUUID {
		e.buf = append(e.buf, idUUID)
		e.buf = append(e.buf, id.uuid[:]...)
		return
	}
	e.buf = append(e.buf, idText)
	e.str(id.text)
}

// isV7 reports whether u is a UUID of version 7 and the RFC 9562 variant,
// whose first 48 bits are Unix milliseconds.
func isV7(u *[16]byte) bool { return u[6]>>4 == 7 && u[8]>>6 == 2 }

// uuidMillis returns a UUIDv7's time in Unix milliseconds.
func uuidMillis(u *[16]byte) int64 {
	return int64(u[0])<<40 | int64(u[1])<<32 | int64(u[2])<<24 | int64(u[3])<<16 | int64(u[4])<<8 | int64(u[5])
}

// encodeSubject appends the blob of subject s, whose purposes index
// assigns the indexes, to buf.
func encodeSubject(buf []byte, subject string, s *Subject, index func(purpose string) uint64) []byte {
	e := encoder{buf: buf}
	e.str(subject)
	e.uvarint(uint64(len(s.records)))
	base := int64(0)
	if len(s.records) > 0 {
		base = s.records[0].givenAt
		e.varint(base)
	}
	var body encoder
	for i := range s.records {
		r := &s.records[i]
		e.uvarint(index(r.purpose))
		body.buf = body.record(body.buf[:0], r, base)
		e.uvarint(uint64(len(body.buf)))
		e.buf = append(e.buf, body.buf...)
	}
	e.objectionsAndRestrictions(s, index)
	return e.buf
}

// record appends a record's body to buf.
func (e *encoder) record(buf []byte, r *record, base int64) []byte {
	e.buf = buf
	flags := byte(0)
	switch {
	case r.id.isUUID && isV7(&r.id.uuid):
		flags |= idUUIDv7
	case r.id.isUUID:
		flags |= idUUID
	}
	if r.grantedAt == r.givenAt {
		flags |= flagGrantedIsGiven
	}
	lifetime := r.expiresAt - r.givenAt
	switch {
	case r.expiresAt == never:
		flags |= flagNoExpiry
	case r.expiresAt > r.givenAt && lifetime%1e9 == 0:
		flags |= flagExpiresSecs
	}
	action := uint64(r.action)
	if action < actionEscape {
		flags |= byte(action) << actionShift
	} else {
		flags |= actionEscape << actionShift
	}
	e.buf = append(e.buf, flags)
	if action >= actionEscape {
		e.uvarint(action)
	}
	e.varint(r.givenAt - base)
	if flags&flagGrantedIsGiven == 0 {
		e.varint(r.grantedAt - r.givenAt)
	}
	switch {
	case flags&flagNoExpiry != 0:
	case flags&flagExpiresSecs != 0:
		e.uvarint(uint64(lifetime / 1e9))
	default:
		e.varint(lifetime)
	}
	switch flags & flagIDKind {
	case idUUIDv7:
		e.varint(uuidMillis(&r.id.uuid) - r.givenAt/1e6)
		e.buf = append(e.buf, r.id.uuid[6:]...)
	case idUUID:
		e.buf = append(e.buf, r.id.uuid[:]...)
	default:
		e.str(r.id.text)
	}
	return e.buf
}

// objectionsAndRestrictions appends the lists that end a blob.
func (e *encoder) objectionsAndRestrictions(s *Subject, index func(purpose string) uint64) {
	e.uvarint(uint64(len(s.objections)))
	for i := range s.objections {
		o := &s.objections[i]
		e.id(o.id)
		e.uvarint(uint64(o.Scope))
		e.uvarint(uint64(len(o.Purposes)))
		for _, p := range o.Purposes {
			e.uvarint(index(p))
		}
	}
	e.uvarint(uint64(len(s.restrictions)))
	for i := range s.restrictions {
		r := &s.restrictions[i]
		e.id(r.id)
		e.uvarint(uint64(len(r.Purposes)))
		for _, p := range r.Purposes {
			e.uvarint(index(p))
		}
	}
}

// decoder reads a blob. It never panics on bad input: the first error
// sticks in bad, and every read after it returns zero.
type decoder struct {
	b   []byte
	bad bool
}

func (d *decoder) fail() { d.bad = true; d.b = nil }

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

// bytes returns the next n bytes, shared with the blob.
func (d *decoder) bytes(n uint64) []byte {
	if uint64(len(d.b)) < n {
		d.fail()
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// text returns a length-prefixed string that shares the blob's bytes: the
// Index never changes a blob's bytes once written (it appends and compacts
// into new memory), so the string stays valid, and a decision naming a
// text id does not allocate.
func (d *decoder) text(limit uint64) string {
	n := d.uvarint()
	if n > limit {
		d.fail()
		return ""
	}
	b := d.bytes(n)
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// count reads a list's length, refusing one beyond maxListLength.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > maxListLength {
		d.fail()
		return 0
	}
	return int(n)
}

// id reads an objection's or restriction's id.
func (d *decoder) id() ID {
	switch d.byte() {
	case idUUID:
		var id ID
		copy(id.uuid[:], d.bytes(16))
		id.isUUID = !d.bad
		return id
	case idText:
		return ID{text: d.text(maxIDLen)}
	}
	d.fail()
	return ID{}
}

// body returns the next record's body and skips it.
func (d *decoder) body() decoder {
	n := d.uvarint()
	b := d.bytes(n)
	return decoder{b: b, bad: d.bad}
}

// record reads a record's body, which must be used up exactly.
func (d *decoder) record(r *record, base int64) {
	d.recordFields(r, base)
	if len(d.b) != 0 {
		d.fail()
	}
}

// recordFields reads a record body's fields; base is the blob's base time.
func (d *decoder) recordFields(r *record, base int64) {
	flags := d.byte()
	action := uint64(flags >> actionShift)
	if action == actionEscape {
		action = d.uvarint()
	}
	r.action = consentv1.ConsentAction(action)
	r.givenAt = base + d.varint()
	r.grantedAt = r.givenAt
	if flags&flagGrantedIsGiven == 0 {
		r.grantedAt = r.givenAt + d.varint()
	}
	switch {
	case flags&flagNoExpiry != 0:
		r.expiresAt = never
	case flags&flagExpiresSecs != 0:
		r.expiresAt = r.givenAt + int64(d.uvarint())*1e9
	default:
		r.expiresAt = r.givenAt + d.varint()
	}
	r.id = ID{}
	switch flags & flagIDKind {
	case idUUIDv7:
		ms := r.givenAt/1e6 + d.varint()
		u := &r.id.uuid
		u[0], u[1], u[2], u[3], u[4], u[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
		copy(u[6:], d.bytes(10))
		r.id.isUUID = true
	case idUUID:
		copy(r.id.uuid[:], d.bytes(16))
		r.id.isUUID = true
	case idText:
		r.id.text = d.text(maxIDLen)
	default:
		d.fail()
	}
}

// blobSubject returns the subject id a blob starts with.
func blobSubject(blob []byte) string {
	d := decoder{b: blob}
	return d.text(maxBlobLen)
}

// facts are what a decision reads of a subject for one purpose: the
// purpose's record, the first restriction covering it and the first
// objection covering it. Building them from a blob neither allocates nor
// keeps a reference to anything but the blob.
type facts struct {
	rec          record
	hasRecord    bool
	restricted   bool
	restrictedBy ID
	objected     bool
	objectedBy   ID
}

// factsOf reads the facts for purpose p, of index idx, from a blob. A
// blob the Index wrote always decodes; were one corrupt, the subject would
// read as restricted, which allows nothing but storage, rather than
// answering from half a state.
func factsOf(blob []byte, p *Purpose, idx uint64, f *facts) {
	d := decoder{b: blob}
	d.text(maxBlobLen)
	d.recordFor(idx, f)
	d.objectionFor(p, idx, f)
	d.restrictionFor(idx, f)
	if d.bad {
		*f = facts{restricted: true}
	}
}

// recordFor reads a blob's records and keeps the one of purpose idx.
func (d *decoder) recordFor(idx uint64, f *facts) {
	n := d.count()
	var base int64
	if n > 0 {
		base = d.varint()
	}
	for range n {
		// Nearly always a purpose index and a length of one byte each: read
		// them directly and skip the body, decoding only the purpose's.
		var pi uint64
		var body decoder
		if b := d.b; len(b) >= 2 && b[0] < 0x80 && b[1] < 0x80 && len(b)-2 >= int(b[1]) {
			pi, body.b, d.b = uint64(b[0]), b[2:2+b[1]], b[2+b[1]:]
		} else {
			pi = d.uvarint()
			body = d.body()
		}
		if pi == idx {
			body.record(&f.rec, base)
			f.hasRecord = true
			d.bad = d.bad || body.bad
		}
	}
}

// objectionFor reads a blob's objections and keeps the first covering p,
// of index idx.
func (d *decoder) objectionFor(p *Purpose, idx uint64, f *facts) {
	for range d.count() {
		id := d.id()
		scope := eventsv1.ObjectionScope(d.uvarint())
		covers := scope != scopePurposes && scopeCovers(scope, p)
		for range d.count() {
			if d.uvarint() == idx && scope == scopePurposes {
				covers = true
			}
		}
		if covers && !f.objected {
			f.objected, f.objectedBy = true, id
		}
	}
}

// restrictionFor reads a blob's restrictions and keeps the first covering
// purpose idx.
func (d *decoder) restrictionFor(idx uint64, f *facts) {
	for range d.count() {
		id := d.id()
		k := d.count()
		covers := k == 0
		for range k {
			if d.uvarint() == idx {
				covers = true
			}
		}
		if covers && !f.restricted {
			f.restricted, f.restrictedBy = true, id
		}
	}
}

// decodeSubject rebuilds a Subject from its blob, with purpose indexes
// resolved by names. It checks the blob whole: every purpose index within
// names and nothing left over.
func decodeSubject(blob []byte, names []string, s *Subject) (subject string, err error) {
	d := decoder{b: blob}
	subject = d.text(maxIDLen)
	name := func() string {
		i := d.uvarint()
		if i >= uint64(len(names)) {
			d.fail()
			return ""
		}
		return names[i]
	}
	n := d.count()
	s.records = make([]record, 0, n)
	s.tags = make([]uint32, 0, n)
	var base int64
	if n > 0 {
		base = d.varint()
	}
	for range n {
		var r record
		r.purpose = name()
		body := d.body()
		body.record(&r, base)
		d.bad = d.bad || body.bad
		s.records = append(s.records, r)
		s.tags = append(s.tags, purposeTag(r.purpose))
	}
	s.objections = nil
	for range d.count() {
		o := Objection{}
		o.id = d.id()
		o.Scope = eventsv1.ObjectionScope(d.uvarint())
		o.Purposes = make([]string, d.count())
		for i := range o.Purposes {
			o.Purposes[i] = name()
		}
		o.ID = o.id.String()
		s.objections = append(s.objections, o)
	}
	s.restrictions = nil
	for range d.count() {
		r := Restriction{}
		r.id = d.id()
		r.Purposes = make([]string, d.count())
		for i := range r.Purposes {
			r.Purposes[i] = name()
		}
		r.ID = r.id.String()
		s.restrictions = append(s.restrictions, r)
	}
	if d.bad || len(d.b) != 0 || subject == "" {
		return "", fmt.Errorf("decision: %w", errCorrupt)
	}
	return subject, nil
}

// validBlob reports whether a blob decodes whole, with every purpose index
// below names, without building the subject.
func validBlob(blob []byte, names uint64) bool {
	used, ok := checkBlob(blob)
	return ok && used <= names
}

// checkBlob reports whether a blob decodes whole, and one more than the
// largest purpose index it names (0 for none).
func checkBlob(blob []byte) (used uint64, ok bool) {
	d := decoder{b: blob}
	if d.text(maxIDLen) == "" {
		return 0, false
	}
	purpose := func() {
		used = max(used, d.uvarint()+1)
	}
	purposes := func() {
		for range d.count() {
			purpose()
		}
	}
	var r record
	n := d.count()
	var base int64
	if n > 0 {
		base = d.varint()
	}
	for range n {
		purpose()
		body := d.body()
		body.record(&r, base)
		d.bad = d.bad || body.bad
	}
	for range d.count() {
		d.id()
		d.uvarint()
		purposes()
	}
	for range d.count() {
		d.id()
		purposes()
	}
	return used, !d.bad && len(d.b) == 0 && used <= maxNames
}
