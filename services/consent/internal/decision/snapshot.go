package decision

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"slices"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
)

// A snapshot is the decision state of some or all of an Index's tenants as
// one byte stream: what a writer restarts from instead of reading every
// record in history, and what a read replica restores before it follows
// the changes after it. Layout (uvarint, varint and str as in codec.go):
//
//	snapshot = magic "LETHECIX", uvarint version (1),
//	           tenant*, 'E', CRC-32C (Castagnoli) of every byte before it, big-endian
//	tenant   = 'T', str tenant id, uvarint revision,
//	           country: 0 | 1 str country,
//	           uvarint subjects, uvarint bytes   (sizes for the reader to allocate at once; hints only)
//	           (uvarint len(blob), blob)*, uvarint 0,
//	           uvarint n, str purpose id * n      (the tenant's names, by index),
//	           uvarint m, purpose * m             (the declared purposes)
//	purpose  = uvarint name index, uvarint basis, flags byte, varint lifetime,
//	           uvarint n, str excluded role * n, varint minimum age,
//	           varint material since (Unix ns, beforeAll for none), str current notice
//
// Blobs are the subjects' state exactly as the Index keeps it (codec.go),
// so writing a snapshot copies bytes and reading one validates and places
// them. The names come after the blobs because a writer may number a new
// purpose while the shards are copied: names only grow, so the table read
// after the copy covers every blob.
//
// Revision: a tenant's section records Index.Revision as it was just
// before its shards were cut (Cut). Every change up to it is in the
// snapshot. Changes after it are not when the writer kept the Index from
// changing while Cut ran, as the consent service does: the snapshot is
// then an exact cut. Otherwise some may be, and whoever restores it must
// replay the changes after the revision in a way that does not depend on
// whether their effect is already there, as the consent service's start
// does by rebuilding each subject a change names from its store.
const (
	snapshotMagic   = "LETHECIX"
	snapshotVersion = 1

	sectionTenant = 'T'
	sectionEnd    = 'E'

	// maxNames bounds a tenant's purpose ids in a snapshot.
	maxNames = 1 << 16

	// minSubjectBytes is the least a subject takes among a section's
	// blobs: a length, an id of one byte with its length, and a count.
	minSubjectBytes = 4
)

// Purpose flags in a snapshot.
const (
	purposeNecessary = 1 << iota
	purposeDirectMarketing
	purposeGPCOptOut
	purposeDigitalConsentAge
	purposeStorageOnly
)

// ErrSnapshot is wrapped by every error reading a snapshot that is
// truncated, corrupt or of another version.
var ErrSnapshot = errors.New("decision: unusable snapshot")

// castagnoli is the CRC-32C table.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// WriteSnapshot writes the state of the named tenants to w, or of every
// tenant when none is named; a named tenant the Index does not hold is
// written empty. It writes a Cut taken now, so Check and writers go on
// meanwhile; it is an exact cut when nothing changes the Index while Cut
// runs (see Cut).
func (ix *Index) WriteSnapshot(w io.Writer, tenants ...string) error {
	c := ix.Cut(tenants...)
	defer c.Close()
	return c.WriteSnapshot(w)
}

// snapshotWriter encodes a snapshot section by section, summing what it
// writes.
type snapshotWriter struct {
	w   io.Writer
	crc hash.Hash32
	bw  *bufio.Writer
	e   encoder
}

func newSnapshotWriter(w io.Writer) *snapshotWriter {
	crc := crc32.New(castagnoli)
	return &snapshotWriter{w: w, crc: crc, bw: bufio.NewWriterSize(io.MultiWriter(w, crc), 1<<16),
		e: encoder{buf: append([]byte(snapshotMagic), snapshotVersion)}}
}

// head starts a tenant's section: the fields before its subjects' blobs.
func (sw *snapshotWriter) head(id string, revision uint64, country *string, subjects, bytes int) {
	e := &sw.e
	e.buf = append(e.buf, sectionTenant)
	e.str(id)
	e.uvarint(revision)
	if country != nil {
		e.buf = append(e.buf, 1)
		e.str(*country)
	} else {
		e.buf = append(e.buf, 0)
	}
	e.uvarint(uint64(subjects))
	e.uvarint(uint64(bytes))
}

