package dsar

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/store"
)

// keyring keeps one AES-256 key per open request in a small file of
// fixed-size slots, apart from dsar.db. It exists because bbolt never
// overwrites in place: a key deleted from a bbolt file stays readable in a
// freed page until that page happens to be reused, and the file never
// shrinks. A slot in this file is overwritten in place with zeros and
// synced, so a destroyed key is gone from Lethe's files at once, and with
// it every identifier, correction and package sealed under it in dsar.db
// (which holds only ciphertext of them).
//
// A slot is 64 bytes: a used flag, a 16-byte tag naming the request (so a
// slot reused after a crash is never read as another request's key), the
// 32-byte key, and padding. Writes are synced before they are relied on:
// a key is durable before the request that uses it commits, and a
// destroyed key is durable zeros before Destroy returns. Syncs of
// concurrent writers are shared (group commit).
type keyring struct {
	f      *os.File
	logger *slog.Logger

	mu    sync.Mutex
	free  []int64
	next  int64
	keys  map[int64][]byte
	wrote uint64

	syncMu sync.Mutex
	synced uint64

	// onCommit are the keys the write transaction onCommitTx holds will
	// destroy once it commits (DestroyOnCommit). Only one write
	// transaction runs at a time, so one list serves; a transaction that
	// rolled back leaves its list here until the next one replaces it,
	// and it is never destroyed.
	onCommitTx *bolt.Tx
	onCommit   []slotRef
}

const (
	slotSize = 64
	tagSize  = 16
	keySize  = 32
)

// slotRef names a key: its slot and its tag.
type slotRef struct {
	Slot int64  `json:"slot"`
	Tag  []byte `json:"tag"`
}

func openKeyring(path string, logger *slog.Logger) (*keyring, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	data, err := io.ReadAll(f)
	if err != nil {
		return nil, errors.Join(err, f.Close())
	}
	k := &keyring{f: f, keys: map[int64][]byte{}, logger: logger}
	k.next = int64(len(data) / slotSize)
	for i := int64(0); i < k.next; i++ {
		s := data[i*slotSize : (i+1)*slotSize]
		if s[0] == 1 {
			k.keys[i] = append([]byte(nil), s[1:1+tagSize+keySize]...)
		} else {
			k.free = append(k.free, i)
		}
	}
	return k, nil
}

// New makes and stores a fresh key, durable when it returns.
func (k *keyring) New() (slotRef, []byte, error) {
	tagKey := make([]byte, tagSize+keySize)
	if _, err := rand.Read(tagKey); err != nil {
		return slotRef{}, nil, err
	}
	k.mu.Lock()
	var slot int64
	if n := len(k.free); n > 0 {
		slot, k.free = k.free[n-1], k.free[:n-1]
	} else {
		slot = k.next
		k.next++
	}
	buf := make([]byte, slotSize)
	buf[0] = 1
	copy(buf[1:], tagKey)
	if _, err := k.f.WriteAt(buf, slot*slotSize); err != nil {
		k.free = append(k.free, slot)
		k.mu.Unlock()
		return slotRef{}, nil, err
	}
	k.keys[slot] = tagKey
	k.wrote++
	gen := k.wrote
	k.mu.Unlock()
	if err := k.sync(gen); err != nil {
		return slotRef{}, nil, err
	}
	return slotRef{Slot: slot, Tag: tagKey[:tagSize]}, tagKey[tagSize:], nil
}

// Key returns the key of ref; false when it was destroyed.
func (k *keyring) Key(ref slotRef) ([]byte, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	tk, ok := k.keys[ref.Slot]
	if !ok || !bytes.Equal(tk[:tagSize], ref.Tag) {
		return nil, false
	}
	return tk[tagSize:], true
}

// Destroy overwrites ref's slot with zeros and syncs. Destroying a key
// twice, or one whose slot was reused, changes nothing.
func (k *keyring) Destroy(ref slotRef) error {
	k.mu.Lock()
	tk, ok := k.keys[ref.Slot]
	if !ok || !bytes.Equal(tk[:tagSize], ref.Tag) {
		k.mu.Unlock()
		return nil
	}
	gen, err := k.zeroLocked(ref.Slot)
	k.mu.Unlock()
	if err != nil {
		return err
	}
	return k.sync(gen)
}

