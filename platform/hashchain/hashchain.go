// Package hashchain keeps a tamper-evident, append-only log in a bbolt
// bucket. Each entry's hash covers the previous entry's hash, so altering,
// removing or reordering any entry, or cutting off the tail, breaks a link
// that VerifyTx reports. It is the audit log of every service and the record
// of DSAR completion receipts shown to a regulator.
//
// An entry can never be deleted without breaking the chain, so payloads must
// hold identifiers (tenant, subject, request and event ids), never personal
// data: personal data in a chain could not be erased. Keeping to this is the
// caller's obligation.
//
// The chain proves integrity against edits that do not rewrite the whole
// chain from the altered entry onwards; anchoring the head hash outside the
// file (see HeadTx) extends the proof to such rewrites.
package hashchain

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
)

// Entry is one link of a chain.
type Entry struct {
	// Seq numbers entries from 1 without gaps.
	Seq uint64
	// Time is when the entry was appended, in UTC, to the nanosecond.
	Time time.Time
	// Payload is the caller's record: identifiers only, never personal data.
	Payload []byte
	// Prev is the previous entry's Hash; zero for the first entry.
	Prev [32]byte
	// Hash is the SHA-256 over Prev, Seq, Time and Payload.
	Hash [32]byte
}

// VerifyError reports the first entry at which a chain fails verification.
type VerifyError struct {
	// Seq is the entry at which verification failed.
	Seq uint64
	// Reason says what is wrong there.
	Reason string
}

// Error implements error.
func (e *VerifyError) Error() string {
	return fmt.Sprintf("hashchain: entry %d: %s", e.Seq, e.Reason)
}

// Chain is the chain kept in one bucket. It holds no state of its own, so one
// Chain value may be shared by concurrent transactions.
type Chain struct {
	bucket store.Bucket
}

// New returns the chain kept in bucket, which the store's Schema (or the
// kit, for store.BucketAudit) creates; the bucket holds nothing else.
func New(bucket store.Bucket) *Chain { return &Chain{bucket: bucket} }

// headKey holds the last entry's seq and hash, so that removing the last
// entry, which breaks no link, is detected too. Entry keys are exactly 8
// bytes long, so a 4-byte key cannot collide with one.
var headKey = []byte("head")

// AppendTx appends payload as the next entry, in the caller's write
// transaction so that the entry commits with the change it records. Appends
// are serialised by bbolt's single writer, so the chain never forks. The
// returned Entry's Payload is payload itself.
func (c *Chain) AppendTx(tx *bbolt.Tx, at time.Time, payload []byte) (Entry, error) {
	nanos := at.UnixNano()
	if t := time.Unix(0, nanos); !t.Equal(at) {
		return Entry{}, fmt.Errorf("hashchain: time %v is outside the years 1678 to 2262", at)
	}
	b := store.AppendBucketTx(tx, c.bucket)
	seq, prev, err := readHead(b)
	if err != nil {
		return Entry{}, fmt.Errorf("hashchain: %w", err)
	}
	e := Entry{Seq: seq + 1, Time: time.Unix(0, nanos).UTC(), Payload: payload, Prev: prev}
	e.Hash = e.hash()
	if err := b.Put(store.Uint64Key(e.Seq), encodeEntry(e)); err != nil {
		return Entry{}, fmt.Errorf("hashchain: append entry %d: %w", e.Seq, err)
	}
	if err := b.Put(headKey, encodeHead(e.Seq, e.Hash)); err != nil {
		return Entry{}, fmt.Errorf("hashchain: append entry %d: %w", e.Seq, err)
	}
	return e, nil
}

// HeadTx returns the last entry's seq and hash, or zeros for an empty chain.
// Publishing the head hash elsewhere (a receipt, a log line, another system)
// commits to every entry up to it.
func (c *Chain) HeadTx(tx *bbolt.Tx) (seq uint64, hash [32]byte, err error) {
	seq, hash, err = readHead(store.BucketTx(tx, c.bucket))
	if err != nil {
		return 0, hash, fmt.Errorf("hashchain: %w", err)
	}
	return seq, hash, nil
}