// flush writes what is encoded so far.
func (sw *snapshotWriter) flush() error {
	_, err := sw.bw.Write(sw.e.buf)
	sw.e.buf = sw.e.buf[:0]
	return err
}

// tail ends a tenant's section after its blobs: the names, then the
// declared purposes by name index.
func (sw *snapshotWriter) tail(purposes map[string]*purposeEntry, names *nameTable) {
	e := &sw.e
	e.uvarint(0)
	e.uvarint(uint64(len(names.ids)))
	for _, n := range names.ids {
		e.str(n)
	}
	e.uvarint(uint64(len(purposes)))
	for _, n := range names.ids {
		if p := purposes[n]; p != nil {
			e.purpose(p)
		}
	}
}

// close ends the snapshot with its checksum.
func (sw *snapshotWriter) close() error {
	sw.e.buf = append(sw.e.buf, sectionEnd)
	if err := sw.flush(); err != nil {
		return err
	}
	if err := sw.bw.Flush(); err != nil {
		return err
	}
	_, err := sw.w.Write(binary.BigEndian.AppendUint32(nil, sw.crc.Sum32()))
	return err
}

// purpose appends a declared purpose.
func (e *encoder) purpose(p *purposeEntry) {
	e.uvarint(p.idx)
	e.uvarint(uint64(p.Basis))
	var flags byte
	for _, f := range []struct {
		set  bool
		flag byte
	}{{p.Necessary, purposeNecessary}, {p.DirectMarketing, purposeDirectMarketing}, {p.GPCOptOut, purposeGPCOptOut},
		{p.DigitalConsentAge, purposeDigitalConsentAge}, {p.StorageOnly, purposeStorageOnly}} {
		if f.set {
			flags |= f.flag
		}
	}
	e.buf = append(e.buf, flags)
	e.varint(int64(p.Lifetime))
	e.uvarint(uint64(len(p.ExcludedRoles)))
	for _, r := range p.ExcludedRoles {
		e.str(r)
	}
	e.varint(int64(p.MinimumAge))
	e.varint(unixNano(p.MaterialSince, beforeAll))
	e.str(p.CurrentNotice)
}

// snapReader reads a snapshot, summing what it consumes.
type snapReader struct {
	r   *bufio.Reader
	crc hash.Hash32
	err error
	one [1]byte
	// buf holds a blob too large to read in place.
	buf []byte
	// used is one more than the largest purpose index the current
	// tenant's blobs name.
	used uint64
	// unclaimed is how much of the snapshot's length no count or size
	// read so far has claimed (claim).
	unclaimed uint64
}

// claim accounts for n items of at least least bytes each that the
// snapshot declares before it holds them, and fails unless they fit in
// what is left of its length. Such counts and sizes size allocations
// before the checksum can vouch for them; bounding them so keeps a
// damaged snapshot from costing more memory than an intact one of the
// same length would.
func (sr *snapReader) claim(n, least uint64, what string) bool {
	if sr.err != nil {
		return false
	}
	if n > sr.unclaimed/least {
		sr.fail("%d %s where %d bytes are left", n, what, sr.unclaimed)
		return false
	}
	sr.unclaimed -= n * least
	return true
}

// fail records the first error.
func (sr *snapReader) fail(format string, args ...any) {
	if sr.err == nil {
		sr.err = fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, args...)...)
	}
}

// ReadByte implements io.ByteReader for binary.ReadUvarint.
func (sr *snapReader) ReadByte() (byte, error) {
	if sr.err != nil {
		return 0, sr.err
	}
	c, err := sr.r.ReadByte()
	if err != nil {
		sr.fail("truncated: %v", err)
		return 0, sr.err
	}
	sr.one[0] = c
	sr.crc.Write(sr.one[:])
	return c, nil
}

// full reads len(b) bytes.
func (sr *snapReader) full(b []byte) {
	if sr.err != nil {
		return
	}
	if _, err := io.ReadFull(sr.r, b); err != nil {
		sr.fail("truncated: %v", err)
		return
	}
	sr.crc.Write(b)
}

func (sr *snapReader) uvarint() uint64 {
	v, err := binary.ReadUvarint(sr)
	if err != nil {
		sr.fail("bad number: %v", err)
	}
	return v
}

func (sr *snapReader) varint() int64 {
	v, err := binary.ReadVarint(sr)
	if err != nil {
		sr.fail("bad number: %v", err)
	}
	return v
}

