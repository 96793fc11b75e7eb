package outbox_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/lethe-privacy/lethe/platform/clock"
	"github.com/lethe-privacy/lethe/platform/outbox"
	"github.com/lethe-privacy/lethe/platform/store/storetest"
	"github.com/lethe-privacy/lethe/platform/telemetry"
)

// TestBacklogDepthAndAgeAreExported: an operator alerting on a stuck relay
// sees how many events wait and how old the oldest is.
func TestBacklogDepthAndAgeAreExported(t *testing.T) {
	providers, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: "outbox-metrics"})
	if err != nil {
		t.Fatal(err)
	}
	defer providers.Shutdown(context.Background())
	clk := clock.NewFake(time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC))
	db := storetest.Open(t, schema)
	ob, err := outbox.New(db, outbox.Config{Source: "lethe/test", Clock: clk, Meter: providers.Meter.Meter("test")})
	if err != nil {
		t.Fatal(err)
	}
	defer ob.Close()
	for i := range 3 {
		if err := db.Update(func(tx *bolt.Tx) error {
			return ob.AddTx(context.Background(), tx, erasure("subject", fmt.Sprint("req-", i)))
		}); err != nil {
			t.Fatal(err)
		}
	}
	clk.Advance(90 * time.Second) // no relay runs: the broker is away

	families, err := providers.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range families {
		for _, m := range mf.GetMetric() {
			got[mf.GetName()] = m.GetGauge().GetValue()
		}
	}
	if got["lethe_outbox_backlog"] != 3 || got["lethe_outbox_oldest_age_seconds"] != 90 {
		t.Fatalf("backlog %v, oldest age %v; want 3 events, 90 s", got["lethe_outbox_backlog"], got["lethe_outbox_oldest_age_seconds"])
	}
}
