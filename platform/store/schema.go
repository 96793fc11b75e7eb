package store

import (
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

	// Migrations bring an older file up to Version. They are listed by
	// ascending To without gaps, and the last one reaches Version. A file
	// older than the first migration's starting point cannot be opened, so
	// old migrations may be retired once no such file is left.
	Migrations []Migration
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
	return nil
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