// DestroyOnCommit destroys ref once tx commits, as Destroy does, with
// every other key the same transaction destroys: their slots are
// overwritten together and synced once, before the transaction's other
// commit handlers run and before the committer starts the next
// transaction. A group commit that closes fifty requests thus costs one
// sync of the key file, not fifty one after another (docs/benchmarks.md,
// DSAR erasures). A transaction that rolls back destroys nothing.
func (k *keyring) DestroyOnCommit(tx *bolt.Tx, ref slotRef) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.onCommitTx == tx {
		k.onCommit = append(k.onCommit, ref)
		return
	}
	k.onCommitTx, k.onCommit = tx, []slotRef{ref}
	tx.OnCommit(func() {
		if err := k.destroyAll(k.takeOnCommit(tx)); err != nil {
			k.logger.Error("dsar: destroying the keys of closed requests failed; they are destroyed at the next start", "error", err)
		}
	})
}

// takeOnCommit returns the keys tx destroys and forgets them.
func (k *keyring) takeOnCommit(tx *bolt.Tx) []slotRef {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.onCommitTx != tx {
		return nil
	}
	refs := k.onCommit
	k.onCommitTx, k.onCommit = nil, nil
	return refs
}

// destroyAll overwrites the slots of refs with zeros and syncs once.
func (k *keyring) destroyAll(refs []slotRef) error {
	k.mu.Lock()
	var gen uint64
	for _, ref := range refs {
		tk, ok := k.keys[ref.Slot]
		if !ok || !bytes.Equal(tk[:tagSize], ref.Tag) {
			continue
		}
		g, err := k.zeroLocked(ref.Slot)
		if err != nil {
			k.mu.Unlock()
			return err
		}
		gen = g
	}
	k.mu.Unlock()
	if gen == 0 {
		return nil
	}
	return k.sync(gen)
}

func (k *keyring) zeroLocked(slot int64) (uint64, error) {
	if _, err := k.f.WriteAt(make([]byte, slotSize), slot*slotSize); err != nil {
		return 0, err
	}
	clear(k.keys[slot])
	delete(k.keys, slot)
	k.free = append(k.free, slot)
	k.wrote++
	return k.wrote, nil
}

// Retain destroys every key whose slot keep does not name: keys of
// requests that never committed, or whose destruction a crash interrupted.
func (k *keyring) Retain(keep func(slotRef) bool) (int, error) {
	k.mu.Lock()
	n := 0
	var gen uint64
	for slot, tk := range k.keys {
		if keep(slotRef{Slot: slot, Tag: tk[:tagSize]}) {
			continue
		}
		g, err := k.zeroLocked(slot)
		if err != nil {
			k.mu.Unlock()
			return n, err
		}
		gen = g
		n++
	}
	k.mu.Unlock()
	if n == 0 {
		return 0, nil
	}
	return n, k.sync(gen)
}

// sync makes every write up to generation gen durable; one fsync serves
// every writer that wrote before it started.
func (k *keyring) sync(gen uint64) error {
	k.syncMu.Lock()
	defer k.syncMu.Unlock()
	if k.synced >= gen {
		return nil
	}
	k.mu.Lock()
	upTo := k.wrote
	k.mu.Unlock()
	if err := k.f.Sync(); err != nil {
		return err
	}
	k.synced = upTo
	return nil
}

// Open keys.
func (k *keyring) Len() int {
	k.mu.Lock()
	defer k.mu.Unlock()
	return len(k.keys)
}

func (k *keyring) Close() error { return k.f.Close() }

// seal encrypts plain under key with AES-256-GCM, bound to aad (the request
// id and what the value is), as nonce || ciphertext.
func seal(key, plain, aad []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, gcm.NonceSize(), gcm.NonceSize()+len(plain)+gcm.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return gcm.Seal(nonce, nonce, plain, aad), nil
}

// open decrypts what seal produced.
func open(key, sealed, aad []byte) ([]byte, error) {
	gcm, err := newGCM(key)
	if err != nil {
		return nil, err
	}
	if len(sealed) < gcm.NonceSize() {
		return nil, fmt.Errorf("dsar: sealed value too short")
	}
	return gcm.Open(nil, sealed[:gcm.NonceSize()], sealed[gcm.NonceSize():], aad)
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// reconcileKeys destroys keys that no open request names: a crash between
// making a key and committing its request, or between closing a request
// and destroying its key, leaves one behind.
func (s *Service) reconcileKeys() error {
	keep := map[int64]string{}
	err := s.DB.View(func(tx *bolt.Tx) error {
		return store.BucketTx(tx, bucketSecrets).ForEach(func(_, v []byte) error {
			sec, err := decodeSecrets(v)
			if err == nil && sec.Key != nil {
				keep[sec.Key.Slot] = string(sec.Key.Tag)
			}
			return err
		})
	})
	if err != nil {
		return err
	}
	n, err := s.keys.Retain(func(r slotRef) bool { return keep[r.Slot] == string(r.Tag) })
	if n > 0 {
		s.Logger.Info("dsar: destroyed keys no open request names", "count", n)
	}
	return err
}