// EntryTx returns entry seq, and false when the chain has no such entry. It
// does not verify the chain: an anchor outside the file (a published head)
// is checked against the entry at its seq after VerifyTx has shown every
// link intact. Entry.Payload is valid until tx ends, as in RangeTx.
func (c *Chain) EntryTx(tx *bbolt.Tx, seq uint64) (Entry, bool, error) {
	if seq == 0 {
		return Entry{}, false, nil
	}
	v := store.BucketTx(tx, c.bucket).Get(store.Uint64Key(seq))
	if v == nil {
		return Entry{}, false, nil
	}
	e, err := decodeEntry(v)
	if err != nil {
		return Entry{}, false, fmt.Errorf("hashchain: entry %d: %w", seq, err)
	}
	return e, true, nil
}

// EncodeHead returns a head record of seq and hash, in the format of the
// chain's own, for a copy kept elsewhere (see DecodeHead).
func EncodeHead(seq uint64, hash [32]byte) []byte { return encodeHead(seq, hash) }

// DecodeHead parses a record EncodeHead returned.
func DecodeHead(v []byte) (seq uint64, hash [32]byte, err error) {
	if seq, hash, err = decodeHead(v); err != nil {
		return 0, hash, fmt.Errorf("hashchain: %w", err)
	}
	return seq, hash, nil
}

