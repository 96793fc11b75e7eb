package service_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/telemetry"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
)

var bucketThings = store.Bucket("things")

// TestPeriodicBackups: a service configured with a backup folder copies
// its bbolt files there while it runs, a second file opened with OpenFile
// included, the copies hold what was committed, and the time of the last
// backup and the files' sizes are exported for alerts.
func TestPeriodicBackups(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "backups"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	backups := filepath.Join(t.TempDir(), "backups")
	schema := store.Schema{Service: "things", Version: 1, Buckets: []store.Bucket{bucketThings}}
	dataDir := t.TempDir()
	base, err := service.OpenBase(service.Deps{DataDir: dataDir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Telemetry: providers, Backup: service.BackupConfig{Dir: backups, Every: 10 * time.Millisecond}}, schema)
	if err != nil {
		t.Fatal(err)
	}
	journalSchema := store.Schema{Service: "things-journal", Version: 1, Buckets: []store.Bucket{bucketThings}}
	journal, err := base.OpenFile(journalSchema)
	if err != nil {
		t.Fatal(err)
	}
	for _, db := range []*store.DB{base.DB, journal} {
		if err := db.Batch(func(tx *bbolt.Tx) error { return store.BucketTx(tx, bucketThings).Put([]byte("k"), []byte(db.Path())) }); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- base.Run(ctx) }()

	// metrics returns the service's gauges and counters by name and file.
	metrics := func() map[string]float64 {
		families, err := providers.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range families {
			for _, m := range mf.GetMetric() {
				labels := map[string]string{}
				for _, l := range m.GetLabel() {
					labels[l.GetName()] = l.GetValue()
				}
				if labels["service"] == "things" {
					got[strings.TrimSuffix(mf.GetName()+" "+labels["file"], " ")] = m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
		return got
	}
	eventually.Succeeds(t, "a backup is reported", func() error {
		if m := metrics(); m["lethe_store_backup_last_success_seconds"] == 0 {
			return fmt.Errorf("metrics %v", m)
		}
		return nil
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := metrics()
	for _, db := range []*store.DB{base.DB, journal} {
		fi, err := os.Stat(db.Path())
		if err != nil {
			t.Fatal(err)
		}
		if name := "lethe_store_file_size_bytes " + filepath.Base(db.Path()); got[name] != float64(fi.Size()) {
			t.Errorf("%s = %v, want %d", name, got[name], fi.Size())
		}
		// Each file's one Batch call, in a group of its own.
		file := " " + filepath.Base(db.Path())
		if got["lethe_store_commits_total"+file] != 1 || got["lethe_store_commit_calls_total"+file] != 1 ||
			got["lethe_store_commit_pages_total"+file] < 1 || got["lethe_store_committer_busy_seconds_total"+file] <= 0 ||
			got["lethe_store_commit_time_seconds_total"+file] <= 0 {
			t.Errorf("%s's commit metrics: %v", file, got)
		}
	}
	if last := time.Unix(int64(got["lethe_store_backup_last_success_seconds"]), 0); time.Since(last) > time.Minute {
		t.Errorf("last backup at %s", last)
	}
	if err := base.Close(); err != nil {
		t.Fatal(err)
	}

	for _, schema := range []store.Schema{schema, journalSchema} {
		restored, err := store.Open(store.Options{Path: filepath.Join(backups, schema.Service+".db"), Schema: schema})
		if err != nil {
			t.Fatal(err)
		}
		var v []byte
		if err := restored.View(func(tx *bbolt.Tx) error {
			v = bytes.Clone(store.BucketTx(tx, bucketThings).Get([]byte("k")))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(dataDir, schema.Service+".db"); string(v) != want {
			t.Errorf("the backup of %s holds %q, want the committed value %q", schema.Service, v, want)
		}
		if err := restored.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
