package decision

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
	"time"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

// uuidV7 returns a UUIDv7 text for the time t, as outbox.NewEventID makes
// them.
func uuidV7(rng *rand.Rand, t time.Time) string {
	var b [16]byte
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	ms := uint64(t.UnixMilli())
	b[0], b[1], b[2], b[3], b[4], b[5] = byte(ms>>40), byte(ms>>32), byte(ms>>24), byte(ms>>16), byte(ms>>8), byte(ms)
	b[6] = b[6]&0x0f | 0x70
	b[8] = b[8]&0x3f | 0x80
	var s [36]byte
	formatUUID(&s, &b)
	return string(s[:])
}

// snapshotPurposes are the purposes of the generated tenants: every kind
// the engine decides on, with a notice change and an age gate.
var snapshotPurposes = []Purpose{necessary, functional, material(statistics, at(40)), marketing, newsletter, transactional, backup}

// genIndex builds an index of two tenants with n subjects each, a random
// mix of grants (UUIDv7 ids, some imported with text ids), renewals,
// denials, withdrawals, expiries, objections and restrictions, and
// returns the subjects.
func genIndex(t testing.TB, n int) (*Index, []string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(20, 26))
	ix := NewIndex()
	for _, tenant := range []string{"clio", "clevio"} {
		for _, p := range snapshotPurposes {
			ix.PutPurpose(tenant, p)
		}
		ix.SetRevision(tenant, uint64(n))
	}
	ix.SetCountry("clio", "DK")
	subjects := make([]string, n)
	for i := range subjects {
		subjects[i] = fmt.Sprintf("sub_%06d", i)
		for _, tenant := range []string{"clio", "clevio"} {
			ix.Update(tenant, subjects[i], func(s *Subject) { genSubject(rng, s) })
		}
	}
	return ix, subjects
}

// genSubject gives s a random history.
func genSubject(rng *rand.Rand, s *Subject) {
	when := at(rng.IntN(100)).Add(time.Duration(rng.Int64N(int64(day))))
	for _, p := range snapshotPurposes {
		for range rng.IntN(3) {
			when = when.Add(time.Duration(rng.Int64N(int64(30 * day))))
			id := uuidV7(rng, when)
			if rng.IntN(8) == 0 {
				id = fmt.Sprintf("import-%d", rng.IntN(1000))
			}
			c := Consent{Action: consentv1.ConsentAction(1 + rng.IntN(4)), RecordID: id, RecordedAt: when}
			if p.Lifetime > 0 {
				c.ExpiresAt = when.Add(p.Lifetime)
			}
			if rng.IntN(5) == 0 {
				c.GivenAt = when.Add(-time.Duration(rng.Int64N(int64(10 * day))))
			}
			if rng.IntN(20) == 0 {
				c.Action = consentv1.ConsentAction(9) // unknown to the engine
			}
			s.SetConsent(p.ID, c)
		}
	}
	if rng.IntN(10) == 0 {
		s.AddObjection(Objection{ID: uuidV7(rng, when), Scope: eventsv1.ObjectionScope(1 + rng.IntN(3)), Purposes: []string{functional.ID, "undeclared"}})
	}
	if rng.IntN(20) == 0 {
		r := Restriction{ID: fmt.Sprintf("res-%d", rng.IntN(100))}
		if rng.IntN(2) == 0 {
			r.Purposes = []string{marketing.ID}
		}
		s.AddRestriction(r)
	}
}

