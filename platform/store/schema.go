package store

import (
	"bytes"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/bbolt"
)

var (
	// ErrServiceMismatch means the file belongs to another service: a
	// misconfigured path, caught before two services' data mix.
	ErrServiceMismatch = errors.New("store: file belongs to another service")

	// ErrSchemaTooNew means newer code has migrated the file. Older code
	// could misread what the migration changed, so rolling back a release
	// past a schema change needs a backup taken before it.
	ErrSchemaTooNew = errors.New("store: file schema is newer than the code")
)

// Keys in BucketMeta.
var (
	metaService = []byte("service")
	metaVersion = []byte("schema_version")
	metaAudited = []byte("audited_buckets")
)

// Schema is what the code expects of its database file.
type Schema struct {
	// Service names the service that owns the file.
	Service string

	// Version is the schema version the code reads and writes, from 1.
	Version int

	// Buckets are the service's top-level buckets, created by Open. Their
	// names must not start with an underscore, which the kit reserves.
	Buckets []Bucket

	// Audited lists those of Buckets that only audited mutations write,
	// each in the transaction that appends its audit entry: an entry in
	// one of them proves that the file's audit chain is not empty, so
	// `lethe audit verify` fails a file whose chain is missing or empty
	// while one of them holds entries. A bucket that anything else writes
	// (an event consumer, a sweep, a migration) must not be listed, or an
	// untouched chain would be reported as wiped. Open records the list in
	// the file, for tools that verify it without the service's code.
	Audited []Bucket

	// Migrations bring an older file up to Version. They are listed by
	// ascending To without gaps, and the last one reaches Version. A file
	// older than the first migration's starting point cannot be opened, so
	// old migrations may be retired once no such file is left.
	Migrations []Migration

	// PersistFreelist keeps the list of free pages in the file, written at
	// every commit, instead of rebuilding it at open by walking every page
	// (see Open). It is for a file that grows large and whose open delays
	// answers that must come back fast: measured on a consent.db of a
	// million subjects (3.9 GB), opening took 20-40 s with the walk and
	// 51 ms with the list kept, for a commit 21 ms → 33 ms with 38,735
	// free pages (docs/benchmarks.md, "Consent at 10M subjects").
	PersistFreelist bool
}

// Migration moves a file from version To-1 to version To.
type Migration struct {
	// To is the version the file has after Up.
	To int

	// Up rewrites the data inside Open's transaction, so a failed migration
	// leaves the file as it was. It sees the buckets that version To-1 had:
	// the schema's buckets are created only after every migration ran, so
	// Up creates any new bucket it writes to.
	Up func(tx *bbolt.Tx) error
}

// validate checks the schema before the file is touched.
func (s Schema) validate() error {
	if s.Service == "" {
		return errors.New("service name is empty")
	}
	if s.Version < 1 {
		return fmt.Errorf("version %d: versions start at 1", s.Version)
	}
	for _, b := range s.Buckets {
		if len(b) == 0 || b[0] == reservedPrefix {
			return fmt.Errorf("bucket %q: names must be non-empty and not start with %q", b, reservedPrefix)
		}
	}
	for _, a := range s.Audited {
		if !slices.ContainsFunc(s.Buckets, func(b Bucket) bool { return string(b) == string(a) }) {
			return fmt.Errorf("audited bucket %q is not one of the schema's buckets", a)
		}
	}
	for i, m := range s.Migrations {
		if m.Up == nil {
			return fmt.Errorf("migration to version %d has no Up", m.To)
		}
		if i == 0 && m.To < 2 {
			return fmt.Errorf("migration to version %d: versions start at 1", m.To)
		}
		if i > 0 && m.To != s.Migrations[i-1].To+1 {
			return fmt.Errorf("migrations are not contiguous: version %d follows %d", m.To, s.Migrations[i-1].To)
		}
	}
	if n := len(s.Migrations); n > 0 && s.Migrations[n-1].To != s.Version {
		return fmt.Errorf("last migration reaches version %d, schema is at %d", s.Migrations[n-1].To, s.Version)
	}
	return nil
}

