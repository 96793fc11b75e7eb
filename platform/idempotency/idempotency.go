// Package idempotency remembers the first result of every mutation under the
// request id its client chose, so that a client retrying after a timeout or
// a dropped connection gets the first answer instead of a second effect.
//
// Lethe promises that the same request id with the same request body returns
// the first result, that the same id with a different body is rejected, and
// that records are kept for at least 24 hours. A Store keeps records for its
// TTL; a TTL under DefaultTTL breaks that promise.
//
// Records live in store.BucketIdempotency, next to the state they describe,
// so that a mutation and its record commit in one transaction: a crash can
// never leave an effect without its record, nor a record without its effect.
// store.BucketIdempotencyExpiry indexes them by expiry, so that sweeping
// costs in proportion to the expired records, not to all of them.
package idempotency

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/store"
)

// DefaultTTL is how long records are kept: Lethe's promised minimum.
const DefaultTTL = 24 * time.Hour

// ErrExists is returned by PutTx for a key that has a live record. Checking
// with LookupTx in the same transaction avoids it; when the lookup ran in an
// earlier transaction, it means a concurrent request with the same id won,
// and the transaction must roll back so its effect is not applied twice.
var ErrExists = errors.New("idempotency: a live record exists for the key")

// sweepLimit bounds the records Run deletes per transaction, so that a
// backlog of expired records never holds bbolt's single writer for long.
const sweepLimit = 1000

// Record is the remembered outcome of a request.
type Record struct {
	// RequestHash identifies the request body, so that a retry can be told
	// from a different request reusing the id.
	RequestHash [32]byte
	// Response is the first result, returned again to retries.
	Response []byte
	// CreatedAt is when the record was stored.
	CreatedAt time.Time
	// ExpiresAt is when the record stops counting, after which it is absent
	// to lookups and deleted by the next sweep.
	ExpiresAt time.Time
}

// Key returns the record key of a request. Each part is prefixed by its
// length, so no strings, NUL bytes included, make two different triples
// encode alike; the keys of one tenant share a prefix.
func Key(tenantID, method, requestID string) []byte {
	k := make([]byte, 0, 3*binary.MaxVarintLen16+len(tenantID)+len(method)+len(requestID))
	for _, part := range [...]string{tenantID, method, requestID} {
		k = binary.AppendUvarint(k, uint64(len(part)))
		k = append(k, part...)
	}
	return k
}

// Store reads and writes records inside its callers' transactions. It holds
// no state beyond its configuration and is safe for concurrent use.
type Store struct {
	clk clock.Clock
	ttl time.Duration
}

// New returns a Store that keeps records for ttl as measured by clk. A ttl
// that is not positive means DefaultTTL.
func New(clk clock.Clock, ttl time.Duration) *Store {
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	return &Store{clk: clk, ttl: ttl}
}

// LookupTx returns the record for key. A record whose ExpiresAt has come is
// absent, even before a sweep deletes it. The returned Response is a copy,
// safe to use after tx ends.
func (s *Store) LookupTx(tx *bbolt.Tx, key []byte) (Record, bool, error) {
	v := store.BucketTx(tx, store.BucketIdempotency).Get(key)
	if v == nil {
		return Record{}, false, nil
	}
	r, err := decodeRecord(v)
	if err != nil {
		return Record{}, false, fmt.Errorf("idempotency: key %q: %w", key, err)
	}
	if !r.ExpiresAt.After(s.clk.Now()) {
		return Record{}, false, nil
	}
	r.Response = bytes.Clone(r.Response)
	return r, true, nil
}

// PutTx stores the result of the request under key, in the transaction that
// applies the request's effect. It replaces an expired record and returns
// ErrExists for a live one. The returned Record's Response is response
// itself.
func (s *Store) PutTx(tx *bbolt.Tx, key []byte, requestHash [32]byte, response []byte) (Record, error) {
	records := store.BucketTx(tx, store.BucketIdempotency)
	expiry := store.AppendBucketTx(tx, store.BucketIdempotencyExpiry)
	// Truncated to what the encoding keeps, so the returned Record equals
	// what LookupTx will read.
	now := time.Unix(0, s.clk.Now().UnixNano()).UTC()
	if v := records.Get(key); v != nil {
		old, err := decodeRecord(v)
		if err != nil {
			return Record{}, fmt.Errorf("idempotency: key %q: %w", key, err)
		}
		if old.ExpiresAt.After(now) {
			return Record{}, ErrExists
		}
		// Otherwise the old index entry would outlive its record and make
		// a later sweep delete the new record early.
		if err := expiry.Delete(expiryKey(old.ExpiresAt, key)); err != nil {
			return Record{}, fmt.Errorf("idempotency: %w", err)
		}
	}
	r := Record{RequestHash: requestHash, Response: response, CreatedAt: now, ExpiresAt: now.Add(s.ttl)}
	if err := records.Put(key, encodeRecord(r)); err != nil {
		return Record{}, fmt.Errorf("idempotency: %w", err)
	}
	if err := expiry.Put(expiryKey(r.ExpiresAt, key), nil); err != nil {
		return Record{}, fmt.Errorf("idempotency: %w", err)
	}
	return r, nil
}

