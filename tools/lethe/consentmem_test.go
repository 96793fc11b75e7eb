package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	bolt "go.etcd.io/bbolt"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	registryv1 "github.com/lethe-privacy/lethe/gen/go/lethe/registry/v1"
	"github.com/lethe-privacy/lethe/platform/server/servertest"
	"github.com/lethe-privacy/lethe/platform/testkit/logbuf"
	"github.com/lethe-privacy/lethe/tools/wirefuzz"
)

var (
	consentMemRounds   = flag.Int("consentmem.rounds", 4, "rounds of BenchmarkConsentMemory's load")
	consentMemRound    = flag.Duration("consentmem.round", 5*time.Second, "length of one round")
	consentMemSubjects = flag.Int("consentmem.subjects", 1000, "subjects the load spreads over (0: a new subject each call)")
	consentMemProfile  = flag.String("consentmem.heapprofile", "", "file to write a heap profile to after the last round")
)

// BenchmarkConsentMemory runs `lethe dev` in this process and records
// consents from 50 clients, each call with a random UUIDv4 request id, in
// rounds; after each round it collects garbage and reads the live heap,
// the resident memory split into anonymous pages (the Go heap, stacks) and
// file pages (the bbolt files' memory maps), consent.db's size and its
// transaction id. Loopback only; run it without -race:
//
//	go test -run '^$' -bench ConsentMemory -benchtime 1x ./lethe/
func BenchmarkConsentMemory(b *testing.B) {
	if raceEnabled {
		b.Skip("the race detector inflates memory; run without -race")
	}
	data := b.TempDir()
	addr := freeAddr(b)
	c, err := parseDevFlags([]string{"--data", data, "--addr", addr, "--nats-addr", freeAddr(b),
		"--metrics-addr", "", "--http-addr", "", "--public-addr", "", "--replica-addr", "off", "--log-level", "warn"}, io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- dev(ctx, c, io.Discard, io.Discard) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	conn := waitServing(b, addr, healthNames, &process{done: done, output: &logbuf.Buffer{}})
	consent := consentv1.NewConsentServiceClient(conn)
	const tenant = "memload"
	servertest.CreateTenant(b, registryv1.NewRegistryServiceClient(conn),
		&registryv1.CreateTenantRequest{RequestId: "memload-tenant", Tenant: &registryv1.Tenant{TenantId: tenant, DisplayName: "Memory load"}},
		func() error {
			_, err := consent.ListPurposes(context.Background(), &consentv1.ListPurposesRequest{TenantId: tenant})
			return err
		})
	if _, err := consent.PutPurpose(context.Background(), &consentv1.PutPurposeRequest{RequestId: "memload-purpose", TenantId: tenant,
		Purpose: &consentv1.Purpose{PurposeId: "marketing.email", Name: "Newsletter", LegalBasis: commonv1.LegalBasis_LEGAL_BASIS_CONSENT}}); err != nil {
		b.Fatal(err)
	}
	stores := wirefuzz.Stores(data)

	b.Logf("load: 50 clients, RecordConsent, UUIDv4 request ids, %d subjects, %d rounds of %s", *consentMemSubjects, *consentMemRounds, *consentMemRound)
	b.Logf("| round | calls | calls/s | heap in use | heap after GC | heap objects | RSS | RSS anon | RSS file | peak RSS | consent.db size | used | commits |")
	b.Logf("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
	row := func(name string, calls int64, rate float64) {
		var live runtime.MemStats
		runtime.ReadMemStats(&live)
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		mem := procStatus(b)
		st, err := stores()
		if err != nil {
			b.Fatal(err)
		}
		db := st["consent.db"]
		b.Logf("| %s | %d | %.0f | %.1f MiB | %.1f MiB | %d k | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.0f MiB | %.1f MiB | %d |", name, calls, rate,
			float64(live.HeapInuse)/(1<<20), float64(ms.HeapAlloc)/(1<<20), ms.HeapObjects/1000,
			mem["VmRSS"]/1024, mem["RssAnon"]/1024, mem["RssFile"]/1024, mem["VmHWM"]/1024,
			float64(db.Size)/(1<<20), float64(db.Used)/(1<<20), db.TxID)
		b.ReportMetric(float64(ms.HeapAlloc)/(1<<20), "MiB-heap-"+name)
	}
	for b.Loop() {
		row("before", 0, 0)
		var total atomic.Int64
		for round := range *consentMemRounds {
			start := time.Now()
			n := recordConsents(b, consent, tenant, *consentMemSubjects, start.Add(*consentMemRound))
			total.Add(n)
			row(strconv.Itoa(round+1), total.Load(), float64(n)/time.Since(start).Seconds())
		}
		time.Sleep(2 * time.Second)
		row("idle-2s", total.Load(), 0)
	}
	cancel()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	done <- nil // for the deferred stop
	logBuckets(b, filepath.Join(data, "consent.db"))
	if *consentMemProfile != "" {
		f, err := os.Create(*consentMemProfile)
		if err != nil {
			b.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
		f.Close()
	}
}

// logBuckets logs what fills a bbolt file, by top-level bucket.
func logBuckets(b *testing.B, path string) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	st := db.Stats()
	b.Logf("%s: %d free pages, %d pending", filepath.Base(path), st.FreePageN, st.PendingPageN)
	b.Logf("| bucket | keys | pages | bytes in use |")
	b.Logf("|---|---:|---:|---:|")
	if err := db.View(func(tx *bolt.Tx) error {
		return tx.ForEach(func(name []byte, bk *bolt.Bucket) error {
			s := bk.Stats()
			b.Logf("| %s | %d | %d | %.1f MiB |", name, s.KeyN, s.BranchPageN+s.BranchOverflowN+s.LeafPageN+s.LeafOverflowN,
				float64(s.BranchInuse+s.LeafInuse)/(1<<20))
			return nil
		})
	}); err != nil {
		b.Fatal(err)
	}
}

// recordConsents records grants from 50 clients until the deadline and
// returns how many succeeded.
func recordConsents(b *testing.B, consent consentv1.ConsentServiceClient, tenant string, subjects int, until time.Time) int64 {
	var n atomic.Int64
	var wg sync.WaitGroup
	for client := range 50 {
		wg.Go(func() {
			for i := 0; time.Now().Before(until); i++ {
				subject := fmt.Sprintf("subject-%d-%d", client, i)
				if subjects > 0 {
					subject = fmt.Sprintf("subject-%d", (client*7919+i)%subjects)
				}
				_, err := consent.RecordConsent(context.Background(), &consentv1.RecordConsentRequest{
					RequestId: uuidV4(), TenantId: tenant, SubjectId: subject, PurposeId: "marketing.email",
					Action: consentv1.ConsentAction_CONSENT_ACTION_GRANT, Method: consentv1.CollectionMethod_COLLECTION_METHOD_FORM,
				})
				if err != nil {
					b.Error(err)
					return
				}
				n.Add(1)
			}
		})
	}
	wg.Wait()
	return n.Load()
}

func uuidV4() string {
	var u [16]byte
	_, _ = rand.Read(u[:])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:])
}

// procStatus reads this process's memory lines of /proc/self/status, in
// KiB.
func procStatus(tb testing.TB) map[string]float64 {
	status, err := os.ReadFile(filepath.Join("/proc", "self", "status"))
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(status), "\n") {
		name, rest, ok := strings.Cut(line, ":")
		if !ok || !strings.HasSuffix(rest, " kB") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(rest, " kB")), 64); err == nil {
			out[name] = v
		}
	}
	return out
}
