package main

import (
	"fmt"
	"math"
	"math/rand/v2"
)

// subjectID names the i-th subject of the simulated tenant.
func subjectID(i int) string { return fmt.Sprintf("subject-%09d", i) }

// moves counts the subjects whose partition differs between k and k+1,
// and those of them that went anywhere but the new partition k.
func moves(p partitioner, subjects, k int) (moved, elsewhere int) {
	for i := range subjects {
		s := subjectID(i)
		before, after := p.partition(s, k), p.partition(s, k+1)
		if before != after {
			moved++
			if after != k {
				elsewhere++
			}
		}
	}
	return moved, elsewhere
}

// balance is how k partitions share a tenant's subjects and its writes.
type balance struct {
	// subjects and writes per partition.
	subjects, writes []int
}

// maxOverMean returns the busiest partition's share over the mean share.
func maxOverMean(xs []int) float64 {
	total, most := 0, 0
	for _, x := range xs {
		total += x
		most = max(most, x)
	}
	if total == 0 {
		return 0
	}
	return float64(most) * float64(len(xs)) / float64(total)
}

// simulate spreads subjects over k partitions and draws writes among
// them with Zipf-skewed activity (exponent s: the subject of rank r is
// written in proportion to 1/r^s, ranks shuffled over subjects by the
// seeded generator).
func simulate(p partitioner, subjects, k, writes int, s float64, seed uint64) balance {
	r := rand.New(rand.NewPCG(seed, seed^0x5851f42d4c957f2d))
	part := make([]int, subjects)
	b := balance{subjects: make([]int, k), writes: make([]int, k)}
	for i := range subjects {
		part[i] = p.partition(subjectID(i), k)
		b.subjects[part[i]]++
	}
	// rank i is subject perm[i]: the busiest subjects are not the first ids.
	perm := r.Perm(subjects)
	z := newZipf(r, s, subjects)
	for range writes {
		b.writes[part[perm[z.next()]]]++
	}
	return b
}

// zipf draws ranks 0..n-1 with P(r) proportional to 1/(r+1)^s, by
// inverting the cumulative distribution (any s > 0, unlike math/rand's
// Zipf, which needs s > 1).
type zipf struct {
	r   *rand.Rand
	cdf []float64
}

func newZipf(r *rand.Rand, s float64, n int) *zipf {
	cdf := make([]float64, n)
	sum := 0.0
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
		cdf[i] = sum
	}
	for i := range cdf {
		cdf[i] /= sum
	}
	return &zipf{r: r, cdf: cdf}
}

func (z *zipf) next() int {
	u := z.r.Float64()
	lo, hi := 0, len(z.cdf)-1
	for lo < hi {
		mid := (lo + hi) / 2
		if z.cdf[mid] < u {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	return lo
}

// hottestShare is the share of all writes the single busiest subject
// takes under Zipf(s) over n subjects: no partitioning by subject can
// put less than this on one partition.
func hottestShare(s float64, n int) float64 {
	sum := 0.0
	for i := range n {
		sum += 1 / math.Pow(float64(i+1), s)
	}
	return 1 / sum
}