// sameDecisions fails unless two indexes decide alike on every subject
// and purpose of both tenants, at times around the generated ones, and
// hold the same latest record.
func sameDecisions(t *testing.T, want, got *Index, subjects []string) {
	t.Helper()
	attrs := []Attributes{{}, {Age: 14}, {Age: 14, Country: "DE"}, {GPC: true}}
	for _, tenant := range []string{"clio", "clevio"} {
		for _, sub := range subjects {
			for _, p := range append(snapshotPurposes, Purpose{ID: "undeclared"}) {
				for day := -10; day < 1500; day += 97 {
					for _, a := range attrs {
						w, g := want.Check(tenant, sub, p.ID, a, at(day)), got.Check(tenant, sub, p.ID, a, at(day))
						if w != g {
							t.Fatalf("%s/%s/%s at day %d: %+v, want %+v", tenant, sub, p.ID, day, g, w)
						}
					}
				}
				wc, wok := want.Consent(tenant, sub, p.ID)
				gc, gok := got.Consent(tenant, sub, p.ID)
				if wok != gok || wc != gc {
					t.Fatalf("%s/%s/%s: Consent %+v, want %+v", tenant, sub, p.ID, gc, wc)
				}
			}
		}
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	ix, subjects := genIndex(t, 2000)
	var buf bytes.Buffer
	if err := ix.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	t.Logf("snapshot of 2 tenants x %d subjects: %d bytes", len(subjects), buf.Len())
	got := NewIndex()
	revs, err := got.ReadSnapshot(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if revs["clio"] != 2000 || revs["clevio"] != 2000 || len(revs) != 2 || got.Revision("clio") != 2000 {
		t.Errorf("revisions %v, want 2000 for both", revs)
	}
	if c, ok := got.Country("clio"); !ok || c != "DK" {
		t.Errorf("clio's country %q, %v", c, ok)
	}
	if _, ok := got.Country("clevio"); ok {
		t.Error("clevio has a country after the round trip")
	}
	for _, p := range snapshotPurposes {
		if g, _ := got.Purpose("clio", p.ID); fmt.Sprint(g) != fmt.Sprint(clonePurpose(p)) {
			t.Errorf("purpose %s = %+v, want %+v", p.ID, g, p)
		}
	}
	if g, w := got.Stats(), ix.Stats(); g.Subjects != w.Subjects || g.Tenants != 2 {
		t.Errorf("stats %+v, want %+v", g, w)
	}
	sameDecisions(t, ix, got, subjects)

	// A subject changed after the restore is kept apart from the rest.
	got.Update("clio", subjects[0], func(s *Subject) { s.AddRestriction(Restriction{ID: "later"}) })
	if d := got.Check("clio", subjects[0], necessary.ID, Attributes{}, at(1)); d.Reason != reasonRestricted {
		t.Errorf("after a restriction: %+v", d)
	}
}

// TestSnapshotOneTenant writes one tenant and reads it into an index that
// holds others: that tenant is replaced whole, the others kept.
func TestSnapshotOneTenant(t *testing.T) {
	ix, subjects := genIndex(t, 300)
	var buf bytes.Buffer
	if err := ix.WriteSnapshot(&buf, "clevio"); err != nil {
		t.Fatal(err)
	}
	got := NewIndex()
	got.PutPurpose("other", necessary)
	got.Update("clevio", "stale", restrict(Restriction{ID: "old"}))
	revs, err := got.ReadSnapshot(&buf, int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if len(revs) != 1 || revs["clevio"] != 300 {
		t.Errorf("revisions %v", revs)
	}
	if _, ok := got.Purpose("other", necessary.ID); !ok {
		t.Error("a tenant the snapshot does not carry was dropped")
	}
	if d := got.Check("clevio", "stale", necessary.ID, Attributes{}, at(1)); d.Reason != reasonNecessary {
		t.Errorf("state from before the snapshot survived: %+v", d)
	}
	for _, sub := range subjects {
		for _, p := range snapshotPurposes {
			if w, g := ix.Check("clevio", sub, p.ID, Attributes{}, at(50)), got.Check("clevio", sub, p.ID, Attributes{}, at(50)); w != g {
				t.Fatalf("%s/%s: %+v, want %+v", sub, p.ID, g, w)
			}
		}
	}
	// An unknown tenant is written empty.
	buf.Reset()
	if err := ix.WriteSnapshot(&buf, "nobody"); err != nil {
		t.Fatal(err)
	}
	if revs, err := NewIndex().ReadSnapshot(&buf, int64(buf.Len())); err != nil || revs["nobody"] != 0 {
		t.Errorf("empty tenant: %v, %v", revs, err)
	}
}

// allocated returns the bytes f allocates on the heap.
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestSnapshotRefusesDamage cuts a snapshot at every length and flips
// every byte of it: each is refused with ErrSnapshot, leaves the index it
// was read into as it was, and costs no more memory than reading the
// intact snapshot does (a flipped count once made a replica allocate
// every byte of memory the machine had).
func TestSnapshotRefusesDamage(t *testing.T) {
	ix, _ := genIndex(t, 20)
	var buf bytes.Buffer
	if err := ix.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	target := NewIndex()
	target.PutPurpose("clio", necessary)
	target.Update("clio", "kept", restrict(Restriction{ID: "r"}))
	intact := func() {
		t.Helper()
		if d := target.Check("clio", "kept", necessary.ID, Attributes{}, at(1)); d.Reason != reasonRestricted {
			t.Fatalf("the index changed: %+v", d)
		}
		if target.Revision("clio") != 0 {
			t.Fatal("the revision changed")
		}
	}
	// Reading the intact snapshot allocates the index it holds; a damaged
	// one may claim sizes up to its length instead of those it holds, and
	// gets that much again.
	budget := 2*allocated(func() { _, _ = NewIndex().ReadSnapshot(bytes.NewReader(good), int64(len(good))) }) + uint64(len(good))
	read := func(what string, b []byte) {
		t.Helper()
		var err error
		if n := allocated(func() { _, err = target.ReadSnapshot(bytes.NewReader(b), int64(len(b))) }); n > budget {
			t.Errorf("%s: allocated %d bytes, an intact snapshot %d", what, n, budget)
		}
		if !errors.Is(err, ErrSnapshot) {
			t.Fatalf("%s: err %v, want ErrSnapshot", what, err)
		}
		intact()
	}
	for n := range len(good) {
		read(fmt.Sprintf("cut at %d of %d", n, len(good)), good[:n])
	}
	for i := range good {
		bad := bytes.Clone(good)
		bad[i] ^= 0x20
		read(fmt.Sprintf("byte %d flipped", i), bad)
	}
	read("trailing data", append(bytes.Clone(good), 0))
	bad := bytes.Clone(good)
	bad[len(snapshotMagic)] = 2
	_, err := target.ReadSnapshot(bytes.NewReader(bad), int64(len(bad)))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("version 2")) {
		t.Errorf("another version: %v", err)
	}
	if _, err := target.ReadSnapshot(bytes.NewReader(good), int64(len(good))); err != nil {
		t.Fatalf("the intact snapshot: %v", err)
	}
}

// TestSnapshotRefusesSizesItCannotHold reads a snapshot, whole and with
// the right checksum, whose tenant claims more subjects and bytes than
// the snapshot could hold: it is refused before the reader sizes a table
// by them.
func TestSnapshotRefusesSizesItCannotHold(t *testing.T) {
	for _, c := range []struct {
		subjects, bytes int
		want            string
	}{
		{1 << 22, 1 << 28, "268435456 bytes of subjects"},
		{1 << 22, 1 << 10, "4194304 subjects in 1024 bytes"},
	} {
		var buf bytes.Buffer
		sw := newSnapshotWriter(&buf)
		sw.head("t", 1, nil, c.subjects, c.bytes)
		sw.tail(nil, &nameTable{})
		if err := sw.close(); err != nil {
			t.Fatal(err)
		}
		// The reader is told the snapshot may hold 4 KiB, more than it
		// does, which only loosens the bound.
		var err error
		if n := allocated(func() { _, err = NewIndex().ReadSnapshot(&buf, 1<<12) }); n > 1<<20 {
			t.Errorf("%d subjects in %d bytes: allocated %d bytes", c.subjects, c.bytes, n)
		}
		if !errors.Is(err, ErrSnapshot) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%d subjects in %d bytes: err %v, want %q", c.subjects, c.bytes, err, c.want)
		}
	}
}

// TestBlobRoundTrip encodes generated subjects and decodes them back to
// the same records, objections and restrictions, and checks the encoding
// is compact: a UUIDv7 id takes 11 bytes, not 36.
func TestBlobRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	ix := NewIndex()
	for _, p := range snapshotPurposes {
		ix.PutPurpose("t", p)
	}
	tn := ix.tenant("t")
	for i := range 2000 {
		s := &Subject{tenant: tn}
		genSubject(rng, s)
		if i%50 == 0 { // the extremes of time
			s.SetConsent("edge", Consent{Action: actionGrant, RecordID: uuidV7(rng, t0), ExpiresAt: time.Date(3000, 1, 1, 0, 0, 0, 0, time.UTC)})
			s.SetConsent("edge2", Consent{Action: actionRenew, RecordID: "x"})
		}
		blob := encodeSubject(nil, "subject", s, tn.nameIndex)
		var got Subject
		name, err := decodeSubject(blob, tn.names.Load().ids, &got)
		if err != nil || name != "subject" {
			t.Fatalf("decode: %q, %v", name, err)
		}
		if fmt.Sprint(got.records, got.objections, got.restrictions) != fmt.Sprint(s.records, s.objections, s.restrictions) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, *s)
		}
		if !validBlob(blob, uint64(len(tn.names.Load().ids))) || validBlob(blob, 0) && len(s.records) > 0 {
			t.Fatal("validBlob disagrees with decodeSubject")
		}
	}
	// One grant with a UUIDv7 id, no expiry: subject 2, count 1, base
	// time 9; purpose, length, flags, time difference 1 each; id 11 (time
	// difference 1, 10 random bytes); no objections or restrictions 2.
	s := &Subject{tenant: tn}
	s.SetConsent(necessary.ID, Consent{Action: actionGrant, RecordID: uuidV7(rng, t0), RecordedAt: t0})
	if blob := encodeSubject(nil, "s", s, tn.nameIndex); len(blob) != 2+1+9+4+11+2 {
		t.Errorf("blob of one record: %d bytes", len(blob))
	}
}

// TestIDText: UUIDs in canonical form are kept binary and give back their
// text; anything else is kept as text.
func TestIDText(t *testing.T) {
	for _, s := range []string{"0190a3c2-7b1e-7cc0-8a2f-0123456789ab", "0190A3C2-7B1E-7CC0-8A2F-0123456789AB", "g1", "",
		"0190a3c2-7b1e-7cc0-8a2f-0123456789a", "0190a3c2x7b1e-7cc0-8a2f-0123456789ab"} {
		id := ParseID(s)
		if id.String() != s {
			t.Errorf("ParseID(%q).String() = %q", s, id.String())
		}
		if id.isUUID != (s == "0190a3c2-7b1e-7cc0-8a2f-0123456789ab") {
			t.Errorf("ParseID(%q) binary = %v", s, id.isUUID)
		}
		if id != ParseID(s) || id.IsZero() != (s == "") {
			t.Errorf("ParseID(%q) not canonical", s)
		}
	}
}
