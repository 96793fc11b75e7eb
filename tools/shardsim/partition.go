package main

import "hash/fnv"

// A partitioner maps a subject's id to one of k partitions of a tenant.
type partitioner interface {
	name() string
	partition(subject string, k int) int
}

// subjectKey is the 64-bit hash both partitioners start from: FNV-1a of
// the subject id, mixed (splitmix64's finaliser) so that ids that differ
// in one trailing digit spread over all bits.
func subjectKey(subject string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(subject))
	return mix(h.Sum64())
}

// mix is splitmix64's finaliser: a bijection on 64 bits with good
// avalanche.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// rendezvous is highest-random-weight hashing (Thaler and Ravishankar,
// 1998): a subject goes to the partition whose weight, a hash of the
// subject and the partition, is highest. Adding partition k moves exactly
// the subjects whose weight for k beats all the others: 1/(k+1) of them
// in expectation, and all of them to k. It costs k hashes per lookup,
// which for the few partitions of one tenant (k below 100) is cheaper
// than the lookup table it needs none of, and partitions can be removed
// or named freely.
type rendezvous struct{}

func (rendezvous) name() string { return "rendezvous" }

func (rendezvous) partition(subject string, k int) int {
	key := subjectKey(subject)
	best, bestW := 0, uint64(0)
	for i := range k {
		w := mix(key ^ mix(uint64(i)+0x9e3779b97f4a7c15))
		if i == 0 || w > bestW {
			best, bestW = i, w
		}
	}
	return best
}

// jump is jump consistent hashing (Lamping and Veach, 2014): O(log k) per
// lookup and the same 1/(k+1) moves, but partitions are numbered 0..k-1
// and only the last can be removed.
type jump struct{}

func (jump) name() string { return "jump" }

func (jump) partition(subject string, k int) int {
	key := subjectKey(subject)
	b, j := int64(-1), int64(0)
	for j < int64(k) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}