func (sr *snapReader) str(what string) string {
	n := sr.uvarint()
	if n > maxIDLen {
		sr.fail("%s of %d bytes", what, n)
		return ""
	}
	b := make([]byte, n)
	sr.full(b)
	return string(b)
}

// ReadSnapshot reads a snapshot WriteSnapshot wrote and puts the tenants
// it carries into ix, each replacing the tenant of its id whole. It
// returns the revision each tenant's state covers (Index.Revision is set
// to it too). A snapshot that is truncated, corrupt, of another version
// or followed by anything is refused with an error wrapping ErrSnapshot,
// and ix is left as it was: nothing is installed until the checksum
// matches. Call it before the tenants' writers start: an Update to a
// tenant while it is replaced is lost.
//
// size is the most r can hold, such as the size of the file it reads.
// The reader sizes its tables from counts the snapshot declares, read
// before the checksum at its end, and refuses counts that size does
// not leave room for: a damaged count costs an error, not the memory it
// claims.
func (ix *Index) ReadSnapshot(r io.Reader, size int64) (map[string]uint64, error) {
	sr := &snapReader{r: bufio.NewReaderSize(r, 1<<16), crc: crc32.New(castagnoli), unclaimed: uint64(max(size, 0))}
	head := make([]byte, len(snapshotMagic)+1)
	sr.full(head)
	if sr.err != nil {
		return nil, sr.err
	}
	if string(head[:len(snapshotMagic)]) != snapshotMagic {
		return nil, fmt.Errorf("%w: not a snapshot of the consent index", ErrSnapshot)
	}
	if v := head[len(snapshotMagic)]; v != snapshotVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", ErrSnapshot, v, snapshotVersion)
	}
	read := map[string]*tenant{}
	revisions := map[string]uint64{}
	for sr.err == nil {
		kind, _ := sr.ReadByte()
		if sr.err != nil || kind == sectionEnd {
			break
		}
		if kind != sectionTenant {
			sr.fail("unknown section %q", kind)
			break
		}
		id := sr.str("tenant id")
		if _, dup := read[id]; dup {
			sr.fail("tenant %q twice", id)
			break
		}
		t := ix.readTenant(sr)
		read[id], revisions[id] = t, t.revision.Load()
	}
	if sr.err != nil {
		return nil, sr.err
	}
	want := sr.crc.Sum32()
	var sum [4]byte
	if _, err := io.ReadFull(sr.r, sum[:]); err != nil {
		return nil, fmt.Errorf("%w: truncated before its checksum", ErrSnapshot)
	}
	if got := binary.BigEndian.Uint32(sum[:]); got != want {
		return nil, fmt.Errorf("%w: checksum %08x, content sums to %08x", ErrSnapshot, got, want)
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the end", ErrSnapshot)
	}
	ix.mu.Lock()
	defer ix.mu.Unlock()
	for id, t := range read {
		ix.installLocked(id, t)
	}
	return revisions, nil
}

// readTenant reads one tenant's section after its id into a new tenant,
// which nothing else sees yet.
func (ix *Index) readTenant(sr *snapReader) *tenant {
	t := newTenant()
	t.revision.Store(sr.uvarint())
	switch flag, _ := sr.ReadByte(); flag {
	case 0:
	case 1:
		c := sr.str("country")
		t.country.Store(&c)
	default:
		sr.fail("bad country flag %d", flag)
	}
	sr.used = 0
	ix.readSubjects(sr, t)
	names := sr.names()
	if sr.err != nil {
		return t
	}
	// Every blob decoded whole as it was read; now that the names are
	// known, each must name only purposes among them, so that Check
	// never meets one that does not.
	if sr.used > uint64(len(names.ids)) {
		sr.fail("subjects name purpose %d of %d", sr.used-1, len(names.ids))
		return t
	}
	t.names.Store(names)
	m := sr.uvarint()
	if m > uint64(len(names.ids)) {
		sr.fail("%d purposes for %d purpose ids", m, len(names.ids))
		return t
	}
	for range m {
		if p := sr.purpose(names); sr.err == nil {
			t.putPurpose(p)
		}
	}
	return t
}

