package main

import (
	"bytes"
	"math"
	"strings"
	"testing"
)

// TestEverySubjectHasExactlyOnePartition: a subject's partition is in
// range and the same every time it is asked, for every k.
func TestEverySubjectHasExactlyOnePartition(t *testing.T) {
	for _, p := range []partitioner{rendezvous{}, jump{}} {
		for _, k := range []int{1, 2, 3, 7, 16} {
			seen := make([]int, k)
			for i := range 20_000 {
				s := subjectID(i)
				got := p.partition(s, k)
				if got < 0 || got >= k || p.partition(s, k) != got {
					t.Fatalf("%s: %s on partition %d of %d (or not the same twice)", p.name(), s, got, k)
				}
				seen[got]++
			}
			for i, n := range seen {
				if n == 0 {
					t.Errorf("%s: partition %d of %d holds no subject", p.name(), i, k)
				}
			}
		}
	}
}

// TestGrowingMovesOneInKPlusOne: from k to k+1 partitions about 1/(k+1)
// of the subjects move, every one of them to the new partition.
func TestGrowingMovesOneInKPlusOne(t *testing.T) {
	const n = 100_000
	for _, p := range []partitioner{rendezvous{}, jump{}} {
		for _, k := range []int{1, 2, 3, 4, 8, 16} {
			moved, elsewhere := moves(p, n, k)
			want := float64(n) / float64(k+1)
			// Binomial: 5 standard deviations.
			if tol := 5 * math.Sqrt(want); math.Abs(float64(moved)-want) > tol {
				t.Errorf("%s %d→%d: %d moved, want %.0f ± %.0f", p.name(), k, k+1, moved, want, tol)
			}
			if elsewhere != 0 {
				t.Errorf("%s %d→%d: %d subjects moved between old partitions", p.name(), k, k+1, elsewhere)
			}
		}
	}
}

// TestUniformActivityIsBalanced: without skew the partitions' shares of
// subjects and of writes stay within a few percent of the mean, and under
// Zipf no partition carries less than the busiest subject's share.
func TestUniformActivityIsBalanced(t *testing.T) {
	for _, p := range []partitioner{rendezvous{}, jump{}} {
		b := simulate(p, 200_000, 8, 400_000, 0, 1)
		if m := maxOverMean(b.subjects); m > 1.03 {
			t.Errorf("%s: subjects max/mean %.3f over 8 partitions", p.name(), m)
		}
		if m := maxOverMean(b.writes); m > 1.03 {
			t.Errorf("%s: uniform writes max/mean %.3f", p.name(), m)
		}
		z := simulate(p, 200_000, 8, 400_000, 1.2, 1)
		if floor := hottestShare(1.2, 200_000) * 8; maxOverMean(z.writes) < floor*0.9 {
			t.Errorf("%s: Zipf writes max/mean %.3f below the busiest subject's floor %.3f", p.name(), maxOverMean(z.writes), floor)
		}
	}
}

// TestReportPrintsEveryK: the program's output names every k it was
// given, for both hashes.
func TestReportPrintsEveryK(t *testing.T) {
	var out bytes.Buffer
	report(&out, 5_000, 10_000, 1, []int{1, 4}, 1)
	for _, want := range []string{"rendezvous hashing", "jump hashing", "1→2", "4→5", "k=4"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}
