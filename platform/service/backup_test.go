package service_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/platform/store"
	"github.com/lethe-privacy/lethe/platform/telemetry"
)

var bucketThings = store.Bucket("things")

// TestPeriodicBackups: a service configured with a backup folder copies
// its bbolt file there while it runs, the copy holds what was committed,
// and the time of the last backup and the file's size are exported for
// alerts.
func TestPeriodicBackups(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "backups"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	backups := filepath.Join(t.TempDir(), "backups")
	schema := store.Schema{Service: "things", Version: 1, Buckets: []store.Bucket{bucketThings}}
	base, err := service.OpenBase(service.Deps{DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Telemetry: providers, Backup: service.BackupConfig{Dir: backups, Every: 10 * time.Millisecond}}, schema)
	if err != nil {
		t.Fatal(err)
	}
	if err := base.DB.Update(func(tx *bbolt.Tx) error { return store.BucketTx(tx, bucketThings).Put([]byte("k"), []byte("v")) }); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- base.Run(ctx) }()

	metrics := func() map[string]float64 {
		families, err := providers.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range families {
			for _, m := range mf.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == "service" && l.GetValue() == "things" {
						got[mf.GetName()] = m.GetGauge().GetValue()
					}
				}
			}
		}
		return got
	}
	deadline := time.Now().Add(10 * time.Second)
	for metrics()["lethe_store_backup_last_success_seconds"] == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("no backup reported: %v", metrics())
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	got := metrics()
	fi, err := os.Stat(base.DB.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got["lethe_store_file_size_bytes"] != float64(fi.Size()) {
		t.Errorf("file size %v, want %d", got["lethe_store_file_size_bytes"], fi.Size())
	}
	if last := time.Unix(int64(got["lethe_store_backup_last_success_seconds"]), 0); time.Since(last) > time.Minute {
		t.Errorf("last backup at %s", last)
	}
	if err := base.Close(); err != nil {
		t.Fatal(err)
	}

	restored, err := store.Open(store.Options{Path: filepath.Join(backups, "things.db"), Schema: schema})
	if err != nil {
		t.Fatal(err)
	}
	defer restored.Close()
	var v []byte
	if err := restored.View(func(tx *bbolt.Tx) error { v = store.BucketTx(tx, bucketThings).Get([]byte("k")); return nil }); err != nil {
		t.Fatal(err)
	}
	if string(v) != "v" {
		t.Errorf("the backup holds %q, want the committed value", v)
	}
}