// Sweep deletes the expired records, oldest first, at most limit per write
// transaction so that other writers get their turn, and returns how many it
// deleted. It reads only the expiry index entries that are due, plus one.
func (s *Store) Sweep(db *store.DB, limit int) (removed int, err error) {
	return s.sweep(context.Background(), db, limit)
}

// Run sweeps at once and then every interval until ctx ends; it is meant to
// run in its own goroutine for the life of the service. Sweep errors are
// logged to slog's default logger and retried at the next tick: a failed
// sweep only delays deletion, since expired records are absent to LookupTx
// anyway. every must be positive.
func (s *Store) Run(ctx context.Context, db *store.DB, every time.Duration) {
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		if _, err := s.sweep(ctx, db, sweepLimit); err != nil && ctx.Err() == nil {
			slog.ErrorContext(ctx, "idempotency: sweep failed", slog.String("path", db.Path()), slog.Any("err", err))
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// sweep is Sweep, stopping between transactions once ctx ends so that Run
// returns promptly even during a large backlog.
func (s *Store) sweep(ctx context.Context, db *store.DB, limit int) (removed int, err error) {
	if limit <= 0 {
		return 0, fmt.Errorf("idempotency: sweep limit %d is not positive", limit)
	}
	for {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		var seen, deleted int
		err := db.Update(func(tx *bbolt.Tx) error {
			var err error
			seen, deleted, err = s.sweepTx(tx, limit)
			return err
		})
		if err != nil {
			return removed, err
		}
		removed += deleted
		if seen < limit {
			return removed, nil
		}
	}
}

// sweepTx deletes up to limit due index entries and their records. It
// returns the number of index entries it removed and of records deleted.
func (s *Store) sweepTx(tx *bbolt.Tx, limit int) (seen, deleted int, err error) {
	records := store.BucketTx(tx, store.BucketIdempotency)
	expiry := store.BucketTx(tx, store.BucketIdempotencyExpiry)
	now := store.TimeKey(s.clk.Now())

	// Collected first: deleting under a bbolt cursor can skip entries.
	var due [][]byte
	c := expiry.Cursor()
	for k, _ := c.First(); k != nil && len(due) < limit; k, _ = c.Next() {
		if len(k) <= 8 {
			return 0, 0, fmt.Errorf("idempotency: corrupt expiry index key %x", k)
		}
		if bytes.Compare(k[:8], now) > 0 {
			break
		}
		due = append(due, bytes.Clone(k))
	}

	for _, k := range due {
		if err := expiry.Delete(k); err != nil {
			return 0, 0, fmt.Errorf("idempotency: %w", err)
		}
		key := k[8:]
		v := records.Get(key)
		if v == nil {
			continue
		}
		r, err := decodeRecord(v)
		if err != nil {
			return 0, 0, fmt.Errorf("idempotency: key %q: %w", key, err)
		}
		// PutTx keeps exactly one index entry per record; checking anyway
		// means a stray entry can never delete a live record.
		if !bytes.Equal(store.TimeKey(r.ExpiresAt), k[:8]) {
			continue
		}
		if err := records.Delete(key); err != nil {
			return 0, 0, fmt.Errorf("idempotency: %w", err)
		}
		deleted++
	}
	return len(due), deleted, nil
}

// expiryKey orders index entries by expiry time, then by record key.
func expiryKey(expiresAt time.Time, key []byte) []byte {
	return append(store.TimeKey(expiresAt), key...)
}

// A record is encoded as
//
//	format(1) request_hash(32) created_unixnano(8) expires_unixnano(8) response(rest)
//
// with integers big-endian. The format byte lets a later version change the
// layout while records written before it expire.
const (
	formatV1        = 1
	recordHeaderLen = 1 + 32 + 8 + 8
)

func encodeRecord(r Record) []byte {
	buf := make([]byte, recordHeaderLen, recordHeaderLen+len(r.Response))
	buf[0] = formatV1
	copy(buf[1:], r.RequestHash[:])
	binary.BigEndian.PutUint64(buf[33:], uint64(r.CreatedAt.UnixNano()))
	binary.BigEndian.PutUint64(buf[41:], uint64(r.ExpiresAt.UnixNano()))
	return append(buf, r.Response...)
}

// decodeRecord parses an encoded record. The response aliases v.
func decodeRecord(v []byte) (Record, error) {
	if len(v) == 0 {
		return Record{}, errors.New("empty record")
	}
	if v[0] != formatV1 {
		return Record{}, fmt.Errorf("unknown record format %d", v[0])
	}
	if len(v) < recordHeaderLen {
		return Record{}, fmt.Errorf("record truncated to %d bytes", len(v))
	}
	r := Record{
		CreatedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[33:]))).UTC(),
		ExpiresAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[41:]))).UTC(),
		Response:  v[recordHeaderLen:],
	}
	copy(r.RequestHash[:], v[1:33])
	return r, nil
}
