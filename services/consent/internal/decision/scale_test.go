package decision

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	consentv1 "github.com/lethe-privacy/lethe/gen/go/lethe/consent/v1"
	eventsv1 "github.com/lethe-privacy/lethe/gen/go/lethe/events/v1"
)

var scaleSubjects = flag.Int("scale.subjects", 0, "subjects of BenchmarkIndexAtScale (10000000 for the figures in docs/benchmarks.md); 0 skips it")

// scalePurposes are five purposes of one tenant, as a retailer declares
// them: most consent-based with lifetimes, one by legitimate interests.
var scalePurposes = []Purpose{
	{ID: "marketing.email", Basis: basisConsent, DirectMarketing: true, Lifetime: 730 * day},
	{ID: "marketing.sms", Basis: basisConsent, DirectMarketing: true, Lifetime: 365 * day},
	{ID: "cookies.statistics", Basis: basisConsent, Lifetime: 365 * day, GPCOptOut: true},
	{ID: "personalisation", Basis: basisConsent, Lifetime: 730 * day, MaterialSince: at(-200)},
	{ID: "product.analytics", Basis: basisLegitimateInterest},
}

// scaleSubject gives a subject one record per purpose, recorded over two
// years before now with UUIDv7 ids as the service makes them: 70 in 100
// grants (some expired by now), 15 denials, 10 withdrawals, 5 renewals;
// one subject in ten has a second, earlier record for one purpose; one in
// 200 an objection to direct marketing and one in 1,000 a restriction.
func scaleSubject(rng *rand.Rand, s *Subject, now time.Time) {
	for i, p := range scalePurposes {
		n := 1
		if i == 0 && rng.IntN(10) == 0 {
			n = 2
		}
		when := now.Add(-time.Duration(rng.Int64N(int64(730 * day))))
		for range n {
			c := Consent{RecordID: uuidV7(rng, when), RecordedAt: when}
			switch k := rng.IntN(100); {
			case k < 70:
				c.Action = actionGrant
			case k < 85:
				c.Action = actionDeny
			case k < 95:
				c.Action = actionWithdraw
			default:
				c.Action = actionRenew
			}
			if (c.Action == actionGrant || c.Action == actionRenew) && p.Lifetime > 0 {
				c.ExpiresAt = when.Add(p.Lifetime)
			}
			s.SetConsent(p.ID, c)
			when = when.Add(time.Duration(rng.Int64N(int64(30 * day))))
		}
	}
	if rng.IntN(200) == 0 {
		s.AddObjection(Objection{ID: uuidV7(rng, now), Scope: eventsv1.ObjectionScope_OBJECTION_SCOPE_DIRECT_MARKETING})
	}
	if rng.IntN(1000) == 0 {
		s.AddRestriction(Restriction{ID: uuidV7(rng, now)})
	}
}

// cpu returns the CPU time this process has used, every thread and the
// garbage collector's: on a machine shared with other work it says what a
// phase costs better than the wall clock, which counts the time others
// held the cores.
func cpu() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// phase returns the wall and CPU time since a start.
type phase struct {
	wall time.Time
	cpu  time.Duration
}

func startPhase() phase { return phase{time.Now(), cpu()} }

func (p phase) String() string {
	return fmt.Sprintf("%s wall, %s CPU", time.Since(p.wall).Round(time.Millisecond), (cpu() - p.cpu).Round(time.Millisecond))
}

// procKiB reads memory lines of /proc/self/status in KiB.
func procKiB(b *testing.B, names ...string) []float64 {
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	out := make([]float64, len(names))
	for _, line := range strings.Split(string(status), "\n") {
		name, rest, _ := strings.Cut(line, ":")
		for i, n := range names {
			if n == name {
				out[i], _ = strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 64)
			}
		}
	}
	return out
}

// memLine logs the heap and resident memory after collecting garbage and
// returning freed memory to the system.
func memLine(b *testing.B, what string, subjects int) {
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	kib := procKiB(b, "VmRSS", "RssAnon", "VmHWM")
	b.Logf("%-28s heap in use %6.0f MiB (%.0f B/subject), RSS %6.0f MiB (anon %6.0f MiB, %.0f B/subject), peak RSS %6.0f MiB",
		what, float64(ms.HeapInuse)/(1<<20), float64(ms.HeapInuse)/float64(max(subjects, 1)),
		kib[0]/1024, kib[1]/1024, kib[1]*1024/float64(max(subjects, 1)), kib[2]/1024)
}

// scaleName is the id of the i-th subject of the data set, spread like
// the service's ids.
func scaleName(i int) string { return fmt.Sprintf("sub_%016x", uint64(i)*0x9e3779b97f4a7c15) }

