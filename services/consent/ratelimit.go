package consent

import (
	"math"
	"sync"
	"time"
)

// limiter is a set of token buckets by key (a visitor, a client address):
// each holds up to perMinute tokens, refilled at perMinute a minute, and a
// request takes one. Memory is bounded: at maxKeys buckets, those idle long
// enough to be full again are dropped (a full bucket is what a new one
// is); when none is, a new key is refused until one is, so a flood of
// fresh keys cannot grow the map. The map is scanned for such buckets at
// most once every evictEvery, so that the same flood does not make every
// new key pay a scan of maxKeys buckets under the lock.
type limiter struct {
	mu        sync.Mutex
	perMinute float64
	maxKeys   int
	buckets   map[string]*bucket
	// scanned is when evict last scanned the buckets.
	scanned time.Time
}

// evictEvery bounds how often a full limiter scans its buckets.
const evictEvery = time.Second

type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(perMinute, maxKeys int) *limiter {
	return &limiter{perMinute: float64(perMinute), maxKeys: maxKeys, buckets: map[string]*bucket{}}
}

// refill returns b's tokens at now.
func (l *limiter) refill(b *bucket, now time.Time) float64 {
	return math.Min(l.perMinute, b.tokens+now.Sub(b.at).Minutes()*l.perMinute)
}

// take takes a token of key's bucket at now; when there is none, it
// returns how long until there is one.
func (l *limiter) take(key string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.evict(now)
		}
		if len(l.buckets) >= l.maxKeys {
			return false, time.Minute / time.Duration(max(1, int(l.perMinute)))
		}
		b = &bucket{tokens: l.perMinute, at: now}
		l.buckets[key] = b
	}
	b.tokens, b.at = l.refill(b, now), now
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) / l.perMinute * float64(time.Minute))
		return false, wait
	}
	b.tokens--
	return true, 0
}

// evict drops the buckets that are full at now, unless it scanned less
// than evictEvery ago.
func (l *limiter) evict(now time.Time) {
	if !l.scanned.IsZero() && now.Sub(l.scanned) < evictEvery {
		return
	}
	l.scanned = now
	for k, b := range l.buckets {
		if l.refill(b, now) >= l.perMinute {
			delete(l.buckets, k)
		}
	}
}

// size returns how many buckets the limiter holds.
func (l *limiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