// apply brings the file in tx to the schema; path is for error messages.
func (s Schema) apply(tx *bbolt.Tx, path string) error {
	for _, b := range kitBuckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("store: create bucket %q: %w", b, err)
		}
	}
	meta := tx.Bucket(BucketMeta)
	want := uint64(s.Version)
	switch service := meta.Get(metaService); {
	case service == nil:
		// A fresh file has no data to migrate.
		if err := meta.Put(metaService, []byte(s.Service)); err != nil {
			return err
		}
		if err := meta.Put(metaVersion, Uint64Key(want)); err != nil {
			return err
		}
	case string(service) != s.Service:
		return fmt.Errorf("%w: %s is service %q's, not %q's", ErrServiceMismatch, path, service, s.Service)
	default:
		raw := meta.Get(metaVersion)
		if len(raw) != 8 {
			return fmt.Errorf("store: %s: schema version record is corrupt (%d bytes)", path, len(raw))
		}
		switch have := KeyUint64(raw); {
		case have > want:
			return fmt.Errorf("%w: %s is at version %d, the code at %d", ErrSchemaTooNew, path, have, want)
		case have < want:
			if err := s.migrate(tx, have); err != nil {
				return fmt.Errorf("store: %s: %w", path, err)
			}
		}
	}
	for _, b := range s.Buckets {
		if _, err := tx.CreateBucketIfNotExists(b); err != nil {
			return fmt.Errorf("store: create bucket %q: %w", b, err)
		}
	}
	// Rewritten at every open, so the record follows the code's schema.
	return meta.Put(metaAudited, encodeBucketList(s.Audited))
}

// encodeBucketList joins bucket names with NUL, which no name holds.
func encodeBucketList(list []Bucket) []byte {
	var out []byte
	for i, b := range list {
		if i > 0 {
			out = append(out, 0)
		}
		out = append(out, b...)
	}
	return out
}

// FileInfo is what a file records about itself in the kit's meta bucket.
type FileInfo struct {
	// Service is the name of the schema that owns the file: "consent",
	// "retention-journal".
	Service string
	// Version is the file's schema version.
	Version uint64
	// Audited are the buckets the schema declared audited (Schema.Audited)
	// when the file was last opened.
	Audited []Bucket
}

// ReadFileInfoTx returns the file's own record of its service, schema
// version and audited buckets, for tools that read a file without its
// service's code. It fails for a file without a service record, which Open
// writes first of all: such a file is not a Lethe store, or its record was
// removed.
func ReadFileInfoTx(tx *bbolt.Tx) (FileInfo, error) {
	meta := tx.Bucket(BucketMeta)
	if meta == nil {
		return FileInfo{}, fmt.Errorf("store: no %s bucket: not a Lethe store, or the bucket was removed", BucketMeta)
	}
	service := meta.Get(metaService)
	if len(service) == 0 {
		return FileInfo{}, errors.New("store: no service record: not a Lethe store, or the record was removed")
	}
	info := FileInfo{Service: string(service)}
	if v := meta.Get(metaVersion); len(v) == 8 {
		info.Version = KeyUint64(v)
	}
	if v := meta.Get(metaAudited); len(v) > 0 {
		for _, name := range bytes.Split(v, []byte{0}) {
			info.Audited = append(info.Audited, Bucket(bytes.Clone(name)))
		}
	}
	return info, nil
}

// migrate runs the migrations after version have, which validate has shown
// to be contiguous up to s.Version, and records the version reached.
func (s Schema) migrate(tx *bbolt.Tx, have uint64) error {
	i := slices.IndexFunc(s.Migrations, func(m Migration) bool { return uint64(m.To) == have+1 })
	if i < 0 {
		return fmt.Errorf("no migration from version %d to %d", have, have+1)
	}
	for _, m := range s.Migrations[i:] {
		if err := m.Up(tx); err != nil {
			return fmt.Errorf("migration to version %d: %w", m.To, err)
		}
	}
	return tx.Bucket(BucketMeta).Put(metaVersion, Uint64Key(uint64(s.Version)))
}