// readSubjects reads a tenant's subjects into its shards.
func (ix *Index) readSubjects(sr *snapReader, t *tenant) {
	// Allocate each shard's table and arena once, a little larger than the
	// writer's sizes, rather than grow them by copying, which costs time
	// and leaves up to a quarter of each arena unused.
	subjects, size := sr.uvarint(), sr.uvarint()
	if sr.claim(size, 1, "bytes of subjects") && subjects > size/minSubjectBytes {
		sr.fail("%d subjects in %d bytes", subjects, size)
	}
	if sr.err == nil && subjects > 0 {
		for i := range t.shards {
			sh := &t.shards[i].shardState
			sh.table = make(map[uint64]uint64, subjects/shardCount+subjects/(8*shardCount))
			// Subjects spread evenly over shards (a shard of 150,000
			// deviates by well under 1 %), so 1/32 more is enough; a
			// shard that overflows grows once.
			sh.arena = make([]byte, 0, size/shardCount+size/(32*shardCount))
		}
	}
	for sr.err == nil {
		blob, more := sr.blob()
		if !more {
			return
		}
		used, ok := checkBlob(blob)
		subject := blobSubject(blob)
		if !ok {
			sr.fail("subject %q: %v", subject, errCorrupt)
			return
		}
		sr.used = max(sr.used, used)
		h := ix.hash(subject)
		if !t.shard(h).insert(h, subject, blob) {
			sr.fail("subject %q twice", subject)
			return
		}
	}
}

// blob returns the next subject's blob, or false at the end of the list.
// The blob is valid until the next read. It reads the length and the blob
// from the buffer in place where they fit, which a subject's nearly
// always do, and sums them in one call.
func (sr *snapReader) blob() ([]byte, bool) {
	head, _ := sr.r.Peek(binary.MaxVarintLen64)
	n, k := binary.Uvarint(head)
	if k > 0 && n > 0 && n <= maxBlobLen && k+int(n) <= sr.r.Size() {
		all, err := sr.r.Peek(k + int(n))
		if err != nil {
			sr.fail("truncated: %v", err)
			return nil, false
		}
		sr.crc.Write(all)
		_, _ = sr.r.Discard(len(all))
		return all[k:], true
	}
	n = sr.uvarint()
	if n == 0 || sr.err != nil {
		return nil, false
	}
	if n > maxBlobLen {
		sr.fail("subject state of %d bytes", n)
		return nil, false
	}
	sr.buf = slices.Grow(sr.buf[:0], int(n))[:n]
	sr.full(sr.buf)
	return sr.buf, sr.err == nil
}

// names reads a tenant's purpose ids.
func (sr *snapReader) names() *nameTable {
	n := sr.uvarint()
	if n > maxNames {
		sr.fail("%d purpose ids", n)
		return nil
	}
	if !sr.claim(n, 1, "purpose ids") {
		return nil
	}
	names := &nameTable{ids: make([]string, 0, n), idx: make(map[string]uint64, n)}
	for i := range n {
		id := sr.str("purpose id")
		if _, dup := names.idx[id]; dup {
			sr.fail("purpose id %q twice", id)
		}
		names.ids, names.idx[id] = append(names.ids, id), i
	}
	return names
}

// purpose reads a declared purpose.
func (sr *snapReader) purpose(names *nameTable) Purpose {
	i := sr.uvarint()
	if i >= uint64(len(names.ids)) {
		sr.fail("purpose index %d of %d", i, len(names.ids))
		return Purpose{}
	}
	p := Purpose{ID: names.ids[i], Basis: commonv1.LegalBasis(sr.uvarint())}
	flags, _ := sr.ReadByte()
	p.Necessary = flags&purposeNecessary != 0
	p.DirectMarketing = flags&purposeDirectMarketing != 0
	p.GPCOptOut = flags&purposeGPCOptOut != 0
	p.DigitalConsentAge = flags&purposeDigitalConsentAge != 0
	p.StorageOnly = flags&purposeStorageOnly != 0
	p.Lifetime = time.Duration(sr.varint())
	n := sr.uvarint()
	if n > maxListLength {
		sr.fail("%d excluded roles", n)
		return Purpose{}
	}
	for range n {
		p.ExcludedRoles = append(p.ExcludedRoles, sr.str("role"))
	}
	p.MinimumAge = int32(sr.varint())
	p.MaterialSince = timeOf(sr.varint())
	p.CurrentNotice = sr.str("notice version")
	return p
}
