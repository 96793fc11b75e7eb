package dsar_test

import (
	"flag"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	dsarv1 "github.com/lethe-privacy/lethe/gen/go/lethe/dsar/v1"
	"github.com/lethe-privacy/lethe/platform/testkit/eventually"
	"github.com/lethe-privacy/lethe/sdk/subscriber"
)

// callers is how many callers file and verify at once in BenchmarkErasures.
var callers = flag.Int("erasures.callers", 32, "BenchmarkErasures: concurrent callers filing and verifying requests")

// BenchmarkErasures files b.N erasure requests for a tenant with five
// subscribing systems, verifies each by attestation and waits until every
// one completed, in one process with embedded NATS syncing every write
// (the shipped setting). It reports throughput and the p50/p99 time from
// receipt to completion, read from the receipts, and what dsar.db's
// committer did. Run it with
//
//	go test -run XXX -bench Erasures -benchtime 10000x ./lethe/internal/flows/dsar/
func BenchmarkErasures(b *testing.B) {
	f := startWith(b, options{syncAlways: true, realClock: true, sweepEvery: 5 * time.Second})
	f.tenant(b, "cleura", nil)
	systems := []string{"crm", "billing", "newsletter", "support", "analytics"}
	for _, s := range systems {
		f.system(b, "cleura", s, commonv1.AnswerMode_ANSWER_MODE_SDK, nil, "user.contact")
		f.subscribe(b, "cleura", s, "", answer(subscriber.Erased()))
	}
	ids := make([]string, b.N)
	mark := markStream(b, f.deps.JetStream)
	var nfiled atomic.Int64
	stopMon := func() {}
	if testing.Verbose() {
		stopMon = monitor(b, f.deps.JetStream, &nfiled, f.svc.Outbox.Depth, time.Second)
	}
	b.ResetTimer()
	start, startCPU, startCommits := time.Now(), processCPU(b), f.svc.DB.CommitStats()
	var wg sync.WaitGroup
	work := make(chan int)
	for range *callers {
		wg.Go(func() {
			for i := range work {
				r := f.file(b, &dsarv1.CreateRequestRequest{TenantId: "cleura", SubjectId: fmt.Sprint("subject-", i), Erasure: &dsarv1.ErasureDetails{}})
				f.attest(b, "cleura", r.DsarId)
				ids[i] = r.DsarId
				nfiled.Add(1)
			}
		})
	}
	for i := range b.N {
		work <- i
	}
	close(work)
	wg.Wait()
	filed := time.Since(start)
	for {
		n, err := f.svc.VerifyReceipts()
		if err != nil {
			b.Fatal(err)
		}
		if int(n) == b.N {
			break
		}
		if time.Since(start) > 10*time.Minute {
			b.Fatalf("%d of %d requests completed after 10 minutes", n, b.N)
		}
		time.Sleep(100 * time.Millisecond)
	}
	elapsed, runCPU, commits := time.Since(start), processCPU(b)-startCPU, f.svc.DB.CommitStats()
	b.StopTimer()
	stopMon()
	// The JetStream floor of the same run, on the same server: what the
	// broker alone takes to store and deliver what the run made it store
	// and deliver (floor_test.go). Wait until the run's consumers are done
	// with it, so that the floor runs alone.
	f.svc.Sweep(f.ctx)
	eventually.True(b, "the DSAR service's outbox published everything", func() bool { return f.svc.Outbox.Depth() == 0 })
	run := readRun(b, f.deps.JetStream, mark)
	floorStartCPU := processCPU(b)
	floor := measureFloor(b, f.deps.JetStream, run)
	floorCPU := processCPU(b) - floorStartCPU
	lat := make([]time.Duration, 0, b.N)
	for _, id := range ids {
		rc, err := f.dsar.GetReceipt(f.ctx, &dsarv1.GetReceiptRequest{TenantId: "cleura", DsarId: id})
		if err != nil {
			b.Fatal(err)
		}
		if rc.Receipt.State != dsarv1.RequestState_REQUEST_STATE_COMPLETED || len(rc.Receipt.Entries) != len(systems) {
			b.Fatalf("receipt of %s = %v", id, rc.Receipt)
		}
		lat = append(lat, rc.Receipt.ClosedAt.AsTime().Sub(rc.Receipt.ReceivedAt.AsTime()))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(p*float64(len(lat))))] }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "requests/s")
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(elapsed.Seconds(), "total-s")
	b.ReportMetric(filed.Seconds(), "filing-s")
	b.ReportMetric(floor.Seconds(), "floor-s")
	b.ReportMetric(elapsed.Seconds()/floor.Seconds(), "x-floor")
	b.ReportMetric(float64(run.messages())/float64(b.N), "msgs/request")
	b.ReportMetric(float64(run.bytes)/float64(max(1, run.messages())), "bytes/msg")
	b.ReportMetric(float64(len(run.consumers)), "consumers")
	// CPU of the whole process (services, systems, broker and callers)
	// during the run and during the floor: on a machine with few cores the
	// run is bound by CPU where the floor is bound by the disk's syncs.
	b.ReportMetric(runCPU.Seconds(), "run-cpu-s")
	b.ReportMetric(floorCPU.Seconds(), "floor-cpu-s")
	// dsar.db's committer, the one writer of the file every request is
	// written to three times or more (filing, verification, completion):
	// how long it held the writer, how much of that committing, and how
	// many calls and pages a commit had.
	n := commits.Commits - startCommits.Commits
	b.ReportMetric((commits.Busy - startCommits.Busy).Seconds(), "commit-busy-s")
	b.ReportMetric((commits.Commit - startCommits.Commit).Seconds(), "commit-s")
	b.ReportMetric(float64(commits.Calls-startCommits.Calls)/float64(max(1, n)), "calls/commit")
	b.ReportMetric(float64(commits.Pages-startCommits.Pages)/float64(max(1, n)), "pages/commit")
}

// processCPU returns the CPU time the process has used, user and system.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
