package audit

import (
	"bytes"
	"encoding/hex"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/hashchain"
	"github.com/lethe-privacy/lethe/platform/store"
)

// headCopyKey holds, in store.BucketMeta, a copy of the audit chain's head
// record, written in the transaction of every append. The chain's own head
// record lives in the chain's bucket, so wiping or dropping that bucket
// removes both; the copy outlives it and says how long the chain was.
var headCopyKey = []byte("audit_head")

func putHeadCopyTx(tx *bolt.Tx, seq uint64, hash [32]byte) error {
	if err := store.BucketTx(tx, store.BucketMeta).Put(headCopyKey, hashchain.EncodeHead(seq, hash)); err != nil {
		return fmt.Errorf("audit: record head %d: %w", seq, err)
	}
	return nil
}

// PrepareFile gives a file whose chain was written before head copies
// existed the copy of its head, once, so that VerifyFileTx can hold the
// chain to it from then on. It verifies the chain first and copies nothing
// from a broken one. Every file of a service passes through it when opened
// (package service).
func PrepareFile(db *store.DB) error {
	var missing bool
	if err := db.View(func(tx *bolt.Tx) error {
		missing = store.BucketTx(tx, store.BucketMeta).Get(headCopyKey) == nil
		return nil
	}); err != nil || !missing {
		return err
	}
	return db.Update(func(tx *bolt.Tx) error {
		if store.BucketTx(tx, store.BucketMeta).Get(headCopyKey) != nil {
			return nil
		}
		chain := hashchain.New(store.BucketAudit)
		n, err := chain.VerifyTx(tx)
		if err != nil {
			return fmt.Errorf("audit: %s: %w", db.Path(), err)
		}
		if n == 0 {
			return nil
		}
		seq, hash, err := chain.HeadTx(tx)
		if err != nil {
			return err
		}
		return putHeadCopyTx(tx, seq, hash)
	})
}

// IntegrityError reports a file whose audit log is missing, emptied or cut
// short while the file says it held one. A *hashchain.VerifyError reports
// a chain broken inside.
type IntegrityError struct {
	// Reason says what is wrong, for an operator.
	Reason string
}

// Error implements error.
func (e *IntegrityError) Error() string { return "audit: " + e.Reason }

func broken(format string, args ...any) error {
	return &IntegrityError{Reason: fmt.Sprintf(format, args...)}
}

// Report is what VerifyFileTx found in an intact file.
type Report struct {
	// Service is the file's service record: "consent", "retention-journal".
	Service string
	// Entries is the length of the chain.
	Entries uint64
	// Head is the last entry's hash; zero for an empty chain.
	Head [32]byte
}