// cutWhileWriting takes a Cut of ix and writes it, as the consent writer
// takes a replication snapshot, while a writer goroutine changes 5,000
// subjects a second, and logs how long the cut held the appliers, how
// long writing it took, and what the cut kept of the subjects changed
// meanwhile.
func cutWhileWriting(b *testing.B, ix *Index, n int, now time.Time, path string) {
	var changed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	rng := rand.New(rand.NewPCG(11, uint64(n)))
	paced(&wg, stop, time.Millisecond, func(int) {
		for range 5 {
			ix.Update("retail", scaleName(rng.IntN(n)), func(s *Subject) { scaleSubject(rng, s, now) })
		}
		changed.Add(5)
	})
	defer wg.Wait()
	defer close(stop)
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	started := startPhase()
	c := ix.Cut()
	cut := time.Since(started.wall)
	before := changed.Load()
	started = startPhase()
	err = c.WriteSnapshot(f)
	c.Close()
	if err == nil {
		err = f.Sync()
	}
	if err != nil {
		b.Fatal(err)
	}
	kept, bytes := c.Kept()
	b.Logf("cut taken in %s (the appliers held that long); written in %s (with fsync) while %d subjects changed, of which it kept %d (%.1f KiB)",
		cut, started, changed.Load()-before, kept, float64(bytes)/1024)
}

// BenchmarkIndexAtScale builds one tenant of -scale.subjects subjects with
// five purposes each in an Index, reports its memory, writes a snapshot of
// it, drops it, and reads the snapshot into a new Index: the memory a
// writer or a replica holds, and the snapshot half of its start. It checks
// that the restored index decides as the built one on a sample. Run it by
// itself, without -race:
//
//	go test -run '^$' -bench IndexAtScale -benchtime 1x -scale.subjects 10000000 ./internal/decision/
func BenchmarkIndexAtScale(b *testing.B) {
	n := *scaleSubjects
	if n <= 0 {
		b.Skip("set -scale.subjects")
	}
	dir := b.TempDir()
	for b.Loop() {
		memLine(b, "before", 0)
		now := at(800)
		rng := rand.New(rand.NewPCG(10, uint64(n)))
		ix := NewIndex()
		for _, p := range scalePurposes {
			ix.PutPurpose("retail", p)
		}
		ix.SetCountry("retail", "DE")
		started := startPhase()
		for i := range n {
			ix.Update("retail", scaleName(i), func(s *Subject) { scaleSubject(rng, s, now) })
		}
		ix.SetRevision("retail", uint64(n)*5)
		b.Logf("built %d subjects x %d purposes in %s", n, len(scalePurposes), started)
		st := ix.Stats()
		b.Logf("state: %d subjects, %.0f MiB in arenas (%.0f B/subject), %.0f MiB garbage", st.Subjects,
			float64(st.StateBytes)/(1<<20), float64(st.StateBytes)/float64(n), float64(st.GarbageBytes)/(1<<20))
		memLine(b, "index built", n)

		// The answers of a sample, to compare after the round trip.
		sample := make([]string, 0, 20000)
		attrs := Attributes{Age: 30}
		for i := 0; i < n; i += max(1, n/4000) {
			sub := scaleName(i)
			for _, p := range scalePurposes {
				sample = append(sample, fmt.Sprint(ix.Check("retail", sub, p.ID, attrs, now)))
			}
		}
		// Check among n subjects, random order.
		qs := make([]string, 1<<16)
		for i := range qs {
			qs[i] = scaleName(rng.IntN(n))
		}
		const checks = 2_000_000
		started2 := startPhase()
		allowed := 0
		for i := range checks {
			if ix.Check("retail", qs[i&(len(qs)-1)], scalePurposes[i%len(scalePurposes)].ID, attrs, now).Allowed {
				allowed++
			}
		}
		b.Logf("Check, random subject of %d: %.0f ns/op wall, %.0f ns/op CPU (%d of %d allowed)", n,
			float64(time.Since(started2.wall).Nanoseconds())/checks, float64((cpu()-started2.cpu).Nanoseconds())/checks, allowed, checks)

		path := filepath.Join(dir, "consent.index")
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		started = startPhase()
		if err := ix.WriteSnapshot(f); err != nil {
			b.Fatal(err)
		}
		if err := f.Sync(); err != nil {
			b.Fatal(err)
		}
		took := started.String()
		info, _ := f.Stat()
		f.Close()
		b.Logf("snapshot written in %s (with fsync): %.0f MiB (%.0f B/subject)", took, float64(info.Size())/(1<<20), float64(info.Size())/float64(n))

		cutWhileWriting(b, ix, n, now, filepath.Join(dir, "replication.snapshot"))

		ix = nil
		memLine(b, "index dropped", 0)
		f, err = os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		fi, err := f.Stat()
		if err != nil {
			b.Fatal(err)
		}
		restored := NewIndex()
		started = startPhase()
		revs, err := restored.ReadSnapshot(f, fi.Size())
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("snapshot read and validated in %s (revision %d)", started, revs["retail"])
		memLine(b, "index read from snapshot", n)
		j := 0
		for i := 0; i < n; i += max(1, n/4000) {
			sub := scaleName(i)
			for _, p := range scalePurposes {
				if got := fmt.Sprint(restored.Check("retail", sub, p.ID, attrs, now)); got != sample[j] {
					b.Fatalf("%s/%s after the round trip: %s, want %s", sub, p.ID, got, sample[j])
				}
				j++
			}
		}
		b.Logf("%d sampled decisions equal after the round trip", j)
		_ = consentv1.Reason_REASON_GRANTED
	}
}
