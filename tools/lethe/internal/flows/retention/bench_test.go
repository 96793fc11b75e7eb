package retention_test

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	commonv1 "github.com/lethe-privacy/lethe/gen/go/lethe/common/v1"
	retentionv1 "github.com/lethe-privacy/lethe/gen/go/lethe/retention/v1"
	"github.com/lethe-privacy/lethe/platform/service"
	"github.com/lethe-privacy/lethe/services/retention"
)

// The retention figures of docs/benchmarks.md, through the service: gRPC
// with the server's full chain (validation, idempotency, audit), the bbolt
// file, the scheduler and, for sweeps, directives through the outbox and
// task tracking, routed by the registry. Run with
//
//	go test -run '^$' -bench . -benchtime 3x .
//
// Building a million tracked subjects takes a while, once per benchmark.

const benchCategory = "user.behavior.usage"

// benchFixture is a tenant with one system and a one-year rule, and n
// subjects tracked of which due are due now.
func benchFixture(b *testing.B, n, due int) (*fixture, []string) {
	f := startWith(b, true)
	f.tenant(b, "bench")
	f.system(b, "bench", "lms", erased, benchCategory)
	f.rule(b, "bench", &retentionv1.Rule{RuleId: "usage", Category: &commonv1.DataCategory{Id: benchCategory},
		Triggers: []*retentionv1.Trigger{trigger(sinceActivity, "", "P1Y")}, Action: erase, Basis: "A year without use"})
	now := f.clock.Now()
	rng := rand.New(rand.NewPCG(1, 2))
	subjects, at := make([]string, n), make([]time.Time, n)
	var dueSubjects []string
	every := n / max(due, 1)
	// Distinct ids in random order, as a tenant's pseudonymous ids are.
	for i, id := range rng.Perm(n) {
		subjects[i] = benchSubject(id)
		// Not due: collected within the last year, due over the next one.
		at[i] = now.AddDate(-1, 0, 0).Add(time.Hour + time.Duration(rng.Int64N(int64(365*24*time.Hour))))
		if due > 0 && i%every == 0 && len(dueSubjects) < due {
			at[i] = now.AddDate(-2, 0, 0)
			dueSubjects = append(dueSubjects, subjects[i])
		}
	}
	start := time.Now()
	if err := retention.Track(f.svc, "bench", benchCategory, subjects, at); err != nil {
		b.Fatal(err)
	}
	// The rule was put before the subjects were tracked; its re-evaluation
	// of the tenant is not part of what is timed.
	if err := retention.Rescan(f.svc); err != nil {
		b.Fatal(err)
	}
	b.Logf("tracked %d subjects (%d due) in %s", n, len(dueSubjects), time.Since(start).Round(time.Millisecond))
	return f, dueSubjects
}

func benchSubject(i int) string { return fmt.Sprintf("subject-%08d", i*7919%100_000_000) }

// BenchmarkSweep compares a sweep of 10,000 due subjects among 1,000,000
// tracked with one among 10,000 tracked: the figure is at most 2×.
func BenchmarkSweep(b *testing.B) {
	for _, bc := range []struct {
		name     string
		tracked  int
		dueItems int
	}{
		{"due=10k/tracked=10k", 10_000, 10_000},
		{"due=10k/tracked=1M", 1_000_000, 10_000},
	} {
		b.Run(bc.name, func(b *testing.B) {
			runAsService(b)
			f, due := benchFixture(b, bc.tracked, bc.dueItems)
			b.ResetTimer()
			for range b.N {
				n, err := f.svc.Sweep(f.ctx)
				if err != nil || n != len(due) {
					b.Fatalf("sweep fired %d (%v), want %d", n, err, len(due))
				}
				b.StopTimer()
				if err := retention.Rearm(f.svc, "bench", due); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(len(due))*float64(b.N)/b.Elapsed().Seconds(), "subjects/s")
		})
	}
}

// BenchmarkActivitySignals sends durable activity signals for random
// subjects among 1,000,000 tracked, from 50 concurrent reporters, each
// signal one RecordSignal call, or batches through RecordSignals.
func BenchmarkActivitySignals(b *testing.B) {
	f, _ := benchFixture(b, 1_000_000, 0)
	subjects := make([]string, 1_000_000)
	for i := range subjects {
		subjects[i] = benchSubject(i)
	}
	base := f.clock.Now().Add(-time.Hour)
	var tick atomic.Int64
	signal := func(r *rand.Rand) *retentionv1.Signal {
		return &retentionv1.Signal{SubjectId: subjects[r.IntN(len(subjects))], Kind: active,
			OccurredAt: timestamppb.New(base.Add(time.Duration(tick.Add(1))))}
	}
	const reporters = 50
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			runAsService(b)
			const perOp = 10_000 // signals per benchmark op, over all reporters
			cpu0 := cpuTime()
			b.ResetTimer()
			for range b.N {
				var wg sync.WaitGroup
				var next atomic.Int64
				for w := range reporters {
					wg.Go(func() {
						r := rand.New(rand.NewPCG(uint64(w), uint64(tick.Load())))
						for next.Add(int64(batch)) <= perOp {
							var err error
							if batch == 1 {
								_, err = f.retention.RecordSignal(f.ctx, &retentionv1.RecordSignalRequest{RequestId: f.id(), TenantId: "bench", Signal: signal(r)})
							} else {
								req := &retentionv1.RecordSignalsRequest{RequestId: f.id(), TenantId: "bench"}
								for range batch {
									req.Signals = append(req.Signals, signal(r))
								}
								_, err = f.retention.RecordSignals(f.ctx, req)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
			}
			// Timed too: every signal is applied to its subject, so the rate
			// is one the applier sustains, not a backlog. The applier runs
			// alongside the reporters, as in production; waiting for it after
			// every op instead would stop the reporters for a while that no
			// steady load has.
			if _, err := retention.ApplyJournal(f.svc); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(perOp)*float64(b.N)/b.Elapsed().Seconds(), "signals/s")
			// The process's CPU per signal, reporters included: on a machine
			// with two cores, the figure that bounds the rate.
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(perOp*b.N), "cpu-µs/signal")
		})
	}
}

// runAsService runs the benchmark with as many Ps as a service process
// runs (service.SetProcs).
func runAsService(b *testing.B) {
	prev := runtime.GOMAXPROCS(service.Procs())
	b.Cleanup(func() { runtime.GOMAXPROCS(prev) })
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