// VerifyFileTx verifies the audit log of the file tx reads: every link of
// the chain (a *hashchain.VerifyError names the first bad one), and the
// chain against what the rest of the file records of it, failing with an
// *IntegrityError
//   - for a file without its service record, which Open writes first;
//   - when the audit bucket is missing, which Open always creates;
//   - when the chain is shorter or longer than the head copy in the meta
//     bucket, or ends in another entry: wiped, cut short, or written
//     around this package;
//   - when a chain with entries has no head copy (PrepareFile writes one
//     when a service opens the file);
//   - when the chain is empty while the file holds state that only audited
//     mutations write: idempotency records (package mutation writes them
//     with the call's audit entry) or entries in a bucket the schema
//     declared audited (store.Schema.Audited).
//
// A file that passes is consistent with itself. Only an anchor, a head
// published outside the file (CheckAnchorTx), catches a file rewritten
// consistently: chain, head records and state cut back together.
func VerifyFileTx(tx *bolt.Tx) (Report, error) {
	info, err := store.ReadFileInfoTx(tx)
	if err != nil {
		return Report{}, &IntegrityError{Reason: err.Error()}
	}
	r := Report{Service: info.Service}
	var copySeq uint64
	var copyHash [32]byte
	hasCopy := false
	if v := tx.Bucket(store.BucketMeta).Get(headCopyKey); v != nil {
		if copySeq, copyHash, err = hashchain.DecodeHead(v); err != nil {
			return r, broken("the head copy in %s: %v", store.BucketMeta, err)
		}
		hasCopy = true
	}
	if tx.Bucket(store.BucketAudit) == nil {
		return r, broken("the audit bucket %s is missing (Open always creates it): it was dropped%s", store.BucketAudit, lostSince(hasCopy, copySeq))
	}
	chain := hashchain.New(store.BucketAudit)
	if r.Entries, err = chain.VerifyTx(tx); err != nil {
		return r, err
	}
	if r.Entries > 0 {
		if r.Head, err = lastHashTx(tx, chain, r.Entries); err != nil {
			return r, err
		}
	}
	switch {
	case !hasCopy && r.Entries > 0:
		return r, broken("the chain has %d entries but %s holds no copy of its head (a service of this version writes one when it opens the file)", r.Entries, store.BucketMeta)
	case hasCopy && copySeq > r.Entries:
		return r, broken("the chain has %d entries, its head copy in %s records %d: entries were removed%s", r.Entries, store.BucketMeta, copySeq, wipedNote(r.Entries))
	case hasCopy && copySeq < r.Entries:
		return r, broken("the chain has %d entries, its head copy in %s records %d: entries were appended around the audit log", r.Entries, store.BucketMeta, copySeq)
	case hasCopy && copyHash != r.Head:
		return r, broken("entry %d is not the one the head copy in %s records: the chain was rewritten", r.Entries, store.BucketMeta)
	}
	if r.Entries == 0 {
		if bucket := auditedStateTx(tx, info); bucket != "" {
			return r, broken("the chain is empty but bucket %s holds entries, which only audited mutations write: the audit log was wiped", bucket)
		}
	}
	return r, nil
}

func lostSince(hasCopy bool, seq uint64) string {
	if hasCopy {
		return fmt.Sprintf("; the head copy records %d entries", seq)
	}
	return ""
}

func wipedNote(n uint64) string {
	if n == 0 {
		return " (the audit bucket was emptied)"
	}
	return ""
}

func lastHashTx(tx *bolt.Tx, chain *hashchain.Chain, seq uint64) ([32]byte, error) {
	e, ok, err := chain.EntryTx(tx, seq)
	switch {
	case err != nil:
		return [32]byte{}, err
	case !ok:
		return [32]byte{}, fmt.Errorf("audit: entry %d vanished", seq)
	}
	return e.Hash, nil
}

// auditedStateTx returns the first bucket holding state that only audited
// mutations write, or "" when there is none.
func auditedStateTx(tx *bolt.Tx, info store.FileInfo) string {
	for _, name := range append([]store.Bucket{store.BucketIdempotency}, info.Audited...) {
		if b := tx.Bucket(name); b != nil {
			if k, _ := b.Cursor().First(); k != nil {
				return string(name)
			}
		}
	}
	return ""
}

// CheckAnchorTx checks the file's chain against an anchor of it: the chain
// must reach the anchored entry, and that entry must be the anchored one.
// Call it after VerifyFileTx passed, which shows every link up to the
// anchored entry intact, so that one entry's hash vouches for all before
// it. A failure is an *IntegrityError.
func CheckAnchorTx(tx *bolt.Tx, a Anchor) error {
	want, err := a.hash()
	if err != nil {
		return err
	}
	chain := hashchain.New(store.BucketAudit)
	e, ok, err := chain.EntryTx(tx, a.Seq)
	switch {
	case err != nil:
		return err
	case !ok:
		return broken("the chain ends before entry %d, anchored %s: entries were removed since", a.Seq, a.Time.Format("2006-01-02T15:04:05Z07:00"))
	case !bytes.Equal(e.Hash[:], want[:]):
		return broken("entry %d differs from its anchor of %s: the chain was rewritten", a.Seq, a.Time.Format("2006-01-02T15:04:05Z07:00"))
	}
	return nil
}

func (a Anchor) hash() ([32]byte, error) {
	var h [32]byte
	raw, err := hex.DecodeString(a.Hash)
	if err != nil || len(raw) != len(h) {
		return h, fmt.Errorf("%w: hash %q is not 64 hexadecimal digits", ErrNoAnchor, a.Hash)
	}
	copy(h[:], raw)
	return h, nil
}
