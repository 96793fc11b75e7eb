package subscriber

import (
	"math/rand/v2"
	"testing"
	"time"
)

// The back-off has equal jitter, as issue #18 asks ("exponential backoff
// and jitter"): each delay is drawn evenly from [d/2, d], so events that
// failed together spread out, and none comes back before half its delay.
// Checked on the bounds of the draw and on a seeded source, not on time.
func TestBackOffHasEqualJitter(t *testing.T) {
	const d = 30 * time.Second
	if got := jitter(d, func(int64) int64 { return 0 }); got != d/2 {
		t.Errorf("the lowest draw gives %s, want %s", got, d/2)
	}
	if got := jitter(d, func(n int64) int64 { return n - 1 }); got != d {
		t.Errorf("the highest draw gives %s, want %s", got, d)
	}
	if got := jitter(time.Nanosecond, func(int64) int64 { t.Fatal("drew for a delay too short to halve"); return 0 }); got != time.Nanosecond {
		t.Errorf("1ns gives %s", got)
	}

	src := rand.New(rand.NewPCG(18, 18))
	seen := map[time.Duration]bool{}
	for range 1000 {
		got := jitter(d, src.Int64N)
		if got < d/2 || got > d {
			t.Fatalf("a delay of %s drew %s, outside [%s, %s]", d, got, d/2, d)
		}
		seen[got] = true
	}
	if len(seen) < 900 {
		t.Errorf("1000 draws gave %d distinct delays: not spread", len(seen))
	}

	s := &Subscriber{cfg: Config{BackOff: []time.Duration{time.Second, time.Minute}}}
	for n, want := range map[int]time.Duration{1: time.Second, 2: time.Minute, 9: time.Minute} {
		if got := s.backOff(n); got < want/2 || got > want {
			t.Errorf("backOff(%d) = %s, want within [%s, %s]", n, got, want/2, want)
		}
	}
}
