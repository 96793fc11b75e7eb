package wirefuzz

import (
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// FileState is what tells whether a bbolt file was written: its size and
// the id of its last committed transaction. The id moves with every
// commit, even one that grows nothing, so it is the sharper of the two.
type FileState struct {
	Size int64
	TxID uint64
	// Used is the bytes below the file's high-water page: bbolt grows a
	// file ahead of its data, in steps that double up to 1 GiB.
	Used int64
}

// State is the FileState of every store file, by name.
type State map[string]FileState

// Equal reports whether two states are the same.
func (s State) Equal(o State) bool { return maps.Equal(s, o) }

// Of returns the state of the files whose names begin with prefix: one
// service's files ("retention" holds retention.db and
// retention-journal.db).
func (s State) Of(prefix string) State {
	out := State{}
	for name, fs := range s {
		if strings.HasPrefix(name, prefix) {
			out[name] = fs
		}
	}
	return out
}

// Diff says which files differ, for a report.
func (s State) Diff(after State) string {
	var parts []string
	for _, name := range slices.Sorted(maps.Keys(after)) {
		b, a := s[name], after[name]
		if a != b {
			parts = append(parts, fmt.Sprintf("%s tx %d→%d size %d→%d", name, b.TxID, a.TxID, b.Size, a.Size))
		}
	}
	return strings.Join(parts, ", ")
}

// Stores returns a function that reads the state of every *.db file in
// dir. It reads the files' meta pages directly rather than opening them
// with bbolt, whose lock the running services hold.
func Stores(dir string) func() (State, error) {
	return func() (State, error) {
		paths, err := filepath.Glob(filepath.Join(dir, "*.db"))
		if err != nil {
			return nil, err
		}
		if len(paths) == 0 {
			return nil, fmt.Errorf("no *.db files in %s", dir)
		}
		s := State{}
		for _, p := range paths {
			fs, err := readFileState(p)
			if err != nil {
				return nil, err
			}
			s[filepath.Base(p)] = fs
		}
		return s, nil
	}
}

// bbolt's on-disk layout (go.etcd.io/bbolt internal/common): two meta pages,
// at page 0 and page 1, each a 16-byte page header followed by the meta:
// magic, version, page size (uint32 each), flags, the root bucket (16
// bytes), the freelist and high-water page ids, then the transaction id.
const (
	boltMagic        = 0xED0CDAED
	boltMetaOffset   = 16
	boltPageSizeAt   = boltMetaOffset + 8
	boltHighWaterAt  = boltMetaOffset + 40
	boltTxIDAt       = boltMetaOffset + 48
	boltMetaReadSize = boltTxIDAt + 8
)

func readFileState(path string) (FileState, error) {
	f, err := os.Open(path)
	if err != nil {
		return FileState{}, err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return FileState{}, err
	}
	buf := make([]byte, boltMetaReadSize)
	if _, err := io.ReadFull(f, buf); err != nil {
		return FileState{}, fmt.Errorf("%s: meta page 0: %w", path, err)
	}
	if binary.LittleEndian.Uint32(buf[boltMetaOffset:]) != boltMagic {
		return FileState{}, fmt.Errorf("%s: not a bbolt file", path)
	}
	pageSize := int64(binary.LittleEndian.Uint32(buf[boltPageSizeAt:]))
	tx := binary.LittleEndian.Uint64(buf[boltTxIDAt:])
	pages := binary.LittleEndian.Uint64(buf[boltHighWaterAt:])
	if _, err := f.ReadAt(buf, pageSize); err != nil {
		return FileState{}, fmt.Errorf("%s: meta page 1: %w", path, err)
	}
	// The newer of the two meta pages is the last commit; bbolt writes
	// them alternately.
	if binary.LittleEndian.Uint32(buf[boltMetaOffset:]) == boltMagic {
		if tx1 := binary.LittleEndian.Uint64(buf[boltTxIDAt:]); tx1 > tx {
			tx, pages = tx1, binary.LittleEndian.Uint64(buf[boltHighWaterAt:])
		}
	}
	return FileState{Size: info.Size(), TxID: tx, Used: int64(pages) * pageSize}, nil
}