// RangeTx calls fn for each entry from fromSeq on, in order, until fn returns
// an error, which RangeTx returns. It does not verify the chain: see
// VerifyTx. Entry.Payload points into bbolt's memory map, valid until tx
// ends and never to be modified; copy it to keep it longer.
func (c *Chain) RangeTx(tx *bbolt.Tx, fromSeq uint64, fn func(Entry) error) error {
	cur := store.BucketTx(tx, c.bucket).Cursor()
	for k, v := cur.Seek(store.Uint64Key(fromSeq)); k != nil; k, v = cur.Next() {
		if bytes.Equal(k, headKey) {
			continue
		}
		e, err := decodeEntry(v)
		if err != nil {
			return fmt.Errorf("hashchain: key %x: %w", k, err)
		}
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

// VerifyTx recomputes every hash and link and checks the head record, and
// returns the number of entries. The first problem found is returned as a
// *VerifyError. It reads the whole chain, so it belongs in audits and
// startup checks, not in request paths.
func (c *Chain) VerifyTx(tx *bbolt.Tx) (count uint64, err error) {
	b := store.BucketTx(tx, c.bucket)
	var prev [32]byte
	var want uint64 = 1
	cur := b.Cursor()
	for k, v := cur.First(); k != nil; k, v = cur.Next() {
		if bytes.Equal(k, headKey) {
			continue
		}
		if len(k) != 8 {
			return 0, &VerifyError{Seq: want, Reason: fmt.Sprintf("unexpected key %x in the chain's bucket", k)}
		}
		if got := store.KeyUint64(k); got != want {
			return 0, &VerifyError{Seq: want, Reason: fmt.Sprintf("entry missing: the next key is %d", got)}
		}
		e, err := decodeEntry(v)
		switch {
		case err != nil:
			return 0, &VerifyError{Seq: want, Reason: err.Error()}
		case e.Seq != want:
			return 0, &VerifyError{Seq: want, Reason: fmt.Sprintf("holds entry %d: entries were moved", e.Seq)}
		case e.hash() != e.Hash:
			return 0, &VerifyError{Seq: want, Reason: "hash mismatch: the entry was altered"}
		case e.Prev != prev:
			return 0, &VerifyError{Seq: want, Reason: "does not link to the previous entry"}
		}
		prev = e.Hash
		want++
	}
	count = want - 1

	headSeq, headHash, err := readHead(b)
	switch {
	case err != nil:
		return 0, &VerifyError{Seq: count, Reason: err.Error()}
	case headSeq == 0 && count > 0:
		return 0, &VerifyError{Seq: count, Reason: "head record missing"}
	case headSeq != count:
		return 0, &VerifyError{Seq: headSeq, Reason: fmt.Sprintf("head records %d entries, the chain has %d: entries were removed from the end", headSeq, count)}
	case headHash != prev:
		return 0, &VerifyError{Seq: headSeq, Reason: "head hash does not match the last entry"}
	}
	return count, nil
}

// hashDomain separates this format's hashes from any other SHA-256 use, and
// from later versions of this one.
const hashDomain = "lethe.hashchain.v1\x00"

// hash returns the SHA-256 over an encoding in which every field but the last
// has a fixed width and the payload is prefixed by its length, so that two
// different entries never encode alike.
func (e *Entry) hash() [32]byte {
	var fixed [32 + 8 + 8 + 8]byte
	copy(fixed[:32], e.Prev[:])
	binary.BigEndian.PutUint64(fixed[32:], e.Seq)
	binary.BigEndian.PutUint64(fixed[40:], uint64(e.Time.UnixNano()))
	binary.BigEndian.PutUint64(fixed[48:], uint64(len(e.Payload)))
	h := sha256.New()
	h.Write([]byte(hashDomain))
	h.Write(fixed[:])
	h.Write(e.Payload)
	var sum [32]byte
	h.Sum(sum[:0])
	return sum
}

// On-disk formats. An entry is
//
//	format(1) seq(8) unixnano(8) prev(32) hash(32) payload(rest)
//
// and the head record is
//
//	format(1) seq(8) hash(32)
//
// with integers big-endian. The format byte lets a later version change the
// layout and still read old entries, which can never be rewritten.
const (
	formatV1       = 1
	entryHeaderLen = 1 + 8 + 8 + 32 + 32
	headLen        = 1 + 8 + 32
)

func encodeEntry(e Entry) []byte {
	buf := make([]byte, entryHeaderLen, entryHeaderLen+len(e.Payload))
	buf[0] = formatV1
	binary.BigEndian.PutUint64(buf[1:], e.Seq)
	binary.BigEndian.PutUint64(buf[9:], uint64(e.Time.UnixNano()))
	copy(buf[17:], e.Prev[:])
	copy(buf[49:], e.Hash[:])
	return append(buf, e.Payload...)
}

// decodeEntry parses an encoded entry. The payload aliases v.
func decodeEntry(v []byte) (Entry, error) {
	if len(v) == 0 {
		return Entry{}, errors.New("empty entry record")
	}
	if v[0] != formatV1 {
		return Entry{}, fmt.Errorf("unknown entry format %d", v[0])
	}
	if len(v) < entryHeaderLen {
		return Entry{}, fmt.Errorf("entry record truncated to %d bytes", len(v))
	}
	e := Entry{
		Seq:     binary.BigEndian.Uint64(v[1:]),
		Time:    time.Unix(0, int64(binary.BigEndian.Uint64(v[9:]))).UTC(),
		Payload: v[entryHeaderLen:],
	}
	copy(e.Prev[:], v[17:49])
	copy(e.Hash[:], v[49:81])
	return e, nil
}

func encodeHead(seq uint64, hash [32]byte) []byte {
	buf := make([]byte, headLen)
	buf[0] = formatV1
	binary.BigEndian.PutUint64(buf[1:], seq)
	copy(buf[9:], hash[:])
	return buf
}

// readHead returns the head record of b, or zeros if there is none yet.
func readHead(b *bbolt.Bucket) (seq uint64, hash [32]byte, err error) {
	v := b.Get(headKey)
	if v == nil {
		return 0, hash, nil
	}
	return decodeHead(v)
}

func decodeHead(v []byte) (seq uint64, hash [32]byte, err error) {
	if len(v) != headLen || v[0] != formatV1 {
		return 0, hash, fmt.Errorf("head record is corrupt (%d bytes)", len(v))
	}
	copy(hash[:], v[9:])
	return binary.BigEndian.Uint64(v[1:]), hash, nil
}
